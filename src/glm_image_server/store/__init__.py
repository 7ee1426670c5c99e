"""The job store: the contract every state change of a job goes through (contract.py) and its SQL
implementations. `open_store` picks one from the settings."""

from __future__ import annotations

from ..config import Settings
from .contract import JobStore


def open_store(settings: Settings) -> JobStore:
    """PostgreSQL when a database URL is set (a fleet), else the SQLite file in the data directory."""
    if settings.database_url:
        from .postgres import PostgresJobStore

        return PostgresJobStore(settings.database_url, settings.max_job_attempts, settings.database_pool_size)
    from .sqlite import SqliteJobStore

    return SqliteJobStore(settings.database_path, settings.max_job_attempts)
