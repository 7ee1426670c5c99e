"""fal.ai's GLM-Image API (sync runs, the queue, uploads through fal's storage flow, the proxy convention
of its JavaScript client) and the playground, which is a client of it: registered as one dialect."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from starlette.types import Scope

from ...serving.jobs import ServingSettings
from ..dialect import Dialect
from . import routes, uploads
from .middleware import FalMiddleware
from .protocol import API, PREFIXES
from .serving import ERROR_TYPE, TIMEOUT_TYPE, deliveries
from .translate import FIELDS
from .uploads import UPLOADS_PATH, UploadGrant, UploadSigner

FAL_KEY = {
    "type": "apiKey",
    "in": "header",
    "name": "Authorization",
    "description": "fal's scheme: `Key <key>` (`Bearer <key>` works too)",
}


def _setup(app: FastAPI, settings: ServingSettings) -> None:
    """The upload signer, the playground's script and style, and fal's middleware."""
    app.state.upload_signer = UploadSigner(settings.api_keys, settings.data_dir)
    app.mount("/web", StaticFiles(directory=routes.WEB_DIR), name="web")
    app.add_middleware(FalMiddleware)  # outside the gate: it routes a proxied request before the gate


def _upload_grant(scope: Scope) -> UploadGrant | None:
    """The grant of an upload path (`UPLOADS_PATH<token>[/<part>|/complete]`), None if not valid."""
    token = scope["path"].removeprefix(UPLOADS_PATH).split("/", 1)[0]
    return scope["app"].state.upload_signer.verify(token)


dialect = Dialect(
    name=API,
    routers=(routes.router, uploads.router, uploads.bytes_router, routes.playground_router),
    prefixes=PREFIXES,
    key_schemes=("key", "bearer"),
    wrong_key="missing or invalid API key: send 'Authorization: Key <key>' or 'Bearer <key>'",
    security=("falKey", FAL_KEY),
    fields=FIELDS,
    renderer=deliveries,
    setup=_setup,
    signed_prefixes=(UPLOADS_PATH,),
    grant=_upload_grant,
    signed_noun="upload URL",
    exposed_headers=("x-fal-request-id", TIMEOUT_TYPE, ERROR_TYPE),  # its clients read
)
