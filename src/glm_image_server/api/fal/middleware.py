"""fal-only HTTP behaviour, in one pure ASGI middleware outside the gate (other requests pass untouched):
- fal's proxy convention, so fal's JavaScript client works unmodified: with `fal.config({ proxyUrl })` it
  sends every request to the proxy URL, naming the URL it meant in `x-fal-target-url` (`https://fal.run/...`,
  `https://queue.fal.run/...`, `https://rest.fal.ai/storage/upload/initiate...`). This server is proxy and
  backend at once: such a request to `/` or `/api/fal/proxy` is routed to our path for the target before
  anything else sees it (the gate still checks its key); any other target is refused with 400;
- `queue.*` hosts routed to the queue paths, as fal's clients expect of `queue.<run host>`;
- an `x-fal-request-id` header on every fal response (uploads included)."""

from __future__ import annotations

import re
import uuid
from urllib.parse import unquote, urlsplit

from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..dialect import detail_error
from .protocol import OWNER, PREFIXES
from .uploads import INITIATE_PATH

FAL_PREFIXES = tuple(prefix.encode() for prefix in PREFIXES)
SAFE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
TARGET_HEADER = b"x-fal-target-url"
PROXY_PATHS = ("/api/fal/proxy", "/api/_fal/proxy")  # fal's docs, and its proxy library's default
STORAGE_HOSTS = ("rest.fal.ai", "rest.alpha.fal.ai")  # the second: older clients
STORAGE_PATHS = ("/storage/upload/initiate", "/storage/upload/initiate-multipart")
FAL_PATH = f"/{OWNER}/"


def local_path(target: str) -> tuple[str, str] | None:
    """Our path and query string for a fal target URL, or None when this server does not serve it."""
    try:
        url = urlsplit(target)
        host = (url.hostname or "").lower()
    except ValueError:
        return None
    if url.scheme not in ("https", "http") or {".", ".."} & set(unquote(url.path).split("/")):
        return None
    if host == "fal.run" and url.path.startswith(FAL_PATH):
        return url.path, url.query
    if host == "queue.fal.run" and url.path.startswith(FAL_PATH):
        return "/queue" + url.path, url.query
    if host in STORAGE_HOSTS and url.path in STORAGE_PATHS:
        return INITIATE_PATH + url.path.removeprefix(STORAGE_PATHS[0]), url.query
    return None


def proxied(scope: Scope) -> Scope | Response:
    """A proxy path's request as its target's (`/` without a target: the playground), or a 400."""
    target = next((v.decode("latin-1") for k, v in scope["headers"] if k == TARGET_HEADER), None)
    if target is None:
        return scope if scope["path"] == "/" else detail_error(400, "missing the x-fal-target-url header")
    routed = local_path(target)
    if routed is None:
        return detail_error(
            400,
            f"x-fal-target-url {target[:200]!r} is not served here: this server answers https://fal.run"
            f"{FAL_PATH}..., https://queue.fal.run{FAL_PATH}... and fal's storage upload paths",
        )
    path, query = routed
    return {**scope, "path": unquote(path), "raw_path": path.encode(), "query_string": query.encode()}


class FalMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and (scope["path"] == "/" or scope["path"].rstrip("/") in PROXY_PATHS):
            routed = proxied(scope)
            if isinstance(routed, Response):
                await routed(scope, receive, send)
                return
            scope = routed
        if scope["type"] != "http" or not scope["raw_path"].startswith(FAL_PREFIXES):
            await self.app(scope, receive, send)
            return
        state = scope.setdefault("state", {})
        host = next((v for k, v in scope["headers"] if k == b"host"), b"")
        if host.startswith(b"queue.") and scope["path"].startswith(FAL_PATH):
            scope = {**scope, "path": "/queue" + scope["path"], "raw_path": b"/queue" + scope["raw_path"]}
            state["queue_host"] = True

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                # the request's own id when it is a plain token, else a fresh one (a client-given path
                # segment with control characters must never reach a header)
                request_id = state.get("request_id")
                request_id = request_id if request_id and SAFE_ID.match(request_id) else str(uuid.uuid4())
                headers = [*message.get("headers", []), (b"x-fal-request-id", request_id.encode())]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_id)
