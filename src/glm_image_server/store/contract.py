"""The job store contract. Every state change of a job goes through it, so any API process can answer
for any job, any worker process can run any job, and a crash, a dead worker or a restart loses nothing.

A job runs in two stages, each claimed with a lease its worker renews: `prior` (the AR model) from the
queue, then `decode` (DiT, VAE, post) once the prior worker has handed off its tokens (`hand_off`; the job
stays running, waiting for a decode worker). A stage whose lease ran out goes back to where its workers
claim it — the queue with its seed, or the decode wait with its tokens — or fails after `max_attempts`
claims of that stage; only the current claim may hand off or finish — so a job is never lost, its AR
stage never runs again once handed off, and no job completes twice. Both stages are claimed by priority
(normal before low), oldest first within one; a queued job past its `start_by` deadline fails instead of
starting. Every change goes to a
change log that API processes tail, and to subscribers where the store can push. Runware's connection
sessions sit apart, in `SessionStore` (implemented by the same store object)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from ..core.job import Claim, Job, JobError, JobStage, JobStatus, LiveState, LogEntry, LogLevel, WorkerInfo
from ..core.request import Stage
from ..core.results import FinishedImage, JobResult, PreviewImage

CancelOutcome = Literal["cancelled", "requested", "finished", "missing"]
Channel = Literal["changes", "queued"]  # any change of a job | a job became claimable


class StoreUnavailable(Exception):
    """The store could not be reached or could not take the write now: a lost or refused connection, a
    pool with no connection free in time, a locked or full SQLite file. Worth retrying (API: 503 with
    Retry-After), never a job's failure (workers hold their writes until the store is back)."""


@dataclass(frozen=True)
class Caps:
    """The most jobs waiting for a worker in all (queued, or handed off and waiting for their decode
    stage), and unfinished (queued or running) jobs per owner, that `create` lets stand: counted and
    inserted in one transaction that holds the store's admission lock, so the caps hold under any
    concurrency, across every API process of the store."""

    queued: int
    per_owner: int


class OverCap(Exception):
    """`create` refused the job: it would pass `cap` ("queued" or "per_owner") of `limit` jobs."""

    def __init__(self, cap: Literal["queued", "per_owner"], limit: int) -> None:
        super().__init__(f"{cap} cap of {limit} reached")
        self.cap, self.limit = cap, limit


@dataclass(frozen=True)
class Requeued:
    """Jobs taken back from claims that ended (a dead worker, an expired lease)."""

    requeued: int = 0
    failed: int = 0  # claimed max_attempts times already: failed instead


@dataclass(frozen=True)
class Delivery:
    """A finished job's outgoing calls (webhook POSTs, upload PUTs; rendered by its dialect when sent), of
    which `parts_done` went through already."""

    id: int
    job_id: str
    attempts: int
    parts_done: int


@dataclass(frozen=True)
class SessionJob:
    """A job submitted on a connection session (a WebSocket the client may reconnect to)."""

    job_id: str
    owner: str | None
    delivered: bool  # its outcome reached the client on the session


@dataclass(frozen=True)
class Changes:
    """Jobs changed since a position of the change log, and the position after them."""

    position: int
    job_ids: tuple[str, ...]


