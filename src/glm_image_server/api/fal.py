"""The fal.ai dialect: `fal-ai/glm-image` and `fal-ai/glm-image/image-to-image`, sync and queued.

Sync runs are `POST /{app}`; the queue lives under `/queue/{app}` (or the same paths on a `queue.*`
host), so fal clients work with FAL_RUN_HOST=<host> and FAL_QUEUE_RUN_HOST=<host>/queue. Status, result
and cancel URLs carry the app without its sub-path, so both apps share one request store.
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator

from ..jobs.records import Job, JobError, JobSpec, JobStatus
from ..jobs.webhooks import Outgoing
from ..media.storage import LocalStorage, file_url
from ..settings import Settings
from ..types import (
    MAX_PROMPT_CHARS,
    MAX_SEED,
    MAX_SIDE,
    MIN_SIDE,
    SIZE_MULTIPLE,
    SIZE_PRESETS,
    InvalidRequest,
    random_seed,
)

if TYPE_CHECKING:
    from .app import Services

OWNER, ALIAS = "fal-ai", "glm-image"
TEXT_TO_IMAGE = f"{OWNER}/{ALIAS}"
IMAGE_TO_IMAGE = f"{OWNER}/{ALIAS}/image-to-image"
REQUEST_PATH = f"/queue/{OWNER}/{ALIAS}/requests/{{request_id}}"
STREAM_POLL_S = 1.0  # re-read the store at least this often while streaming a status

router = APIRouter(tags=["fal"])

SizePreset = Literal[
    "square_hd", "square", "portrait_4_3", "portrait_16_9", "landscape_4_3", "landscape_16_9"
]


class ImageSize(BaseModel):
    width: int = Field(default=512, gt=0, le=14142)
    height: int = Field(default=512, gt=0, le=14142)


class TextToImageInput(BaseModel):
    """The fields of fal's GLM-Image endpoint; unknown fields are ignored, as fal does."""

    model_config = ConfigDict(extra="ignore")

    prompt: str = Field(min_length=1, max_length=MAX_PROMPT_CHARS, description="Text prompt for the image.")
    image_size: SizePreset | ImageSize = Field(
        default="square_hd",
        description=f"A preset or {{width, height}}; both multiples of {SIZE_MULTIPLE}, "
        f"{MIN_SIDE} to {MAX_SIDE}.",
    )
    num_inference_steps: int = Field(default=30, ge=10, le=100)
    guidance_scale: float = Field(default=1.5, ge=1, le=10)
    seed: int | None = Field(default=None, ge=0, le=MAX_SEED)
    num_images: int = Field(default=1, ge=1, le=4)
    enable_safety_checker: bool = True
    output_format: Literal["jpeg", "png", "webp"] = Field(default="jpeg", description="webp is our addition.")
    sync_mode: bool = Field(default=False, description="Return images as base64 data URIs, not URLs.")
    enable_prompt_expansion: bool = False

    @field_validator("image_size")
    @classmethod
    def _on_grid(cls, size: SizePreset | ImageSize) -> SizePreset | ImageSize:
        width, height = SIZE_PRESETS[size] if isinstance(size, str) else (size.width, size.height)
        ok = all(MIN_SIDE <= side <= MAX_SIDE and side % SIZE_MULTIPLE == 0 for side in (width, height))
        if not ok:
            raise ValueError(
                f"GLM-Image needs width and height to be multiples of {SIZE_MULTIPLE} "
                f"from {MIN_SIDE} to {MAX_SIDE}; got {width}x{height}"
            )
        return size

    @property
    def size(self) -> tuple[int, int]:
        size = self.image_size
        return SIZE_PRESETS[size] if isinstance(size, str) else (size.width, size.height)


class ImageToImageInput(TextToImageInput):
    image_urls: list[str] = Field(
        min_length=1, max_length=4, description="1-4 reference images: http(s) URLs or data URIs."
    )

    @field_validator("image_urls", mode="before")
    @classmethod
    def _one_url_is_a_list(cls, value: object) -> object:
        return [value] if isinstance(value, str) else value  # the endpoint's own example sends a string

    @field_validator("image_urls")
    @classmethod
    def _schemes(cls, urls: list[str]) -> list[str]:
        for i, url in enumerate(urls):
            if not url.startswith(("http://", "https://", "data:")):
                raise ValueError(f"image_urls[{i}] must be an http(s) URL or a data URI, got {url[:60]!r}")
        return urls


