"""The fleet's job store: PostgreSQL, shared by API replicas and workers on many machines.

The same contract as the SQLite store (store.py), so everything above it is unchanged. What differs:
- claims lock rows with `FOR UPDATE SKIP LOCKED`: concurrent workers claim different jobs without waiting
  on each other, and requeueing expired leases inside a claim skips rows another claimant holds;
- every change is announced with NOTIFY (the job id as payload, sent at commit): API replicas wake their
  waiters and idle workers wake for new jobs without polling the database;
- the schema is versioned in `schema_migrations`; `MIGRATIONS` run in order on start, under an advisory
  lock so replicas starting together migrate once.
Connections come from a psycopg_pool pool; the listener holds one connection of its own.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import psycopg
from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool

from ..core.job import Claim, Job, JobError, JobStatus, LiveState, LogEntry, LogLevel, WorkerInfo
from ..core.request import Stage
from ..core.results import FinishedImage, JobResult, PreviewImage
from ..core.transitions import (
    CANCELLED_BEFORE_START,
    batch,
    cancelled_line,
    finished,
    held_by,
    interrupted,
    rank,
    requeued,
    requeued_line,
    running,
    start_missed,
    with_image,
)
from .contract import CancelOutcome, Changes, Channel, Delivery, Requeued, SessionJob

log = logging.getLogger(__name__)

MIGRATIONS: tuple[str, ...] = (
    # 1: the first schema, the SQLite store's version 2 in PostgreSQL types.
    """
    CREATE TABLE jobs (
        seq BIGSERIAL PRIMARY KEY,
        id TEXT NOT NULL UNIQUE,
        status TEXT NOT NULL,
        batch_key TEXT NOT NULL,
        num_images INTEGER NOT NULL,
        created_at DOUBLE PRECISION NOT NULL,
        finished_at DOUBLE PRECISION,
        expires_at DOUBLE PRECISION,
        cancel_requested BOOLEAN NOT NULL DEFAULT FALSE,
        worker_id TEXT,
        lease_until DOUBLE PRECISION,
        body TEXT NOT NULL
    );
    CREATE INDEX jobs_queued ON jobs (batch_key, seq) WHERE status = 'queued';
    CREATE INDEX jobs_queue ON jobs (seq) WHERE status = 'queued';
    CREATE INDEX jobs_running ON jobs (worker_id) WHERE status = 'running';
    CREATE INDEX jobs_leases ON jobs (lease_until) WHERE status = 'running';
    CREATE INDEX jobs_expiry ON jobs (expires_at);
    CREATE INDEX jobs_finished ON jobs (finished_at);
    CREATE TABLE job_logs (
        id BIGSERIAL PRIMARY KEY,
        job_id TEXT NOT NULL,
        timestamp DOUBLE PRECISION NOT NULL,
        level TEXT NOT NULL,
        message TEXT NOT NULL
    );
    CREATE INDEX job_logs_by_job ON job_logs (job_id, id);
    CREATE TABLE deliveries (
        id BIGSERIAL PRIMARY KEY,
        job_id TEXT NOT NULL,
        url TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        parts_done INTEGER NOT NULL DEFAULT 0,
        next_at DOUBLE PRECISION,
        delivered_at DOUBLE PRECISION,
        last_error TEXT,
        lease_owner TEXT,
        lease_until DOUBLE PRECISION
    );
    CREATE INDEX deliveries_due ON deliveries (next_at) WHERE next_at IS NOT NULL;
    CREATE INDEX deliveries_by_job ON deliveries (job_id);
    CREATE TABLE changes (
        seq BIGSERIAL PRIMARY KEY,
        job_id TEXT NOT NULL,
        at DOUBLE PRECISION NOT NULL
    );
    CREATE INDEX changes_by_time ON changes (at);
    CREATE TABLE workers (
        id TEXT PRIMARY KEY,
        body TEXT NOT NULL
    );
    """,
    # 2: live state (the latest progress and preview of a running job), as the SQLite store's version 3.
    """
    CREATE TABLE job_live (
        job_id TEXT PRIMARY KEY,
        stage TEXT,
        done INTEGER NOT NULL DEFAULT 0,
        total INTEGER NOT NULL DEFAULT 0,
        preview BYTEA,
        preview_meta TEXT
    );
    """,
    # 3: queue priorities and start deadlines, a running job's finished images, connection sessions (the
    # SQLite store's version 4).
    """
    ALTER TABLE jobs ADD COLUMN priority INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE jobs ADD COLUMN start_by DOUBLE PRECISION;
    DROP INDEX jobs_queued;
    DROP INDEX jobs_queue;
    CREATE INDEX jobs_queued ON jobs (batch_key, priority, seq) WHERE status = 'queued';
    CREATE INDEX jobs_queue ON jobs (priority, seq) WHERE status = 'queued';
    CREATE INDEX jobs_start_by ON jobs (start_by) WHERE status = 'queued' AND start_by IS NOT NULL;
    ALTER TABLE job_live ADD COLUMN images JSONB;
    CREATE TABLE session_jobs (
        job_id TEXT PRIMARY KEY,
        session_id TEXT NOT NULL,
        owner TEXT,
        delivered BOOLEAN NOT NULL DEFAULT FALSE,
        created_at DOUBLE PRECISION NOT NULL
    );
    CREATE INDEX session_jobs_by_session ON session_jobs (session_id, created_at);
    """,
)
MIGRATION_LOCK = 0x61_6D_67_6C  # pg_advisory_xact_lock key: one migrator at a time
CHANNELS: dict[Channel, str] = {"changes": "glm_image_changes", "queued": "glm_image_queued"}
CHANGE_LOG_KEEP_S = 300.0


class PostgresJobStore:
    def __init__(self, url: str, max_attempts: int = 3, pool_size: int = 8) -> None:
        self.url, self.max_attempts = url, max_attempts
        self.pool = ConnectionPool(
            url, min_size=1, max_size=pool_size, open=True, name="glm-image-jobs", timeout=30
        )
        self._subscribers: dict[Channel, list[Callable[[str], None]]] = {"changes": [], "queued": []}
        self._listener: threading.Thread | None = None
        self._closing = threading.Event()
        self._listening = threading.Event()
        self.migrate()

    # --- plumbing

    @contextmanager
    def _tx(self) -> Iterator[psycopg.Cursor]:
        """One transaction: committed when the block ends, rolled back if it raises."""
        with self.pool.connection() as conn, conn.transaction(), conn.cursor() as cur:
            yield cur

    def migrate(self) -> int:
        """Bring the schema to the newest version; returns the version it found."""
        with self._tx() as cur:
            cur.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
            cur.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations"
                " (version INTEGER PRIMARY KEY, applied_at DOUBLE PRECISION NOT NULL)"
            )
            cur.execute("SELECT COALESCE(MAX(version), 0) FROM schema_migrations")
            found = cur.fetchone()[0]
            for version, sql in enumerate(MIGRATIONS[found:], start=found + 1):
                cur.execute(sql)
                cur.execute("INSERT INTO schema_migrations VALUES (%s, %s)", (version, time.time()))
                log.info("job store: schema migrated to version %d", version)
            return found

    def close(self) -> None:
        self._closing.set()
        if self._listener is not None:
            self._listener.join(5)
        self.pool.close()

    @staticmethod
    def _changed(cur: psycopg.Cursor, job_id: str) -> None:
        cur.execute("INSERT INTO changes (job_id, at) VALUES (%s, %s)", (job_id, time.time()))
        cur.execute("SELECT pg_notify(%s, %s)", (CHANNELS["changes"], job_id))

    @staticmethod
    def _queued(cur: psycopg.Cursor, job_id: str) -> None:
        cur.execute("SELECT pg_notify(%s, %s)", (CHANNELS["queued"], job_id))

    def _save(self, cur: psycopg.Cursor, job: Job, lease_until: float | None = None) -> None:
        cur.execute(
            "UPDATE jobs SET status = %s, finished_at = %s, cancel_requested = %s, worker_id = %s,"
            " lease_until = %s, start_by = %s, body = %s WHERE id = %s",
            (
                job.status.value,
                job.finished_at,
                job.cancel_requested,
                job.worker_id,
                lease_until,
                job.start_by,
                job.model_dump_json(),
                job.id,
            ),
        )
        self._changed(cur, job.id)

    @staticmethod
    def _load(cur: psycopg.Cursor, job_id: str, lock: bool = False) -> Job | None:
        cur.execute("SELECT body FROM jobs WHERE id = %s" + (" FOR UPDATE" if lock else ""), (job_id,))
        row = cur.fetchone()
        return Job.model_validate_json(row[0]) if row else None

    # --- notifications

    def subscribe(self, channel: Channel, callback: Callable[[str], None]) -> bool:
        """Returns once notifications flow (or after 10 s of trying; they flow once it connects)."""
        self._subscribers[channel].append(callback)
        if self._listener is None:
            self._listener = threading.Thread(target=self._listen, name="pg-listen", daemon=True)
            self._listener.start()
        self._listening.wait(10)
        return True

    def _emit(self, channel: Channel, job_id: str) -> None:
        for callback in tuple(self._subscribers[channel]):
            try:
                callback(job_id)
            except Exception:
                log.exception("a change subscriber failed")

    def _listen(self) -> None:
        """Deliver notifications to subscribers; reconnect after a lost connection, then tell every
        subscriber that anything may have changed (job id "")."""
        by_name = {name: channel for channel, name in CHANNELS.items()}
        backoff = 0.1
        while not self._closing.is_set():
            try:
                with psycopg.connect(self.url, autocommit=True) as conn:
                    for name in CHANNELS.values():
                        conn.execute(f"LISTEN {name}")
                    if self._listening.is_set():
                        for channel in CHANNELS:
                            self._emit(channel, "")  # some may have been missed while reconnecting
                    self._listening.set()
                    backoff = 0.1
                    while not self._closing.is_set():
                        for notice in conn.notifies(timeout=0.5):
                            self._emit(by_name[notice.channel], notice.payload)
            except psycopg.Error:
                if self._closing.is_set():
                    return
                log.warning("job store: notification connection lost; reconnecting", exc_info=True)
                self._closing.wait(backoff)
                backoff = min(backoff * 2, 5.0)

    # --- submitting and reading

    def create(self, job: Job) -> bool:
        with self._tx() as cur:
            cur.execute(
                "INSERT INTO jobs (id, status, batch_key, num_images, created_at, cancel_requested,"
                " priority, start_by, body) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)"
                " ON CONFLICT (id) DO NOTHING",
                (
                    job.id,
                    job.status.value,
                    job.request.batch_key,
                    job.request.num_images,
                    job.created_at,
                    job.cancel_requested,
                    rank(job),
                    job.start_by,
                    job.model_dump_json(),
                ),
            )
            if cur.rowcount == 0:
                return False
            self._changed(cur, job.id)
            self._queued(cur, job.id)
            return True

    def get(self, job_id: str) -> Job | None:
        with self._tx() as cur:
            return self._load(cur, job_id)

    def queue_position(self, job_id: str) -> int:
        with self._tx() as cur:
            cur.execute(
                "SELECT COUNT(*) FROM jobs q, jobs me WHERE me.id = %s AND q.status = 'queued'"
                " AND (q.priority < me.priority OR (q.priority = me.priority AND q.seq < me.seq))",
                (job_id,),
            )
            return cur.fetchone()[0]

    def oldest_queued(self) -> Job | None:
        with self._tx() as cur:
            cur.execute("SELECT body FROM jobs WHERE status = 'queued' ORDER BY priority, seq LIMIT 1")
            row = cur.fetchone()
            return Job.model_validate_json(row[0]) if row else None

    def queued_count(self) -> int:
        with self._tx() as cur:
            cur.execute("SELECT COUNT(*) FROM jobs WHERE status = 'queued'")
            return cur.fetchone()[0]

    def unfinished_count(self, owner: str) -> int:
        with self._tx() as cur:
            cur.execute(
                "SELECT COUNT(*) FROM jobs WHERE status IN ('queued', 'running')"
                " AND (body::jsonb ->> 'owner') = %s",
                (owner,),
            )
            return cur.fetchone()[0]

    def queue_depth(self) -> list[tuple[str, int, int, float]]:
        """Per batch key: queued jobs, their images, and the oldest one's creation time."""
        with self._tx() as cur:
            cur.execute(
                "SELECT batch_key, COUNT(*), SUM(num_images), MIN(created_at) FROM jobs"
                " WHERE status = 'queued' GROUP BY batch_key ORDER BY batch_key"
            )
            return [(key, jobs, int(images), oldest) for key, jobs, images, oldest in cur.fetchall()]

    def logs(self, job_id: str) -> list[LogEntry]:
        with self._tx() as cur:
            cur.execute(
                "SELECT timestamp, level, message FROM job_logs WHERE job_id = %s ORDER BY id", (job_id,)
            )
            return [LogEntry(timestamp=t, level=level, message=m) for t, level, m in cur.fetchall()]

    # --- running

    def claim_batch(self, worker_id: str, max_images: int, lease_s: float) -> list[Job]:
        with self._tx() as cur:
            now = time.time()
            self._requeue(cur, "lease_until < %s", (now,), "its worker stopped answering")
            self._expire_starts(cur, now)
            cur.execute(
                "SELECT batch_key, priority FROM jobs WHERE status = 'queued' ORDER BY priority, seq LIMIT 1"
                " FOR UPDATE SKIP LOCKED"
            )
            head = cur.fetchone()
            if head is None:
                return []
            cur.execute(
                "SELECT body FROM jobs WHERE status = 'queued' AND batch_key = %s AND priority = %s"
                " ORDER BY seq LIMIT %s FOR UPDATE SKIP LOCKED",
                (*head, max(max_images, 1)),
            )
            candidates = [Job.model_validate_json(body) for (body,) in cur.fetchall()]
            claimed = [running(job, worker_id, now) for job in batch(candidates, max_images)]
            for job in claimed:
                self._save(cur, job, lease_until=now + lease_s)
            return claimed

    def expire_start_deadlines(self, now: float) -> int:
        with self._tx() as cur:
            return self._expire_starts(cur, now)

    def _expire_starts(self, cur: psycopg.Cursor, now: float) -> int:
        cur.execute(
            "SELECT body FROM jobs WHERE status = 'queued' AND start_by < %s FOR UPDATE SKIP LOCKED", (now,)
        )
        rows = cur.fetchall()
        for (body,) in rows:
            job = Job.model_validate_json(body)
            error = start_missed(job)
            self._finish(cur, job, JobStatus.FAILED, None, error)
            self._log(cur, job.id, "ERROR", error.message)
        return len(rows)

    def renew(self, worker_id: str, lease_s: float) -> int:
        with self._tx() as cur:
            cur.execute(
                "UPDATE jobs SET lease_until = %s WHERE worker_id = %s AND status = 'running'",
                (time.time() + lease_s, worker_id),
            )
            return cur.rowcount

    def release(self, worker_id: str, reason: str) -> Requeued:
        with self._tx() as cur:
            return self._requeue(cur, "worker_id = %s", (worker_id,), reason)

    def expire_leases(self, now: float) -> Requeued:
        with self._tx() as cur:
            return self._requeue(cur, "lease_until < %s", (now,), "its worker stopped answering")

    def _requeue(self, cur: psycopg.Cursor, where: str, args: tuple, reason: str) -> Requeued:
        requeued_jobs = failed = 0
        query = f"SELECT body FROM jobs WHERE status = 'running' AND {where} FOR UPDATE SKIP LOCKED"
        cur.execute(query, args)
        for (body,) in cur.fetchall():
            job = Job.model_validate_json(body)
            ending = interrupted(job, self.max_attempts, reason)
            if ending is None:
                self._save(cur, requeued(job))
                cur.execute("DELETE FROM job_live WHERE job_id = %s", (job.id,))
                self._log(cur, job.id, "WARN", requeued_line(reason))
                self._queued(cur, job.id)
                requeued_jobs += 1
            else:
                status, error = ending
                self._finish(cur, job, status, None, error)
                failed += status == JobStatus.FAILED
        return Requeued(requeued_jobs, failed)

    def _log(self, cur: psycopg.Cursor, job_id: str, level: LogLevel, message: str) -> None:
        cur.execute(
            "INSERT INTO job_logs (job_id, timestamp, level, message) VALUES (%s, %s, %s, %s)",
            (job_id, time.time(), level, message),
        )
        self._changed(cur, job_id)

    def add_log(self, job_id: str, level: LogLevel, message: str) -> None:
        with self._tx() as cur:
            self._log(cur, job_id, level, message)

    # --- live state

    def set_progress(self, job_id: str, stage: Stage, done: int, total: int) -> None:
        with self._tx() as cur:
            cur.execute(
                "INSERT INTO job_live (job_id, stage, done, total) VALUES (%s, %s, %s, %s)"
                " ON CONFLICT (job_id)"
                " DO UPDATE SET stage = excluded.stage, done = excluded.done, total = excluded.total",
                (job_id, stage, done, total),
            )
            self._changed(cur, job_id)

    def set_preview(self, job_id: str, preview: PreviewImage) -> None:
        meta = {k: v for k, v in vars(preview).items() if k != "data"}
        with self._tx() as cur:
            cur.execute(
                "INSERT INTO job_live (job_id, preview, preview_meta) VALUES (%s, %s, %s)"
                " ON CONFLICT (job_id)"
                " DO UPDATE SET preview = excluded.preview, preview_meta = excluded.preview_meta",
                (job_id, preview.data, json.dumps(meta)),
            )
            self._changed(cur, job_id)

    def add_image(self, job_id: str, image: FinishedImage) -> None:
        with self._tx() as cur:
            cur.execute("SELECT status FROM jobs WHERE id = %s FOR SHARE", (job_id,))
            status = cur.fetchone()
            if status is None or status[0] != JobStatus.RUNNING.value:
                return  # finished (its result has the image) or taken back meanwhile
            cur.execute("SELECT images FROM job_live WHERE job_id = %s FOR UPDATE", (job_id,))
            row = cur.fetchone()
            images = with_image(_images(row[0] if row else None), image)
            cur.execute(
                "INSERT INTO job_live (job_id, images) VALUES (%s, %s) ON CONFLICT (job_id)"
                " DO UPDATE SET images = excluded.images",
                (job_id, Jsonb([done.model_dump(mode="json") for done in images])),
            )
            self._changed(cur, job_id)

    def live(self, job_id: str) -> LiveState | None:
        with self._tx() as cur:
            cur.execute(
                "SELECT stage, done, total, preview, preview_meta, images FROM job_live WHERE job_id = %s",
                (job_id,),
            )
            row = cur.fetchone()
        if row is None:
            return None
        stage, done, total, data, meta, images = row
        preview = PreviewImage(data=bytes(data), **json.loads(meta)) if data is not None else None
        return LiveState(stage, done, total, preview, tuple(_images(images)))

    def recent(self, limit: int) -> list[Job]:
        with self._tx() as cur:
            cur.execute("SELECT body FROM jobs ORDER BY seq DESC LIMIT %s", (limit,))
            return [Job.model_validate_json(body) for (body,) in cur.fetchall()]

    def _finish(
        self,
        cur: psycopg.Cursor,
        job: Job,
        status: JobStatus,
        result: JobResult | None,
        error: JobError | None,
    ) -> None:
        now = time.time()
        done = finished(job, status, result, error, now)
        self._save(cur, done)
        cur.execute("DELETE FROM job_live WHERE job_id = %s", (job.id,))
        if status == JobStatus.CANCELLED:  # every cancelled job's log ends saying so, however it ended
            self._log(cur, job.id, "WARN", cancelled_line(error))
        if job.output.ttl_s is not None:
            cur.execute("UPDATE jobs SET expires_at = %s WHERE id = %s", (now + job.output.ttl_s, job.id))
        if job.output.webhook_url or job.output.upload_url:
            cur.execute(
                "INSERT INTO deliveries (job_id, url, next_at) VALUES (%s, %s, %s)",
                (job.id, job.output.webhook_url or job.output.upload_url, now),
            )

    def finish(
        self,
        job_id: str,
        status: JobStatus,
        result: JobResult | None = None,
        error: JobError | None = None,
        claim: Claim | None = None,
    ) -> bool:
        with self._tx() as cur:
            job = self._load(cur, job_id, lock=True)
            if job is None or job.status.finished:
                return False
            if not held_by(job, claim):
                return False  # the claim ended (the job went back to the queue): its next run finishes it
            self._finish(cur, job, status, result, error)
            return True

    def request_cancel(self, job_id: str) -> CancelOutcome:
        with self._tx() as cur:
            job = self._load(cur, job_id, lock=True)
            if job is None:
                return "missing"
            if job.status.finished:
                return "finished"
            job = job.model_copy(update={"cancel_requested": True})
            if job.status == JobStatus.QUEUED:
                self._finish(cur, job, JobStatus.CANCELLED, None, CANCELLED_BEFORE_START)
                return "cancelled"
            cur.execute(
                "UPDATE jobs SET cancel_requested = TRUE, body = %s WHERE id = %s",
                (job.model_dump_json(), job.id),
            )
            self._changed(cur, job.id)
            return "requested"

    def cancel_requested(self, job_id: str) -> bool:
        with self._tx() as cur:
            cur.execute("SELECT cancel_requested FROM jobs WHERE id = %s", (job_id,))
            row = cur.fetchone()
            return bool(row and row[0])

    # --- connection sessions

    def add_session_job(self, session_id: str, job_id: str, owner: str | None) -> None:
        with self._tx() as cur:
            cur.execute(
                "INSERT INTO session_jobs (job_id, session_id, owner, created_at) VALUES (%s, %s, %s, %s)"
                " ON CONFLICT (job_id) DO NOTHING",
                (job_id, session_id, owner, time.time()),
            )

    def session_jobs(self, session_id: str) -> list[SessionJob]:
        with self._tx() as cur:
            cur.execute(
                "SELECT job_id, owner, delivered FROM session_jobs WHERE session_id = %s ORDER BY created_at",
                (session_id,),
            )
            return [SessionJob(job_id, owner, delivered) for job_id, owner, delivered in cur.fetchall()]

    def session_delivered(self, job_id: str) -> None:
        with self._tx() as cur:
            cur.execute("UPDATE session_jobs SET delivered = TRUE WHERE job_id = %s", (job_id,))

    # --- workers

    def heartbeat(self, worker: WorkerInfo) -> None:
        with self._tx() as cur:
            cur.execute(
                "INSERT INTO workers (id, body) VALUES (%s, %s)"
                " ON CONFLICT (id) DO UPDATE SET body = excluded.body",
                (worker.id, worker.model_dump_json()),
            )

    def workers(self) -> list[WorkerInfo]:
        with self._tx() as cur:
            cur.execute("SELECT body FROM workers ORDER BY id")
            return [WorkerInfo.model_validate_json(body) for (body,) in cur.fetchall()]

    # --- change log

    def changes_after(self, position: int) -> Changes:
        """The change log, for contract parity: this store's change feed rides NOTIFY (`subscribe`), since a
        sequence number can become visible after a higher one committed by a faster transaction."""
        with self._tx() as cur:
            cur.execute("SELECT seq, job_id FROM changes WHERE seq > %s ORDER BY seq", (position,))
            rows = cur.fetchall()
        if not rows:
            return Changes(position, ())
        return Changes(rows[-1][0], tuple(dict.fromkeys(job_id for _, job_id in rows)))

    # --- retention

    def delete_expired(self, now: float, retention_s: float) -> list[Job]:
        with self._tx() as cur:
            cur.execute(
                "DELETE FROM jobs WHERE expires_at < %s OR (expires_at IS NULL AND finished_at < %s)"
                " RETURNING id, body",
                (now, now - retention_s),
            )
            rows = cur.fetchall()
            ids = [job_id for job_id, _ in rows]
            if ids:
                cur.execute("DELETE FROM job_logs WHERE job_id = ANY(%s)", (ids,))
                cur.execute("DELETE FROM job_live WHERE job_id = ANY(%s)", (ids,))
                cur.execute("DELETE FROM deliveries WHERE job_id = ANY(%s)", (ids,))
                cur.execute("DELETE FROM session_jobs WHERE job_id = ANY(%s)", (ids,))
            cur.execute("DELETE FROM changes WHERE at < %s", (now - CHANGE_LOG_KEEP_S,))
        return [Job.model_validate_json(body) for _, body in rows]

    # --- deliveries

    def claim_deliveries(self, owner: str, now: float, lease_s: float, limit: int = 20) -> list[Delivery]:
        with self._tx() as cur:
            cur.execute(
                "UPDATE deliveries SET lease_owner = %s, lease_until = %s WHERE id IN ("
                " SELECT id FROM deliveries WHERE next_at <= %s AND (lease_until IS NULL OR lease_until < %s)"
                " ORDER BY next_at LIMIT %s FOR UPDATE SKIP LOCKED)"
                " RETURNING id, job_id, attempts, parts_done, next_at",
                (owner, now + lease_s, now, now, limit),
            )
            rows = sorted(cur.fetchall(), key=lambda row: (row[4], row[0]))
        return [Delivery(*row[:4]) for row in rows]

    def delivery_part_done(self, delivery_id: int) -> None:
        with self._tx() as cur:
            cur.execute("UPDATE deliveries SET parts_done = parts_done + 1 WHERE id = %s", (delivery_id,))

    def delivery_done(self, delivery_id: int) -> None:
        with self._tx() as cur:
            cur.execute(
                "UPDATE deliveries SET attempts = attempts + 1, delivered_at = %s, next_at = NULL,"
                " lease_until = NULL WHERE id = %s",
                (time.time(), delivery_id),
            )

    def delivery_failed(self, delivery_id: int, error: str, retry_at: float | None) -> None:
        with self._tx() as cur:
            cur.execute(
                "UPDATE deliveries SET attempts = attempts + 1, last_error = %s, next_at = %s,"
                " lease_until = NULL WHERE id = %s",
                (error, retry_at, delivery_id),
            )


def _images(items: list | None) -> list[FinishedImage]:
    """The `images` column (JSONB, read back as a list) as records."""
    return [FinishedImage.model_validate(item) for item in items or ()]