class JobStore(Protocol):
    """The contract, one section per concern."""

    max_attempts: int

    # --- submitting jobs and reading them and the queue

    def create(self, job: Job, caps: Caps | None = None) -> bool:
        """Persist a new queued job; returns once it is durable. False: a job with that id exists.
        Raises OverCap when the job would pass `caps` (nothing is written)."""

    def get(self, job_id: str) -> Job | None: ...

    def queue_position(self, job_id: str) -> int:
        """How many queued jobs are ahead of this one (by priority, then age)."""

    def oldest_queued(self) -> Job | None: ...

    def queued_count(self) -> int:
        """Jobs waiting for a worker (the queue length that admission limits)."""

    def unfinished_count(self, owner: str) -> int:
        """The owner's queued and running jobs."""

    def queue_depth(self) -> list[tuple[str, int, int, float]]:
        """Per batch key of the queued jobs: (key, jobs, images, the oldest one's created_at)."""

    def recent(self, limit: int) -> list[Job]:
        """The newest jobs, newest first (the ops view)."""

    # --- workers' leased claims on jobs, and how jobs end

    def claim_batch(
        self, worker_id: str, max_images: int, lease_s: float, stage: JobStage = "prior"
    ) -> list[Job]:
        """Prior: atomically move the first queued job (by priority, then age), and the queued jobs that can
        share its AR batch (same batch key and priority, oldest first, up to `max_images` images in all), to
        running under a lease held by `worker_id`. Decode: claim the first job waiting for its decode stage
        alone. Expired leases are returned first, and jobs past their start deadline fail."""

    def expire_start_deadlines(self, now: float) -> int:
        """Fail the queued jobs whose `start_by` passed (error kind "timeout"); returns how many."""

    def renew(self, worker_id: str, lease_s: float, job_ids: Sequence[str]) -> int:
        """Extend the leases of those of `job_ids` the worker holds; returns how many. Only the jobs it
        knows it claimed: a claim whose commit went through but whose answer was lost (the store failed
        meanwhile) is not renewed, so its lease runs out and the jobs go back instead of staying held."""

    def release(self, worker_id: str, reason: str) -> Requeued:
        """The worker is gone: its running jobs go back to the queue now (or fail, or are cancelled)."""

    def expire_leases(self, now: float) -> Requeued:
        """Running jobs whose lease ran out go back to the queue."""

    def finish(
        self,
        job_id: str,
        status: JobStatus,
        result: JobResult | None = None,
        error: JobError | None = None,
        claim: Claim | None = None,
    ) -> bool:
        """Record the final state (and queue its deliveries) unless the job already finished, or `claim`
        is given and no longer holds the job."""

    def hand_off(self, job_id: str, handoff: bytes, claim: Claim) -> bool:
        """The prior stage under `claim` is done: store its handoff (core/handoff.py) with the job, which
        waits for a decode worker; a job flagged for cancelling meanwhile is cancelled instead. False
        (nothing written) when the claim no longer holds the job."""

    def handoff(self, job_id: str) -> bytes | None:
        """The stored handoff of a job in its decode stage."""

    def decode_waiting(self) -> int:
        """Jobs handed off and waiting for a decode worker (the decode pool's queue)."""

    def request_cancel(self, job_id: str) -> CancelOutcome:
        """Queued or waiting for a decode worker: cancelled now. Held by a worker: flagged for it. Finished
        or unknown: said so."""

    def cancel_requested(self, job_id: str) -> bool: ...

    # --- live state of running jobs: not durable, dropped when the job finishes

    def set_progress(self, job_id: str, stage: Stage, done: int, total: int) -> None: ...

    def set_preview(self, job_id: str, preview: PreviewImage) -> None: ...

    def add_image(self, job_id: str, image: FinishedImage) -> None:
        """One of the running job's images is stored already (replaces one with the same index)."""

    def live(self, job_id: str) -> LiveState | None:
        """The running job's latest progress and preview; None when it has none (or finished)."""

    def add_log(self, job_id: str, level: LogLevel, message: str) -> None: ...

    def logs(self, job_id: str) -> list[LogEntry]: ...

    # --- deliveries of finished jobs (webhook POSTs, upload PUTs), leased to one sender at a time

    def claim_deliveries(self, owner: str, now: float, lease_s: float, limit: int = 20) -> list[Delivery]:
        """Due deliveries no other sender holds, now held by `owner` until now + lease_s."""

    def delivery_part_done(self, delivery_id: int) -> None: ...

    def delivery_done(self, delivery_id: int) -> None: ...

    def delivery_failed(self, delivery_id: int, error: str, retry_at: float | None) -> None:
        """Record a failed attempt and release the lease; retry_at None means give up."""

    # --- workers, the change log, retention

    def heartbeat(self, worker: WorkerInfo) -> None:
        """Record a worker's state (upsert by id)."""

    def workers(self) -> list[WorkerInfo]: ...

    def changes_after(self, position: int) -> Changes: ...

    def subscribe(self, channel: Channel, callback: Callable[[str], None]) -> bool:
        """Call `callback(job_id)` from a store thread on each change in `channel`, from any process; job id
        "" means anything may have changed (notifications were lost). False: this store cannot push, so
        read `changes_after` (and claim) on a timer instead."""

    def delete_expired(self, now: float, retention_s: float) -> list[Job]:
        """Drop finished jobs past their ttl, or past `retention_s` without one (with their logs,
        deliveries and session records); returns them for file cleanup."""

    def close(self) -> None: ...


class SessionStore(Protocol):
    """Connection sessions: jobs submitted on a WebSocket, kept as long as the jobs are."""

    def add_session_job(self, session_id: str, job_id: str, owner: str | None) -> None:
        """Record that `job_id` was submitted on `session_id` (a job stays with its first session)."""

    def session_jobs(self, session_id: str) -> list[SessionJob]: ...

    def session_delivered(self, job_id: str) -> None:
        """The job's outcome reached the client on its session."""
