"""OpenAI's routes: `POST /v1/images/generations` (JSON) and `POST /v1/images/edits` (multipart, `image`
or repeated `image[]`, up to 4). Each reads its body itself, so every failure is OpenAI's error envelope
(the route class answers an OpenAIError), and hands over to the serving class (serving.py)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.datastructures import UploadFile

from ...core.request import MAX_REFERENCES
from .. import jsonbody
from ..common import openapi_body, route_class
from . import translate
from .protocol import ImageParams, OpenAIError, edit_schema
from .serving import OpenAIServing

GENERATIONS_BODY = openapi_body("application/json", ImageParams.model_json_schema())
EDITS_BODY = openapi_body("multipart/form-data", edit_schema())
ERRORS = {OpenAIError: lambda request, exc: exc.response()}
router = APIRouter(tags=["openai"], route_class=route_class(ERRORS, strict_json=False))


@router.post("/v1/images/generations", summary="Create images (OpenAI)", openapi_extra=GENERATIONS_BODY)
async def generations(request: Request) -> Response:
    try:
        body = await jsonbody.parse(await request.body())
    except ValueError as exc:
        message = f"We could not parse the JSON body of your request: {exc}"
        raise OpenAIError(message, None, "invalid_json") from None
    if not isinstance(body, dict):
        raise OpenAIError("The body must be a JSON object.", None, "invalid_json")
    return await OpenAIServing(request).generate("images/generations", translate.params(body), [])


@router.post("/v1/images/edits", summary="Edit images (OpenAI, multipart)", openapi_extra=EDITS_BODY)
async def edits(request: Request) -> Response:
    try:
        form = await request.form(max_files=MAX_REFERENCES + 2)
    except Exception as exc:  # starlette raises its own parse errors
        raise OpenAIError(f"Could not read the multipart form: {exc}", None, "invalid_form") from None
    if form.get("mask") is not None:
        message = "Masks are not supported: GLM-Image edits by instruction."
        raise OpenAIError(message, "mask", "unsupported_value")
    uploads = [f for f in form.getlist("image") + form.getlist("image[]") if isinstance(f, UploadFile)]
    if not uploads:
        raise OpenAIError("Missing required parameter: 'image'.", "image", "missing_required_parameter")
    if len(uploads) > MAX_REFERENCES:
        raise OpenAIError(f"At most {MAX_REFERENCES} images, got {len(uploads)}.", "image")
    parsed = translate.params({k: v for k, v in form.multi_items() if isinstance(v, str)})
    serving = OpenAIServing(request)
    references = [await serving.keep_upload(upload, i) for i, upload in enumerate(uploads)]
    return await serving.generate("images/edits", parsed, references)
