"""The job store contract. Every state change of a job goes through it, so any API process can answer
for any job and a restart loses nothing."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

from .records import Job, JobError, JobResult, JobStatus, LogEntry, LogLevel

CancelOutcome = Literal["cancelled", "requested", "finished", "missing"]


@dataclass(frozen=True)
class Delivery:
    """Outgoing calls for a finished job (webhook POSTs, upload PUTs), rendered by its dialect at send
    time; `parts_done` of them went through already."""

    id: int
    job_id: str
    attempts: int
    parts_done: int


class JobStore(Protocol):
    def create(self, job: Job) -> bool:
        """Persist a new queued job; returns once it is durable. False: a job with that id exists."""

    def get(self, job_id: str) -> Job | None: ...

    def queue_position(self, job_id: str) -> int:
        """How many queued jobs are ahead of this one."""

    def oldest_queued(self) -> Job | None: ...

    def claim_batch(self, max_rows: int) -> list[Job]:
        """Atomically move the oldest queued job, and the queued jobs that can share its engine batch
        (same batch key, oldest first, up to `max_rows` images in all), to running."""

    def claim_next(self) -> Job | None:
        """Atomically move the oldest queued job to running (one claimant wins)."""

    def add_log(self, job_id: str, level: LogLevel, message: str) -> None: ...

    def logs(self, job_id: str) -> list[LogEntry]: ...

    def finish(
        self, job_id: str, status: JobStatus, result: JobResult | None = None, error: JobError | None = None
    ) -> bool:
        """Record the final state (and queue its deliveries) unless the job already finished."""

    def request_cancel(self, job_id: str) -> CancelOutcome:
        """Queued: cancelled now. Running: flagged for the worker. Finished or unknown: said so."""

    def cancel_requested(self, job_id: str) -> bool: ...

    def recover(self, max_attempts: int) -> tuple[int, int]:
        """After a restart: running jobs go back to the queue, or fail after max_attempts runs.
        Returns (requeued, failed)."""

    def delete_expired(self, now: float, retention_s: float) -> list[Job]:
        """Drop finished jobs past their ttl, or past `retention_s` without one (with their logs and
        deliveries); returns them for file cleanup."""

    def due_webhooks(self, now: float, limit: int = 20) -> list[Delivery]: ...

    def webhook_delivered(self, delivery_id: int) -> None: ...

    def webhook_part_done(self, delivery_id: int) -> None: ...

    def webhook_failed(self, delivery_id: int, error: str, retry_at: float | None) -> None:
        """Record a failed attempt; retry_at None means give up."""
