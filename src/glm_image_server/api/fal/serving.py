"""fal's serving class: sync runs, queue submissions, status polled or streamed, results and cancels on the
job service, in fal's wire formats (translate.py) and error answers; and the signed webhook of a finished
job. Also fal's platform headers: on a request `x-fal-request-timeout` (seconds it may wait to start: the
client's `start_timeout`) and `x-fal-queue-priority` (`normal` or `low`); on an error `X-Fal-Error-Type`
(the body's `error_type`) and, for a missed start deadline, `X-Fal-Request-Timeout-Type: user` (which
tells fal's clients not to retry)."""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections.abc import AsyncIterator, Mapping
from typing import get_args

from fastapi import HTTPException
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.requests import Request

from ...core.job import Job, JobError, JobStatus, Priority
from ...core.request import InvalidRequest
from ...delivery.sender import Outgoing, Renderer
from ...media.uploads import UploadTooLarge
from ...serving.admission import Refused
from ...serving.jobs import Snapshot, failure
from ...serving.services import Services
from ..common import DialectServing, route_class, unless_disconnected
from . import translate
from .protocol import ALIAS, API, OWNER, FalOptions, QueueSubmitted, TextToImageInput

REQUEST_TIMEOUT = "x-fal-request-timeout"
QUEUE_PRIORITY = "x-fal-queue-priority"
ERROR_TYPE = "x-fal-error-type"
TIMEOUT_TYPE = "x-fal-request-timeout-type"


class BadHeader(ValueError):
    """A platform header with a value fal would not accept (a 400 `bad_request`)."""


def platform(headers: Mapping[str, str]) -> tuple[float | None, Priority]:
    """(start timeout in seconds, queue priority) from a request's platform headers; raises BadHeader."""
    timeout, priority = headers.get(REQUEST_TIMEOUT), headers.get(QUEUE_PRIORITY, "normal").strip().lower()
    if priority not in get_args(Priority):
        raise BadHeader(f"{QUEUE_PRIORITY} must be normal or low, got {priority[:40]!r}")
    if timeout is None:
        return None, priority  # type: ignore[return-value]
    with contextlib.suppress(ValueError):
        seconds = float(timeout)
        if math.isfinite(seconds) and seconds > 0:
            return seconds, priority  # type: ignore[return-value]
    raise BadHeader(f"{REQUEST_TIMEOUT} must be a number of seconds above 0, got {timeout[:40]!r}")


def with_error_headers(status_code: int, body: dict) -> JSONResponse:
    """An error body with the headers fal puts beside it (module docstring)."""
    headers = {}
    if error_type := body.get("error_type"):
        headers[ERROR_TYPE] = error_type
        if error_type == "request_timeout":
            headers[TIMEOUT_TYPE] = "user"
    return JSONResponse(body, status_code, headers)


NOT_FOUND = {"detail": "request not found"}
CANCELLED = {
    "cancelled": (200, "OK"),
    "requested": (202, "CANCELLATION_REQUESTED"),
    "finished": (400, "ALREADY_COMPLETED"),
    "missing": (404, "NOT_FOUND"),
}


def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    """FastAPI's 422 for what fails the fal schema, in words (translate.py)."""
    detail = translate.validation_detail(list(exc.errors()), request.headers.get("content-type"))
    return JSONResponse({"detail": jsonable_encoder(detail)}, 422)


def invalid(request: Request, exc: InvalidRequest) -> JSONResponse:
    """What the model cannot run, beyond the schema (an upload over the limits: 413)."""
    status = 413 if isinstance(exc, UploadTooLarge) else 422
    error = JobError(kind="input", message=exc.explanation, field=exc.field)
    return JSONResponse({"detail": translate.detail(error)}, status)


ERRORS = {
    RequestValidationError: validation_error,
    InvalidRequest: invalid,
    BadHeader: lambda request, exc: with_error_headers(
        400, {"detail": str(exc), "error_type": "bad_request"}
    ),
}
FalRoute = route_class(ERRORS)
FalBytesRoute = route_class(ERRORS, strict_json=False)  # raw bodies: a part may come with no content type


