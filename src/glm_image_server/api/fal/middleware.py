"""fal-only HTTP behaviour: an `x-fal-request-id` header on every fal response (uploads included), and
`queue.*` hosts routed to the queue paths, as fal's clients expect of `queue.<run host>`. (The `Key` auth
scheme is checked by the gate, api/gate.py, before the body is read.)"""

from __future__ import annotations

import re
import uuid

from .protocol import OWNER, PREFIXES

FAL_PREFIXES = tuple(prefix.encode() for prefix in PREFIXES)
SAFE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


def header_id(request_id: str | None) -> str:
    """The id to echo: the request's own when it is a plain token, else a fresh one (a client-given
    path segment with control characters must never reach a header)."""
    return request_id if request_id and SAFE_ID.match(request_id) else str(uuid.uuid4())


class FalRequestIdAndQueueHost:
    """Pure ASGI middleware for the fal paths only; other dialects' requests pass untouched."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or not scope["raw_path"].startswith(FAL_PREFIXES):
            await self.app(scope, receive, send)
            return
        state = scope.setdefault("state", {})
        host = next((v for k, v in scope["headers"] if k == b"host"), b"")
        if host.startswith(b"queue.") and scope["path"].startswith(f"/{OWNER}/"):
            scope = {**scope, "path": "/queue" + scope["path"], "raw_path": b"/queue" + scope["raw_path"]}
            state["queue_host"] = True

        async def send_with_id(message) -> None:
            if message["type"] == "http.response.start":
                request_id = header_id(state.get("request_id"))
                headers = [*message.get("headers", []), (b"x-fal-request-id", request_id.encode())]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_id)
