"""The in-process scheduler: claims queued jobs from the store and runs them on a worker thread,
off the event loop. Cancels reach a running job at its next token or step."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from .runner import Interrupted, JobRunner
from .store import JobStore

log = logging.getLogger(__name__)

IDLE_POLL_S = 0.5  # also picks up jobs that another process put in a shared store
CANCEL_POLL_S = 0.2


class Scheduler:
    def __init__(self, store: JobStore, runner: JobRunner) -> None:
        self.store, self.runner = store, runner
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._cancels: set[str] = set()
        self._thread = threading.Thread(target=self._loop, name="scheduler", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Interrupt the running job (it stays claimable after a restart) and wait for the worker."""
        self._stopping.set()
        self._wake.set()
        self._thread.join(timeout)

    def wake(self) -> None:
        """A job was queued."""
        self._wake.set()

    def cancel(self, job_id: str) -> None:
        """Fast path for a cancel requested in this process; the store flag covers the others."""
        self._cancels.add(job_id)

    def _cancel_check(self, job_id: str) -> Callable[[], bool]:
        next_poll = 0.0

        def should_cancel() -> bool:
            nonlocal next_poll
            if self._stopping.is_set() or job_id in self._cancels:
                return True
            now = time.monotonic()
            if now >= next_poll:
                next_poll = now + CANCEL_POLL_S
                return self.store.cancel_requested(job_id)
            return False

        return should_cancel

    def _loop(self) -> None:
        while not self._stopping.is_set():
            try:
                job = self.store.claim_next()
            except Exception:
                log.exception("could not claim a job; retrying")
                job = None
                time.sleep(IDLE_POLL_S)
            if job is None:
                self._wake.wait(IDLE_POLL_S)
                self._wake.clear()
                continue
            try:
                self.runner.run(job, self._cancel_check(job.id), self._stopping.is_set)
            except Interrupted:
                log.info("job %s interrupted by shutdown; it runs again after a restart", job.id)
            finally:
                self._cancels.discard(job.id)