# --- rendering -------------------------------------------------------------------------------------

FIELD_NAMES = {"references": "image_urls", "width": "image_size", "height": "image_size"}


def _loc(field: str | None) -> list[str | int]:
    """Our field name (`references[1]`) as a fal body location (`["body", "image_urls", 1]`)."""
    name, _, index = (field or "body").partition("[")
    loc: list[str | int] = ["body", FIELD_NAMES.get(name, name)]
    if index.rstrip("]").isdigit():
        loc.append(int(index.rstrip("]")))
    return loc


def _detail(error: JobError) -> list[dict]:
    """A job's input error as FastAPI's 422 `detail` list."""
    return [{"loc": _loc(error.field), "msg": error.message, "type": "value_error"}]


def _error_text(error: JobError) -> str:
    if error.kind != "input":
        return error.message
    where = ".".join(str(part) for part in _loc(error.field)[1:])
    return f"{where}: {error.message}"


ERROR_TYPES = {"input": "validation_error", "internal": "internal_error", "cancelled": "request_cancelled"}


def _error_response(job: Job) -> JSONResponse:
    error = job.error or JobError(kind="internal", message="failed")
    if error.kind == "input":
        return JSONResponse({"detail": _detail(error)}, 422)
    code = 400 if error.kind == "cancelled" else 500
    return JSONResponse({"detail": error.message, "error_type": ERROR_TYPES[error.kind]}, code)


def render_output(job: Job, storage: LocalStorage, settings: Settings) -> dict:
    """The endpoint's output JSON. Blocking (sync_mode reads the files)."""
    assert job.result is not None
    images = []
    for image in job.result.images:
        if job.options.get("sync_mode"):
            data = base64.b64encode(storage.read(image.key)).decode()
            url = f"data:{image.content_type};base64,{data}"
        else:
            url = file_url(settings.public_url, job.base_url, image.key)
        images.append(
            {
                "url": url,
                "content_type": image.content_type,
                "file_name": image.key,
                "file_size": image.file_size,
                "width": image.width,
                "height": image.height,
            }
        )
    return {
        "images": images,
        "seed": job.result.seed,
        "prompt": job.result.prompt,
        "has_nsfw_concepts": list(job.result.has_nsfw_concepts),
        "timings": job.result.timings,
    }


def webhook_payload(job: Job, storage: LocalStorage, settings: Settings) -> dict:
    """fal's webhook body: {request_id, gateway_request_id, status: OK|ERROR, payload, error}."""
    body = {"request_id": job.id, "gateway_request_id": job.id}
    if job.status == JobStatus.SUCCEEDED:
        return {**body, "status": "OK", "payload": render_output(job, storage, settings), "error": None}
    error = job.error or JobError(kind="internal", message="failed")
    detail = _detail(error) if error.kind == "input" else error.message
    return {**body, "status": "ERROR", "payload": {"detail": detail}, "error": _error_text(error)}


def deliveries_for(storage: LocalStorage, settings: Settings) -> Callable[[Job], list[Outgoing]]:
    def deliveries(job: Job) -> list[Outgoing]:
        return [Outgoing("POST", job.webhook_url, json=webhook_payload(job, storage, settings))]

    return deliveries


def _queue_base(request: Request, settings: Settings) -> str:
    if settings.public_url:
        return settings.public_url.rstrip("/") + "/queue"
    base = str(request.base_url).rstrip("/")
    return base if getattr(request.state, "queue_host", False) else base + "/queue"


def _urls(request: Request, settings: Settings, job_id: str) -> dict[str, str]:
    root = f"{_queue_base(request, settings)}/{OWNER}/{ALIAS}/requests/{job_id}"
    return {"response_url": root, "status_url": f"{root}/status", "cancel_url": f"{root}/cancel"}


