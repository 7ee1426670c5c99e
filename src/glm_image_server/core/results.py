"""What a generation produces, shared by every layer: the engine's side holds PIL images; the stored side
(`JobResult` and what it holds) is JSON, so any process that reads the store can render it."""

from __future__ import annotations

from dataclasses import dataclass, field

from PIL import Image
from pydantic import BaseModel, ConfigDict

from .request import Stage


class Frozen(BaseModel):
    """Stored data: immutable, and nothing unknown accepted when it is read back."""

    model_config = ConfigDict(frozen=True, extra="forbid")


@dataclass(frozen=True)
class StageTimings:
    """Seconds spent in each stage of the batch that produced a result."""

    ar: float = 0.0
    dit: float = 0.0
    vae: float = 0.0

    @property
    def inference(self) -> float:
        return self.ar + self.dit + self.vae


@dataclass(frozen=True)
class GenerationResult:
    """A request's images, each with the seed that made it."""

    images: list[Image.Image]
    seeds: list[int]
    timings: StageTimings = field(default_factory=StageTimings)


@dataclass(frozen=True)
class Progress:
    """AR: tokens generated of expected; DiT: denoising steps done of total; VAE: images decoded."""

    stage: Stage
    done: int
    total: int


@dataclass(frozen=True)
class Preview:
    """A small, cheap look at request `request`'s image `image` after DiT step `step` of `steps`."""

    request: int
    image: int
    step: int
    steps: int
    picture: Image.Image


class SpanCheck(Frozen):
    text: str  # the quoted span, as the prompt has it
    found: bool
    similarity: float  # 0..1: the best matching stretch of the text read


class TextCheck(Frozen):
    """One image's check: its spans, what the reader found in it, and an overall score in 0..1."""

    score: float
    spans: tuple[SpanCheck, ...]
    detected_text: str = ""


class StoredImage(Frozen):
    key: str  # storage key: an unguessable file name
    content_type: str
    width: int
    height: int
    file_size: int
    seed: int


class JobResult(Frozen):
    images: tuple[StoredImage, ...]
    prompt: str  # the prompt actually used
    has_nsfw_concepts: tuple[bool, ...]
    timings: dict[str, float]  # seconds: queue, fetch, expansion, ar, dit, vae, safety, text_check, encode...
    cost: float = 0.0  # USD, from the configured pricing (of every candidate made, kept or not)
    text_checks: tuple[TextCheck, ...] | None = None  # per image, when asked for and the prompt quotes text

    @property
    def seed(self) -> int:
        """The request's seed: the first image's."""
        return self.images[0].seed


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


class FinishedImage(Frozen):
    """An image a running job already stored, to hand out early; the job's result has it at `index`."""

    index: int
    image: StoredImage
    nsfw: bool
    cost: float | None = None  # USD, when known before the job ends (per-megapixel pricing)
