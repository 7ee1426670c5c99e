"""fal wire <-> the internal model: an input body becomes a GenerationRequest and an OutputSpec; a job
becomes fal's output, status, error and webhook bodies."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
from collections.abc import Callable
from datetime import UTC, datetime

from ...core.job import Job, JobError, JobStatus, LiveState, LogEntry
from ...core.request import SIZE_PRESETS, GenerationRequest, OutputSpec, with_candidates
from ...serving.jobs import RenderedImage, failure
from ..common import text_checks
from ..dialect import build, wire_field
from .protocol import FalImage, FalOptions, FalOutput, TextToImageInput

FIELDS = {"references": "image_urls", "width": "image_size", "height": "image_size"}  # core -> fal
ERROR_TYPES = {
    "input": "validation_error",
    "internal": "internal_error",
    "cancelled": "request_cancelled",
    "timeout": "request_timeout",  # it did not start within its x-fal-request-timeout
}
ERROR_STATUS = {"cancelled": 400, "timeout": 504}  # otherwise 500 (ours); 422 for input


def to_internal(
    body: TextToImageInput, webhook: str | None, references: tuple[str, ...] | None = None
) -> tuple[GenerationRequest, OutputSpec, FalOptions]:
    """`references`: the body's, resolved (our own files as `stored:`). Raises InvalidRequest for what
    the model cannot run, beyond the schema's checks."""
    width, height = body.size
    refs = body.references if references is None else references
    request = build(GenerationRequest, body, FIELDS, width=width, height=height, references=refs)
    output = OutputSpec(
        format=body.output_format,
        safety_check=body.enable_safety_checker,
        expand_prompt=body.enable_prompt_expansion,
        webhook_url=webhook,
    )
    request, output = with_candidates(request, output, body.enable_text_check, body.text_check_candidates)
    return request, output, FalOptions(sync_mode=body.sync_mode)


def loc(field: str | None) -> list[str | int]:
    """Our field name (`references[1]`) as a fal body location (`["body", "image_urls", 1]`)."""
    name, index = wire_field(FIELDS, field or "body")
    return ["body", name] if index is None else ["body", name, index]


def detail(error: JobError) -> list[dict]:
    """An input error as FastAPI's 422 `detail` list."""
    return [{"loc": loc(error.field), "msg": error.message, "type": "value_error"}]


UNION_TAGS = ("literal[", "ImageSize")  # pydantic's per-member locations of a union field's errors


def validation_detail(errors: list[dict], content_type: str | None) -> list[dict]:
    """FastAPI's 422 `detail` for a fal body, reworded: a union field (image_size) says once what it
    accepts; a body that is not a JSON object says so (and why, without a JSON Content-Type)."""
    detail: list[dict] = []
    unions: set[tuple] = set()
    for error in errors:
        loc = tuple(error.get("loc", ()))
        if loc == ("body",) and error.get("type") in ("model_attributes_type", "dict_type", "model_type"):
            msg = "the body must be a JSON object"
            if "json" not in (content_type or ""):
                msg += f" sent with Content-Type: application/json (got {content_type or 'no Content-Type'})"
            detail.append({"type": "model_attributes_type", "loc": ["body"], "msg": msg})
        elif loc and isinstance(loc[-1], str) and loc[-1].startswith(UNION_TAGS):
            if loc[:-1] not in unions:
                unions.add(loc[:-1])
                got, presets = error.get("input"), ", ".join(SIZE_PRESETS)
                msg = f"must be one of {presets}, or an object {{width, height}}; got {got!r}"
                detail.append({"type": "value_error", "loc": list(loc[:-1]), "msg": msg, "input": got})
        else:  # in words: no "Value error, " prefix, no empty or unserialisable ctx
            cleaned = {k: v for k, v in error.items() if k not in ("ctx", "url")}
            cleaned["msg"] = str(error.get("msg", "")).removeprefix("Value error, ")
            ctx = error.get("ctx")
            if ctx and all(isinstance(v, str | int | float) for v in ctx.values()):
                cleaned["ctx"] = ctx
            detail.append(cleaned)
    return detail


def error_text(error: JobError) -> str:
    if error.kind != "input":
        return error.message
    where = ".".join(str(part) for part in loc(error.field)[1:])
    return f"{where}: {error.message}"


def error_body(error: JobError) -> tuple[int, dict]:
    """A failed job's result as (HTTP status, body)."""
    if error.kind == "input":
        return 422, {"detail": detail(error)}
    return ERROR_STATUS.get(error.kind, 500), {"detail": error.message, "error_type": ERROR_TYPES[error.kind]}


def output(job: Job, images: list[RenderedImage]) -> FalOutput:
    assert job.result is not None
    return FalOutput(
        images=[
            FalImage(
                url=image.url or image.data_uri,
                file_name=image.image.key,
                **image.image.model_dump(include={"content_type", "file_size", "width", "height"}),
            )
            for image in images
        ],
        seed=job.result.seed,
        prompt=job.result.prompt,
        has_nsfw_concepts=list(job.result.has_nsfw_concepts),
        timings=job.result.timings,
        text_checks=text_checks(job),
    )


def webhook_payload(job: Job, images: list[RenderedImage] | None) -> dict:
    """fal's webhook body: {request_id, gateway_request_id, status: OK|ERROR, payload, error}."""
    body = {"request_id": job.id, "gateway_request_id": job.id}
    if job.status == JobStatus.SUCCEEDED and images is not None:
        payload = output(job, images).model_dump(exclude_none=True)
        return {**body, "status": "OK", "payload": payload, "error": None}
    error = failure(job)
    payload = detail(error) if error.kind == "input" else error.message
    return {**body, "status": "ERROR", "payload": {"detail": payload}, "error": error_text(error)}


def webhook_headers(
    sign: Callable[[bytes], bytes], request_id: str, user_id: str, body: bytes, now: float
) -> dict[str, str]:
    """fal's webhook signature headers: a hex Ed25519 signature over request_id, user_id, the timestamp
    (Unix seconds) and the body's SHA-256 in hex, joined by newlines; receivers verify it with the JWKS."""
    timestamp = str(int(now))
    message = "\n".join((request_id, user_id, timestamp, hashlib.sha256(body).hexdigest()))
    return {
        "x-fal-webhook-request-id": request_id,
        "x-fal-webhook-user-id": user_id,
        "x-fal-webhook-timestamp": timestamp,
        "x-fal-webhook-signature": sign(message.encode()).hex(),
    }


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
        error = failure(job)
        body.update(
            metrics={"inference_time": None}, error=error_text(error), error_type=ERROR_TYPES[error.kind]
        )
    return body


def with_live(body: dict, live: LiveState | None, previews: bool) -> dict:
    """Our extension of a running request's status (fal clients ignore unknown fields): `progress` {stage:
    ar|dit|vae, done, total} of its batch; with `previews` the latest `preview` (its url a data URI)."""
    if live is None or body["status"] != "IN_PROGRESS":
        return body
    body = dict(body)
    if live.stage is not None:
        body["progress"] = {"stage": live.stage, "done": live.done, "total": live.total}
    if previews and (p := live.preview) is not None:
        uri = f"data:{p.content_type};base64,{base64.b64encode(p.data).decode()}"
        fields = {k: v for k, v in dataclasses.asdict(p).items() if k not in ("data", "content_type")}
        body["preview"] = {"url": uri, **fields}  # width, height, image, step, steps
    return body
