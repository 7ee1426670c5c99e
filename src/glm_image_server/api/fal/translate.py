"""fal wire <-> the internal model: an input body becomes a GenerationRequest and an OutputSpec; a job
becomes fal's output, status, error and webhook bodies."""

from __future__ import annotations

from datetime import UTC, datetime

from ...jobs.records import Job, JobError, JobStatus, LogEntry
from ...types import GenerationRequest, OutputSpec, random_seed
from ..common import RenderedImage, job_error
from .protocol import FalImage, FalOptions, FalOutput, TextToImageInput

FIELD_NAMES = {"references": "image_urls", "width": "image_size", "height": "image_size"}
ERROR_TYPES = {"input": "validation_error", "internal": "internal_error", "cancelled": "request_cancelled"}


def to_internal(
    body: TextToImageInput, webhook: str | None
) -> tuple[GenerationRequest, OutputSpec, FalOptions]:
    """Raises InvalidRequest for what the model cannot run, beyond the schema's checks."""
    width, height = body.size
    request = GenerationRequest(
        prompt=body.prompt,
        width=width,
        height=height,
        num_inference_steps=body.num_inference_steps,
        guidance_scale=body.guidance_scale,
        seed=body.seed if body.seed is not None else random_seed(),
        num_images=body.num_images,
        references=body.references,
    )
    output = OutputSpec(
        format=body.output_format,
        safety_check=body.enable_safety_checker,
        expand_prompt=body.enable_prompt_expansion,
        webhook_url=webhook,
    )
    return request, output, FalOptions(sync_mode=body.sync_mode)


def loc(field: str | None) -> list[str | int]:
    """Our field name (`references[1]`) as a fal body location (`["body", "image_urls", 1]`)."""
    name, _, index = (field or "body").partition("[")
    location: list[str | int] = ["body", FIELD_NAMES.get(name, name)]
    if index.rstrip("]").isdigit():
        location.append(int(index.rstrip("]")))
    return location


def detail(error: JobError) -> list[dict]:
    """An input error as FastAPI's 422 `detail` list."""
    return [{"loc": loc(error.field), "msg": error.message, "type": "value_error"}]


def error_text(error: JobError) -> str:
    if error.kind != "input":
        return error.message
    where = ".".join(str(part) for part in loc(error.field)[1:])
    return f"{where}: {error.message}"


def error_body(error: JobError) -> tuple[int, dict]:
    """A failed job's result as (HTTP status, body)."""
    if error.kind == "input":
        return 422, {"detail": detail(error)}
    return (400 if error.kind == "cancelled" else 500), {
        "detail": error.message,
        "error_type": ERROR_TYPES[error.kind],
    }


def output(job: Job, images: list[RenderedImage]) -> FalOutput:
    assert job.result is not None
    return FalOutput(
        images=[
            FalImage(
                url=image.url or image.data_uri,
                content_type=image.image.content_type,
                file_name=image.image.key,
                file_size=image.image.file_size,
                width=image.image.width,
                height=image.image.height,
            )
            for image in images
        ],
        seed=job.result.seed,
        prompt=job.result.prompt,
        has_nsfw_concepts=list(job.result.has_nsfw_concepts),
        timings=job.result.timings,
    )


def webhook_payload(job: Job, images: list[RenderedImage] | None) -> dict:
    """fal's webhook body: {request_id, gateway_request_id, status: OK|ERROR, payload, error}."""
    body = {"request_id": job.id, "gateway_request_id": job.id}
    if job.status == JobStatus.SUCCEEDED and images is not None:
        return {**body, "status": "OK", "payload": output(job, images).model_dump(), "error": None}
    error = job_error(job)
    payload = detail(error) if error.kind == "input" else error.message
    return {**body, "status": "ERROR", "payload": {"detail": payload}, "error": error_text(error)}


def log_entries(entries: list[LogEntry]) -> list[dict]:
    return [
        {
            "message": entry.message,
            "level": entry.level,
            "source": "USER",
            "timestamp": datetime.fromtimestamp(entry.timestamp, UTC).isoformat(),
        }
        for entry in entries
    ]


def status_body(job: Job, urls: dict[str, str], position: int, logs: list[dict] | None) -> dict:
    body: dict = {"request_id": job.id, **urls}
    if job.status == JobStatus.QUEUED:
        return {"status": "IN_QUEUE", **body, "queue_position": position, "logs": logs}
    if job.status == JobStatus.RUNNING:
        return {"status": "IN_PROGRESS", **body, "logs": logs}
    body = {"status": "COMPLETED", **body, "logs": logs}
    if job.status == JobStatus.SUCCEEDED and job.result:
        body["metrics"] = {"inference_time": job.result.timings.get("inference")}
    else:
        error = job_error(job)
        body.update(
            metrics={"inference_time": None}, error=error_text(error), error_type=ERROR_TYPES[error.kind]
        )
    return body
