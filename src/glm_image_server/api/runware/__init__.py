"""Runware's API (REST and WebSocket at `/v1`), registered as one dialect. Its keys may also come inside
the body (an authentication task), so a request without one goes on to the task runner."""

from __future__ import annotations

from ..dialect import Dialect
from . import routes
from .protocol import API, error_response
from .serving import deliveries
from .translate import FIELDS

dialect = Dialect(
    name=API,
    routers=(routes.router,),
    paths=("/v1", "/v1/"),
    error=error_response,
    fields=FIELDS,
    renderer=deliveries,
)
