"""What a job is, as stored: the request to run, its state, and its result or error.

Everything here is plain JSON-serialisable data (pydantic), so any process that can read the store can
run or answer for any job, and a restarted server picks up where the last one stopped.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ..types import MAX_REFERENCES, GenerationRequest

OutputFormat = Literal["jpeg", "png", "webp"]
LogLevel = Literal["INFO", "WARN", "ERROR", "DEBUG"]


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


STORED = "stored:"


class JobSpec(_Frozen):
    """A GenerationRequest before its reference images are fetched, plus what to do with the output.

    The seed is always set (chosen at submission when the client gave none), so a job that is run again
    after a restart produces the same images.
    """

    prompt: str
    width: int
    height: int
    num_inference_steps: int
    guidance_scale: float
    seed: int
    num_images: int = 1
    # http(s) URLs, data URIs, or `stored:<key>` for an image already in our storage (an upload)
    image_urls: tuple[str, ...] = Field(default=(), max_length=MAX_REFERENCES)
    output_format: OutputFormat = "jpeg"
    output_quality: int = Field(default=95, ge=1, le=100)
    safety_check: bool = False
    expand_prompt: bool = False

    @property
    def batch_key(self) -> str:
        """Jobs with equal keys can share one engine batch (GenerationRequest.batch_key, before fetch)."""
        steps, guidance, refs = self.num_inference_steps, self.guidance_scale, len(self.image_urls)
        return f"{self.width}x{self.height}/{steps}/{guidance!r}/{refs}"

    def to_request(self, references: tuple = (), prompt: str | None = None) -> GenerationRequest:
        """The engine's request (with `prompt` instead of the client's, after expansion); raises
        InvalidRequest when a value is out of the model's range."""
        return GenerationRequest(
            prompt=prompt or self.prompt,
            width=self.width,
            height=self.height,
            num_inference_steps=self.num_inference_steps,
            guidance_scale=self.guidance_scale,
            seed=self.seed,
            num_images=self.num_images,
            references=references,
        )


class StoredImage(_Frozen):
    key: str  # storage key: an unguessable file name
    content_type: str
    width: int
    height: int
    file_size: int
    seed: int


class JobResult(_Frozen):
    images: tuple[StoredImage, ...]
    seed: int
    prompt: str  # the prompt actually used
    has_nsfw_concepts: tuple[bool, ...]
    timings: dict[str, float]  # seconds: queue, fetch, expansion, ar, dit, vae, safety, encode, inference
    cost: float = 0.0  # USD, from the configured pricing


class JobError(_Frozen):
    """Why a job did not succeed. `kind="input"`: the client's input (field says which); else ours."""

    kind: Literal["input", "internal", "cancelled"]
    message: str
    field: str | None = None


class LogEntry(_Frozen):
    timestamp: float
    level: LogLevel
    message: str


class Job(_Frozen):
    id: str
    api: str  # which dialect submitted it; only that dialect renders it
    app: str  # the dialect's endpoint name, e.g. fal-ai/glm-image/image-to-image
    spec: JobSpec
    status: JobStatus
    created_at: float
    started_at: float | None = None
    finished_at: float | None = None
    attempts: int = 0
    cancel_requested: bool = False
    file_prefix: str  # unguessable; output files are {file_prefix}-{i}.{ext}
    base_url: str  # where the client reached us, for URLs in results (unless public_url is set)
    webhook_url: str | None = None
    upload_url: str | None = None  # each output file is PUT here when the job succeeds
    ttl_s: float | None = None  # keep the result this long instead of the server's retention
    options: dict[str, Any] = Field(default_factory=dict)  # the dialect's own rendering options
    result: JobResult | None = None
    error: JobError | None = None
