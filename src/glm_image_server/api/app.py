"""The ASGI app factory: mounts the dialects and the server's own endpoints (/health, /ready, /metrics,
/files). The services it serves from are built by the composition root (services.py)."""

from __future__ import annotations

import asyncio
import logging
import time
from contextlib import asynccontextmanager

import anyio
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from starlette.middleware.cors import CORSMiddleware

from .. import __version__, metrics
from ..config import Settings
from ..media.storage import LocalStorage
from ..serving.admission import Refused
from ..serving.services import Services, start_services
from . import openapi, playground
from .auth import owner_of, presented_key, require_api_key
from .errors import dialect_of, error_response, refusal_response
from .fal import routes as fal
from .fal import uploads as fal_uploads
from .fal.middleware import FalRequestIdAndQueueHost
from .fal.proxy import FalProxyRoutes
from .fal.upload_urls import UploadSigner
from .gate import Gate, failed_key_buckets
from .openai import routes as openai
from .runware import routes as runware

log = logging.getLogger("glm_image_server")
LIVE_STATES = ("ready", "busy")
# What a browser script may read of our responses (fal's clients read the request id and timeout type).
EXPOSED_HEADERS = ["x-fal-request-id", "x-fal-request-timeout-type", "x-fal-error-type", "retry-after"]


def add_cors(app: FastAPI, settings: Settings) -> None:
    """Browser pages on the allowed origins may call every API (preflights answered; any request header
    allowed: fal's clients send authorization, content-type, x-fal-target-url and other x-fal-* headers).
    No origins configured: same-origin pages only, and a cross-origin preflight is refused (400)."""
    app.add_middleware(
        CORSMiddleware,
        allow_origins=settings.cors_origins,
        allow_methods=["GET", "POST", "PUT", "DELETE", "OPTIONS"],
        allow_headers=["*"],
        expose_headers=EXPOSED_HEADERS,
        max_age=600,
    )


def renderers(services: Services) -> dict:
    """Each dialect's renderer of a finished job's outgoing calls (webhooks, upload PUTs)."""
    return {"fal": fal.deliveries(services), "runware": runware.deliveries(services)}


def readiness(services: Services) -> tuple[bool, list[dict]]:
    """Ready when at least one worker has its model loaded and answers its heartbeat."""
    now, settings = time.time(), services.settings
    workers = [w for w in services.store.workers() if now - w.heartbeat_at < max(60.0, 4 * settings.lease_s)]
    listed = [
        {
            "id": w.id,
            "pid": w.pid,
            "device": w.device,
            "state": w.state,
            "jobs": list(w.jobs),
            "restarts": w.restarts,
        }
        for w in workers
    ]
    ready = any(w.state in LIVE_STATES and now - w.heartbeat_at < settings.lease_s for w in workers)
    return ready, listed


def problems(services: Services, has_workers: bool) -> list[str]:
    """What keeps the server from taking work, in words."""
    found = [] if has_workers else ["no worker has its model loaded"]
    if disk := services.admission.disk.problem():
        found.append(disk)
    return found


def _ops_job(services: Services, job) -> dict:
    """A job as the ops view lists it."""
    return {
        "id": job.id,
        "api": job.api,
        "key": services.key_label(job.owner),
        "app": job.app,
        "status": job.status.value,
        "created_at": job.created_at,
        "started_at": job.started_at,
        "finished_at": job.finished_at,
        "worker_id": job.worker_id,
        "size": f"{job.request.width}x{job.request.height}",
        "images": job.request.num_images,
        "steps": job.request.num_inference_steps,
        "timings": job.result.timings if job.result else None,
        "error": job.error.message if job.error else None,
    }


def ops_view(services: Services, owner: str | None, limit: int = 30) -> dict:
    """Workers and their state, queue depth, and the recent jobs of the caller's key (`owner`; another
    key's jobs are not shown here either) among the server's newest: the playground's ops tab."""
    ready, workers = readiness(services)
    recent = [job for job in services.store.recent(10 * limit) if job.owner == owner][:limit]
    return {
        "ready": ready,
        "workers": workers,
        "queue_depth": services.store.queued_count(),
        "jobs": [_ops_job(services, job) for job in recent],
    }


def create_app(settings: Settings, engine=None) -> FastAPI:
    """`engine`: an already loaded Engine, run by a worker thread in this process (tests); by default
    `settings.workers` worker processes run the model."""

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
    openapi.install(app)
    app.state.auth_failures = auth_failures = failed_key_buckets(settings)
    app.state.upload_signer = signer = UploadSigner(settings.api_keys, settings.data_dir)
    app.add_middleware(Gate, settings=settings, auth_failures=auth_failures, uploads=signer)
    app.add_middleware(FalRequestIdAndQueueHost)  # outside the gate: its answers carry the request id too
    app.add_middleware(FalProxyRoutes)  # outside both: they see the proxied request's own path
    add_cors(app, settings)  # outermost: preflights are answered, and every answer carries CORS headers

    @app.exception_handler(Refused)
    async def refused(request: Request, exc: Refused) -> JSONResponse:
        return refusal_response(dialect_of(request.url.path), exc)

    @app.exception_handler(Exception)
    async def server_fault(request: Request, exc: Exception) -> JSONResponse:
        """Logged with its traceback by the server; the client gets its dialect's error, not bare text."""
        return error_response(dialect_of(request.url.path), 500, f"internal error ({type(exc).__name__})")

    app.add_exception_handler(RequestValidationError, fal.validation_error)  # only fal's routes use it
    app.include_router(fal.router)
    app.include_router(fal_uploads.router)
    app.include_router(fal_uploads.bytes_router)
    app.include_router(runware.router)  # Runware and OpenAI check keys themselves, in their own formats
    app.include_router(openai.router)
    app.include_router(playground.router)
    app.mount("/web", playground.static_files(), name="web")

    @app.get("/health", tags=["server"])
    async def health() -> dict:
        """Liveness of the API process (workers may still be loading: see /ready)."""
        return {"status": "ok", "model": settings.model}

    @app.get("/ready", tags=["server"])
    async def ready(request: Request) -> JSONResponse:
        services: Services = request.app.state.services
        ok, workers = await services.call(readiness, services)
        found = problems(services, ok)
        return JSONResponse(
            {"ready": not found, "problems": found, "workers": workers}, 503 if found else 200
        )

    @app.get("/ops", tags=["server"], dependencies=[Depends(require_api_key)])
    async def ops(request: Request) -> dict:
        """Workers, queue depth and the caller's recent jobs (of every API), for the playground's ops tab."""
        services: Services = request.app.state.services
        key = presented_key(request.headers.get("authorization", ""), ("key", "bearer"))
        return await services.call(ops_view, services, owner_of(settings.api_keys, key))

    @app.get("/metrics", tags=["server"], include_in_schema=False)
    async def prometheus_metrics(request: Request) -> Response:
        services: Services = request.app.state.services
        body, content_type = await services.call(metrics.exposition)
        depth = await services.call(services.store.queue_depth)
        return Response(body + metrics.queue_exposition(depth, time.time()), media_type=content_type)

    @app.get("/.well-known/jwks.json", tags=["server"])
    async def jwks(request: Request) -> JSONResponse:
        """The public keys fal webhooks are signed with (Ed25519 JSON Web Key Set; no key needed)."""
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

    return app
