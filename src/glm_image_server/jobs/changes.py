"""Wakes async waiters (sync runs, status streams) when a job changes, in whatever process it changed.

The store appends every change to a change log; a thread here tails it every `poll_s` and wakes the
waiters of the jobs it names on the event loop, drops their cached snapshots, and tells other listeners
(the delivery sender). Waiters also re-read the store on a timeout, so nothing depends on this alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Awaitable, Callable

from .store import JobStore

log = logging.getLogger(__name__)


class SnapshotCache:
    """Recent store reads per job, so that polling a status costs no database query or thread hop.

    Entries are dropped when the job changes (`invalidate`, called by the change feed); the TTL bounds
    how stale an entry can be if a change notice is late. A read that raced with a change is not cached
    (the version check).
    """

    def __init__(self, ttl_s: float = 0.5) -> None:
        self.ttl_s = ttl_s
        self._entries: dict[tuple[str, bool], tuple[float, object]] = {}
        self._versions: dict[str, int] = {}
        self._pending: dict[tuple[str, bool], asyncio.Future] = {}

    def version(self, job_id: str) -> int:
        return self._versions.get(job_id, 0)

    def get(self, key: tuple[str, bool]) -> object | None:
        entry = self._entries.get(key)
        if entry is None or entry[0] < time.monotonic():
            return None
        return entry[1]

    def put(self, key: tuple[str, bool], value: object, version: int) -> None:
        if self.version(key[0]) == version:
            if len(self._entries) > 10_000:
                self._entries.clear()
            self._entries[key] = (time.monotonic() + self.ttl_s, value)

    async def load(self, key: tuple[str, bool], read: Callable[[], Awaitable[object]]) -> object:
        """The cached value, or one `read()` shared by every caller that missed meanwhile (single flight:
        a change or an expiry must not send a hundred pollers to the database at once)."""
        value = self.get(key)
        if value is not None:
            return value
        pending = self._pending.get(key)
        if pending is None:
            pending = self._pending[key] = asyncio.ensure_future(self._read(key, read))
        return await asyncio.shield(pending)

    async def _read(self, key: tuple[str, bool], read: Callable[[], Awaitable[object]]) -> object:
        version = self.version(key[0])
        try:
            value = await read()
        finally:
            self._pending.pop(key, None)
        if value is not None:
            self.put(key, value, version)
        return value

    def invalidate(self, job_id: str) -> None:
        """Thread-safe enough: dict operations are atomic under the GIL."""
        self._versions[job_id] = self._versions.get(job_id, 0) + 1
        self._entries.pop((job_id, True), None)
        self._entries.pop((job_id, False), None)


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
        self._position = store.changes_after(0).position  # start at the end of the log
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._tail, name="change-feed", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(5)

    def _tail(self) -> None:
        while not self._stopping.wait(self.poll_s):
            try:
                changes = self.store.changes_after(self._position)
            except Exception:
                log.exception("reading the change log failed; retrying")
                continue
            self._position = changes.position
            for job_id in changes.job_ids:
                self.notify(job_id)
            if changes.job_ids:
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

    async def wait(self, job_id: str, timeout: float) -> None:
        """Return after the job's next change, or after `timeout` seconds."""
        event = asyncio.Event()
        self._waiters.setdefault(job_id, set()).add(event)
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), timeout)
        finally:
            waiters = self._waiters[job_id]
            waiters.discard(event)
            if not waiters:
                del self._waiters[job_id]
