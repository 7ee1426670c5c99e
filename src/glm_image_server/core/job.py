"""What a job and a worker are, as stored: plain JSON data (pydantic), so any process that reads the store
can run or answer for any job, and a restarted server picks up where the last one stopped."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Literal

from pydantic import Field, JsonValue

from .request import GenerationRequest, OutputSpec, Stage
from .results import FinishedImage, Frozen, JobResult, PreviewImage

LogLevel = Literal["INFO", "WARN", "ERROR", "DEBUG"]
Priority = Literal["normal", "low"]  # low: claimed only when no normal job waits
JobStage = Literal["prior", "decode"]  # the AR stage, then glyph encoding + DiT + VAE + post
Role = Literal["all", "prior", "decode"]  # the stages a worker runs


class JobStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED)


class JobError(Frozen):
    """Why a job did not succeed. `kind="input"`: the client's input (field says which); `"timeout"`: it
    did not start before its `start_by` deadline; else ours."""

    kind: Literal["input", "internal", "cancelled", "timeout"]
    message: str
    field: str | None = None


class LogEntry(Frozen):
    timestamp: float
    level: LogLevel
    message: str


class Job(Frozen):
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
    stage: JobStage = "prior"  # decode: its prior tokens are stored (the handoff); a decode worker goes on
    start_by: float | None = None  # a queued job not claimed by then fails (kind "timeout")
    result: JobResult | None = None
    error: JobError | None = None


class Claim(Frozen):
    """A worker's hold on a running job; only the current holder may finish it."""

    worker_id: str
    attempt: int
    stage: JobStage = "prior"


WorkerState = Literal["starting", "loading", "ready", "busy", "stopped", "dead"]


class WorkerInfo(Frozen):
    """A worker process as the store knows it (written by its heartbeat, or by `serve` when it dies)."""

    id: str
    pid: int
    device: str
    state: WorkerState
    role: Role = "all"
    jobs: tuple[str, ...] = ()
    heartbeat_at: float
    started_at: float
    restarts: int = 0
    detail: str = ""


@dataclass(frozen=True)
class LiveState:
    """What a running job is doing now; not durable, dropped when the job finishes."""

    stage: Stage | None = None
    done: int = 0
    total: int = 0
    preview: PreviewImage | None = None
    images: tuple[FinishedImage, ...] = ()
