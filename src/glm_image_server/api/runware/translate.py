"""Runware wire <-> the internal model: an imageInference task becomes a GenerationRequest and an
OutputSpec; a job becomes result items, one per (finished) image, or a TaskError."""

from __future__ import annotations

import contextlib
import re
import uuid
from collections.abc import Callable
from typing import Any

from pydantic import ValidationError

from ...core.job import Job
from ...core.request import GenerationRequest, InvalidRequest, OutputSpec, with_candidates
from ...core.results import TextCheck
from ...serving.jobs import RenderedImage, failure
from ..dialect import build, wire_field
from .protocol import IMAGE_FIELDS, OUTPUT_FORMATS, ImageInference, RunwareOptions, TaskError

BASE64 = re.compile(r"^[A-Za-z0-9+/=\s]+$")
FIELDS = {  # core field -> Runware's parameter, where they differ
    "prompt": "positivePrompt",
    "num_inference_steps": "steps",
    "guidance_scale": "CFGScale",
    "num_images": "numberResults",
    "references": "referenceImages",
    "text_check_candidates": "textCheck",
}
UploadLookup = Callable[[uuid.UUID], str | None]  # imageUUID -> `stored:` locator, None if unknown
OwnUrl = Callable[[str, str], str]  # (URL, field) -> `stored:` locator for our own files, else the URL
VERSION_SHIFT, VARIANT_SHIFT = 76, 62  # a v4 UUID's fixed bits: version 0100, variant 10


def _as_given(url: str, field: str) -> str:
    return url


def cap(name: str) -> str:
    return name[:1].upper() + name[1:]


def from_validation(exc: ValidationError, task: dict) -> TaskError:
    first = exc.errors()[0]
    names = [part for part in first["loc"] if isinstance(part, str)]
    parameter = names[-1] if names else "task"
    if first["type"] == "missing":
        return TaskError(f"missing{cap(parameter)}", f"missing parameter: {parameter}", parameter, task)
    message = first["msg"].removeprefix("Value error, ")
    return TaskError(f"invalid{cap(parameter)}", f"invalid {parameter}: {message}", parameter, task)


def is_path(ref: str) -> bool:
    """A relative path (`/files/<key>`), not bare base64 (a JPEG's starts with `/9j/`)."""
    return ref.startswith("/") and not BASE64.match(ref)


def reference(ref: str, index: int, task: dict, uploads: UploadLookup, own_url: OwnUrl = _as_given) -> str:
    """A referenceImages entry as a locator: data URIs as given, URLs too unless they are our own files
    (read from storage), an imageUUID as its upload or result, bare base64 as a data URI."""

    def bad(why: str) -> TaskError:
        return TaskError("invalidReferenceImages", f"referenceImages[{index}] {why}", "referenceImages", task)

    if ref.startswith("data:"):
        return ref
    if ref.startswith(("http://", "https://")) or is_path(ref):
        try:
            return own_url(ref, f"referenceImages[{index}]")
        except InvalidRequest as exc:
            raise bad(exc.explanation) from None
    with contextlib.suppress(ValueError):
        locator = uploads(uuid.UUID(ref))
        if locator is None:
            raise bad(f"is an unknown imageUUID {ref!r} (not an upload or a result of yours, or it expired)")
        return locator
    if BASE64.match(ref):
        return "data:;base64," + "".join(ref.split())
    raise bad("must be an imageUUID, a URL, a data URI or base64 data")


