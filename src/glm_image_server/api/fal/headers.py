"""fal's platform headers, as its clients send and read them: on a request `x-fal-request-timeout` (the
seconds it may wait before it starts: the client's `start_timeout`) and `x-fal-queue-priority` (`normal` or
`low`); on an error response `X-Fal-Error-Type` (the body's `error_type`, for clients that do not parse
bodies) and, when a request missed its start deadline, `X-Fal-Request-Timeout-Type: user` (which tells
fal's clients not to retry it)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import get_args

from fastapi.responses import JSONResponse

from ...core.job import Priority

REQUEST_TIMEOUT = "x-fal-request-timeout"
QUEUE_PRIORITY = "x-fal-queue-priority"
ERROR_TYPE = "x-fal-error-type"
TIMEOUT_TYPE = "x-fal-request-timeout-type"


class BadHeader(ValueError):
    """A platform header with a value fal would not accept (a 400 `bad_request`)."""


def platform(headers: Mapping[str, str]) -> tuple[float | None, Priority]:
    """What a request's platform headers ask of its job: (start timeout in seconds, queue priority); raises
    BadHeader saying what would have been valid."""
    timeout, priority = headers.get(REQUEST_TIMEOUT), headers.get(QUEUE_PRIORITY, "normal").strip().lower()
    if priority not in get_args(Priority):
        raise BadHeader(f"{QUEUE_PRIORITY} must be normal or low, got {priority[:40]!r}")
    if timeout is None:
        return None, priority  # type: ignore[return-value]
    try:
        seconds = float(timeout)
    except ValueError:
        seconds = math.nan
    if not (math.isfinite(seconds) and seconds > 0):
        raise BadHeader(f"{REQUEST_TIMEOUT} must be a number of seconds above 0, got {timeout[:40]!r}")
    return seconds, priority  # type: ignore[return-value]


def with_error_headers(status_code: int, body: dict) -> JSONResponse:
    """An error body with the headers fal puts beside it: `X-Fal-Error-Type` mirrors `error_type`, and a
    missed start deadline (`request_timeout`) says it was the user's timeout."""
    headers = {}
    if error_type := body.get("error_type"):
        headers[ERROR_TYPE] = error_type
        if error_type == "request_timeout":
            headers[TIMEOUT_TYPE] = "user"
    return JSONResponse(body, status_code, headers)
