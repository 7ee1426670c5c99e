"""Job stores for contract tests: the SQLite file and PostgreSQL, behind one `StoreBackend`.

PostgreSQL runs on 127.0.0.1:5432 with trust auth on every development machine and in CI (a missing server
fails these tests; it does not skip them). Each test process creates a throwaway database with a unique
name and drops it when the session ends, so parallel runs never share tables; tests empty it between
themselves.
"""

from __future__ import annotations

import os
import sqlite3
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
from psycopg.rows import dict_row

from glm_image_server.store.contract import JobStore
from glm_image_server.store.postgres import PostgresJobStore
from glm_image_server.store.sqlite import SqliteJobStore

ADMIN_URL = os.environ.get("GLM_IMAGE_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")
TABLES = "jobs, job_logs, job_live, deliveries, changes, workers, session_jobs"


@contextmanager
def throwaway_database() -> Iterator[str]:
    """A new, empty PostgreSQL database's URL; dropped afterwards (with any connections left to it)."""
    name = f"glm_test_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class StoreBackend:
    """Opens stores on one shared database: each `open()` is another process's view of it."""

    def __init__(self, kind: str, tmp_path: Path, database_url: str | None = None) -> None:
        self.kind, self.path, self.url = kind, tmp_path / "jobs.sqlite3", database_url
        self._opened: list[JobStore] = []

    def open(self, max_attempts: int = 3) -> JobStore:
        if self.kind == "sqlite":
            store: JobStore = SqliteJobStore(self.path, max_attempts)
        else:
            store = PostgresJobStore(self.url, max_attempts, pool_size=4)
        self._opened.append(store)
        return store

    def reset(self) -> None:
        """Empty the shared PostgreSQL database (a SQLite file is new per test anyway)."""
        if self.kind == "postgres":
            self.open()  # creates the schema the first time
            with psycopg.connect(self.url, autocommit=True) as conn:
                conn.execute(f"TRUNCATE {TABLES} RESTART IDENTITY")

    def close(self) -> None:
        for store in self._opened:
            store.close()
        self._opened.clear()


def raw_rows(store: JobStore, sql: str, args: tuple = ()) -> list[dict]:
    """Rows of a query run straight on the store's database (`?` placeholders; the outbox table is called
    `webhooks` in SQLite and `deliveries` in PostgreSQL: write `{outbox}`)."""
    if isinstance(store, SqliteJobStore):
        with sqlite3.connect(store.path) as db:
            db.row_factory = sqlite3.Row
            return [dict(row) for row in db.execute(sql.format(outbox="webhooks"), args).fetchall()]
    with psycopg.connect(store.url, autocommit=True, row_factory=dict_row) as conn:
        cursor = conn.execute(sql.format(outbox="deliveries").replace("?", "%s"), args)
        return cursor.fetchall() if cursor.description else []
