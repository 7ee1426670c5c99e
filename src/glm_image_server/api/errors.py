"""Errors that happen before or around a dialect's own handling — a refused submission, a body that is
too big, a wrong key, a fault of the server — rendered in the format of the dialect whose path was
asked (fal `detail`, Runware `errors[]`, OpenAI `error`), so no client ever gets a bare-text error.
"""

from __future__ import annotations

import math
from typing import Literal

from fastapi.responses import JSONResponse

from ..serving.admission import LowDisk, Refused
from .fal.protocol import OWNER
from .openai.protocol import OpenAIError
from .runware.protocol import TaskError

Dialect = Literal["fal", "runware", "openai", "server"]

# Runware's and OpenAI's words for each status we answer with.
RUNWARE_CODES = {
    400: "invalidRequest",
    401: "invalidApiKey",
    408: "timeout",
    413: "payloadTooLarge",
    422: "invalidRequest",
    429: "tooManyRequests",
    500: "internalError",
    503: "serviceUnavailable",
    507: "insufficientStorage",
}
OPENAI_TYPES = {401: "invalid_request_error", 429: "requests", 500: "server_error", 503: "server_error"}
OPENAI_CODES = {
    401: "invalid_api_key",
    408: "timeout",
    413: "payload_too_large",
    429: "rate_limit_exceeded",
    503: "service_unavailable",
    507: "insufficient_storage",
}


def dialect_of(path: str) -> Dialect:
    if path.startswith((f"/{OWNER}/", "/queue/", "/fal/")):
        return "fal"
    if path.startswith("/v1/images/"):
        return "openai"
    if path in ("/v1", "/v1/"):
        return "runware"
    return "server"


def retry_after(seconds: float | None) -> dict[str, str] | None:
    """The Retry-After header for a wait of `seconds` (whole seconds, at least 1)."""
    return {"retry-after": str(max(1, math.ceil(seconds)))} if seconds else None


def error_response(
    dialect: Dialect, status: int, message: str, retry_after_s: float | None = None
) -> JSONResponse:
    """`message` in the dialect's own error envelope (each dialect's error type renders it)."""
    if dialect == "runware":
        item = TaskError(RUNWARE_CODES.get(status, "invalidRequest"), message, status=status).item()
        response = JSONResponse({"errors": [item]}, status)
    elif dialect == "openai":
        kind = OPENAI_TYPES.get(status, "invalid_request_error" if status < 500 else "server_error")
        response = OpenAIError(message, None, OPENAI_CODES.get(status), status, kind).response()
    else:
        response = JSONResponse({"detail": message}, status)
    response.headers.update(retry_after(retry_after_s) or {})
    return response


def refused_status(exc: Refused) -> int:
    if isinstance(exc, LowDisk):
        return 507
    return 429 if exc.kind in ("queue_full", "rate_limited") else 503


def refusal_response(dialect: Dialect, exc: Refused) -> JSONResponse:
    return error_response(dialect, refused_status(exc), exc.message, exc.retry_after_s)
