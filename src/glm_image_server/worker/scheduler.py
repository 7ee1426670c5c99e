"""A worker's scheduler: claims work of its role's stages from the store, hands it to the executor, and
records the executor's events in the store under the claims.

A `decode` (or `all`) worker claims jobs waiting for their decode stage one at a time, an `all` worker
before new prior batches (finishing what started comes first). A prior batch is the oldest queued job and
the queued jobs with its batch key (size and reference count: what the AR stage depends on), oldest first,
up to `max_batch_size` images. A job that arrives to an idle worker waits `batch_window_s` after its
submission for company; one that waited behind a running batch is claimed at once: jobs run in order of
arrival within a key, none more than one window past its turn. Cancels (a store flag, read every
`cancel_poll_s`) reach a running job at its next token or step. A claimed batch is prepared by the
executor (inputs fetched, prompts expanded) in the background, up to MAX_PREPARING batches, while others
run; it runs once all its jobs are prepared.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from functools import partial
from typing import TypeVar

from .. import metrics
from ..core import transitions as move
from ..core.events import (
    JobEvent,
    JobFailed,
    JobHandedOff,
    JobImage,
    JobLog,
    JobPreview,
    JobProgress,
    JobSucceeded,
)
from ..core.handoff import Handoff
from ..core.job import Job, JobError, JobStatus
from ..media.storage import DiskSpace
from ..slices import WorkerSettings
from ..store.contract import JobStore, StoreUnavailable
from .executor import Executor, Interrupted

log = logging.getLogger(__name__)

T = TypeVar("T")
MAX_PREPARING = 4
RECORD_BACKOFF_S = 2.0
STAGE_UNITS = {"ar": "AR: {} tokens", "dit": "DiT: {} steps", "vae": "VAE: {} images decoded"}


def progress_line(event: JobProgress) -> str | None:
    """A log line for each quarter of each stage, None in between."""
    quarter = max(1, event.total // 4)
    if event.done == event.total or event.done % quarter == 0:
        return STAGE_UNITS[event.stage].format(f"{event.done}/{event.total}")
    return None


class _CancelFlags:
    """Sticky once true; asks the store at most every `poll_s` per job. A store that fails to answer
    means "not cancelled" until it answers again: a store fault is never the running batch's failure."""

    def __init__(self, store: JobStore, poll_s: float, on_fault: Callable[[StoreUnavailable], None]) -> None:
        self.store, self.poll_s, self.on_fault = store, poll_s, on_fault
        self._cancelled: set[str] = set()
        self._next: dict[str, float] = {}

    def __call__(self, job_id: str) -> bool:
        now = time.monotonic()
        if job_id not in self._cancelled and now >= self._next.get(job_id, 0.0):
            self._next[job_id] = now + self.poll_s
            try:
                if self.store.cancel_requested(job_id):
                    self._cancelled.add(job_id)
            except StoreUnavailable as exc:
                self.on_fault(exc)  # said once, by the scheduler
        return job_id in self._cancelled


@dataclass
class _Batch:
    """Claimed jobs on their way to the engine, as claimed (each one's claim is its worker and attempt),
    what the executor prepared of them, and when each one's progress was last stored."""

    jobs: list[Job]
    progress_interval_s: float
    prepared: list[Future] = field(default_factory=list)
    progress_at: dict[str, tuple[str, float]] = field(default_factory=dict)

    @property
    def ready(self) -> bool:
        return all(f.done() for f in self.prepared)

    def job(self, job_id: str) -> Job:
        return next(job for job in self.jobs if job.id == job_id)

    def store_progress(self, event: JobProgress) -> bool:
        """At most every `progress_interval_s` per job, but always a stage's first and last event, so
        readers see each stage start and end."""
        now = time.monotonic()
        stage, at = self.progress_at.get(event.job_id, ("", 0.0))
        if stage == event.stage and event.done < event.total and now - at < self.progress_interval_s:
            return False
        self.progress_at[event.job_id] = (event.stage, now)
        return True


