"""The ASGI app factory: the registered dialects (api/dialect.py) composed with the server's own endpoints
(/health, /ready, /ops, /metrics, /files, the JWKS), naming no dialect; the services come from the
composition root (serving/services.py)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from contextlib import asynccontextmanager

import anyio
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from starlette.middleware.cors import CORSMiddleware

from .. import __version__
from ..config import Settings
from ..delivery.sender import Renderer
from ..media.storage import LocalStorage
from ..serving import ops
from ..serving.admission import LimitsSettings, Refused, TokenBuckets
from ..serving.jobs import ServingSettings
from ..serving.services import Services, start_services
from . import openapi
from .auth import key_ok, owner_of, presented_key
from .dialect import Dialect, dialect_of, discover, error_response, refused_status
from .gate import Gate

log = logging.getLogger("glm_image_server")


def compose(app: FastAPI, settings: Settings, dialects: Sequence[Dialect]) -> None:
    """The gate (keys, bodies) inside each dialect's own middlewares, CORS outermost (preflights are
    answered, and every answer carries CORS headers); every dialect's routers; errors in its envelope."""
    limits, serving = LimitsSettings.from_settings(settings), ServingSettings.from_settings(settings)
    per_minute = limits.auth_failures_per_minute  # wrong keys per address (shared with the dialects)
    app.state.auth_failures = auth_failures = TokenBuckets(per_minute / 60, per_minute)
    app.add_middleware(Gate, settings=limits, auth_failures=auth_failures, dialects=dialects)
    for dialect in dialects:
        if dialect.setup is not None:
            dialect.setup(app, serving)
        for router in dialect.routers:
            app.include_router(router)
    # Pages on the allowed origins may call every API with any header, and read the dialects' headers and
    # Retry-After; with no origins configured, same-origin pages only (a cross-origin preflight is a 400).
    app.add_middleware(
        CORSMiddleware,
        allow_origins=settings.cors_origins,
        allow_methods=["GET", "POST", "PUT", "DELETE", "OPTIONS"],
        allow_headers=["*"],
        expose_headers=[*(header for d in dialects for header in d.exposed_headers), "retry-after"],
        max_age=600,
    )

    @app.exception_handler(Refused)
    async def refused(request: Request, exc: Refused) -> JSONResponse:
        dialect = dialect_of(dialects, request.url.path)
        return error_response(dialect, refused_status(exc), exc.message, exc.retry_after_s)

    @app.exception_handler(Exception)
    async def server_fault(request: Request, exc: Exception) -> JSONResponse:
        """Logged with its traceback by the server; the client gets its dialect's error, not bare text."""
        message = f"internal error ({type(exc).__name__})"
        return error_response(dialect_of(dialects, request.url.path), 500, message)


def create_app(settings: Settings, engine=None) -> FastAPI:
    """`engine`: a loaded Engine for a worker thread in this process (tests); else worker processes run."""
    dialects = discover()

    def renderers(services: Services) -> dict[str, Renderer]:
        return {d.name: d.renderer(services) for d in dialects if d.renderer is not None}

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        loop = asyncio.get_running_loop()
        services = await anyio.to_thread.run_sync(start_services, settings, renderers, loop, engine)
        app.state.services = services
        log.info("serving: model %s, data in %s", settings.model, settings.data_dir)
        try:
            yield
        finally:
            await anyio.to_thread.run_sync(services.stop)

    app = FastAPI(
        title="glm-image-server",
        version=__version__,
        description="GLM-Image behind the fal.ai, Runware and OpenAI Images APIs.",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    openapi.install(app, dialects)
    compose(app, settings, dialects)
    server_endpoints(app, settings)
    return app


def server_endpoints(app: FastAPI, settings: Settings) -> None:
    @app.get("/health", tags=["server"])
    async def health() -> dict:
        """Liveness of the API process (workers may still be loading: see /ready)."""
        return {"status": "ok", "model": settings.model}

    @app.get("/ready", tags=["server"])
    async def ready(request: Request) -> JSONResponse:
        services: Services = request.app.state.services
        try:
            ok, workers = await services.call(ops.readiness, services)
            found = ops.problems(services, ok)
        except Refused as exc:  # the store is unavailable: said within its connection wait
            workers, found = [], [exc.message, *ops.problems(services, True)]
        body = {"ready": not found, "problems": found, "workers": workers}
        return JSONResponse(body, 503 if found else 200)

    @app.get("/ops", tags=["server"])
    async def ops_view(request: Request) -> dict:
        """Workers, queue depth and the caller's recent jobs (of every API), for the playground's ops tab;
        keyed like fal (`Key <key>` or `Bearer <key>`)."""
        services: Services = request.app.state.services
        key = presented_key(request.headers.get("authorization", ""), ("key", "bearer"))
        if not key_ok(settings.api_keys, key):
            raise HTTPException(401, "missing or invalid API key: send 'Authorization: Bearer <key>'")
        return await services.call(ops.ops_view, services, owner_of(settings.api_keys, key))

    @app.get("/metrics", tags=["server"], include_in_schema=False)
    async def prometheus_metrics(request: Request) -> Response:
        services: Services = request.app.state.services
        body, content_type = await services.call(ops.prometheus, services)
        return Response(body, media_type=content_type)

    @app.get("/.well-known/jwks.json", tags=["server"])
    async def jwks(request: Request) -> JSONResponse:
        """The public keys webhooks are signed with (Ed25519 JSON Web Key Set; no key needed)."""
        services: Services = request.app.state.services
        return JSONResponse(services.webhook_key.jwks(), headers={"cache-control": "public, max-age=3600"})

    @app.get("/files/{key}", tags=["server"], include_in_schema=False)
    async def file(key: str, request: Request) -> FileResponse:
        services: Services = request.app.state.services
        local = isinstance(services.storage, LocalStorage)  # S3 objects are fetched from S3 itself
        path = await services.call(services.storage.path, key) if local else None
        if path is None:
            raise HTTPException(404, "no such file (it may have expired)")
        return FileResponse(path, headers={"cache-control": "public, max-age=31536000, immutable"})
