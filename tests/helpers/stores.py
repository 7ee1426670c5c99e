"""Job stores for contract tests: the SQLite file and PostgreSQL, behind one `StoreBackend`.

PostgreSQL runs on 127.0.0.1:5432 with trust auth on every development machine and in CI (a missing server
fails these tests; it does not skip them). Each test process creates a throwaway database with a unique
name and drops it when the session ends, so parallel runs never share tables; tests empty it between
themselves.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg

from glm_image_server.store.schema import metadata
from glm_image_server.store.sql import SqlJobStore

ADMIN_URL = os.environ.get("GLM_IMAGE_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")
TABLES = ", ".join(metadata.tables)  # the store's tables (not alembic_version)


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
        self._opened: list[SqlJobStore] = []

    def open(self, max_attempts: int = 3) -> SqlJobStore:
        url = f"sqlite:///{self.path}" if self.kind == "sqlite" else self.url
        store = SqlJobStore(url, max_attempts, pool_size=4)
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


def load_postgres_dump(url: str, dump: Path) -> None:
    """Run a `pg_dump` script (its psql meta-commands, such as `\\restrict`, left out) on `url`."""
    sql = "\n".join(line for line in dump.read_text().splitlines() if not line.startswith("\\"))
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql)


def sqlite_store(path: Path, max_attempts: int = 3) -> SqlJobStore:
    """The store on a SQLite file (made, or migrated, on open)."""
    return SqlJobStore(f"sqlite:///{path}", max_attempts)


def raw_rows(store: SqlJobStore, sql: str, args: tuple = ()) -> list[dict]:
    """Rows of a query run straight on the store's database (`?` placeholders)."""
    if store.engine.dialect.paramstyle != "qmark":
        sql = sql.replace("?", "%s")
    with store.engine.begin() as conn:
        result = conn.exec_driver_sql(sql, args)
        return [dict(row._mapping) for row in result] if result.returns_rows else []