class Scheduler:
    def __init__(
        self,
        store: JobStore,
        executor: Executor,
        settings: WorkerSettings,
        worker_id: str,
        on_batch: Callable[[list[Job]], None] = lambda _jobs: None,
    ) -> None:
        self.store, self.executor, self.settings, self.worker_id = store, executor, settings, worker_id
        self.on_batch = on_batch  # told the running batch (empty when idle), for the worker's heartbeat
        self.idle_s = settings.idle_poll_s  # longer where the store pushes new jobs (the worker sets it)
        self._stopping = threading.Event()
        self._wake = threading.Event()
        self.disk = DiskSpace(settings.data_dir, settings.min_free_disk_mb)
        self._unreleased: str | None = None  # a release that failed (store unwritable): retried first
        self._paused_for: str | None = None
        self._preparing: list[_Batch] = []
        self._running: _Batch | None = None
        self._live_failing = False  # recording progress failed last time (said once, not per event)
        self._store_down = False
        self._next_expiry = 0.0

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()

    def wake(self) -> None:
        self._wake.set()

    def held(self) -> tuple[str, ...]:
        """The jobs this scheduler claimed and has not let go of (from any thread: the heartbeat renews
        them; a stale id is harmless, the store renews only what the worker still holds)."""
        batches = (*self._preparing, self._running)
        return tuple(job.id for batch in batches if batch is not None for job in batch.jobs)

    def _claim(self) -> list[Job]:
        if self._unreleased and not self._release(self._unreleased):
            return []
        lease_s, role = self.settings.lease_s, self.settings.role
        # A started job goes on whatever the disk: on a full one it fails saying so, instead of waiting.
        waiting = role != "prior" and self.store.decode_waiting()
        if waiting and (jobs := self.store.claim_batch(self.worker_id, 1, lease_s, "decode")):
            return jobs
        if role == "decode" or not self._can_take_work() or (head := self.store.oldest_queued()) is None:
            self._take_back_expired()
            return []
        gather = head.created_at + self.settings.batch_window_s - time.time()
        if gather > 0:
            self._stopping.wait(gather)
        return self.store.claim_batch(self.worker_id, self.settings.max_batch_size, lease_s)

    def _take_back_expired(self) -> None:
        """A claim takes back expired leases, but with nothing to claim no claim runs: a dead worker's jobs
        would wait for the next submission. So an idle worker takes them back itself, every half lease."""
        if time.time() >= self._next_expiry:
            self._next_expiry = time.time() + self.settings.lease_s / 2
            self.store.expire_leases(time.time())

    def store_state(self, fault: StoreUnavailable | None) -> None:
        """Says once that the store is unavailable (no traceback: not a bug), and once that it is back."""
        if (fault is not None) != self._store_down:
            self._store_down = fault is not None
            if fault is not None:
                log.warning("%s; the worker waits for it", fault)
            else:
                log.info("the job store is back")

    def _can_take_work(self) -> bool:
        """No new prior batches while the disk is too full for their images; said once, and when it ends."""
        problem = self.disk.problem()
        if problem != self._paused_for:
            if problem:
                log.error("worker %s takes no jobs: %s", self.worker_id, problem)
            else:
                log.info("worker %s takes jobs again: disk space is back", self.worker_id)
            self._paused_for = problem
        return problem is None

    def _release(self, reason: str) -> bool:
        """Hand this worker's jobs back to the queue; False (to be retried) when the store fails."""
        try:
            released = self.store.release(self.worker_id, reason)
        except Exception as exc:
            log.error("could not hand jobs back (%s); retrying", exc)
            self._unreleased = reason
            return False
        self._unreleased = None
        self._preparing.clear()  # their jobs were handed back too
        if released.requeued or released.failed:
            log.info("%d job(s) handed back (%s)", released.requeued + released.failed, reason)
        return True

    def run(self) -> None:
        """Claim and run batches until stopped. Nothing that goes wrong in a batch ends the loop: a failure
        to claim, run, save or record is logged and its jobs go back to the queue (retried until the
        store takes the write again)."""
        while not self._stopping.is_set():
            try:
                if (ready := next((b for b in self._preparing if b.ready), None)) is not None:
                    self._preparing.remove(ready)
                    self._run(ready)
                    continue
                if len(self._preparing) < MAX_PREPARING and (jobs := self._claim()):
                    if (batch := self._start(jobs)).jobs:  # none: each failed before it could start
                        self._preparing.append(batch)
                    continue
            except StoreUnavailable as exc:
                self.store_state(exc)
            except Exception:
                log.exception("the scheduler loop failed; retrying")
            else:
                self.store_state(None)
            self._wake.wait(self.idle_s)
            self._wake.clear()
        if self._preparing:
            self._release("the worker was stopped")

    def _start(self, jobs: list[Job]) -> _Batch:
        handoffs = {job.id: self._stored_handoff(job) for job in jobs if job.stage == "decode"}
        jobs = [job for job in jobs if job.stage == "prior" or handoffs[job.id] is not None]
        batch = _Batch(jobs, self.settings.progress_interval_s)
        for job in jobs:
            future = self.executor.prepare(job, partial(self._record, batch), handoffs.get(job.id))
            future.add_done_callback(lambda _f: self._wake.set())
            batch.prepared.append(future)
        return batch

    def _stored_handoff(self, job: Job) -> Handoff | None:
        """A decode stage's handoff, read through store faults as outcomes are written. One missing or
        unreadable (a bug, never a fault) fails its job, which would otherwise stay claimed by a live
        worker: None then."""
        try:
            if (stored := self._until_recorded(job.id, lambda: self.store.handoff(job.id))) is None:
                raise ValueError("none is stored")
            return Handoff.from_bytes(stored)
        except StoreUnavailable:
            raise
        except Exception as exc:
            log.exception("job %s: its prior tokens could not be read", job.id)
            error = JobError(kind="internal", message=f"its prior tokens could not be read: {exc}")
            self._finish(job, JobStatus.FAILED, error=error)
            return None

    def run_batch(self, jobs: list[Job]) -> None:
        """Prepare and run one claimed batch, waiting for its inputs (the loop does not wait: `run`)."""
        self._run(self._start(jobs))

    def _run(self, batch: _Batch) -> None:
        self._running = batch
        try:
            self._run_held(batch)
        finally:
            self._running = None

    def _run_held(self, batch: _Batch) -> None:
        try:
            prepared = [p for p in (f.result() for f in batch.prepared) if p is not None]
        except Exception as exc:  # recording a preparation's failure failed: the store is in trouble
            log.error("a job's preparation could not be recorded (%s); its batch goes back", exc)
            self._release("its preparation could not be recorded")
            return
        self._tell(batch.jobs)
        try:
            cancelled = _CancelFlags(self.store, self.settings.cancel_poll_s, self.store_state)
            self.executor.run(prepared, partial(self._record, batch), cancelled, self._stopping.is_set)
        except Interrupted:
            self._release("the worker was stopped")
        except Exception:  # a broken executor must not strand its jobs (the heartbeat renews their leases)
            log.exception("the executor failed; its unfinished jobs go back to the queue")
            self._release("the executor failed")
        finally:
            self._tell([])

    def _tell(self, jobs: list[Job]) -> None:
        try:
            self.on_batch(jobs)
        except Exception as exc:  # only the worker's state on /ready: never a reason to stop the jobs
            log.error("could not record the worker's state: %s", exc)

    def _record(self, batch: _Batch, event: JobEvent) -> None:
        if isinstance(event, JobHandedOff):
            self._hand_off(batch.job(event.job_id), event.handoff)
        elif isinstance(event, JobSucceeded):
            self._finish(batch.job(event.job_id), JobStatus.SUCCEEDED, result=event.result)
        elif isinstance(event, JobFailed):
            status = JobStatus.CANCELLED if event.error.kind == "cancelled" else JobStatus.FAILED
            self._finish(batch.job(event.job_id), status, error=event.error)
        else:
            try:
                self._record_live(batch, event)
            except Exception as exc:  # progress, previews, early images: worth losing, never a job
                if not self._live_failing:
                    log.error("could not record a job's progress (%s); it goes on without", exc)
                self._live_failing = True
            else:
                self._live_failing = False

    def _record_live(self, batch: _Batch, event: JobEvent) -> None:
        if isinstance(event, JobLog):
            self.store.add_log(event.job_id, event.level, event.message)
        elif isinstance(event, JobProgress):
            if line := progress_line(event):
                self.store.add_log(event.job_id, "INFO", line)
            if batch.store_progress(event):
                self.store.set_progress(event.job_id, event.stage, event.done, event.total)
        elif isinstance(event, JobPreview):
            self.store.set_preview(event.job_id, event.preview)
        elif isinstance(event, JobImage):  # the result will carry the image anyway
            self.store.add_image(event.job_id, event.image)

    def _hand_off(self, job: Job, handoff: Handoff) -> None:
        """Under the job's prior claim; then look for work at once (an `all` worker decodes it next)."""
        data, claim = handoff.to_bytes(), move.claim_of(job)
        if self._until_recorded(job.id, lambda: self.store.hand_off(job.id, data, claim)):
            self.wake()
        else:
            log.warning(
                "job %s was no longer held by %s; its prior tokens were dropped", job.id, self.worker_id
            )

    def _finish(self, job: Job, status: JobStatus, **outcome) -> None:
        """Under the job's claim, as it was claimed: a job taken over meanwhile is not finished here."""
        claim = move.claim_of(job)
        if self._until_recorded(job.id, lambda: self.store.finish(job.id, status, claim=claim, **outcome)):
            metrics.JOBS_FINISHED.labels(job.api, status.value).inc()
        else:
            log.warning("job %s was no longer held by %s; its result was dropped", job.id, self.worker_id)

    def _until_recorded(self, job_id: str, write: Callable[[], T]) -> T:
        """A job's outcome (its images are saved already) or handoff is written, and a decode stage's
        handoff read, when the store takes it: a store fault holds it and retries, backing off up to
        RECORD_BACKOFF_S, and never costs the job an attempt. Only a stopping worker gives up (raising):
        the job's lease then sends it back."""
        delay = 0.05
        while True:
            try:
                return write()
            except StoreUnavailable as exc:  # a bug is not retried: it fails the batch, whose jobs go back
                if self._stopping.is_set():
                    raise
                if delay == 0.05:
                    log.error(
                        "could not reach the store for job %s (%s); retrying until it is back",
                        job_id,
                        exc,
                    )
                self._stopping.wait(delay)
                delay = min(delay * 2, RECORD_BACKOFF_S)
