"""fal-only HTTP behaviour: the `Key` auth scheme, an `x-fal-request-id` header on every fal response,
and `queue.*` hosts routed to the queue paths, as fal's clients expect of `queue.<run host>`."""

from __future__ import annotations

import uuid

from fastapi import HTTPException, Request

from ..auth import key_ok, presented_key
from .protocol import OWNER

FAL_PREFIXES = (f"/{OWNER}/".encode(), b"/queue/")


async def require_api_key(request: Request) -> None:
    """`Authorization: Key <key>` (fal) or `Bearer <key>`; open when no keys are configured."""
    key = presented_key(request.headers.get("authorization", ""), ("key", "bearer"))
    if key_ok(request.app.state.services.settings.api_keys, key):
        return
    raise HTTPException(401, "missing or invalid API key: send 'Authorization: Key <key>' or 'Bearer <key>'")


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
                request_id = state.get("request_id") or str(uuid.uuid4())
                headers = [*message.get("headers", []), (b"x-fal-request-id", request_id.encode())]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_id)
