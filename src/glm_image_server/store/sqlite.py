"""The embedded job store: one SQLite file in WAL mode, safe across threads and processes.

A job row holds the whole Job as JSON plus the columns that queries need. Writes use BEGIN IMMEDIATE and
synchronous=FULL, so a job that was acknowledged survives a crash of the process or the machine. Worker
processes on the same machine share the file; the schema is versioned (PRAGMA user_version) and migrated
on open. Other processes on the same file hear of each change at commit through a WakeBus (wakeups.py).
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

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
from .wakeups import WakeBus

SCHEMA_VERSION = 4
SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    status TEXT NOT NULL,
    batch_key TEXT NOT NULL,
    finished_at REAL,
    expires_at REAL,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    worker_id TEXT,
    lease_until REAL,
    priority INTEGER NOT NULL DEFAULT 0,
    start_by REAL,
    body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_by_status ON jobs (status, seq);
CREATE INDEX IF NOT EXISTS jobs_in_order ON jobs (status, priority, seq);
CREATE INDEX IF NOT EXISTS jobs_by_batch ON jobs (status, batch_key, priority, seq);
CREATE INDEX IF NOT EXISTS jobs_by_start ON jobs (start_by) WHERE start_by IS NOT NULL;
CREATE INDEX IF NOT EXISTS jobs_by_expiry ON jobs (expires_at);
CREATE INDEX IF NOT EXISTS jobs_by_worker ON jobs (worker_id, status);
CREATE TABLE IF NOT EXISTS job_logs (
    job_id TEXT NOT NULL,
    timestamp REAL NOT NULL,
    level TEXT NOT NULL,
    message TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS job_logs_by_job ON job_logs (job_id);
CREATE TABLE IF NOT EXISTS webhooks (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id TEXT NOT NULL,
    url TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    parts_done INTEGER NOT NULL DEFAULT 0,
    next_at REAL,
    delivered_at REAL,
    last_error TEXT,
    lease_owner TEXT,
    lease_until REAL
);
CREATE INDEX IF NOT EXISTS webhooks_due ON webhooks (next_at);
CREATE TABLE IF NOT EXISTS changes (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id TEXT NOT NULL,
    at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS job_live (
    job_id TEXT PRIMARY KEY,
    stage TEXT,
    done INTEGER NOT NULL DEFAULT 0,
    total INTEGER NOT NULL DEFAULT 0,
    preview BLOB,
    preview_meta TEXT,
    images TEXT
);
CREATE TABLE IF NOT EXISTS session_jobs (
    job_id TEXT PRIMARY KEY,
    session_id TEXT NOT NULL,
    owner TEXT,
    delivered INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS session_jobs_by_session ON session_jobs (session_id);
CREATE TABLE IF NOT EXISTS workers (
    id TEXT PRIMARY KEY,
    body TEXT NOT NULL
);
"""
CHANGE_LOG_KEEP_S = 300.0  # the change log only wakes waiters; older rows are pruned
LIVE_WAKE_S = 0.05  # a live write (progress, logs, previews) wakes other processes this late at most


def _migrate_v1_body(body: str) -> str:
    """A version-1 job (`spec` + loose delivery fields) in the version-2 shape (`request` + `output`)."""
    job = json.loads(body)
    spec = job.pop("spec")
    job["request"] = {
        "prompt": spec["prompt"],
        "width": spec["width"],
        "height": spec["height"],
        "num_inference_steps": spec["num_inference_steps"],
        "guidance_scale": max(1.0, spec["guidance_scale"]),
        "seed": spec["seed"],
        "num_images": spec.get("num_images", 1),
        "references": spec.get("image_urls", []),
    }
    job["output"] = {
        "format": spec.get("output_format", "jpeg"),
        "quality": spec.get("output_quality", 95),
        "safety_check": spec.get("safety_check", False),
        "expand_prompt": spec.get("expand_prompt", False),
        "webhook_url": job.pop("webhook_url", None),
        "upload_url": job.pop("upload_url", None),
        "ttl_s": job.pop("ttl_s", None),
    }
    if job.get("result"):
        job["result"].pop("seed", None)
    return json.dumps(job)


