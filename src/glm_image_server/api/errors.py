"""Errors before or around a dialect's own handling (a refusal, a body too big, a wrong key, a server fault)
in the envelope of the dialect whose path was asked, so no client gets a bare-text error; the server's own
endpoints answer `{"detail": ...}`."""

from __future__ import annotations

import math

from fastapi.responses import JSONResponse

from ..serving.admission import LowDisk, Refused
from .dialect import Dialect, detail_error


def retry_after(seconds: float | None) -> dict[str, str] | None:
    """The Retry-After header for a wait of `seconds` (whole seconds, at least 1)."""
    return {"retry-after": str(max(1, math.ceil(seconds)))} if seconds else None


def error_response(
    dialect: Dialect | None, status: int, message: str, retry_after_s: float | None = None
) -> JSONResponse:
    """`message` in the dialect's own error envelope."""
    response = (dialect.error if dialect is not None else detail_error)(status, message)
    response.headers.update(retry_after(retry_after_s) or {})
    return response


def refused_status(exc: Refused) -> int:
    if isinstance(exc, LowDisk):
        return 507
    return 429 if exc.kind in ("queue_full", "rate_limited") else 503
