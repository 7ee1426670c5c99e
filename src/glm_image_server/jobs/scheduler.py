"""A worker's scheduler: claims batches of compatible queued jobs from the store, hands each batch to the
executor, and records the executor's events in the store under the batch's claims.

Batches: the oldest queued job heads the next batch, and the queued jobs with its batch key (size,
steps, guidance, reference count) join it, oldest first, up to `max_batch_size` images. A job that
arrives to an idle worker waits `batch_window_s` after its submission for company; a job that waited
behind a running batch is claimed at once. So jobs run in order of arrival within a key, and none waits
more than one window past its turn. Cancels (a flag in the store, read every `cancel_poll_s`) reach a
running job at its next token or step.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from .. import metrics
from ..settings import Settings
from .events import JobEvent, JobFailed, JobLog, JobProgress, JobSucceeded
from .executor import Executor, Interrupted
from .records import Claim, Job, JobStatus
from .store import JobStore

log = logging.getLogger(__name__)

STAGE_UNITS = {"ar": "AR: {} tokens", "dit": "DiT: {} steps", "vae": "VAE: {} images decoded"}


def progress_line(event: JobProgress) -> str | None:
    """A log line for each quarter of each stage, None in between."""
    quarter = max(1, event.total // 4)
    if event.done == event.total or event.done % quarter == 0:
        return STAGE_UNITS[event.stage].format(f"{event.done}/{event.total}")
    return None


class _CancelFlags:
    """Sticky once true; asks the store at most every `poll_s` per job."""

    def __init__(self, store: JobStore, poll_s: float) -> None:
        self.store, self.poll_s = store, poll_s
        self._cancelled: set[str] = set()
        self._next: dict[str, float] = {}

    def __call__(self, job_id: str) -> bool:
        if job_id in self._cancelled:
            return True
        now = time.monotonic()
        if now >= self._next.get(job_id, 0.0):
            self._next[job_id] = now + self.poll_s
            if self.store.cancel_requested(job_id):
                self._cancelled.add(job_id)
                return True
        return False


class Scheduler:
    def __init__(
        self,
        store: JobStore,
        executor: Executor,
        settings: Settings,
        worker_id: str,
        on_batch: Callable[[list[Job]], None] = lambda _jobs: None,
    ) -> None:
        self.store, self.executor, self.settings, self.worker_id = store, executor, settings, worker_id
        self.on_batch = on_batch  # told the running batch (empty when idle), for the worker's heartbeat
        self._stopping = threading.Event()
        self._wake = threading.Event()

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()

    def wake(self) -> None:
        self._wake.set()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def _claim(self) -> list[Job]:
        head = self.store.oldest_queued()
        if head is None:
            return []
        gather = head.created_at + self.settings.batch_window_s - time.time()
        if gather > 0:
            self._stopping.wait(gather)
        return self.store.claim_batch(self.worker_id, self.settings.max_batch_size, self.settings.lease_s)

    def run(self) -> None:
        """Claim and run batches until stopped; a failure to claim or record is logged and retried."""
        while not self._stopping.is_set():
            try:
                jobs = self._claim()
            except Exception:
                log.exception("could not claim jobs; retrying")
                jobs = []
            if not jobs:
                self._wake.wait(self.settings.idle_poll_s)
                self._wake.clear()
                continue
            self.run_batch(jobs)

    def run_batch(self, jobs: list[Job]) -> None:
        claims = {job.id: Claim(worker_id=self.worker_id, attempt=job.attempts) for job in jobs}
        apis = {job.id: job.api for job in jobs}
        self.on_batch(jobs)
        try:
            self.executor.run(
                jobs,
                lambda event: self._record(event, claims, apis),
                _CancelFlags(self.store, self.settings.cancel_poll_s),
                self._stopping.is_set,
            )
        except Interrupted:
            released = self.store.release(self.worker_id, "the worker was stopped")
            log.info("%d job(s) interrupted by shutdown; they run again", released.requeued)
        except Exception:  # a broken executor must not strand its jobs (the heartbeat renews their leases)
            log.exception("the executor failed; its unfinished jobs go back to the queue")
            self.store.release(self.worker_id, "the executor failed")
        finally:
            self.on_batch([])

    def _record(self, event: JobEvent, claims: dict[str, Claim], apis: dict[str, str]) -> None:
        if isinstance(event, JobLog):
            self.store.add_log(event.job_id, event.level, event.message)
        elif isinstance(event, JobProgress):
            line = progress_line(event)
            if line:
                self.store.add_log(event.job_id, "INFO", line)
        elif isinstance(event, JobSucceeded):
            self._finish(event.job_id, JobStatus.SUCCEEDED, claims, apis, result=event.result)
        elif isinstance(event, JobFailed):
            status = JobStatus.CANCELLED if event.error.kind == "cancelled" else JobStatus.FAILED
            self._finish(event.job_id, status, claims, apis, error=event.error)

    def _finish(self, job_id: str, status: JobStatus, claims: dict, apis: dict, **outcome) -> None:
        if self.store.finish(job_id, status, claim=claims[job_id], **outcome):
            metrics.JOBS_FINISHED.labels(apis[job_id], status.value).inc()
        else:
            log.warning("job %s was no longer held by %s; its result was dropped", job_id, self.worker_id)
