"""fal's proxy convention, so fal's JavaScript client works unmodified: with `fal.config({ proxyUrl })` it
sends every request to the proxy URL with the URL it meant in `x-fal-target-url`
(`https://fal.run/fal-ai/glm-image`, `https://queue.fal.run/fal-ai/glm-image/requests/<id>/status?logs=1`,
`https://rest.fal.ai/storage/upload/initiate?storage_type=fal-cdn-v3`). This server is the proxy and the
backend at once: a request to `/` or `/api/fal/proxy` carrying that header is routed to our own path for
the target (`fal.run/...` the sync run, `queue.fal.run/...` the queue, the storage initiate paths the
uploads) before anything else sees it — the gate still checks its key before its body. Any other target
is refused with 400, in fal's format.
"""

from __future__ import annotations

from urllib.parse import unquote, urlsplit

from starlette.types import ASGIApp, Receive, Scope, Send

from ..dialect import detail_error
from .protocol import OWNER
from .uploads import INITIATE_PATH

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


def _is_proxy_path(path: str) -> bool:
    return path == "/" or path.rstrip("/") in PROXY_PATHS


class FalProxyRoutes:
    """Pure ASGI middleware: rewrites a proxied request's path and query to the target's, on our routes."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not _is_proxy_path(scope["path"]):
            await self.app(scope, receive, send)
            return
        target = next((v for k, v in scope["headers"] if k == TARGET_HEADER), None)
        if target is None:
            if scope["path"] == "/":  # the playground page
                await self.app(scope, receive, send)
            else:
                await detail_error(400, "missing the x-fal-target-url header")(scope, receive, send)
            return
        routed = local_path(target.decode("latin-1"))
        if routed is None:
            message = (
                f"x-fal-target-url {target.decode('latin-1')[:200]!r} is not served here: this server "
                f"answers https://fal.run{FAL_PATH}..., https://queue.fal.run{FAL_PATH}... and fal's "
                "storage upload paths"
            )
            await detail_error(400, message)(scope, receive, send)
            return
        path, query = routed
        scope = {
            **scope,
            "path": unquote(path),
            "raw_path": path.encode(),
            "query_string": query.encode(),
        }
        await self.app(scope, receive, send)
