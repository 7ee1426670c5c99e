"""The one internal request model: every dialect translates to it, the job store keeps it, the engine runs
it. Validation lives here and nowhere else, so a request that exists is one the engine can run."""

from __future__ import annotations

import math
import re
import secrets
from dataclasses import dataclass, field, replace
from typing import Literal

from PIL import Image

# GLM-Image works on a 32-px grid: AR tokens are d32, upsampled 2x to the DiT's d16 patches.
SIZE_MULTIPLE = 32
MIN_SIDE, MAX_SIDE = 64, 2048
MAX_STEPS = 100
MIN_GUIDANCE, MAX_GUIDANCE = 1.0, 50.0
MAX_IMAGES = 20
MAX_REFERENCES = 4
MAX_PROMPT_CHARS = 10_000
MAX_SEED = 2**63 - 1
MAX_CANDIDATES = 8  # best-of-N by text check: at most this many candidates per image asked for
# Default DiT steps: the model card's 50 for `glm-image generate`, fal's 30 for the HTTP APIs.
DEFAULT_STEPS_CLI = 50
DEFAULT_STEPS_API = 30
DEFAULT_GUIDANCE = 1.5

# fal's image_size presets (fal toolkit), width x height.
SIZE_PRESETS: dict[str, tuple[int, int]] = {
    "square_hd": (1024, 1024),
    "square": (512, 512),
    "portrait_4_3": (768, 1024),
    "portrait_16_9": (576, 1024),
    "landscape_4_3": (1024, 768),
    "landscape_16_9": (1024, 576),
}
AUTO_SIZE_PIXELS = 1024 * 1024
STORED = "stored:"  # a reference already in our storage (an upload): `stored:<key>`

Stage = Literal["ar", "dit", "vae"]
OutputFormat = Literal["jpeg", "png", "webp"]


class InvalidRequest(ValueError):
    """A request field is out of range; says which field and what would have been valid."""

    def __init__(self, field: str, message: str, allowed: str = "") -> None:
        self.field, self.message, self.allowed = field, message, allowed
        self.explanation = message + (f" (allowed: {allowed})" if allowed else "")
        super().__init__(f"{field}: {self.explanation}")


def _round_to_grid(value: float) -> int:
    return max(MIN_SIDE, min(MAX_SIDE, round(value / SIZE_MULTIPLE) * SIZE_MULTIPLE))


def size_like(image: Image.Image, pixels: int = AUTO_SIZE_PIXELS) -> tuple[int, int]:
    """Output size for `size=auto`: the reference's aspect ratio at about `pixels`, on the 32-px grid."""
    aspect = image.width / image.height
    return _round_to_grid(math.sqrt(pixels * aspect)), _round_to_grid(math.sqrt(pixels / aspect))


def parse_size(text: str) -> tuple[int, int]:
    """A preset name or `WIDTHxHEIGHT`, as (width, height); raises InvalidRequest for anything else."""
    if text in SIZE_PRESETS:
        return SIZE_PRESETS[text]
    width, sep, height = text.lower().partition("x")
    if sep and width.isdigit() and height.isdigit() and len(width) < 6 and len(height) < 6:
        return int(width), int(height)
    allowed = f"WIDTHxHEIGHT or one of {', '.join(SIZE_PRESETS)}"
    raise InvalidRequest("size", f"unknown size {text!r}", allowed)


def random_seed() -> int:
    """The one place a default seed is chosen: when a request is created, so a re-run reproduces it."""
    return secrets.randbelow(2**32)


def image_seed(seed: int, index: int) -> int:
    """Seed of the index-th image of a request: image i of seed s equals image 0 of seed s+i."""
    return (seed + index) % (MAX_SEED + 1)


def _check_range(name: str, value: float, low: float, high: float, kinds: object = int | float) -> None:
    if isinstance(value, bool) or not isinstance(value, kinds) or not low <= value <= high:
        low_s, high_s = (str(n) if isinstance(n, int) else f"{n:g}" for n in (low, high))  # :g rounds 2**63
        message = f"must be between {low_s} and {high_s}, got {value!r}"
        raise InvalidRequest(name, message, f"{low_s}..{high_s}")


