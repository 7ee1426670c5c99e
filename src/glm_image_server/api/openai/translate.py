"""OpenAI wire <-> the internal model: parameters (and stored uploads) become a GenerationRequest and
an OutputSpec; a job becomes an ImagesResponse or an OpenAIError."""

from __future__ import annotations

import io
import json
import re
import time
from typing import Any

from PIL import Image
from pydantic import ValidationError

from ...core.job import Job, JobError
from ...core.request import GenerationRequest, InvalidRequest, OutputSpec, size_like, with_candidates
from ...serving.jobs import RenderedImage
from ..common import text_checks
from ..dialect import build, wire_field
from .protocol import ImageData, ImageParams, ImagesResponse, OpenAIError, OpenAIOptions

SIZE = re.compile(r"^(\d{1,5})x(\d{1,5})$")
DEFAULT_SIZE = (1024, 1024)
FIELDS = {"width": "size", "height": "size", "references": "image", "num_images": "n"}  # core -> OpenAI


def params(fields: dict[str, Any]) -> ImageParams:
    try:
        parsed = ImageParams.model_validate(fields)
    except ValidationError as exc:
        first = exc.errors()[0]
        param = ".".join(str(part) for part in first["loc"]) or None
        if first["type"] == "missing":
            message = f"Missing required parameter: '{param}'."
            raise OpenAIError(message, param, "missing_required_parameter") from None
        raise OpenAIError(f"Invalid value for '{param}': {first['msg']}.", param) from None
    if parsed.partial_images and not parsed.stream:
        raise OpenAIError("'partial_images' needs 'stream': true.", "partial_images")
    if parsed.background == "transparent":
        raise OpenAIError("GLM-Image cannot make transparent backgrounds.", "background", "unsupported_value")
    return parsed


def to_internal(
    parsed: ImageParams, references: list[tuple[Any, str]], safety_default: bool
) -> tuple[GenerationRequest, OutputSpec, OpenAIOptions]:
    """`references`: (decoded image, `stored:` locator) per uploaded image. Raises OpenAIError."""
    if parsed.size == "auto":
        width, height = size_like(references[0][0]) if references else DEFAULT_SIZE
    elif match := SIZE.match(parsed.size):
        width, height = int(match[1]), int(match[2])
    else:
        raise OpenAIError(f"Invalid value for 'size': {parsed.size!r}; use WIDTHxHEIGHT or 'auto'.", "size")
    quality = parsed.output_compression if parsed.output_compression is not None else 95
    try:
        locators = tuple(locator for _, locator in references)
        request = build(GenerationRequest, parsed, FIELDS, width=width, height=height, references=locators)
        output = OutputSpec(format=parsed.output_format, quality=max(1, quality), safety_check=safety_default)
        request, output = with_candidates(request, output, parsed.text_check, parsed.text_check_candidates)
    except InvalidRequest as exc:
        raise OpenAIError(exc.explanation, wire_field(FIELDS, exc.field)[0]) from None
    return request, output, OpenAIOptions(response_format=parsed.response_format)


def job_error(error: JobError) -> OpenAIError:
    if error.kind == "input":
        return OpenAIError(error.message, wire_field(FIELDS, error.field)[0] if error.field else None)
    if error.kind == "cancelled":
        return OpenAIError(error.message, None, "cancelled", status=409)
    return OpenAIError(error.message, None, None, status=500, kind="server_error")


def response(job: Job, images: list[RenderedImage]) -> ImagesResponse:
    assert job.result is not None
    prompt, checks = job.result.prompt, text_checks(job) or [None] * len(images)
    data = [
        ImageData(revised_prompt=prompt, url=image.url, b64_json=image.base64, text_check=check)
        for image, check in zip(images, checks, strict=True)
    ]
    size = f"{job.request.width}x{job.request.height}"
    return ImagesResponse(created=int(job.created_at), data=data, size=size, output_format=job.output.format)


EMPTY_USAGE = {
    "input_tokens": 0,
    "input_tokens_details": {"image_tokens": 0, "text_tokens": 0},
    "output_tokens": 0,
    "total_tokens": 0,
}


def reencode(data: bytes, output_format: str) -> bytes:
    """A preview (stored as JPEG) in the format the client asked for (blocking; previews are small)."""
    buffer = io.BytesIO()
    Image.open(io.BytesIO(data)).convert("RGB").save(buffer, output_format.upper())
    return buffer.getvalue()


def stream_event(prefix: str, kind: str, job: Job, b64: str, **extra: Any) -> str:
    """One server-sent event as OpenAI streams images (`prefix`: image_generation or image_edit)."""
    event = {
        "type": f"{prefix}.{kind}",
        "b64_json": b64,
        "created_at": int(time.time()),
        "size": f"{job.request.width}x{job.request.height}",
        "quality": "auto",
        "background": "opaque",
        "output_format": job.output.format,
        **extra,
    }
    return f"event: {event['type']}\ndata: {json.dumps(event)}\n\n"


def stream_error(error: OpenAIError) -> str:
    return f"event: error\ndata: {json.dumps(error.body())}\n\n"


def partial_due(sent: int, wanted: int, image: int, step: int, steps: int, images: int) -> bool:
    """Whether a preview at this point of the job is the next partial image to send: partial k goes out
    at the first preview past (k + 1) / (wanted + 1) of the job's DiT steps, so they spread out."""
    return sent < wanted and (image * steps + step) / (images * steps) >= (sent + 1) / (wanted + 1)