class FalServing(DialectServing):
    """One request's view of fal's jobs: those of its key."""

    api = API

    async def run(self, app: str, body: TextToImageInput) -> Response:
        job = await self._submit(app, body, None)
        finished = await unless_disconnected(self.request, self.jobs.finished(self.caller, job.id))
        if finished is None:
            raise HTTPException(410, "the request expired before it finished")
        return await self._result(finished)

    async def queue(self, app: str, body: TextToImageInput, webhook: str | None) -> Response:
        bad = webhook is not None and not webhook.startswith(("http://", "https://"))
        if problem := "must be an http(s) URL" if bad else await self.jobs.refused_destination(webhook):
            detail = [{"loc": ["query", "fal_webhook"], "msg": problem, "type": "value_error"}]
            return JSONResponse({"detail": detail}, 422)
        job = await self._submit(app, body, webhook)
        position = (await self.jobs.snapshot(self.caller, job.id, progress=True, fresh=True)).position
        ids = {"request_id": job.id, "gateway_request_id": job.id}
        submitted = QueueSubmitted(**ids, **self._urls(job.id), queue_position=position)
        return JSONResponse(submitted.model_dump())

    async def _submit(self, app: str, body: TextToImageInput, webhook: str | None) -> Job:
        """Raises BadHeader for a platform header, InvalidRequest for the body."""
        start_timeout_s, priority = platform(self.request.headers)
        references = await self.jobs.local_references(body.references, self.base_url)
        request, output, options = translate.to_internal(body, webhook, references)
        job = self.jobs.new_job(self.caller, app, request, output, self.base_url, options, priority=priority)
        if start_timeout_s is not None:
            job = job.model_copy(update={"start_by": job.created_at + start_timeout_s})
        self.request.state.request_id = job.id
        await self.jobs.submit(self.caller, job)
        return job

    async def status(self, request_id: str, logs: bool, previews: bool) -> Response:
        self.request.state.request_id = request_id
        snapshot = await self.jobs.snapshot(self.caller, request_id, logs, progress=True)
        if snapshot.job is None:
            raise HTTPException(404, NOT_FOUND["detail"])
        return JSONResponse(self._status(snapshot, previews), 200 if snapshot.job.status.finished else 202)

    async def stream(self, request_id: str, logs: bool, previews: bool) -> Response:
        self.request.state.request_id = request_id
        keepalive_s, quiet_since = self.services.settings.stream_keepalive_s, time.monotonic()

        def until_keepalive() -> float:
            return max(0.0, keepalive_s - (time.monotonic() - quiet_since))

        snapshots = self.jobs.watch(self.caller, request_id, logs, True, until_keepalive)
        first = await anext(snapshots)
        if first.job is None:
            await snapshots.aclose()
            raise HTTPException(404, NOT_FOUND["detail"])

        async def events() -> AsyncIterator[str]:
            nonlocal quiet_since
            snapshot, sent, last = first, 0, None
            async with contextlib.aclosing(snapshots):
                while snapshot is not None:
                    event = self._status(snapshot, previews)
                    if (logs := event.get("logs")) is not None:  # only new lines: fal's JS client appends
                        event, sent = {**event, "logs": logs[sent:]}, len(logs)
                    text = json.dumps(event)
                    if event.get("logs") or text != last:
                        yield f"data: {text}\n\n"
                        last, quiet_since = text, time.monotonic()
                    elif time.monotonic() - quiet_since >= keepalive_s:
                        yield ": keep-alive\n\n"
                        quiet_since = time.monotonic()
                    try:
                        snapshot = await anext(snapshots, None)
                    except Refused:  # the store is gone, or the server stops: the client asks again
                        return

        return StreamingResponse(
            events(), media_type="text/event-stream", headers={"cache-control": "no-cache"}
        )

    def _status(self, snapshot: Snapshot, previews: bool) -> dict:
        job = snapshot.job
        if job is None:  # expired while streamed
            return NOT_FOUND
        entries = translate.log_entries(snapshot.logs) if snapshot.logs is not None else None
        body = translate.status_body(job, self._urls(job.id), snapshot.position, entries)
        return translate.with_live(body, snapshot.live, previews)

    async def result(self, request_id: str) -> Response:
        self.request.state.request_id = request_id
        job = await self.jobs.get(self.caller, request_id)
        if job is None:
            raise HTTPException(404, NOT_FOUND["detail"])
        if not job.status.finished:
            raise HTTPException(400, "request is still in progress")
        return await self._result(job)

    async def _result(self, job: Job) -> Response:
        if job.status != JobStatus.SUCCEEDED:
            return with_error_headers(*translate.error_body(failure(job)))
        images = await self.jobs.arender(job, FalOptions.model_validate(job.options).sync_mode)
        return JSONResponse(translate.output(job, images).model_dump(exclude_none=True))

    async def cancel(self, request_id: str) -> Response:
        self.request.state.request_id = request_id
        status_code, body = CANCELLED[await self.jobs.cancel(self.caller, request_id)]
        return JSONResponse({"status": body}, status_code)

    def _urls(self, job_id: str) -> dict[str, str]:
        base = self.base_url.rstrip("/")
        if public := self.services.settings.public_url:
            base = public.rstrip("/") + "/queue"
        elif not getattr(self.request.state, "queue_host", False):
            base += "/queue"
        root = f"{base}/{OWNER}/{ALIAS}/requests/{job_id}"
        return {"response_url": root, "status_url": f"{root}/status", "cancel_url": f"{root}/cancel"}


def deliveries(services: Services) -> Renderer:
    """A finished job's webhook POST, signed as fal signs them when sent (user id: the key's owner hash)."""

    def render(job: Job) -> list[Outgoing]:
        images = services.jobs.render(job, False) if job.status == JobStatus.SUCCEEDED else None
        body, user_id = translate.webhook_payload(job, images), job.owner or "anonymous"

        def sign(data: bytes) -> dict[str, str]:
            return translate.webhook_headers(services.webhook_key.sign, job.id, user_id, data, time.time())

        return [Outgoing("POST", job.output.webhook_url, json=body, sign=sign)]  # type: ignore[arg-type]

    return render