@dataclass(frozen=True)
class GenerationRequest:
    """One generation, validated on construction: text-to-image, or an edit of 1-4 `references` (URLs, data
    URIs or `stored:<key>` uploads, fetched by a worker). Its seed is fixed on creation; image i: seed + i."""

    prompt: str
    width: int = 1024
    height: int = 1024
    num_inference_steps: int = DEFAULT_STEPS_CLI
    guidance_scale: float = DEFAULT_GUIDANCE
    seed: int = field(default_factory=random_seed)
    num_images: int = 1
    references: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        chars = f"1..{MAX_PROMPT_CHARS} characters"
        if not isinstance(self.prompt, str) or not self.prompt.strip():
            raise InvalidRequest("prompt", "must be a non-empty string", chars)
        if len(self.prompt) > MAX_PROMPT_CHARS:
            raise InvalidRequest("prompt", f"is {len(self.prompt)} characters long", chars)
        allowed = f"multiples of {SIZE_MULTIPLE} from {MIN_SIDE} to {MAX_SIDE}"
        for name in ("width", "height"):
            value = getattr(self, name)
            if not isinstance(value, int) or not MIN_SIDE <= value <= MAX_SIDE or value % SIZE_MULTIPLE:
                raise InvalidRequest(name, f"must be a multiple of {SIZE_MULTIPLE}, got {value}", allowed)
        _check_range("num_inference_steps", self.num_inference_steps, 1, MAX_STEPS)
        _check_range("guidance_scale", self.guidance_scale, MIN_GUIDANCE, MAX_GUIDANCE)
        _check_range("num_images", self.num_images, 1, MAX_IMAGES)
        _check_range("seed", self.seed, 0, MAX_SEED)
        if len(self.references) > MAX_REFERENCES:
            refs = f"got {len(self.references)} images"
            raise InvalidRequest("references", refs, f"0..{MAX_REFERENCES} images")
        for i, ref in enumerate(self.references):
            if not isinstance(ref, str) or not ref.startswith(("http://", "https://", "data:", STORED)):
                message = "must be an http(s) URL, a data URI or an upload"
                raise InvalidRequest(f"references[{i}]", message, "URLs or data URIs")

    @property
    def batch_key(self) -> str:
        """Requests with equal keys (size, number of references: the AR stage's inputs) share an AR batch."""
        return f"{self.width}x{self.height}/{len(self.references)}"

    @property
    def seeds(self) -> list[int]:
        return [image_seed(self.seed, i) for i in range(self.num_images)]


@dataclass(frozen=True)
class OutputSpec:
    """What to do with a request's images: encoding, checks, and where to deliver them."""

    format: OutputFormat = "jpeg"
    quality: int = 95
    safety_check: bool = False
    expand_prompt: bool = False
    webhook_url: str | None = None
    upload_url: str | None = None  # each output file is PUT here when the job succeeds
    ttl_s: float | None = None  # keep the result this long instead of the server's retention
    text_check: bool = False  # read back the prompt's quoted text in every image
    keep_best: int = 0  # >0: the request's images are candidates; keep this many, best by text check

    def __post_init__(self) -> None:
        if self.format not in ("jpeg", "png", "webp"):
            raise InvalidRequest("output_format", f"unknown format {self.format!r}", "jpeg, png, webp")
        _check_range("output_quality", self.quality, 1, 100)
        _check_range("keep_best", self.keep_best, 0, MAX_IMAGES)


# Quoted spans: straight and curly double and single quotes, and CJK brackets. A straight single quote opens
# only after a non-word character, so apostrophes (it's, don't) do not count.
QUOTED = re.compile(
    '"([^"]+)"'
    "|(?<!\\w)'([^']+)'(?!\\w)"
    "|\u201c([^\u201d]+)\u201d"
    "|\u2018([^\u2019]+)\u2019"
    "|\u300c([^\u300d]+)\u300d|\u300e([^\u300f]+)\u300f|\u300a([^\u300b]+)\u300b"
)


def quoted_texts(prompt: str) -> list[str]:
    return [next(group for group in match.groups() if group) for match in QUOTED.finditer(prompt)]


def with_candidates(
    request: GenerationRequest, output: OutputSpec, enabled: bool, candidates: int
) -> tuple[GenerationRequest, OutputSpec]:
    """A dialect's text-check fields on the internal model. With more candidates than images asked for, the
    request makes them all (seeds seed .. seed+N-1) and the post stage keeps the `num_images` best; a prompt
    quoting no text makes no extra candidates (nothing to rank them by). Raises InvalidRequest."""
    _check_range("text_check_candidates", candidates, 1, MAX_CANDIDATES, int)
    if not enabled and candidates == 1:
        return request, output
    output = replace(output, text_check=True)
    if candidates > request.num_images and quoted_texts(request.prompt):
        output = replace(output, keep_best=request.num_images)
        request = replace(request, num_images=candidates)
    return request, output
