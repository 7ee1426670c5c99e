"""Wakes async waiters (sync runs, status streams) when a job changes, from any thread.

Only a latency shortcut: waiters also re-read the store on a timeout, so a change made by another
process (a shared PostgreSQL store, a restart) is still seen.
"""

from __future__ import annotations

import asyncio
import contextlib


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
