"""The embedded job store: one SQLite file in WAL mode, safe across threads and processes.

A job row holds the whole Job as JSON plus the columns that queries need. Writes use BEGIN IMMEDIATE
and synchronous=FULL, so a job that was acknowledged survives a crash of the process or the machine.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .records import Job, JobError, JobResult, JobStatus, LogEntry, LogLevel
from .store import CancelOutcome, Delivery

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    status TEXT NOT NULL,
    batch_key TEXT NOT NULL,
    finished_at REAL,
    expires_at REAL,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_by_status ON jobs (status, seq);
CREATE INDEX IF NOT EXISTS jobs_by_batch ON jobs (status, batch_key, seq);
CREATE INDEX IF NOT EXISTS jobs_by_expiry ON jobs (expires_at);
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
    last_error TEXT
);
CREATE INDEX IF NOT EXISTS webhooks_due ON webhooks (next_at);
"""


class SqliteJobStore:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._local = threading.local()
        self._db().executescript(SCHEMA)

    def _db(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            self._local.db = db
        return db

    @contextmanager
    def _write(self, durable: bool = True) -> Iterator[sqlite3.Connection]:
        """A write transaction. `durable=False` skips the fsync (synchronous=NORMAL): it survives a crash
        of the process but maybe not of the machine; the next durable commit syncs it too."""
        db = self._db()
        if not durable:
            db.execute("PRAGMA synchronous=NORMAL")
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
        finally:
            if not durable:
                db.execute("PRAGMA synchronous=FULL")

    @staticmethod
    def _save(db: sqlite3.Connection, job: Job) -> None:
        db.execute(
            "UPDATE jobs SET status = ?, finished_at = ?, cancel_requested = ?, body = ? WHERE id = ?",
            (job.status.value, job.finished_at, int(job.cancel_requested), job.model_dump_json(), job.id),
        )

    @staticmethod
    def _load(db: sqlite3.Connection, job_id: str) -> Job | None:
        row = db.execute("SELECT body FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return Job.model_validate_json(row[0]) if row else None

    def create(self, job: Job) -> bool:
        with self._write() as db:
            try:
                db.execute(
                    "INSERT INTO jobs (id, status, batch_key, cancel_requested, body) VALUES (?, ?, ?, ?, ?)",
                    (
                        job.id,
                        job.status.value,
                        job.spec.batch_key,
                        int(job.cancel_requested),
                        job.model_dump_json(),
                    ),
                )
            except sqlite3.IntegrityError:
                return False
            return True

    def get(self, job_id: str) -> Job | None:
        return self._load(self._db(), job_id)

    def queue_position(self, job_id: str) -> int:
        row = (
            self._db()
            .execute(
                "SELECT COUNT(*) FROM jobs WHERE status = 'queued'"
                " AND seq < (SELECT seq FROM jobs WHERE id = ?)",
                (job_id,),
            )
            .fetchone()
        )
        return row[0]

    def oldest_queued(self) -> Job | None:
        row = (
            self._db()
            .execute("SELECT body FROM jobs WHERE status = 'queued' ORDER BY seq LIMIT 1")
            .fetchone()
        )
        return Job.model_validate_json(row[0]) if row else None

    def claim_batch(self, max_rows: int) -> list[Job]:
        with self._write() as db:
            head = db.execute(
                "SELECT batch_key FROM jobs WHERE status = 'queued' ORDER BY seq LIMIT 1"
            ).fetchone()
            if head is None:
                return []
            rows = db.execute(
                "SELECT body FROM jobs WHERE status = 'queued' AND batch_key = ? ORDER BY seq LIMIT ?",
                (head[0], max(max_rows, 1)),
            ).fetchall()
            claimed, images, now = [], 0, time.time()
            for (body,) in rows:
                job = Job.model_validate_json(body)
                if claimed and images + job.spec.num_images > max_rows:
                    continue  # too big for what is left of this batch: it heads a later one
                images += job.spec.num_images
                job = job.model_copy(
                    update={"status": JobStatus.RUNNING, "started_at": now, "attempts": job.attempts + 1}
                )
                self._save(db, job)
                claimed.append(job)
            return claimed

    def claim_next(self) -> Job | None:
        claimed = self.claim_batch(1)
        return claimed[0] if claimed else None

    def add_log(self, job_id: str, level: LogLevel, message: str) -> None:
        with self._write(durable=False) as db:  # progress lines: not worth an fsync each
            db.execute(
                "INSERT INTO job_logs (job_id, timestamp, level, message) VALUES (?, ?, ?, ?)",
                (job_id, time.time(), level, message),
            )

    def logs(self, job_id: str) -> list[LogEntry]:
        rows = self._db().execute(
            "SELECT timestamp, level, message FROM job_logs WHERE job_id = ? ORDER BY rowid", (job_id,)
        )
        return [LogEntry(timestamp=t, level=level, message=m) for t, level, m in rows]

    def _finish(
        self,
        db: sqlite3.Connection,
        job: Job,
        status: JobStatus,
        result: JobResult | None,
        error: JobError | None,
    ) -> None:
        now = time.time()
        done = job.model_copy(update={"status": status, "finished_at": now, "result": result, "error": error})
        self._save(db, done)
        if job.ttl_s is not None:
            db.execute("UPDATE jobs SET expires_at = ? WHERE id = ?", (now + job.ttl_s, job.id))
        if job.webhook_url or job.upload_url:
            db.execute(
                "INSERT INTO webhooks (job_id, url, next_at) VALUES (?, ?, ?)",
                (job.id, job.webhook_url or job.upload_url, now),
            )

    def finish(
        self, job_id: str, status: JobStatus, result: JobResult | None = None, error: JobError | None = None
    ) -> bool:
        with self._write() as db:
            job = self._load(db, job_id)
            if job is None or job.status.finished:
                return False
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
                error = JobError(kind="cancelled", message="cancelled before it started")
                self._finish(db, job, JobStatus.CANCELLED, None, error)
                return "cancelled"
            self._save(db, job)
            return "requested"

    def cancel_requested(self, job_id: str) -> bool:
        row = self._db().execute("SELECT cancel_requested FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return bool(row and row[0])

    def recover(self, max_attempts: int) -> tuple[int, int]:
        requeued = failed = 0
        with self._write() as db:
            for (body,) in db.execute("SELECT body FROM jobs WHERE status = 'running'").fetchall():
                job = Job.model_validate_json(body)
                if job.cancel_requested:
                    error = JobError(kind="cancelled", message="cancelled while the server restarted")
                    self._finish(db, job, JobStatus.CANCELLED, None, error)
                elif job.attempts >= max_attempts:
                    message = f"the server stopped during this job {job.attempts} times; giving up"
                    self._finish(db, job, JobStatus.FAILED, None, JobError(kind="internal", message=message))
                    failed += 1
                else:
                    self._save(db, job.model_copy(update={"status": JobStatus.QUEUED}))
                    requeued += 1
        return requeued, failed

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
                db.execute("DELETE FROM webhooks WHERE job_id = ?", (job.id,))
        return jobs

    def due_webhooks(self, now: float, limit: int = 20) -> list[Delivery]:
        rows = self._db().execute(
            "SELECT id, job_id, attempts, parts_done FROM webhooks"
            " WHERE next_at <= ? ORDER BY next_at LIMIT ?",
            (now, limit),
        )
        return [Delivery(*row) for row in rows]

    def webhook_delivered(self, delivery_id: int) -> None:
        with self._write() as db:
            db.execute(
                "UPDATE webhooks SET attempts = attempts + 1, delivered_at = ?, next_at = NULL WHERE id = ?",
                (time.time(), delivery_id),
            )

    def webhook_part_done(self, delivery_id: int) -> None:
        with self._write() as db:
            db.execute("UPDATE webhooks SET parts_done = parts_done + 1 WHERE id = ?", (delivery_id,))

    def webhook_failed(self, delivery_id: int, error: str, retry_at: float | None) -> None:
        with self._write() as db:
            db.execute(
                "UPDATE webhooks SET attempts = attempts + 1, last_error = ?, next_at = ? WHERE id = ?",
                (error, retry_at, delivery_id),
            )
