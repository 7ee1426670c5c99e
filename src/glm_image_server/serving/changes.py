"""Wakes async waiters (sync runs, status streams) when a job changes, in whatever process it changed.
A store that pushes changes (PostgreSQL's NOTIFY, SQLite's wake-up bus) calls the feed for each; else a
thread tails the store's change log every `poll_s`. The feed wakes the changed jobs' waiters, drops their
cached snapshots and tells other listeners (the delivery sender). Waiters also re-read on a timeout."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import threading
import time
from collections.abc import Awaitable, Callable

from ..store.contract import JobStore, StoreUnavailable

log = logging.getLogger(__name__)


class SnapshotCache:
    """Recent store reads per job, so polling a status costs no query: an entry is dropped when its job
    changes (`invalidate`), the TTL bounds a late notice, and a read that raced a change is not cached."""

    def __init__(self, ttl_s: float = 0.5) -> None:
        self.ttl_s = ttl_s
        self._entries: dict[tuple[str, bool, bool], tuple[float, object]] = {}
        self._versions: dict[str, int] = {}
        self._pending: dict[tuple[str, bool, bool], asyncio.Future] = {}

    def version(self, job_id: str) -> int:
        return self._versions.get(job_id, 0)

    def get(self, key: tuple[str, bool, bool]) -> object | None:
        entry = self._entries.get(key)
        return entry[1] if entry is not None and entry[0] >= time.monotonic() else None

    def put(self, key: tuple[str, bool, bool], value: object, version: int) -> None:
        if self.version(key[0]) == version:
            if len(self._entries) > 10_000:
                self._entries.clear()
            self._entries[key] = (time.monotonic() + self.ttl_s, value)

    async def load(self, key: tuple[str, bool, bool], read: Callable[[], Awaitable[object]]) -> object:
        """The cached value, or one `read()` shared by every caller that missed meanwhile (single flight)."""
        value = self.get(key)
        if value is not None:
            return value
        pending = self._pending.get(key)
        if pending is None:
            pending = self._pending[key] = asyncio.ensure_future(self._read(key, read))
        return await asyncio.shield(pending)

    async def _read(self, key: tuple[str, bool, bool], read: Callable[[], Awaitable[object]]) -> object:
        version = self.version(key[0])
        try:
            value = await read()
        finally:
            self._pending.pop(key, None)
        if value is not None:
            self.put(key, value, version)
        return value

    def clear(self) -> None:
        for job_id in {key[0] for key in self._entries}:
            self.invalidate(job_id)

    def invalidate(self, job_id: str) -> None:
        """Thread-safe enough: dict operations are atomic under the GIL."""
        self._versions[job_id] = self._versions.get(job_id, 0) + 1
        for logs, previews in itertools.product((True, False), repeat=2):
            self._entries.pop((job_id, logs, previews), None)


class ChangeFeed:
    def __init__(
        self,
        store: JobStore,
        loop: asyncio.AbstractEventLoop,
        snapshots: SnapshotCache,
        poll_s: float,
        listeners: tuple[Callable[[], None], ...] = (),
    ) -> None:
        self.store, self._loop, self.snapshots, self.poll_s = store, loop, snapshots, poll_s
        self.listeners = listeners
        self._waiters: dict[str, set[asyncio.Event]] = {}
        self._position = 0
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._tail, name="change-feed", daemon=True)

    def start(self) -> None:
        if not self.store.subscribe("changes", self._pushed_change):
            self._position = self.store.changes_after(0).position  # start at the end of the log
            self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join(5)

    def _pushed_change(self, job_id: str) -> None:
        if self._stopping.is_set():
            return
        self._tell_listeners()
        if job_id:
            self.notify(job_id)
        else:  # notifications were lost: anything may have changed
            for waited in list(self._waiters):
                self.notify(waited)
            self.snapshots.clear()

    def _tail(self) -> None:
        while not self._stopping.wait(self.poll_s):
            try:
                changes = self.store.changes_after(self._position)
            except StoreUnavailable:  # waited out: the API's answers and the worker say so
                continue
            except Exception:
                log.exception("reading the change log failed; retrying")
                continue
            self._position = changes.position
            if changes.job_ids:
                self._tell_listeners()
            for job_id in changes.job_ids:
                self.notify(job_id)

    def _tell_listeners(self) -> None:
        """Before the waiters wake, so that whoever a waiter answers sees the listeners already told."""
        for listener in self.listeners:
            listener()

    def notify(self, job_id: str) -> None:
        """Thread-safe: the job changed."""
        self.snapshots.invalidate(job_id)
        if job_id in self._waiters:
            self._loop.call_soon_threadsafe(self._set, job_id)

    def _set(self, job_id: str) -> None:
        for event in self._waiters.get(job_id, ()):
            event.set()

    def seen(self, job_id: str) -> int:
        """Take before reading a job; pass to `wait` after, so a change in between is not missed."""
        return self.snapshots.version(job_id)

    async def wait(self, job_id: str, timeout: float, seen: int | None = None) -> None:
        """Return after the job's next change (at once if it changed since `seen`), or after `timeout`."""
        event = asyncio.Event()
        self._waiters.setdefault(job_id, set()).add(event)
        try:
            if seen is not None and self.seen(job_id) != seen:
                return  # it changed while the caller was reading it
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), timeout)
        finally:
            waiters = self._waiters[job_id]
            waiters.discard(event)
            if not waiters:
                del self._waiters[job_id]
