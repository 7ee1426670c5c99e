"""OpenAI wire <-> the internal model: parameters (and stored uploads) become a GenerationRequest and
an OutputSpec; a job becomes an ImagesResponse or an OpenAIError."""

from __future__ import annotations

import re
from typing import Any

from pydantic import ValidationError

from ...jobs.records import Job, JobError
from ...types import GenerationRequest, InvalidRequest, OutputSpec, random_seed, size_like
from ..common import RenderedImage
from .protocol import ImageData, ImageParams, ImagesResponse, OpenAIError, OpenAIOptions

SIZE = re.compile(r"^(\d{1,5})x(\d{1,5})$")
DEFAULT_SIZE = (1024, 1024)
PARAMS = {"width": "size", "height": "size", "references": "image", "num_images": "n"}


def params(fields: dict[str, Any]) -> ImageParams:
    try:
        parsed = ImageParams.model_validate(fields)
    except ValidationError as exc:
        first = exc.errors()[0]
        param = ".".join(str(part) for part in first["loc"]) or None
        if first["type"] == "missing":
            raise OpenAIError(
                f"Missing required parameter: '{param}'.", param, "missing_required_parameter"
            ) from None
        raise OpenAIError(f"Invalid value for '{param}': {first['msg']}.", param) from None
    if parsed.stream:
        raise OpenAIError("Streaming is not supported by this server.", "stream", "unsupported_value")
    if parsed.background == "transparent":
        raise OpenAIError("GLM-Image cannot make transparent backgrounds.", "background", "unsupported_value")
    return parsed


def _size(parsed: ImageParams, first_reference) -> tuple[int, int]:
    if parsed.size == "auto":
        return size_like(first_reference) if first_reference is not None else DEFAULT_SIZE
    match = SIZE.match(parsed.size)
    if not match:
        raise OpenAIError(f"Invalid value for 'size': {parsed.size!r}; use WIDTHxHEIGHT or 'auto'.", "size")
    return int(match[1]), int(match[2])


def to_internal(
    parsed: ImageParams, references: list[tuple[Any, str]], safety_default: bool
) -> tuple[GenerationRequest, OutputSpec, OpenAIOptions]:
    """`references`: (decoded image, `stored:` locator) per uploaded image. Raises OpenAIError."""
    width, height = _size(parsed, references[0][0] if references else None)
    quality = parsed.output_compression if parsed.output_compression is not None else 95
    try:
        request = GenerationRequest(
            prompt=parsed.prompt,
            width=width,
            height=height,
            num_inference_steps=parsed.num_inference_steps,
            guidance_scale=parsed.guidance_scale,
            seed=parsed.seed if parsed.seed is not None else random_seed(),
            num_images=parsed.n,
            references=tuple(locator for _, locator in references),
        )
        output = OutputSpec(format=parsed.output_format, quality=max(1, quality), safety_check=safety_default)
    except InvalidRequest as exc:
        raise OpenAIError(exc.explanation, PARAMS.get(exc.field, exc.field)) from None
    return request, output, OpenAIOptions(response_format=parsed.response_format)


def job_error(error: JobError) -> OpenAIError:
    if error.kind == "input":
        return OpenAIError(error.message, PARAMS.get((error.field or "").split("[")[0], error.field))
    if error.kind == "cancelled":
        return OpenAIError(error.message, None, "cancelled", status=409)
    return OpenAIError(error.message, None, None, status=500, kind="server_error")


def response(job: Job, images: list[RenderedImage]) -> ImagesResponse:
    assert job.result is not None
    return ImagesResponse(
        created=int(job.created_at),
        data=[
            ImageData(revised_prompt=job.result.prompt, url=image.url, b64_json=image.base64)
            for image in images
        ],
        size=f"{job.request.width}x{job.request.height}",
        output_format=job.output.format,
    )
