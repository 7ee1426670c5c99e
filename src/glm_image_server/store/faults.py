"""Which of the database's errors mean the store is unavailable rather than broken: a lost, refused or
exhausted connection (SQLAlchemy's OperationalError, InterfaceError and pool TimeoutError on PostgreSQL),
or a SQLite file that is locked, full or unreadable (by its error code: SQLite reports a missing table as
an OperationalError too, and that is a bug). The store raises those as the contract's StoreUnavailable,
which workers wait out and the API answers with a 503; any other error stays what it is."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import exc as db_errors

from .contract import StoreUnavailable

REACH = (db_errors.OperationalError, db_errors.InterfaceError, db_errors.TimeoutError)
# SQLITE_BUSY, LOCKED, READONLY, IOERR, CORRUPT, FULL, CANTOPEN (primary codes: the low byte)
SQLITE_UNAVAILABLE = {5, 6, 8, 10, 11, 13, 14}


@contextmanager
def unavailable_as_such() -> Iterator[None]:
    try:
        yield
    except (*REACH, sqlite3.Error) as exc:
        if not unavailable(exc):
            raise
        raise StoreUnavailable(f"the job store is unavailable: {_first_line(exc)}") from exc


def unavailable(exc: BaseException) -> bool:
    cause = getattr(exc, "orig", None) or exc
    if isinstance(cause, sqlite3.Error):
        return (getattr(cause, "sqlite_errorcode", 0) & 0xFF) in SQLITE_UNAVAILABLE
    return isinstance(exc, REACH)


def _first_line(exc: Exception) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