class SqliteJobStore:
    def __init__(self, path: Path, max_attempts: int = 3) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path, self.max_attempts = path, max_attempts
        self._local = threading.local()
        self._bus = WakeBus(path)
        self._migrate()

    def _migrate(self) -> None:
        with self._write() as db:
            version = db.execute("PRAGMA user_version").fetchone()[0]
            tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            if version < 2 and "jobs" in tables:
                db.execute("ALTER TABLE jobs ADD COLUMN worker_id TEXT")
                db.execute("ALTER TABLE jobs ADD COLUMN lease_until REAL")
                db.execute("ALTER TABLE webhooks ADD COLUMN lease_owner TEXT")
                db.execute("ALTER TABLE webhooks ADD COLUMN lease_until REAL")
                for seq, body in db.execute("SELECT seq, body FROM jobs").fetchall():
                    db.execute("UPDATE jobs SET body = ? WHERE seq = ?", (_migrate_v1_body(body), seq))
                # Version 1 requeued running jobs at startup; here they hold an expired lease instead.
                db.execute("UPDATE jobs SET lease_until = 0 WHERE status = 'running'")
            if version < 4 and "jobs" in tables:  # priorities and start deadlines; finished images
                db.execute("ALTER TABLE jobs ADD COLUMN priority INTEGER NOT NULL DEFAULT 0")
                db.execute("ALTER TABLE jobs ADD COLUMN start_by REAL")
                db.execute("DROP INDEX IF EXISTS jobs_by_batch")  # now ordered by priority too
            if version < 4 and "job_live" in tables:
                db.execute("ALTER TABLE job_live ADD COLUMN images TEXT")
            for statement in SCHEMA.split(";"):
                if statement.strip():
                    db.execute(statement)
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def _db(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            self._local.db = db
        return db

    @contextmanager
    def _write(self, durable: bool = True, live: bool = False) -> Iterator[sqlite3.Connection]:
        """A write transaction. `durable=False` skips the fsync (synchronous=NORMAL): it survives a crash
        of the process but maybe not of the machine; the next durable commit syncs it too. `live`: a
        running job's progress, logs or previews, which other processes hear of a little later (_announce)."""
        db = self._db()
        if not durable:
            db.execute("PRAGMA synchronous=NORMAL")
        try:
            db.execute("BEGIN IMMEDIATE")
            self._local.news = {}
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
        finally:
            if not durable:
                db.execute("PRAGMA synchronous=FULL")
        self._announce(live)

    def _note(self, channel: Channel, job_id: str) -> None:
        """Announce `job_id` on `channel` once this transaction commits (each once)."""
        self._local.news[channel, job_id] = None

    def _announce(self, live: bool) -> None:
        """After COMMIT: wake the subscribers of every process to what the transaction changed; at once,
        or within LIVE_WAKE_S for live writes, so that a running job's many small writes wake a status
        stream a few times a second rather than once each."""
        news, self._local.news = self._local.news, {}
        for channel, job_id in news:
            self._bus.publish(channel, job_id, LIVE_WAKE_S if live else 0.0)

    def _changed(self, db: sqlite3.Connection, job_id: str) -> None:
        db.execute("INSERT INTO changes (job_id, at) VALUES (?, ?)", (job_id, time.time()))
        self._note("changes", job_id)

    def _save(self, db: sqlite3.Connection, job: Job, lease_until: float | None = None) -> None:
        db.execute(
            "UPDATE jobs SET status = ?, finished_at = ?, cancel_requested = ?, worker_id = ?,"
            " lease_until = ?, start_by = ?, body = ? WHERE id = ?",
            (
                job.status.value,
                job.finished_at,
                int(job.cancel_requested),
                job.worker_id,
                lease_until,
                job.start_by,
                job.model_dump_json(),
                job.id,
            ),
        )
        self._changed(db, job.id)

    @staticmethod
    def _load(db: sqlite3.Connection, job_id: str) -> Job | None:
        row = db.execute("SELECT body FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return Job.model_validate_json(row[0]) if row else None

    # --- submitting and reading

    def create(self, job: Job) -> bool:
        with self._write() as db:
            try:
                db.execute(
                    "INSERT INTO jobs (id, status, batch_key, cancel_requested, priority, start_by, body)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (
                        job.id,
                        job.status.value,
                        job.request.batch_key,
                        int(job.cancel_requested),
                        rank(job),
                        job.start_by,
                        job.model_dump_json(),
                    ),
                )
            except sqlite3.IntegrityError:
                return False
            self._changed(db, job.id)
            self._note("queued", job.id)
            return True

    def get(self, job_id: str) -> Job | None:
        return self._load(self._db(), job_id)

    def queue_position(self, job_id: str) -> int:
        query = (
            "SELECT COUNT(*) FROM jobs q, jobs me WHERE me.id = ? AND q.status = 'queued'"
            " AND (q.priority < me.priority OR (q.priority = me.priority AND q.seq < me.seq))"
        )
        return self._db().execute(query, (job_id,)).fetchone()[0]

    def oldest_queued(self) -> Job | None:
        query = "SELECT body FROM jobs WHERE status = 'queued' ORDER BY priority, seq LIMIT 1"
        row = self._db().execute(query).fetchone()
        return Job.model_validate_json(row[0]) if row else None

    def queued_count(self) -> int:
        return self._db().execute("SELECT COUNT(*) FROM jobs WHERE status = 'queued'").fetchone()[0]

    def unfinished_count(self, owner: str) -> int:
        query = (
            "SELECT COUNT(*) FROM jobs WHERE status IN ('queued', 'running')"
            " AND json_extract(body, '$.owner') = ?"
        )
        return self._db().execute(query, (owner,)).fetchone()[0]

    def queue_depth(self) -> list[tuple[str, int, int, float]]:
        rows = self._db().execute(
            "SELECT batch_key, COUNT(*), SUM(json_extract(body, '$.request.num_images')),"
            " MIN(json_extract(body, '$.created_at')) FROM jobs WHERE status = 'queued'"
            " GROUP BY batch_key ORDER BY batch_key"
        )
        return [(key, jobs, int(images), oldest) for key, jobs, images, oldest in rows]

    def logs(self, job_id: str) -> list[LogEntry]:
        rows = self._db().execute(
            "SELECT timestamp, level, message FROM job_logs WHERE job_id = ? ORDER BY rowid", (job_id,)
        )
        return [LogEntry(timestamp=t, level=level, message=m) for t, level, m in rows]

    # --- running

    def claim_batch(self, worker_id: str, max_images: int, lease_s: float) -> list[Job]:
        # Not durable: a claim the machine's crash loses leaves its jobs queued, which is where a lost
        # worker's jobs go anyway (they run again with their seeds); the job's next durable write syncs it.
        with self._write(durable=False) as db:
            now = time.time()
            self._requeue(db, "lease_until < ?", (now,), "its worker stopped answering")
            self._expire_starts(db, now)
            head = db.execute(
                "SELECT batch_key, priority FROM jobs WHERE status = 'queued' ORDER BY priority, seq LIMIT 1"
            ).fetchone()
            if head is None:
                return []
            rows = db.execute(
                "SELECT body FROM jobs WHERE status = 'queued' AND batch_key = ? AND priority = ?"
                " ORDER BY seq LIMIT ?",
                (*head, max(max_images, 1)),
            ).fetchall()
            candidates = [Job.model_validate_json(body) for (body,) in rows]
            claimed = [running(job, worker_id, now) for job in batch(candidates, max_images)]
            for job in claimed:
                self._save(db, job, lease_until=now + lease_s)
            return claimed

    def expire_start_deadlines(self, now: float) -> int:
        with self._write() as db:
            return self._expire_starts(db, now)

    def _expire_starts(self, db: sqlite3.Connection, now: float) -> int:
        rows = db.execute("SELECT body FROM jobs WHERE status = 'queued' AND start_by < ?", (now,)).fetchall()
        for (body,) in rows:
            job = Job.model_validate_json(body)
            error = start_missed(job)
            self._finish(db, job, JobStatus.FAILED, None, error)
            self._log(db, job.id, "ERROR", error.message)
        return len(rows)

    def renew(self, worker_id: str, lease_s: float) -> int:
        with self._write(durable=False) as db:
            cursor = db.execute(
                "UPDATE jobs SET lease_until = ? WHERE worker_id = ? AND status = 'running'",
                (time.time() + lease_s, worker_id),
            )
            return cursor.rowcount

    def release(self, worker_id: str, reason: str) -> Requeued:
        with self._write() as db:
            return self._requeue(db, "worker_id = ?", (worker_id,), reason)

    def expire_leases(self, now: float) -> Requeued:
        with self._write() as db:
            return self._requeue(db, "lease_until < ?", (now,), "its worker stopped answering")

    def _requeue(self, db: sqlite3.Connection, where: str, args: tuple, reason: str) -> Requeued:
        requeued_jobs = failed = 0
        query = f"SELECT body FROM jobs WHERE status = 'running' AND {where}"
        for (body,) in db.execute(query, args).fetchall():
            job = Job.model_validate_json(body)
            ending = interrupted(job, self.max_attempts, reason)
            if ending is None:
                self._save(db, requeued(job))
                db.execute("DELETE FROM job_live WHERE job_id = ?", (job.id,))
                self._log(db, job.id, "WARN", requeued_line(reason))
                self._note("queued", job.id)
                requeued_jobs += 1
            else:
                status, error = ending
                self._finish(db, job, status, None, error)
                failed += status == JobStatus.FAILED
        return Requeued(requeued_jobs, failed)

    def _log(self, db: sqlite3.Connection, job_id: str, level: LogLevel, message: str) -> None:
        db.execute(
            "INSERT INTO job_logs (job_id, timestamp, level, message) VALUES (?, ?, ?, ?)",
            (job_id, time.time(), level, message),
        )
        self._changed(db, job_id)

    def add_log(self, job_id: str, level: LogLevel, message: str) -> None:
        with self._write(durable=False, live=True) as db:  # progress lines: not worth an fsync each
            self._log(db, job_id, level, message)

    # --- live state

    def set_progress(self, job_id: str, stage: Stage, done: int, total: int) -> None:
        with self._write(durable=False, live=True) as db:
            db.execute(
                "INSERT INTO job_live (job_id, stage, done, total) VALUES (?, ?, ?, ?) ON CONFLICT (job_id)"
                " DO UPDATE SET stage = excluded.stage, done = excluded.done, total = excluded.total",
                (job_id, stage, done, total),
            )
            self._changed(db, job_id)

    def set_preview(self, job_id: str, preview: PreviewImage) -> None:
        meta = {k: v for k, v in vars(preview).items() if k != "data"}
        with self._write(durable=False, live=True) as db:
            db.execute(
                "INSERT INTO job_live (job_id, preview, preview_meta) VALUES (?, ?, ?) ON CONFLICT (job_id)"
                " DO UPDATE SET preview = excluded.preview, preview_meta = excluded.preview_meta",
                (job_id, preview.data, json.dumps(meta)),
            )
            self._changed(db, job_id)

    def add_image(self, job_id: str, image: FinishedImage) -> None:
        with self._write() as db:  # durable: the image's URL may be handed out at once
            status = db.execute("SELECT status FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if status is None or status[0] != JobStatus.RUNNING.value:
                return  # finished (its result has the image) or taken back meanwhile
            row = db.execute("SELECT images FROM job_live WHERE job_id = ?", (job_id,)).fetchone()
            images = with_image(_images(row[0] if row else None), image)
            db.execute(
                "INSERT INTO job_live (job_id, images) VALUES (?, ?) ON CONFLICT (job_id)"
                " DO UPDATE SET images = excluded.images",
                (job_id, _images_json(images)),
            )
            self._changed(db, job_id)

    def live(self, job_id: str) -> LiveState | None:
        row = (
            self._db()
            .execute(
                "SELECT stage, done, total, preview, preview_meta, images FROM job_live WHERE job_id = ?",
                (job_id,),
            )
            .fetchone()
        )
        if row is None:
            return None
        stage, done, total, data, meta, images = row
        preview = PreviewImage(data=bytes(data), **json.loads(meta)) if data is not None else None
        return LiveState(stage, done, total, preview, tuple(_images(images)))

    def recent(self, limit: int) -> list[Job]:
        rows = self._db().execute("SELECT body FROM jobs ORDER BY seq DESC LIMIT ?", (limit,))
        return [Job.model_validate_json(body) for (body,) in rows]

    def _finish(
        self,
        db: sqlite3.Connection,
        job: Job,
        status: JobStatus,
        result: JobResult | None,
        error: JobError | None,
    ) -> None:
        now = time.time()
        done = finished(job, status, result, error, now)
        self._save(db, done)
        db.execute("DELETE FROM job_live WHERE job_id = ?", (job.id,))
        if status == JobStatus.CANCELLED:  # every cancelled job's log ends saying so, however it ended
            self._log(db, job.id, "WARN", cancelled_line(error))
        if job.output.ttl_s is not None:
            db.execute("UPDATE jobs SET expires_at = ? WHERE id = ?", (now + job.output.ttl_s, job.id))
        if job.output.webhook_url or job.output.upload_url:
            db.execute(
                "INSERT INTO webhooks (job_id, url, next_at) VALUES (?, ?, ?)",
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
        with self._write() as db:
            job = self._load(db, job_id)
            if job is None or job.status.finished:
                return False
            if not held_by(job, claim):
                return False  # the claim ended (the job went back to the queue): its next run finishes it
            self._finish(db, job, status, result, error)
            return True

    def request_cancel(self, job_id: str) -> CancelOutcome:
        with self._write() as db:
            job = self._load(db, job_id)
            if job is None:
                return "missing"
            if job.status.finished:
                return "finished"
            job = job.model_copy(update={"cancel_requested": True})
            if job.status == JobStatus.QUEUED:
                self._finish(db, job, JobStatus.CANCELLED, None, CANCELLED_BEFORE_START)
                return "cancelled"
            db.execute(
                "UPDATE jobs SET cancel_requested = 1, body = ? WHERE id = ?", (job.model_dump_json(), job.id)
            )
            self._changed(db, job.id)
            return "requested"

    def cancel_requested(self, job_id: str) -> bool:
        row = self._db().execute("SELECT cancel_requested FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return bool(row and row[0])

    # --- connection sessions

    def add_session_job(self, session_id: str, job_id: str, owner: str | None) -> None:
        with self._write() as db:
            db.execute(
                "INSERT INTO session_jobs (job_id, session_id, owner) VALUES (?, ?, ?)"
                " ON CONFLICT (job_id) DO NOTHING",
                (job_id, session_id, owner),
            )

    def session_jobs(self, session_id: str) -> list[SessionJob]:
        rows = self._db().execute(
            "SELECT job_id, owner, delivered FROM session_jobs WHERE session_id = ? ORDER BY rowid",
            (session_id,),
        )
        return [SessionJob(job_id, owner, bool(delivered)) for job_id, owner, delivered in rows]

    def session_delivered(self, job_id: str) -> None:
        with self._write(durable=False) as db:
            db.execute("UPDATE session_jobs SET delivered = 1 WHERE job_id = ?", (job_id,))

    # --- workers

    def heartbeat(self, worker: WorkerInfo) -> None:
        with self._write(durable=False) as db:
            db.execute(
                "INSERT INTO workers (id, body) VALUES (?, ?)"
                " ON CONFLICT (id) DO UPDATE SET body = excluded.body",
                (worker.id, worker.model_dump_json()),
            )

    def workers(self) -> list[WorkerInfo]:
        rows = self._db().execute("SELECT body FROM workers ORDER BY id")
        return [WorkerInfo.model_validate_json(body) for (body,) in rows]

    # --- change log

    def changes_after(self, position: int) -> Changes:
        db = self._db()
        rows = db.execute(
            "SELECT seq, job_id FROM changes WHERE seq > ? ORDER BY seq", (position,)
        ).fetchall()
        if not rows:
            return Changes(position, ())
        return Changes(rows[-1][0], tuple(dict.fromkeys(job_id for _, job_id in rows)))

    def subscribe(self, channel: Channel, callback: Callable[[str], None]) -> bool:
        return self._bus.subscribe(channel, callback)

    def close(self) -> None:
        self._bus.close()
        db = getattr(self._local, "db", None)
        if db is not None:
            db.close()
            self._local.db = None

    # --- retention

    def delete_expired(self, now: float, retention_s: float) -> list[Job]:
        with self._write() as db:
            rows = db.execute(
                "SELECT body FROM jobs WHERE expires_at < ? OR (expires_at IS NULL AND finished_at < ?)",
                (now, now - retention_s),
            ).fetchall()
            jobs = [Job.model_validate_json(body) for (body,) in rows]
            for job in jobs:
                db.execute("DELETE FROM jobs WHERE id = ?", (job.id,))
                db.execute("DELETE FROM job_logs WHERE job_id = ?", (job.id,))
                db.execute("DELETE FROM job_live WHERE job_id = ?", (job.id,))
                db.execute("DELETE FROM webhooks WHERE job_id = ?", (job.id,))
                db.execute("DELETE FROM session_jobs WHERE job_id = ?", (job.id,))
            db.execute("DELETE FROM changes WHERE at < ?", (now - CHANGE_LOG_KEEP_S,))
        return jobs

    # --- deliveries

    def claim_deliveries(self, owner: str, now: float, lease_s: float, limit: int = 20) -> list[Delivery]:
        due = (
            "SELECT id, job_id, attempts, parts_done FROM webhooks WHERE next_at <= ?"
            " AND (lease_until IS NULL OR lease_until < ?) ORDER BY next_at LIMIT ?"
        )
        if self._db().execute(due, (now, now, 1)).fetchone() is None:
            return []  # nothing due: no write lock (the sender looks after every change a worker makes)
        with self._write() as db:
            rows = db.execute(due, (now, now, limit)).fetchall()
            for row in rows:
                db.execute(
                    "UPDATE webhooks SET lease_owner = ?, lease_until = ? WHERE id = ?",
                    (owner, now + lease_s, row[0]),
                )
        return [Delivery(*row) for row in rows]

    def delivery_part_done(self, delivery_id: int) -> None:
        with self._write() as db:
            db.execute("UPDATE webhooks SET parts_done = parts_done + 1 WHERE id = ?", (delivery_id,))

    def delivery_done(self, delivery_id: int) -> None:
        with self._write() as db:
            db.execute(
                "UPDATE webhooks SET attempts = attempts + 1, delivered_at = ?, next_at = NULL,"
                " lease_until = NULL WHERE id = ?",
                (time.time(), delivery_id),
            )

    def delivery_failed(self, delivery_id: int, error: str, retry_at: float | None) -> None:
        with self._write() as db:
            db.execute(
                "UPDATE webhooks SET attempts = attempts + 1, last_error = ?, next_at = ?, lease_until = NULL"
                " WHERE id = ?",
                (error, retry_at, delivery_id),
            )


def _images(text: str | None) -> list[FinishedImage]:
    return [FinishedImage.model_validate(item) for item in json.loads(text)] if text else []


def _images_json(images: list[FinishedImage]) -> str:
    return json.dumps([image.model_dump(mode="json") for image in images])
