"""How a job moves between states: the decisions every store makes the same way, whatever its SQL —
which queued jobs make one batch, what a claim, a finish or an interruption does to a job, and who may
finish it. The store (store/sql.py) only reads and writes rows around these, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterable

from .job import Claim, Job, JobError, JobStatus, Priority
from .results import FinishedImage, JobResult

CANCELLED_BEFORE_START = JobError(kind="cancelled", message="cancelled before it started")
CANCELLED_WHILE_STOPPED = JobError(kind="cancelled", message="cancelled while its worker stopped")
CANCELLED_BEFORE_DECODE = JobError(kind="cancelled", message="cancelled while it waited for its decode stage")
CANCELLED_DURING_AR = JobError(kind="cancelled", message="cancelled during its AR stage")
PRIORITY_RANK: dict[Priority, int] = {"normal": 0, "low": 1}  # the stores' `priority` column: lower first


def cancelled_unclaimed(job: Job) -> JobError:
    """Why a job no worker held was cancelled at once."""
    return CANCELLED_BEFORE_DECODE if job.stage == "decode" else CANCELLED_BEFORE_START


def start_missed(job: Job) -> JobError:
    """Why a queued job past its start deadline failed."""
    allowed = (job.start_by or job.created_at) - job.created_at
    message = f"the request did not start within its {allowed:g} s start timeout"
    return JobError(kind="timeout", message=message)


def with_image(images: Iterable[FinishedImage], image: FinishedImage) -> list[FinishedImage]:
    """A running job's finished images with `image` added (replacing one with its index), by index."""
    kept = {done.index: done for done in images}
    kept[image.index] = image
    return [kept[index] for index in sorted(kept)]


def batch(candidates: Iterable[Job], max_images: int) -> list[Job]:
    """The queued jobs of one batch key, oldest first, that fit `max_images` images together (the first
    always does); a job too big for what is left heads a later batch."""
    chosen, images = [], 0
    for job in candidates:
        if chosen and images + job.request.num_images > max_images:
            continue
        images += job.request.num_images
        chosen.append(job)
    return chosen


def running(job: Job, worker_id: str, now: float) -> Job:
    """Claimed by `worker_id` for its stage (the attempt is the claim's); a decode claim keeps its start."""
    update = {
        "status": JobStatus.RUNNING,
        "started_at": now if job.stage == "prior" else job.started_at,
        "attempts": job.attempts + 1,
        "worker_id": worker_id,
    }
    return job.model_copy(update=update)


def claim_of(job: Job) -> Claim:
    """The claim a worker holds on the job it claimed (as the claim returned it)."""
    return Claim(worker_id=job.worker_id or "", attempt=job.attempts, stage=job.stage)


def held_by(job: Job, claim: Claim | None) -> bool:
    """Whether `claim` may finish the job (None: no claim to check, e.g. a cancel)."""
    return claim is None or (job.status == JobStatus.RUNNING and claim_of(job) == claim)


def handed_off(job: Job) -> Job:
    """The prior stage is done: the job waits, running, for a decode worker; attempts count decode claims."""
    return job.model_copy(update={"stage": "decode", "worker_id": None, "attempts": 0})


def finished(
    job: Job, status: JobStatus, result: JobResult | None, error: JobError | None, now: float
) -> Job:
    return job.model_copy(update={"status": status, "finished_at": now, "result": result, "error": error})


def cancelled_line(error: JobError | None) -> str:
    """The line every cancelled job's log ends with, however it ended."""
    return f"Cancelled: {error.message if error else 'cancelled'}"


def interrupted(job: Job, max_attempts: int, reason: str) -> tuple[JobStatus, JobError] | None:
    """How a running job whose worker went away ends: cancelled or failed, or None: queued again."""
    if job.cancel_requested:
        return JobStatus.CANCELLED, CANCELLED_WHILE_STOPPED
    if job.attempts >= max_attempts:
        message = f"the job was interrupted {job.attempts} times ({reason}); giving up"
        return JobStatus.FAILED, JobError(kind="internal", message=message)
    return None


def requeued(job: Job) -> Job:
    """After an interruption: back to the queue (its start deadline met), or to wait for a decode worker."""
    if job.stage == "decode":
        return job.model_copy(update={"worker_id": None})
    return job.model_copy(update={"status": JobStatus.QUEUED, "worker_id": None, "start_by": None})


def requeued_line(job: Job, reason: str) -> str:
    if job.stage == "decode":
        return f"Interrupted ({reason}); its decode stage runs again from its stored prior tokens"
    return f"Interrupted ({reason}); queued to run again with its seed"
