"""What a job is, as stored: the request to run, what to do with its output, its state, and its result or
error; and what a worker is, as the store knows it.

Everything here is plain JSON-serialisable data (pydantic), so any process that can read the store can
run or answer for any job, and a restarted server picks up where the last one stopped.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue

from ..text_check import TextCheck
from ..types import GenerationRequest, OutputSpec, Stage

LogLevel = Literal["INFO", "WARN", "ERROR", "DEBUG"]
Priority = Literal["normal", "low"]  # low: claimed only when no normal job waits


class JobStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED)


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class StoredImage(_Frozen):
    key: str  # storage key: an unguessable file name
    content_type: str
    width: int
    height: int
    file_size: int
    seed: int


class JobResult(_Frozen):
    images: tuple[StoredImage, ...]
    prompt: str  # the prompt actually used
    has_nsfw_concepts: tuple[bool, ...]
    timings: dict[str, float]  # seconds: queue, fetch, expansion, ar, dit, vae, safety, text_check, encode...
    cost: float = 0.0  # USD, from the configured pricing (of every candidate made, kept or not)
    # Per image, when the request asked for a text check and the prompt quoted text; else None.
    text_checks: tuple[TextCheck, ...] | None = None

    @property
    def seed(self) -> int:
        """The request's seed: the first image's."""
        return self.images[0].seed


class JobError(_Frozen):
    """Why a job did not succeed. `kind="input"`: the client's input (field says which); `"timeout"`: it
    did not start before its `start_by` deadline; else ours."""

    kind: Literal["input", "internal", "cancelled", "timeout"]
    message: str
    field: str | None = None


class LogEntry(_Frozen):
    timestamp: float
    level: LogLevel
    message: str


class Job(_Frozen):
    id: str
    api: str  # which dialect submitted it; only that dialect reads, renders or cancels it
    app: str  # the dialect's endpoint name, e.g. fal-ai/glm-image/image-to-image
    request: GenerationRequest
    output: OutputSpec
    status: JobStatus
    created_at: float
    started_at: float | None = None
    finished_at: float | None = None
    attempts: int = 0  # claims so far; the current claim is (worker_id, attempts)
    worker_id: str | None = None
    cancel_requested: bool = False
    file_prefix: str  # unguessable; output files are {file_prefix}-{i}.{ext}
    base_url: str  # where the client reached us, for URLs in results (unless public_url is set)
    options: dict[str, JsonValue] = Field(default_factory=dict)  # the dialect's typed options, dumped
    owner: str | None = None  # a stable hash of the API key that created it (None: the server has no keys)
    priority: Priority = "normal"  # FIFO within a priority; low jobs wait while normal ones queue
    start_by: float | None = None  # a queued job not claimed by then fails (kind "timeout")
    result: JobResult | None = None
    error: JobError | None = None


class Claim(_Frozen):
    """A worker's hold on a running job; only the current holder may finish it."""

    worker_id: str
    attempt: int


WorkerState = Literal["starting", "loading", "ready", "busy", "stopped", "dead"]


class WorkerInfo(_Frozen):
    """A worker process as the store knows it (written by its heartbeat, or by `serve` when it dies)."""

    id: str
    pid: int
    device: str
    state: WorkerState
    jobs: tuple[str, ...] = ()
    heartbeat_at: float
    started_at: float
    restarts: int = 0
    detail: str = ""


@dataclass(frozen=True)
class PreviewImage:
    """A running job's latest live preview: a small encoded image of image `image` after DiT step `step`."""

    data: bytes
    content_type: str
    width: int
    height: int
    image: int
    step: int
    steps: int


class FinishedImage(_Frozen):
    """One image of a running job that is already checked, encoded and stored, before the job ends: what a
    dialect can hand out early. The job's result, when it comes, has the same image at `index`."""

    index: int
    image: StoredImage
    nsfw: bool
    cost: float | None = None  # USD, when known before the job ends (per-megapixel pricing)


@dataclass(frozen=True)
class LiveState:
    """What a running job is doing now: its batch's stage progress, its latest preview and the images it
    finished so far. Kept apart from the job (not durable, dropped when the job finishes)."""

    stage: Stage | None = None
    done: int = 0
    total: int = 0
    preview: PreviewImage | None = None
    images: tuple[FinishedImage, ...] = ()
