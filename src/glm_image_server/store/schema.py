"""The job store's tables, one definition for SQLite and PostgreSQL (SQLAlchemy Core). A job row holds the
Job as JSON (`body`) and a copy of every field a query uses (`job_row`); live state (changing many times a
second) sits apart. One naming convention, so Alembic can alter them and no name clashes with a legacy
table's. AUTOINCREMENT on SQLite where a reused key would mislead (queue order, change positions)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Column, Index, MetaData, Table, false
from sqlalchemy.types import BigInteger, Boolean, Double, Integer, LargeBinary, Text

from ..core.job import Job
from ..core.transitions import PRIORITY_RANK

NAMING = {"ix": "ix_%(table_name)s_%(column_0_N_name)s", "uq": "uq_%(table_name)s_%(column_0_name)s"}
metadata = MetaData(naming_convention={**NAMING, "pk": "pk_%(table_name)s"})
Serial = BigInteger().with_variant(Integer, "sqlite")  # SQLite: INTEGER PRIMARY KEY, the rowid
Time = Double  # seconds since the epoch


def _indexes(table: Table, *specs: str) -> Table:
    """`table` with an index on each space-separated list of columns."""
    for spec in specs:
        Index(None, *(table.c[name] for name in spec.split()))
    return table


jobs = Table(
    "jobs",
    metadata,
    Column("seq", Serial, primary_key=True),  # queue order within a priority
    Column("id", Text, nullable=False, unique=True),
    Column("status", Text, nullable=False),
    Column("batch_key", Text, nullable=False),
    Column("owner", Text),
    Column("num_images", Integer, nullable=False),
    Column("created_at", Time, nullable=False),
    Column("finished_at", Time),
    Column("expires_at", Time),
    Column("cancel_requested", Boolean, nullable=False, server_default=false()),
    Column("worker_id", Text),
    Column("lease_until", Time),
    Column("priority", Integer, nullable=False, server_default="0"),  # core.transitions.PRIORITY_RANK
    Column("start_by", Time),
    Column("stage", Text, nullable=False, server_default="prior"),  # core.job.JobStage
    Column("handoff", LargeBinary),  # core.handoff.Handoff's bytes while the job waits for or runs its decode
    Column("body", Text, nullable=False),
    sqlite_autoincrement=True,
)
_indexes(jobs, "status priority seq", "status batch_key priority seq", "status start_by")
_indexes(jobs, "status lease_until", "worker_id status", "owner status", "expires_at", "finished_at")

job_logs = Table(
    "job_logs",
    metadata,
    Column("id", Serial, primary_key=True),
    Column("job_id", Text, nullable=False),
    Column("timestamp", Time, nullable=False),
    Column("level", Text, nullable=False),
    Column("message", Text, nullable=False),
)
_indexes(job_logs, "job_id id")

deliveries = Table(  # the outbox: webhook POSTs and upload PUTs of finished jobs
    "deliveries",
    metadata,
    Column("id", Serial, primary_key=True),
    Column("job_id", Text, nullable=False),
    Column("url", Text, nullable=False),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("parts_done", Integer, nullable=False, server_default="0"),
    Column("next_at", Time),  # due then; NULL: delivered or given up
    Column("delivered_at", Time),
    Column("last_error", Text),
    Column("lease_owner", Text),
    Column("lease_until", Time),
)
_indexes(deliveries, "next_at", "job_id")

changes = Table(  # the change log API processes tail; rows older than a few minutes are pruned
    "changes",
    metadata,
    Column("seq", Serial, primary_key=True),
    Column("job_id", Text, nullable=False),
    Column("at", Time, nullable=False),
    sqlite_autoincrement=True,
)
_indexes(changes, "at")

job_live = Table(
    "job_live",
    metadata,
    Column("job_id", Text, primary_key=True),
    Column("stage", Text),
    Column("done", Integer, nullable=False, server_default="0"),
    Column("total", Integer, nullable=False, server_default="0"),
    Column("preview", LargeBinary),
    Column("preview_meta", Text),  # JSON: the PreviewImage's fields but its bytes
    Column("images", Text),  # JSON: the FinishedImages so far
)

session_jobs = Table(  # jobs submitted on a connection session (Runware's WebSocket)
    "session_jobs",
    metadata,
    Column("seq", Serial, primary_key=True),  # submission order
    Column("job_id", Text, nullable=False, unique=True),  # a job stays with its first session
    Column("session_id", Text, nullable=False),
    Column("owner", Text),
    Column("delivered", Boolean, nullable=False, server_default=false()),
)
_indexes(session_jobs, "session_id seq")

workers = Table(
    "workers", metadata, Column("id", Text, primary_key=True), Column("body", Text, nullable=False)
)
JOB_TABLES = (job_logs, job_live, deliveries, session_jobs)  # rows that go when their job goes


def job_row(job: Job) -> dict[str, Any]:
    """The jobs row of a Job: its JSON and a copy of every field a query needs."""
    ttl, done = job.output.ttl_s, job.finished_at
    return {
        "id": job.id,
        "status": job.status.value,
        "batch_key": job.request.batch_key,
        "owner": job.owner,
        "num_images": job.request.num_images,
        "created_at": job.created_at,
        "finished_at": done,
        "expires_at": done + ttl if done is not None and ttl is not None else None,
        "cancel_requested": job.cancel_requested,
        "worker_id": job.worker_id,
        "priority": PRIORITY_RANK[job.priority],
        "start_by": job.start_by,
        "stage": job.stage,
        "body": job.model_dump_json(),
    }
