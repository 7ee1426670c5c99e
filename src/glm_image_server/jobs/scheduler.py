"""The in-process scheduler: claims batches of compatible queued jobs from the store and runs each
batch through one engine call on a worker thread, off the event loop.

Batches: the oldest queued job heads the next batch, and the queued jobs with its batch key (size,
steps, guidance, reference count) join it, oldest first, up to `max_batch_size` images. A job that
arrives to an idle engine waits `batch_window_s` after its submission for company; a job that waited
behind a running batch is claimed at once. So jobs run in order of arrival within a key, and none waits
more than one window past its turn. Cancels reach a running job at its next token or step.
"""

from __future__ import annotations

import logging
import threading
import time

from .records import Job
from .runner import Interrupted, JobRunner
from .store import JobStore

log = logging.getLogger(__name__)

IDLE_POLL_S = 0.5  # also picks up jobs that another process put in a shared store
CANCEL_POLL_S = 0.2


class Scheduler:
    def __init__(
        self, store: JobStore, runner: JobRunner, max_batch_size: int = 8, batch_window_s: float = 0.0
    ) -> None:
        self.store, self.runner = store, runner
        self.max_batch_size, self.batch_window_s = max_batch_size, batch_window_s
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._cancels: set[str] = set()
        self._next_poll: dict[str, float] = {}
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

    def _cancelled(self, job_id: str) -> bool:
        """Sticky once true; asks the store (other processes' cancels) at most every CANCEL_POLL_S."""
        if job_id in self._cancels:
            return True
        now = time.monotonic()
        if now >= self._next_poll.get(job_id, 0.0):
            self._next_poll[job_id] = now + CANCEL_POLL_S
            if self.store.cancel_requested(job_id):
                self._cancels.add(job_id)
                return True
        return False

    def _claim(self) -> list[Job]:
        head = self.store.oldest_queued()
        if head is None:
            return []
        gather = head.created_at + self.batch_window_s - time.time()
        if gather > 0:
            self._stopping.wait(gather)
        return self.store.claim_batch(self.max_batch_size)

    def _loop(self) -> None:
        while not self._stopping.is_set():
            try:
                jobs = self._claim()
            except Exception:
                log.exception("could not claim jobs; retrying")
                jobs = []
                time.sleep(IDLE_POLL_S)
            if not jobs:
                self._wake.wait(IDLE_POLL_S)
                self._wake.clear()
                continue
            try:
                self.runner.run(jobs, self._cancelled, self._stopping.is_set)
            except Interrupted:
                log.info("%d job(s) interrupted by shutdown; they run again after a restart", len(jobs))
            finally:
                for job in jobs:
                    self._cancels.discard(job.id)
                    self._next_poll.pop(job.id, None)
