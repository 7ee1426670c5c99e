"""OpenAI's routes: `POST /v1/images/generations` (JSON) and `POST /v1/images/edits` (multipart, `image`
or repeated `image[]`, up to 4). Every failure is OpenAI's error envelope."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.datastructures import UploadFile

from ...core.job import Job, JobError, JobStatus
from ...core.request import MAX_REFERENCES, InvalidRequest
from ...media.uploads import keep_upload_bytes
from ...serving.services import Services
from .. import jsonbody
from ..common import GONE, HUNG_UP, DialectService, client_of, owner_of_request, unless_disconnected
from . import translate
from .protocol import ImageParams, OpenAIError, OpenAIOptions, request_bodies

router = APIRouter(tags=["openai"])
FAILED = JobError(kind="internal", message="failed")


class OpenAIService(DialectService):
    api = "openai"

    async def generate(self, request: Request, app: str, parsed: ImageParams, references: list) -> Response:
        settings = self.services.settings
        req, output, options = translate.to_internal(parsed, references, settings.safety_default)
        job = self.new_job(app, req, output, str(request.base_url), options)
        await self.submit(job, client_of(request))
        if parsed.stream:
            prefix = "image_edit" if app == "images/edits" else "image_generation"
            events = self.stream(job, prefix, parsed.partial_images or 0)
            headers = {"cache-control": "no-cache"}
            return StreamingResponse(events, media_type="text/event-stream", headers=headers)
        finished = await unless_disconnected(request, self.wait(job.id))
        if finished is GONE:
            return HUNG_UP
        if finished is None:
            raise OpenAIError(
                "The request expired before it finished.", None, None, status=500, kind="server_error"
            )
        if finished.status != JobStatus.SUCCEEDED:
            raise translate.job_error(finished.error or FAILED)
        inline = self.options(finished, OpenAIOptions).response_format == "b64_json"
        images = await self.render_images_async(finished, inline)
        return JSONResponse(translate.response(finished, images).model_dump(exclude_none=True))

    async def stream(self, job: Job, prefix: str, wanted: int) -> AsyncIterator[str]:
        """OpenAI's image stream: up to `wanted` partial images (the job's live previews, spread over its
        DiT steps), then one `completed` event per image; a failure is an `error` event."""
        services, sent, seen = self.services, 0, None
        while True:
            version = services.changes.seen(job.id)
            current = self.own(await services.call(services.store.get, job.id))
            if current is None or current.status.finished:
                break
            live = await services.call(services.store.live, job.id) if wanted else None
            preview = live.preview if live is not None else None
            if preview is not None and (preview.image, preview.step) != seen:
                seen = (preview.image, preview.step)
                args = (sent, wanted, preview.image, preview.step, preview.steps, job.request.num_images)
                if translate.partial_due(*args):
                    data = await services.call(translate.reencode, preview.data, job.output.format)
                    b64 = base64.b64encode(data).decode()
                    yield translate.stream_event(prefix, "partial_image", job, b64, partial_image_index=sent)
                    sent += 1
            await services.changes.wait(job.id, services.settings.wait_poll_s, version)
        if current is None:
            error = OpenAIError("The request expired before it finished.", None, None, 500, "server_error")
            yield translate.stream_error(error)
        elif current.status != JobStatus.SUCCEEDED:
            yield translate.stream_error(translate.job_error(current.error or FAILED))
        else:
            for image in await self.render_images_async(current, True):
                b64 = image.base64 or ""
                yield translate.stream_event(prefix, "completed", current, b64, usage=translate.EMPTY_USAGE)


GENERATIONS_BODY, EDITS_BODY = request_bodies()


@router.post("/v1/images/generations", summary="Create images (OpenAI)", openapi_extra=GENERATIONS_BODY)
async def generations(request: Request) -> JSONResponse:
    try:
        try:
            body = await jsonbody.parse(await request.body())
        except ValueError as exc:
            raise OpenAIError(
                f"We could not parse the JSON body of your request: {exc}", None, "invalid_json"
            ) from None
        if not isinstance(body, dict):
            raise OpenAIError("The body must be a JSON object.", None, "invalid_json")
        service = OpenAIService(request.app.state.services, owner_of_request(request))
        return await service.generate(request, "images/generations", translate.params(body), [])
    except OpenAIError as exc:
        return exc.response()


@router.post("/v1/images/edits", summary="Edit images (OpenAI, multipart)", openapi_extra=EDITS_BODY)
async def edits(request: Request) -> JSONResponse:
    try:
        services: Services = request.app.state.services
        try:
            form = await request.form(max_files=MAX_REFERENCES + 2)
        except Exception as exc:  # starlette raises its own parse errors
            raise OpenAIError(f"Could not read the multipart form: {exc}", None, "invalid_form") from None
        if form.get("mask") is not None:
            raise OpenAIError(
                "Masks are not supported: GLM-Image edits by instruction.", "mask", "unsupported_value"
            )
        uploads = [f for f in form.getlist("image") + form.getlist("image[]") if isinstance(f, UploadFile)]
        if not uploads:
            raise OpenAIError("Missing required parameter: 'image'.", "image", "missing_required_parameter")
        if len(uploads) > MAX_REFERENCES:
            raise OpenAIError(f"At most {MAX_REFERENCES} images, got {len(uploads)}.", "image")
        parsed = translate.params({k: v for k, v in form.multi_items() if isinstance(v, str)})
        references = [await _store_upload(services, upload, i) for i, upload in enumerate(uploads)]
        service = OpenAIService(services, owner_of_request(request))
        return await service.generate(request, "images/edits", parsed, references)
    except OpenAIError as exc:
        return exc.response()


async def _store_upload(services: Services, upload: UploadFile, index: int) -> tuple[Any, str]:
    """Decode (validating it) and keep an uploaded image; returns it with its `stored:` locator."""
    limit = services.settings.fetch_max_bytes
    data = await upload.read(limit + 1)
    if len(data) > limit:
        raise OpenAIError(f"image {index} is larger than {limit} bytes.", "image")
    try:
        return await services.call(
            keep_upload_bytes, services.storage, data, "image", services.settings.input_max_pixels
        )
    except InvalidRequest as exc:
        raise OpenAIError(f"image {index} {exc.explanation}", "image") from None
