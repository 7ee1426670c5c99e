"""The job store: the contract every state change of a job goes through (contract.py), its tables
(schema.py), its one SQL implementation for SQLite and PostgreSQL (sql.py, with what differs between
them in dialects.py) and its Alembic migrations (migrations/). `open_store` opens it from the settings."""

from __future__ import annotations

from ..config import Settings
from .sql import SqlJobStore


def open_store(settings: Settings) -> SqlJobStore:
    """PostgreSQL when a database URL is set (a fleet), else the SQLite file in the data directory.
    The store is a `JobStore` and a `SessionStore` (contract.py)."""
    url = settings.database_url or f"sqlite:///{settings.data_dir / 'jobs.sqlite3'}"
    return SqlJobStore(url, settings.max_job_attempts, settings.database_pool_size)
