"""Runware's wire models: the imageInference task, its options, and the error item every failure is
reported as. Where Runware's defaults would hurt GLM-Image we use its own: 30 steps, CFGScale 1.5."""

from __future__ import annotations

import uuid
from typing import Literal

from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator

from ...core import request as core

API = "runware"  # the `api` its jobs record
MODEL = "runware:glm-image@0"
OUTPUT_FORMATS = {"JPG": "jpeg", "PNG": "png", "WEBP": "webp"}
IMAGE_FIELDS = {"URL": "imageURL", "dataURI": "imageDataURI", "base64Data": "imageBase64Data"}


class TaskError(Exception):
    """One task's error, as Runware reports it: `{code, message, parameter, taskType, taskUUID}`."""

    def __init__(
        self,
        code: str,
        message: str,
        parameter: str | None = None,
        task: dict | None = None,
        status: int = 400,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(message)
        self.code, self.message, self.parameter, self.status = code, message, parameter, status
        self.retry_after_s = retry_after_s
        self.task_type = (task or {}).get("taskType")
        self.task_uuid = (task or {}).get("taskUUID")

    def item(self) -> dict:
        return {
            "code": self.code,
            "message": self.message,
            "parameter": self.parameter,
            "taskType": self.task_type,
            "taskUUID": self.task_uuid,
        }


# Runware's words for each status we answer with (others: invalidRequest).
CODES = {
    401: "invalidApiKey",
    408: "timeout",
    413: "payloadTooLarge",
    429: "tooManyRequests",
    500: "internalError",
    503: "serviceUnavailable",
    507: "insufficientStorage",
}


def error_response(status: int, message: str) -> JSONResponse:
    """An error of a whole message (not of one task) in Runware's envelope: `{"errors": [item]}`."""
    error = TaskError(CODES.get(status, "invalidRequest"), message, status=status)
    return JSONResponse({"errors": [error.item()]}, status)


class Safety(BaseModel):
    checkContent: bool = False
    mode: Literal["none", "fast"] | None = None


class TextCheck(BaseModel):
    """Our addition: read back the prompt's quoted text in every image; with `candidates` N, make N
    candidates (seeds seed..seed+N-1) and return the numberResults best."""

    candidates: int = Field(default=1, ge=1, le=core.MAX_CANDIDATES)


class Inputs(BaseModel):
    referenceImages: list[str] | None = Field(default=None, min_length=1, max_length=core.MAX_REFERENCES)


class ImageInference(BaseModel):
    model_config = ConfigDict(extra="ignore")

    taskType: Literal["imageInference"]
    taskUUID: str
    model: str
    positivePrompt: str = Field(min_length=2, max_length=3000)
    width: int = Field(default=1024, ge=128, le=2048)
    height: int = Field(default=1024, ge=128, le=2048)
    seed: int | None = Field(default=None, ge=0, le=core.MAX_SEED)
    steps: int = Field(default=core.DEFAULT_STEPS_API, ge=1, le=100)
    CFGScale: float = Field(default=core.DEFAULT_GUIDANCE, ge=1, le=30)
    numberResults: int = Field(default=1, ge=1, le=20)
    inputs: Inputs | None = None
    referenceImages: list[str] | None = Field(default=None, max_length=core.MAX_REFERENCES)  # runware 0.5 SDK
    outputType: Literal["URL", "dataURI", "base64Data"] = "URL"
    outputFormat: Literal["JPG", "PNG", "WEBP"] = "JPG"
    outputQuality: int = Field(default=95, ge=20, le=99)
    deliveryMethod: Literal["sync", "async"] = "sync"
    webhookURL: str | None = None
    uploadEndpoint: str | None = None
    ttl: int | None = Field(default=None, ge=60)
    includeCost: bool = False
    safety: Safety | None = None
    textCheck: TextCheck | None = None

    @field_validator("taskUUID")
    @classmethod
    def _uuid(cls, value: str) -> str:
        try:
            return str(uuid.UUID(value))
        except ValueError:
            raise ValueError(f"must be a UUID v4, got {value!r}") from None

    @field_validator("width", "height")
    @classmethod
    def _grid(cls, value: int) -> int:
        if value % core.SIZE_MULTIPLE:
            raise ValueError(f"must be a multiple of {core.SIZE_MULTIPLE} between 128 and 2048, got {value}")
        return value

    @field_validator("webhookURL", "uploadEndpoint")
    @classmethod
    def _http(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError(f"must be an http(s) URL, got {value[:60]!r}")
        return value

    @property
    def references(self) -> list[str]:
        return (self.inputs.referenceImages if self.inputs else None) or self.referenceImages or []


class RunwareOptions(BaseModel):
    """What the Runware dialect keeps with a job to render it later."""

    outputType: Literal["URL", "dataURI", "base64Data"] = "URL"
    includeCost: bool = False


TASK_TYPES = ["authentication", "ping", "imageInference", "getResponse", "imageUpload"]
TASK = {  # a task in the OpenAPI document (the route reads its body itself, to answer each task)
    "type": "object",
    "required": ["taskType"],
    "properties": {
        "taskType": {"type": "string", "enum": TASK_TYPES},
        "taskUUID": {"type": "string", "format": "uuid"},
    },
    "additionalProperties": True,
}