def _status_body(request: Request, services: Services, job: Job, position: int, log_entries) -> dict:
    body: dict = {"request_id": job.id, **_urls(request, services.settings, job.id)}
    if job.status == JobStatus.QUEUED:
        return {"status": "IN_QUEUE", **body, "queue_position": position, "logs": log_entries}
    if job.status == JobStatus.RUNNING:
        return {"status": "IN_PROGRESS", **body, "logs": log_entries}
    body = {"status": "COMPLETED", **body, "logs": log_entries}
    if job.status == JobStatus.SUCCEEDED and job.result:
        body["metrics"] = {"inference_time": job.result.timings.get("inference")}
    else:
        error = job.error or JobError(kind="internal", message="failed")
        body.update(
            metrics={"inference_time": None}, error=_error_text(error), error_type=ERROR_TYPES[error.kind]
        )
    return body


# --- handlers --------------------------------------------------------------------------------------


def _services(request: Request) -> Services:
    return request.app.state.services


def _new_job(request: Request, app: str, body: TextToImageInput, webhook: str | None) -> Job:
    width, height = body.size
    spec = JobSpec(
        prompt=body.prompt,
        width=width,
        height=height,
        num_inference_steps=body.num_inference_steps,
        guidance_scale=body.guidance_scale,
        seed=body.seed if body.seed is not None else random_seed(),
        num_images=body.num_images,
        image_urls=tuple(getattr(body, "image_urls", ())),
        output_format=body.output_format,
        safety_check=body.enable_safety_checker,
        expand_prompt=body.enable_prompt_expansion,
    )
    spec.to_request()  # the model's own limits, beyond the schema's
    options = {"sync_mode": body.sync_mode}
    return _services(request).new_job(
        "fal", app, spec, str(request.base_url), webhook_url=webhook, options=options
    )


def _invalid(exc: InvalidRequest) -> JSONResponse:
    return JSONResponse(
        {"detail": _detail(JobError(kind="input", message=exc.explanation, field=exc.field))}, 422
    )


async def _run(request: Request, app: str, body: TextToImageInput) -> JSONResponse:
    services = _services(request)
    try:
        job = _new_job(request, app, body, None)
    except InvalidRequest as exc:
        return _invalid(exc)
    request.state.request_id = job.id
    await services.enqueue(job)
    job = await services.wait_finished(job.id)
    if job is None:
        return JSONResponse({"detail": "the request expired before it finished"}, 410)
    if job.status != JobStatus.SUCCEEDED:
        return _error_response(job)
    return JSONResponse(await services.call(render_output, job, services.storage, services.settings))


async def _submit(request: Request, app: str, body: TextToImageInput, webhook: str | None) -> JSONResponse:
    services = _services(request)
    if webhook is not None and not webhook.startswith(("http://", "https://")):
        detail = [{"loc": ["query", "fal_webhook"], "msg": "must be an http(s) URL", "type": "value_error"}]
        return JSONResponse({"detail": detail}, 422)
    try:
        job = _new_job(request, app, body, webhook)
    except InvalidRequest as exc:
        return _invalid(exc)
    request.state.request_id = job.id
    await services.enqueue(job)
    position = await services.call(services.store.queue_position, job.id)
    urls = _urls(request, services.settings, job.id)
    return JSONResponse(
        {
            "status": "IN_QUEUE",
            "request_id": job.id,
            "gateway_request_id": job.id,
            **urls,
            "queue_position": position,
        }
    )


Webhook = Annotated[str | None, Query(description="URL to POST the result to when the request finishes")]


@router.post(f"/{TEXT_TO_IMAGE}", summary="Text to image, synchronous")
async def run_text_to_image(body: TextToImageInput, request: Request) -> JSONResponse:
    return await _run(request, TEXT_TO_IMAGE, body)


@router.post(f"/{IMAGE_TO_IMAGE}", summary="Image to image, synchronous")
async def run_image_to_image(body: ImageToImageInput, request: Request) -> JSONResponse:
    return await _run(request, IMAGE_TO_IMAGE, body)


@router.post(f"/queue/{TEXT_TO_IMAGE}", summary="Text to image, queued")
async def submit_text_to_image(
    body: TextToImageInput, request: Request, fal_webhook: Webhook = None
) -> JSONResponse:
    return await _submit(request, TEXT_TO_IMAGE, body, fal_webhook)


@router.post(f"/queue/{IMAGE_TO_IMAGE}", summary="Image to image, queued")
async def submit_image_to_image(
    body: ImageToImageInput, request: Request, fal_webhook: Webhook = None
) -> JSONResponse:
    return await _submit(request, IMAGE_TO_IMAGE, body, fal_webhook)


