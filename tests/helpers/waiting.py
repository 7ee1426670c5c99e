"""Waiting on a condition, bounded in time: how tests synchronise with servers, workers and threads.

No test sleeps a fixed time to let something happen; it waits for the thing itself (`wait_for`), and a
test that checks something does NOT happen watches it for a stated window (`holds`), failing as soon as
it does."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_for(predicate: Callable[[], T], timeout: float, what: str, interval: float = 0.02) -> T:
    """The predicate's first truthy value; AssertionError naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        if value := predicate():
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def holds(predicate: Callable[[], object], window: float, what: str, interval: float = 0.02) -> None:
    """Asserts the predicate stays truthy for `window` seconds (checked every `interval`): for what must
    not happen, e.g. a second delivery, given the time it would have taken."""
    deadline = time.monotonic() + window
    while True:
        assert predicate(), f"no longer true: {what}"
        if time.monotonic() >= deadline:
            return
        time.sleep(interval)
