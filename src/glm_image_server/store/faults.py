"""Which of the database's errors mean the store is unavailable rather than broken: a lost, refused or
exhausted connection, or SQLite's locked or full file (SQLAlchemy's OperationalError, InterfaceError and
pool TimeoutError, on both databases). The store raises those as the contract's StoreUnavailable, which
workers wait out and the API answers with a 503; any other error is a bug and stays what it is."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import exc as db_errors

from .contract import StoreUnavailable

UNAVAILABLE = (db_errors.OperationalError, db_errors.InterfaceError, db_errors.TimeoutError)


@contextmanager
def unavailable_as_such() -> Iterator[None]:
    try:
        yield
    except UNAVAILABLE as exc:
        raise StoreUnavailable(f"the job store is unavailable: {_first_line(exc)}") from exc


def _first_line(exc: Exception) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
