"""The OpenAI Images dialect: `POST /v1/images/generations` (JSON) and `POST /v1/images/edits` (multipart,
`image` or repeated `image[]`, up to 4). Extensions beyond OpenAI's fields: seed, num_inference_steps,
guidance_scale. Any `model` is accepted: this server runs one model.
"""

from __future__ import annotations

import base64
import re
import uuid
from typing import TYPE_CHECKING, Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.datastructures import UploadFile

from ..jobs.records import STORED, Job, JobError, JobSpec, JobStatus
from ..media.encode import encode_image
from ..media.inputs import decode_image
from ..media.storage import upload_key
from ..types import MAX_PROMPT_CHARS, MAX_REFERENCES, MAX_SEED, InvalidRequest, random_seed, size_like
from .auth import key_ok, presented_key

if TYPE_CHECKING:
    from .app import Services

router = APIRouter(tags=["openai"])
SIZE = re.compile(r"^(\d+)x(\d+)$")
DEFAULT_SIZE = (1024, 1024)


class OpenAIError(Exception):
    """Rendered as OpenAI's envelope: `{"error": {message, type, param, code}}`."""

    def __init__(
        self,
        message: str,
        param: str | None = None,
        code: str | None = "invalid_value",
        status: int = 400,
        kind: str = "invalid_request_error",
    ) -> None:
        super().__init__(message)
        self.message, self.param, self.code, self.status, self.kind = message, param, code, status, kind

    def response(self) -> JSONResponse:
        error = {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}
        return JSONResponse({"error": error}, self.status)


class ImageParams(BaseModel):
    model_config = ConfigDict(extra="ignore")

    prompt: str = Field(min_length=1, max_length=MAX_PROMPT_CHARS)
    model: str | None = None
    n: int = Field(default=1, ge=1, le=10)
    size: str = "auto"
    response_format: Literal["b64_json", "url"] = "b64_json"
    output_format: Literal["png", "jpeg", "webp"] = "png"
    output_compression: int | None = Field(default=None, ge=0, le=100)
    background: Literal["auto", "opaque", "transparent"] | None = None
    stream: bool = False
    seed: int | None = Field(default=None, ge=0, le=MAX_SEED)
    num_inference_steps: int = Field(default=30, ge=1, le=100)
    guidance_scale: float = Field(default=1.5, ge=0, le=50)


def _params(fields: dict[str, Any]) -> ImageParams:
    try:
        params = ImageParams.model_validate(fields)
    except ValidationError as exc:
        first = exc.errors()[0]
        param = ".".join(str(part) for part in first["loc"]) or None
        if first["type"] == "missing":
            raise OpenAIError(
                f"Missing required parameter: '{param}'.", param, "missing_required_parameter"
            ) from None
        raise OpenAIError(f"Invalid value for '{param}': {first['msg']}.", param) from None
    if params.stream:
        raise OpenAIError("Streaming is not supported by this server.", "stream", "unsupported_value")
    if params.background == "transparent":
        raise OpenAIError("GLM-Image cannot make transparent backgrounds.", "background", "unsupported_value")
    return params


def _size(params: ImageParams, references: list) -> tuple[int, int]:
    if params.size == "auto":
        return size_like(references[0]) if references else DEFAULT_SIZE
    match = SIZE.match(params.size)
    if not match:
        raise OpenAIError(f"Invalid value for 'size': {params.size!r}; use WIDTHxHEIGHT or 'auto'.", "size")
    return int(match[1]), int(match[2])


PARAMS = {"width": "size", "height": "size", "references": "image", "num_images": "n"}


def _job_error(error: JobError) -> OpenAIError:
    if error.kind == "input":
        param = PARAMS.get((error.field or "").split("[")[0], error.field)
        return OpenAIError(error.message, param)
    if error.kind == "cancelled":
        return OpenAIError(error.message, None, "cancelled", status=409)
    return OpenAIError(error.message, None, None, status=500, kind="server_error")


def _check_key(request: Request) -> None:
    key = presented_key(request.headers.get("authorization", ""))
    if not key_ok(request.app.state.services.settings.api_keys, key):
        raise OpenAIError("Incorrect API key provided.", None, "invalid_api_key", status=401)


def _render(job: Job, services: Services) -> dict:
    """Blocking: b64_json reads the files."""
    assert job.result is not None
    data = []
    for image in job.result.images:
        item: dict[str, Any] = {"revised_prompt": job.result.prompt}
        if job.options.get("response_format") == "url":
            item["url"] = services.file_url(job, image.key)
        else:
            item["b64_json"] = base64.b64encode(services.storage.read(image.key)).decode()
        data.append(item)
    return {
        "created": int(job.created_at),
        "data": data,
        "size": f"{job.spec.width}x{job.spec.height}",
        "output_format": job.spec.output_format,
        "background": "opaque",
    }


async def _generate(request: Request, app: str, params: ImageParams, references: list) -> JSONResponse:
    services: Services = request.app.state.services
    width, height = _size(params, [image for image, _ in references])
    quality = params.output_compression if params.output_compression is not None else 95
    spec = JobSpec(
        prompt=params.prompt,
        width=width,
        height=height,
        num_inference_steps=params.num_inference_steps,
        guidance_scale=params.guidance_scale,
        seed=params.seed if params.seed is not None else random_seed(),
        num_images=params.n,
        image_urls=tuple(ref for _, ref in references),
        output_format=params.output_format,
        output_quality=max(1, quality),
        safety_check=services.settings.safety_default,
    )
    try:
        spec.to_request()
    except InvalidRequest as exc:
        raise OpenAIError(exc.explanation, PARAMS.get(exc.field, exc.field)) from None
    job = services.new_job(
        "openai", app, spec, str(request.base_url), options={"response_format": params.response_format}
    )
    await services.enqueue(job)
    job = await services.wait_finished(job.id)
    if job is None:
        raise OpenAIError(
            "The request expired before it finished.", None, None, status=500, kind="server_error"
        )
    if job.status != JobStatus.SUCCEEDED:
        raise _job_error(job.error or JobError(kind="internal", message="failed"))
    return JSONResponse(await services.call(_render, job, services))


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
        return await _generate(request, "images/generations", _params(body), [])
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
        fields = {k: v for k, v in form.multi_items() if isinstance(v, str)}
        params = _params(fields)
        references = [await _store_upload(services, upload, i) for i, upload in enumerate(uploads)]
        return await _generate(request, "images/edits", params, references)
    except OpenAIError as exc:
        return exc.response()


async def _store_upload(services: Services, upload: UploadFile, index: int) -> tuple[Any, str]:
    """Decode (validating it) and keep an uploaded image; returns it with its `stored:` reference."""
    data = await upload.read(services.settings.fetch_max_bytes + 1)
    if len(data) > services.settings.fetch_max_bytes:
        raise OpenAIError(f"image {index} is larger than {services.settings.fetch_max_bytes} bytes.", "image")

    def keep() -> tuple[Any, str]:
        image = decode_image(data, "image", max_pixels=services.settings.input_max_pixels)
        key = upload_key(uuid.uuid4())
        services.storage.save(key, encode_image(image, "png"))
        return image, STORED + key

    try:
        return await services.call(keep)
    except InvalidRequest as exc:
        raise OpenAIError(f"image {index} {exc.explanation}", "image") from None
