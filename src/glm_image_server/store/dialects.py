"""What truly differs between SQLite and PostgreSQL under the one store (sql.py), and nothing else:
transactions (SQLite: one WAL file per box, writes BEGIN IMMEDIATE and fsync unless `durable=False`;
PostgreSQL: a pinged pool, reads autocommit), `skip_locked` (PostgreSQL only), wake-ups (NOTIFY/LISTEN;
SQLite: the wake bus of wakeups.py, or readers poll the change log) and the locks for migrating once and
counting queue caps one submission at a time (advisory locks; SQLite's write lock)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from sqlalchemy import Connection, Engine, Executable, create_engine, event, make_url, text
from sqlalchemy.dialects import sqlite

from .contract import Channel
from .wakeups import WakeBus

log = logging.getLogger(__name__)
Notice = tuple[Channel, str]  # (channel, job id)
CHANNELS: dict[Channel, str] = {"changes": "glm_image_changes", "queued": "glm_image_queued"}
Lock = Literal["schema", "admission"]
LOCKS: dict[Lock, int] = {"schema": 0x61_6D_67_6C, "admission": 0x61_64_6D_74}  # pg_advisory_xact_lock keys
# PostgreSQL: a dropped connection is replaced, not handed out; a new one may take 2 s, a free one 10 s.
POOL = {"pool_pre_ping": True, "pool_timeout": 10, "connect_args": {"connect_timeout": 2}}
LIVE_WAKE_S = 0.05  # a live write (progress, logs, previews) wakes other processes this late at most


@dataclass
class Tx:
    """A write transaction and the notices it makes (sent at commit)."""

    conn: Connection
    notices: dict[Notice, None]

    def run(self, statement: Executable, params: Any = None) -> Any:
        return self.conn.execute(statement, params)

    def changed(self, job_id: str, channel: Channel = "changes") -> None:
        self.notices[(channel, job_id)] = None


class Dialect:
    """The seam, with SQLite's behaviour: `write` is one transaction, committed when the block ends."""

    insert: Callable[..., Any] = staticmethod(sqlite.insert)  # INSERT with ON CONFLICT

    def __init__(self, url: str, pool_size: int) -> None:
        self.path = Path(make_url(url).database or "")  # the file (the wake bus's key)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.engine: Engine = create_engine(
            url,
            pool_size=pool_size,
            max_overflow=-1,  # a connection for each thread that asks; pool_size of them are kept
            connect_args={"check_same_thread": False, "timeout": 30},
        )

        @event.listens_for(self.engine, "connect")
        def connected(dbapi_connection: Any, _record: object) -> None:
            dbapi_connection.isolation_level = None  # no implicit BEGIN: reads autocommit, writes say BEGIN
            dbapi_connection.execute("PRAGMA journal_mode=WAL")

        self.bus = WakeBus(self.path)

    def read(self) -> AbstractContextManager[Connection]:
        return self.engine.connect()

    @contextmanager
    def write(
        self, durable: bool = True, notices: Iterable[Notice] = (), live: bool = False
    ) -> Iterator[Connection]:
        """A transaction, committed when the block ends; then its `notices` go out: at once, or within
        LIVE_WAKE_S for a running job's `live` writes."""
        with self.engine.connect() as conn:
            raw = conn.connection.driver_connection
            raw.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
            raw.execute("BEGIN IMMEDIATE")  # the driver's commit or rollback ends it
            with conn.begin():
                yield conn
        for channel, job_id in notices:
            self.bus.publish(channel, job_id, LIVE_WAKE_S if live else 0.0)

    def lock(self, conn: Connection, what: Lock) -> None:
        """One migrator, or one capped creation, at a time (SQLite: BEGIN IMMEDIATE holds it already)."""

    def subscribe(self, channel: Channel, callback: Callable[[str], None]) -> bool:
        return self.bus.subscribe(channel, callback)  # False: readers tail the change log (`changes_after`)

    def close(self) -> None:
        self.bus.close()
        self.engine.dispose()


class PostgresDialect(Dialect):
    """Imports psycopg and SQLAlchemy's PostgreSQL dialect only when used (a one-box server needs neither)."""

    def __init__(self, url: str, pool_size: int) -> None:
        from sqlalchemy.dialects import postgresql

        self.insert, parsed = postgresql.insert, make_url(url)
        self.conninfo = parsed.set(drivername="postgresql").render_as_string(hide_password=False)
        driver = parsed.set(drivername="postgresql+psycopg")
        self.engine = create_engine(driver, pool_size=pool_size, max_overflow=0, **POOL)
        self._notify = text("SELECT pg_notify(:channel, :job_id)")
        self._subscribers: dict[Channel, list[Callable[[str], None]]] = {"changes": [], "queued": []}
        self._listener: threading.Thread | None = None
        self._closing, self._listening = threading.Event(), threading.Event()

    def read(self) -> AbstractContextManager[Connection]:
        return self.engine.connect().execution_options(isolation_level="AUTOCOMMIT")

    @contextmanager
    def write(
        self, durable: bool = True, notices: Iterable[Notice] = (), live: bool = False
    ) -> Iterator[Connection]:
        with self.engine.begin() as conn:
            yield conn
            if params := [{"channel": CHANNELS[channel], "job_id": job} for channel, job in notices]:
                conn.execute(self._notify, params)  # NOTIFY goes out with the commit

    def lock(self, conn: Connection, what: Lock) -> None:
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": LOCKS[what]})

    def subscribe(self, channel: Channel, callback: Callable[[str], None]) -> bool:
        """Returns once notifications flow (or after 10 s of trying; they flow once it connects)."""
        self._subscribers[channel].append(callback)
        if self._listener is None:
            self._listener = threading.Thread(target=self._listen, name="pg-listen", daemon=True)
            self._listener.start()
        self._listening.wait(10)
        return True

    def close(self) -> None:
        self._closing.set()
        if self._listener is not None:
            self._listener.join(5)
        self.engine.dispose()

    def _emit(self, channel: Channel, job_id: str) -> None:
        for callback in tuple(self._subscribers[channel]):
            try:
                callback(job_id)
            except Exception:
                log.exception("a change subscriber failed")

    def _listen(self) -> None:
        """Deliver notifications; after a reconnect tell every subscriber anything may have changed ("")."""
        import psycopg

        by_name = {name: channel for channel, name in CHANNELS.items()}
        backoff = 0.1
        while not self._closing.is_set():
            try:
                with psycopg.connect(self.conninfo, autocommit=True) as conn:
                    conn.execute("; ".join(f"LISTEN {name}" for name in CHANNELS.values()))
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