def to_internal(
    params: ImageInference, task: dict, uploads: UploadLookup, own_url: OwnUrl = _as_given
) -> tuple[GenerationRequest, OutputSpec, RunwareOptions]:
    """Raises TaskError in Runware's terms. Blocking when the lookups are (they read storage)."""
    references = tuple(reference(ref, i, task, uploads, own_url) for i, ref in enumerate(params.references))
    try:
        request = build(GenerationRequest, params, FIELDS, references=references)
        output = OutputSpec(
            format=OUTPUT_FORMATS[params.outputFormat],  # type: ignore[arg-type]
            quality=params.outputQuality,
            safety_check=bool(params.safety and params.safety.checkContent and params.safety.mode != "none"),
            webhook_url=params.webhookURL,
            upload_url=params.uploadEndpoint,
            ttl_s=params.ttl if params.outputType == "URL" else None,
        )
        check = params.textCheck
        request, output = with_candidates(
            request, output, check is not None, check.candidates if check else 1
        )
    except InvalidRequest as exc:
        parameter = wire_field(FIELDS, exc.field)[0]
        raise TaskError(f"invalid{cap(parameter)}", exc.explanation, parameter, task) from None
    return request, output, RunwareOptions(outputType=params.outputType, includeCost=params.includeCost)


def image_uuid(job_id: str, index: int) -> str:
    """A result's imageUUID: its taskUUID with the six bits every v4 UUID fixes (version and variant)
    flipped by the image's number + 1, so a result given back as a reference leads to its task in one
    read (`result_of`). A taskUUID that is not v4 still gets distinct imageUUIDs, but they lead nowhere."""
    code = index + 1
    flip = ((code & 0xF) << VERSION_SHIFT) | ((code >> 4) << VARIANT_SHIFT)
    return str(uuid.UUID(int=uuid.UUID(job_id).int ^ flip))


def result_of(image: uuid.UUID) -> tuple[str, int] | None:
    """(taskUUID, image index) of a result's imageUUID; None for a v4 UUID (an upload's, or unknown)."""
    low = ((image.int >> VERSION_SHIFT) & 0xF) ^ 4
    high = ((image.int >> VARIANT_SHIFT) & 0x3) ^ 0b10
    code = low | (high << 4)
    if code == 0:
        return None
    task = image.int ^ (low << VERSION_SHIFT) ^ (high << VARIANT_SHIFT)
    return str(uuid.UUID(int=task)), code - 1


def item(
    job_id: str,
    index: int,
    image: RenderedImage,
    nsfw: bool,
    cost: float,
    check: TextCheck | None,
    options: RunwareOptions,
) -> dict:
    """One image's result: the same whether it is handed out before its job ends or after."""
    result: dict[str, Any] = {
        "taskType": "imageInference",
        "taskUUID": job_id,
        "imageUUID": image_uuid(job_id, index),
        "status": "success",
        "seed": image.image.seed,
        "NSFWContent": nsfw,
    }
    given = {"URL": image.url, "dataURI": image.data_uri, "base64Data": image.base64}
    result[IMAGE_FIELDS[options.outputType]] = given[options.outputType]
    if options.includeCost:
        result["cost"] = round(cost, 10)
    if check is not None:
        spans = [span.model_dump() for span in check.spans]
        result["textCheck"] = {"score": check.score, "spans": spans, "detectedText": check.detected_text}
    return result


def items(job: Job, images: list[RenderedImage], options: RunwareOptions) -> list[dict]:
    """A succeeded job's results, one item per image."""
    assert job.result is not None
    r = job.result
    cost = r.cost / len(r.images)
    checks = r.text_checks or [None] * len(images)
    return [
        item(job.id, i, image, r.has_nsfw_concepts[i], cost, check, options)
        for i, (image, check) in enumerate(zip(images, checks, strict=True))
    ]


def processing(job_id: str) -> dict:
    """An image of the task that is not finished yet (getResponse lists one per such image)."""
    return {"taskType": "imageInference", "taskUUID": job_id, "status": "processing"}


def error_item(job: Job) -> TaskError:
    error = failure(job)
    task = {"taskType": "imageInference", "taskUUID": job.id}
    if error.kind == "cancelled":
        return TaskError("taskCancelled", error.message, None, task)
    if error.kind == "internal":
        return TaskError("taskFailed", error.message, None, task, status=500)
    parameter = wire_field(FIELDS, error.field)[0] if error.field else None
    return TaskError(f"invalid{cap(parameter or 'Input')}", error.message, parameter, task)
