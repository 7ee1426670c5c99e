"""OpenAI's wire models: the Images API's parameters (generations as JSON, edits as multipart; `stream`
answers with server-sent events) and its error envelope. Extensions: seed, num_inference_steps,
guidance_scale. Any `model` is accepted: this server runs one."""

from __future__ import annotations

from typing import Literal

from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from ...core import request as core
from ..common import SeededTextCheck

API = "openai"  # the `api` its jobs record
PREFIX = "/v1/images/"
# OpenAI's words for each status we answer with.
CODES = {
    401: "invalid_api_key",
    408: "timeout",
    413: "payload_too_large",
    429: "rate_limit_exceeded",
    503: "service_unavailable",
    507: "insufficient_storage",
}


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

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), self.status)


def error_response(status: int, message: str) -> JSONResponse:
    """An error of the whole request in OpenAI's envelope."""
    kind = "requests" if status == 429 else "invalid_request_error" if status < 500 else "server_error"
    return OpenAIError(message, None, CODES.get(status), status, kind).response()


def expired() -> OpenAIError:
    return OpenAIError("The request expired before it finished.", None, None, 500, "server_error")


class ImageParams(BaseModel):
    model_config = ConfigDict(extra="ignore")

    prompt: str = Field(min_length=1, max_length=core.MAX_PROMPT_CHARS)
    model: str | None = None
    n: int = Field(default=1, ge=1, le=10)
    size: str = "auto"
    response_format: Literal["b64_json", "url"] = "b64_json"
    output_format: Literal["png", "jpeg", "webp"] = "png"
    output_compression: int | None = Field(default=None, ge=0, le=100)
    background: Literal["auto", "opaque", "transparent"] | None = None
    stream: bool = False
    partial_images: int | None = Field(default=None, ge=0, le=3)
    seed: int | None = Field(default=None, ge=0, le=core.MAX_SEED)
    num_inference_steps: int = Field(default=core.DEFAULT_STEPS_API, ge=1, le=100)
    guidance_scale: float = Field(default=core.DEFAULT_GUIDANCE, ge=core.MIN_GUIDANCE, le=core.MAX_GUIDANCE)
    # Our additions (the SDK sends them through `extra_body`): read back the prompt's quoted text, and
    # make this many candidates (seeds seed..seed+N-1) to return the n best by it.
    text_check: bool = False
    text_check_candidates: int = Field(default=1, ge=1, le=core.MAX_CANDIDATES)


def edit_schema() -> dict:
    """The edits form's fields in the OpenAPI document: the parameters, and 1-4 `image` files."""
    fields = ImageParams.model_json_schema()
    image = {"type": "array", "items": {"type": "string", "format": "binary"}}
    required = [*fields.get("required", []), "image"]
    return {**fields, "properties": {**fields["properties"], "image": image}, "required": required}


class OpenAIOptions(BaseModel):
    """What the OpenAI dialect keeps with a job to render it later."""

    response_format: Literal["b64_json", "url"] = "b64_json"


class ImageData(BaseModel):
    revised_prompt: str
    url: str | None = None
    b64_json: str | None = None
    text_check: SeededTextCheck | None = None  # our addition: with text_check


class ImagesResponse(BaseModel):
    created: int
    data: list[ImageData]
    size: str
    output_format: str
    background: str = "opaque"
