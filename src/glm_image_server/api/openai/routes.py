"""OpenAI's routes: `POST /v1/images/generations` (JSON) and `POST /v1/images/edits` (multipart, `image`
or repeated `image[]`, up to 4). Every failure is OpenAI's error envelope."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.datastructures import UploadFile

from ...jobs.records import JobError, JobStatus
from ...media.uploads import keep_upload_bytes
from ...services import Services
from ...types import MAX_REFERENCES, InvalidRequest
from ..auth import key_ok, presented_key
from ..common import DialectService
from . import translate
from .protocol import ImageParams, OpenAIError, OpenAIOptions

router = APIRouter(tags=["openai"])


class OpenAIService(DialectService):
    api = "openai"

    async def generate(
        self, request: Request, app: str, parsed: ImageParams, references: list
    ) -> JSONResponse:
        settings = self.services.settings
        req, output, options = translate.to_internal(parsed, references, settings.safety_default)
        job = self.new_job(app, req, output, str(request.base_url), options)
        await self.submit(job)
        finished = await self.wait(job.id)
        if finished is None:
            raise OpenAIError(
                "The request expired before it finished.", None, None, status=500, kind="server_error"
            )
        if finished.status != JobStatus.SUCCEEDED:
            raise translate.job_error(finished.error or JobError(kind="internal", message="failed"))
        inline = self.options(finished, OpenAIOptions).response_format == "b64_json"
        images = await self.render_images_async(finished, inline)
        return JSONResponse(translate.response(finished, images).model_dump(exclude_none=True))


def _check_key(request: Request) -> None:
    key = presented_key(request.headers.get("authorization", ""))
    if not key_ok(request.app.state.services.settings.api_keys, key):
        raise OpenAIError("Incorrect API key provided.", None, "invalid_api_key", status=401)


@router.post("/v1/images/generations", summary="Create images (OpenAI)")
async def generations(request: Request) -> JSONResponse:
    try:
        _check_key(request)
        try:
            body = await request.json()
        except ValueError:
            raise OpenAIError(
                "We could not parse the JSON body of your request.", None, "invalid_json"
            ) from None
        if not isinstance(body, dict):
            raise OpenAIError("The body must be a JSON object.", None, "invalid_json")
        service = OpenAIService(request.app.state.services)
        return await service.generate(request, "images/generations", translate.params(body), [])
    except OpenAIError as exc:
        return exc.response()


@router.post("/v1/images/edits", summary="Edit images (OpenAI, multipart)")
async def edits(request: Request) -> JSONResponse:
    try:
        _check_key(request)
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
        return await OpenAIService(services).generate(request, "images/edits", parsed, references)
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
