"""fal's routes: sync runs at `POST /{app}`, the queue under `/queue/{app}` (or the same paths on a
`queue.*` host), so fal clients work with FAL_RUN_HOST=<host> and FAL_QUEUE_RUN_HOST=<host>/queue.
Status, result and cancel URLs carry the app without its sub-path, so both apps share one request store.
Submissions honour fal's platform headers (headers.py): a start timeout and a queue priority.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse

from ...core.job import Job, JobStatus
from ...core.request import InvalidRequest
from ...delivery.sender import Outgoing, Renderer
from ...serving.services import Services
from ..common import (
    GONE,
    HUNG_UP,
    DialectService,
    client_of,
    input_error,
    is_http_url,
    job_error,
    on_time,
    owner_of_request,
    unless_disconnected,
)
from ..jsonbody import StrictJsonRoute
from . import headers, translate
from .protocol import (
    ALIAS,
    IMAGE_TO_IMAGE,
    OWNER,
    TEXT_TO_IMAGE,
    FalOptions,
    ImageToImageInput,
    QueueSubmitted,
    TextToImageInput,
)

REQUEST_PATH = f"/queue/{OWNER}/{ALIAS}/requests/{{request_id}}"
NOT_FOUND = {"detail": "request not found"}

router = APIRouter(tags=["fal"], route_class=StrictJsonRoute)


class FalService(DialectService):
    api = "fal"

    def render(self, job: Job) -> dict:
        """The output JSON of a succeeded job (blocking with sync_mode: reads the files)."""
        inline = self.options(job, FalOptions).sync_mode
        return translate.output(job, self.render_images(job, inline)).model_dump(exclude_none=True)

    async def result_response(self, job: Job) -> JSONResponse:
        if job.status != JobStatus.SUCCEEDED:
            return headers.with_error_headers(*translate.error_body(job_error(job)))
        return JSONResponse(await self.services.call(self.render, job))


def deliveries(services: Services) -> Renderer:
    """The webhook POST of a finished job, signed as fal signs its webhooks (translate.webhook_headers)
    when it is sent; the user id is the job's key's owner hash."""
    service = FalService(services)

    def render(job: Job) -> list[Outgoing]:
        images = service.render_images(job, False) if job.status == JobStatus.SUCCEEDED else None
        body = translate.webhook_payload(job, images)
        user_id = job.owner or "anonymous"

        def sign(data: bytes) -> dict[str, str]:
            return translate.webhook_headers(services.webhook_key.sign, job.id, user_id, data, time.time())

        return [Outgoing("POST", job.output.webhook_url, json=body, sign=sign)]

    return render


async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    """FastAPI's 422 for a body or query that fails the fal schema, in words (translate.py)."""
    detail = translate.validation_detail(list(exc.errors()), request.headers.get("content-type"))
    return JSONResponse({"detail": jsonable_encoder(detail)}, 422)


def _service(request: Request) -> FalService:
    """The fal view of the jobs of the request's key."""
    return FalService(request.app.state.services, owner_of_request(request))


def _queue_base(request: Request) -> str:
    public = request.app.state.services.settings.public_url
    if public:
        return public.rstrip("/") + "/queue"
    base = str(request.base_url).rstrip("/")
    return base if getattr(request.state, "queue_host", False) else base + "/queue"


def _urls(request: Request, job_id: str) -> dict[str, str]:
    root = f"{_queue_base(request)}/{OWNER}/{ALIAS}/requests/{job_id}"
    return {"response_url": root, "status_url": f"{root}/status", "cancel_url": f"{root}/cancel"}


async def _new_job(request: Request, app: str, body: TextToImageInput, webhook: str | None) -> Job:
    """Raises InvalidRequest for the body, headers.BadHeader for a platform header. Our own result URLs
    among the references are read from storage."""
    platform = headers.platform(request.headers)
    service, base_url = _service(request), str(request.base_url)
    references = await service.own_files(body.references, base_url)
    if references != body.references:
        body = body.model_copy(update={"image_urls": list(references)})
    req, output, options = translate.to_internal(body, webhook)
    job = service.new_job(app, req, output, base_url, options, priority=platform.priority)
    if platform.start_timeout_s is not None:
        job = job.model_copy(update={"start_by": job.created_at + platform.start_timeout_s})
    return job


async def _enforce_start(services: Services, job: Job) -> None:
    """Once the job's start deadline passes, fail it if it is still queued (which wakes its waiter)."""
    if job.start_by is None:
        return
    await asyncio.sleep(max(0.0, job.start_by - time.time()) + 0.01)
    await services.call(services.store.expire_start_deadlines, time.time())


def _invalid(exc: InvalidRequest) -> JSONResponse:
    return JSONResponse({"detail": translate.detail(input_error(exc))}, 422)


async def _run(request: Request, app: str, body: TextToImageInput) -> JSONResponse:
    service = _service(request)
    try:
        job = await _new_job(request, app, body, None)
    except InvalidRequest as exc:
        return _invalid(exc)
    except headers.BadHeader as exc:
        return headers.bad_header(exc)
    request.state.request_id = job.id
    await service.submit(job, client_of(request))
    deadline = asyncio.ensure_future(_enforce_start(service.services, job))
    try:
        finished = await unless_disconnected(request, service.wait(job.id))
    finally:
        deadline.cancel()
    if finished is GONE:
        return HUNG_UP
    if finished is None:
        return JSONResponse({"detail": "the request expired before it finished"}, 410)
    return await service.result_response(finished)


