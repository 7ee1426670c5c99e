"""Wakes async waiters (sync runs, status streams) when a job changes, from any thread.

Only a latency shortcut: waiters also re-read the store on a timeout, so a change made by another
process (a shared PostgreSQL store, a restart) is still seen.
"""

from __future__ import annotations

import asyncio
import contextlib
import time


class ChangeFeed:
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._waiters: dict[str, set[asyncio.Event]] = {}

    def notify(self, job_id: str) -> None:
        """Thread-safe."""
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


class SnapshotCache:
    """Recent store reads per job, so that polling a status costs no database query or thread hop.

    Entries are dropped when the job changes in this process (`invalidate`, called with every change
    notification); the TTL bounds how stale an entry can be when another process changed the job. A read
    that raced with a change is not cached (the version check).
    """

    def __init__(self, ttl_s: float = 0.5) -> None:
        self.ttl_s = ttl_s
        self._entries: dict[tuple[str, bool], tuple[float, object]] = {}
        self._versions: dict[str, int] = {}

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

    def invalidate(self, job_id: str) -> None:
        """Thread-safe enough: dict operations are atomic under the GIL."""
        self._versions[job_id] = self._versions.get(job_id, 0) + 1
        self._entries.pop((job_id, True), None)
        self._entries.pop((job_id, False), None)
