"""fal's wire models: the GLM-Image endpoint's input fields and its output, as fal documents them.
Unknown input fields are ignored, as fal does. `webp` output is our addition."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ...core.request import (
    DEFAULT_GUIDANCE,
    DEFAULT_STEPS_API,
    MAX_CANDIDATES,
    MAX_PROMPT_CHARS,
    MAX_SEED,
    MAX_SIDE,
    MIN_SIDE,
    SIZE_MULTIPLE,
    SIZE_PRESETS,
)
from ..common import SeededTextCheck

API = "fal"  # the `api` its jobs record
OWNER, ALIAS = "fal-ai", "glm-image"
PREFIXES = (f"/{OWNER}/", "/queue/", "/fal/")  # the paths fal's clients call
TEXT_TO_IMAGE = f"{OWNER}/{ALIAS}"
IMAGE_TO_IMAGE = f"{OWNER}/{ALIAS}/image-to-image"

SizePreset = Literal[
    "square_hd", "square", "portrait_4_3", "portrait_16_9", "landscape_4_3", "landscape_16_9"
]


class ImageSize(BaseModel):
    width: int = Field(default=512, gt=0, le=14142)
    height: int = Field(default=512, gt=0, le=14142)


class TextToImageInput(BaseModel):
    """The fields of fal's GLM-Image endpoint."""

    model_config = ConfigDict(extra="ignore")

    prompt: str = Field(min_length=1, max_length=MAX_PROMPT_CHARS, description="Text prompt for the image.")
    image_size: SizePreset | ImageSize = Field(
        default="square_hd",
        description=f"A preset or {{width, height}}; multiples of {SIZE_MULTIPLE}, {MIN_SIDE} to {MAX_SIDE}.",
    )
    num_inference_steps: int = Field(default=DEFAULT_STEPS_API, ge=10, le=100)
    guidance_scale: float = Field(default=DEFAULT_GUIDANCE, ge=1, le=10)
    seed: int | None = Field(default=None, ge=0, le=MAX_SEED)
    num_images: int = Field(default=1, ge=1, le=4)
    enable_safety_checker: bool = True
    output_format: Literal["jpeg", "png", "webp"] = Field(default="jpeg", description="webp is our addition.")
    sync_mode: bool = Field(default=False, description="Return images as base64 data URIs, not URLs.")
    enable_prompt_expansion: bool = False
    enable_text_check: bool = Field(
        default=False, description="Our addition: read back the prompt's quoted text in every image."
    )
    text_check_candidates: int = Field(
        default=1,
        ge=1,
        le=MAX_CANDIDATES,
        description="Our addition: make this many candidates (seeds seed..seed+N-1) and return the "
        "num_images best by text check.",
    )

    @field_validator("image_size")
    @classmethod
    def _on_grid(cls, size: SizePreset | ImageSize) -> SizePreset | ImageSize:
        width, height = SIZE_PRESETS[size] if isinstance(size, str) else (size.width, size.height)
        if not all(MIN_SIDE <= side <= MAX_SIDE and side % SIZE_MULTIPLE == 0 for side in (width, height)):
            raise ValueError(
                f"GLM-Image needs width and height to be multiples of {SIZE_MULTIPLE} "
                f"from {MIN_SIDE} to {MAX_SIDE}; got {width}x{height}"
            )
        return size

    @property
    def size(self) -> tuple[int, int]:
        size = self.image_size
        return SIZE_PRESETS[size] if isinstance(size, str) else (size.width, size.height)

    @property
    def references(self) -> tuple[str, ...]:
        return ()


class ImageToImageInput(TextToImageInput):
    image_urls: list[str] = Field(
        min_length=1,
        max_length=4,
        description="1-4 reference images: http(s) URLs or data URIs; this server's own result URLs (or "
        "their /files/<key> paths) are read from its storage.",
    )

    @field_validator("image_urls", mode="before")
    @classmethod
    def _one_url_is_a_list(cls, value: object) -> object:
        return [value] if isinstance(value, str) else value  # the endpoint's own example sends a string

    @field_validator("image_urls")
    @classmethod
    def _schemes(cls, urls: list[str]) -> list[str]:
        for i, url in enumerate(urls):
            if not url.startswith(("http://", "https://", "data:", "/")):
                raise ValueError(
                    f"image_urls[{i}] must be an http(s) URL or a data URI (or a /files/ path of this "
                    f"server), got {url[:60]!r}"
                )
        return urls

    @property
    def references(self) -> tuple[str, ...]:
        return tuple(self.image_urls)


class FalOptions(BaseModel):
    """What the fal dialect keeps with a job to render it later."""

    sync_mode: bool = False


class FalImage(BaseModel):
    url: str
    content_type: str
    file_name: str
    file_size: int
    width: int
    height: int


class FalOutput(BaseModel):
    images: list[FalImage]
    seed: int
    prompt: str
    has_nsfw_concepts: list[bool]
    timings: dict[str, float]
    text_checks: list[SeededTextCheck] | None = None  # our addition: with enable_text_check


class QueueSubmitted(BaseModel):
    status: Literal["IN_QUEUE"] = "IN_QUEUE"
    request_id: str
    gateway_request_id: str
    response_url: str
    status_url: str
    cancel_url: str
    queue_position: int