async def _submit(request: Request, app: str, body: TextToImageInput, webhook: str | None) -> JSONResponse:
    service = _service(request)
    problem = (
        "must be an http(s) URL" if not is_http_url(webhook) else await service.refused_destination(webhook)
    )
    if problem:
        detail = [{"loc": ["query", "fal_webhook"], "msg": problem, "type": "value_error"}]
        return JSONResponse({"detail": detail}, 422)
    try:
        job = await _new_job(request, app, body, webhook)
    except InvalidRequest as exc:
        return _invalid(exc)
    except headers.BadHeader as exc:
        return headers.bad_header(exc)
    request.state.request_id = job.id
    await service.submit(job, client_of(request))
    position = await service.services.call(service.services.store.queue_position, job.id)
    submitted = QueueSubmitted(
        request_id=job.id, gateway_request_id=job.id, **_urls(request, job.id), queue_position=position
    )
    return JSONResponse(submitted.model_dump())


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
PreviewsFlag = Annotated[
    str,
    Query(
        pattern="^(?i:0|1|true|false)$",
        description="our extension: include the latest live preview as a data URI while running",
    ),
]


def _logs_on(logs: str) -> bool:
    return logs.lower() in ("1", "true")


def _read_status(services: Services, request_id: str, logs: bool) -> tuple | None:
    """What a status body needs from the store: the job (fal's only), its queue position, its logs, and
    while it runs its live progress and preview. Shared by every caller (snapshots): `_status` checks
    the caller's key."""
    job = on_time(services.store, services.store.get(request_id))
    if job is None or job.api != FalService.api:
        return None
    position = services.store.queue_position(job.id) if job.status == JobStatus.QUEUED else 0
    entries = translate.log_entries(services.store.logs(job.id)) if logs else None
    live = services.store.live(job.id) if job.status == JobStatus.RUNNING else None
    return job, position, entries, live


async def _status(
    request: Request, request_id: str, logs: bool, previews: bool = False
) -> tuple[Job | None, dict]:
    services: Services = request.app.state.services
    snapshot = await services.snapshots.load(
        (request_id, logs, previews), lambda: services.call(_read_status, services, request_id, logs)
    )
    if snapshot is None or _service(request).own(snapshot[0]) is None:
        return None, NOT_FOUND
    job, position, entries, live = snapshot
    body = translate.status_body(job, _urls(request, job.id), position, entries)
    return job, translate.with_live(body, live, previews)


@router.get(f"{REQUEST_PATH}/status", summary="Request status")
async def status(
    request: Request, request_id: str, logs: LogsFlag = "0", previews: PreviewsFlag = "0"
) -> JSONResponse:
    request.state.request_id = request_id
    job, body = await _status(request, request_id, _logs_on(logs), _logs_on(previews))
    if job is None:
        return JSONResponse(body, 404)
    return JSONResponse(body, 200 if job.status.finished else 202)


def _unsent_logs(body: dict, sent: int) -> tuple[dict, int]:
    """The body with only the log lines not sent before on this stream (fal's JS client appends each
    event's logs to what it has), and how many have been sent with it."""
    logs = body.get("logs")
    if logs is None:
        return body, sent
    return {**body, "logs": logs[sent:]}, len(logs)


@router.get(
    f"{REQUEST_PATH}/status/stream", summary="Request status as server-sent events", response_model=None
)
async def status_stream(
    request: Request, request_id: str, logs: LogsFlag = "0", previews: PreviewsFlag = "0"
) -> StreamingResponse | JSONResponse:
    """An event whenever the status changes; each event's `logs` holds only the lines new since the
    previous event. A keep-alive comment after `stream_keepalive_s` of silence."""
    request.state.request_id = request_id
    services: Services = request.app.state.services
    flags, keepalive_s = (_logs_on(logs), _logs_on(previews)), services.settings.stream_keepalive_s
    seen = services.changes.seen(request_id)
    job, body = await _status(request, request_id, *flags)
    if job is None:
        return JSONResponse(body, 404)

    async def events() -> AsyncIterator[str]:
        current, body_now, version, sent, last = job, body, seen, 0, None
        quiet_since = time.monotonic()
        while True:
            event, sent = _unsent_logs(body_now, sent)
            text = json.dumps(event)
            if event.get("logs") or text != last:
                yield f"data: {text}\n\n"
                last, quiet_since = text, time.monotonic()
            elif time.monotonic() - quiet_since >= keepalive_s:
                yield ": keep-alive\n\n"
                quiet_since = time.monotonic()
            if current is None or current.status.finished:
                return
            wait_s = max(0.0, keepalive_s - (time.monotonic() - quiet_since))
            await services.changes.wait(request_id, wait_s, version)
            version = services.changes.seen(request_id)
            current, body_now = await _status(request, request_id, *flags)

    return StreamingResponse(events(), media_type="text/event-stream", headers={"cache-control": "no-cache"})


@router.get(REQUEST_PATH, summary="Request result")
async def result(request: Request, request_id: str) -> JSONResponse:
    request.state.request_id = request_id
    service = _service(request)
    job = await service.get(request_id)
    if job is None:
        return JSONResponse(NOT_FOUND, 404)
    if not job.status.finished:
        return JSONResponse({"detail": "request is still in progress"}, 400)
    return await service.result_response(job)


@router.put(f"{REQUEST_PATH}/cancel", summary="Cancel a request")
async def cancel(request: Request, request_id: str) -> JSONResponse:
    """Queued: removed (200 OK). Running: stopped at its next token or step (202). Finished: 400."""
    request.state.request_id = request_id
    outcome = await _service(request).cancel(request_id)
    status_code, body = {
        "cancelled": (200, "OK"),
        "requested": (202, "CANCELLATION_REQUESTED"),
        "finished": (400, "ALREADY_COMPLETED"),
        "missing": (404, "NOT_FOUND"),
    }[outcome]
    return JSONResponse({"status": body}, status_code)