LogsFlag = Annotated[str, Query(pattern="^(?i:0|1|true|false)$", description="include logs: 1/0/true/false")]
NOT_FOUND = {"detail": "request not found"}


def _logs_on(logs: str) -> bool:
    return logs.lower() in ("1", "true")


def _read_status(services: Services, request_id: str, logs: bool) -> tuple[Job, int, list | None] | None:
    """What a status body needs from the store: the job, its queue position, its logs if asked."""
    job = services.store.get(request_id)
    if job is None:
        return None
    position = services.store.queue_position(job.id) if job.status == JobStatus.QUEUED else 0
    entries = None
    if logs:
        entries = [
            {
                "message": entry.message,
                "level": entry.level,
                "source": "USER",
                "timestamp": datetime.fromtimestamp(entry.timestamp, UTC).isoformat(),
            }
            for entry in services.store.logs(job.id)
        ]
    return job, position, entries


async def _status(request: Request, request_id: str, logs: bool) -> tuple[Job | None, dict]:
    services = _services(request)
    key = (request_id, logs)
    snapshot = services.snapshots.get(key)
    if snapshot is None:
        version = services.snapshots.version(request_id)
        snapshot = await services.call(_read_status, services, request_id, logs)
        if snapshot is None:
            return None, NOT_FOUND
        services.snapshots.put(key, snapshot, version)
    job, position, entries = snapshot
    return job, _status_body(request, services, job, position, entries)


@router.get(f"{REQUEST_PATH}/status", summary="Request status")
async def status(request: Request, request_id: str, logs: LogsFlag = "0") -> JSONResponse:
    request.state.request_id = request_id
    job, body = await _status(request, request_id, _logs_on(logs))
    if job is None:
        return JSONResponse(body, 404)
    return JSONResponse(body, 200 if job.status.finished else 202)


@router.get(
    f"{REQUEST_PATH}/status/stream", summary="Request status as server-sent events", response_model=None
)
async def status_stream(
    request: Request, request_id: str, logs: LogsFlag = "0"
) -> StreamingResponse | JSONResponse:
    request.state.request_id = request_id
    services = _services(request)
    job, body = await _status(request, request_id, _logs_on(logs))
    if job is None:
        return JSONResponse(body, 404)

    async def events() -> AsyncIterator[str]:
        last = None
        current, body_now = job, body
        while True:
            text = json.dumps(body_now)
            if text != last:
                yield f"data: {text}\n\n"
                last = text
            if current is None or current.status.finished:
                return
            await services.changes.wait(request_id, STREAM_POLL_S)
            current, body_now = await _status(request, request_id, _logs_on(logs))

    return StreamingResponse(events(), media_type="text/event-stream", headers={"cache-control": "no-cache"})


@router.get(REQUEST_PATH, summary="Request result")
async def result(request: Request, request_id: str) -> JSONResponse:
    request.state.request_id = request_id
    services = _services(request)
    job = await services.call(services.store.get, request_id)
    if job is None:
        return JSONResponse(NOT_FOUND, 404)
    if not job.status.finished:
        return JSONResponse({"detail": "request is still in progress"}, 400)
    if job.status != JobStatus.SUCCEEDED:
        return _error_response(job)
    return JSONResponse(await services.call(render_output, job, services.storage, services.settings))


@router.put(f"{REQUEST_PATH}/cancel", summary="Cancel a request")
async def cancel(request: Request, request_id: str) -> JSONResponse:
    """Queued: removed (200 OK). Running: stopped at its next token or step (202). Finished: 400."""
    request.state.request_id = request_id
    services = _services(request)
    outcome = await services.call(services.store.request_cancel, request_id)
    if outcome == "requested":
        services.scheduler.cancel(request_id)
    services.snapshots.invalidate(request_id)
    services.changes.notify(request_id)
    status_code, body = {
        "cancelled": (200, "OK"),
        "requested": (202, "CANCELLATION_REQUESTED"),
        "finished": (400, "ALREADY_COMPLETED"),
        "missing": (404, "NOT_FOUND"),
    }[outcome]
    return JSONResponse({"status": body}, status_code)
