"""The ASGI app factory: mounts the dialects and the server's own endpoints (/health, /ready, /metrics,
/files). The services it serves from are built by the composition root (services.py)."""

from __future__ import annotations

import asyncio
import logging
import time
from contextlib import asynccontextmanager

import anyio
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import FileResponse, JSONResponse, Response

from .. import __version__, metrics
from ..services import Services, start_services
from ..settings import Settings
from .fal import routes as fal
from .fal.middleware import FalRequestIdAndQueueHost
from .openai import routes as openai
from .runware import routes as runware

log = logging.getLogger("glm_image_server")
LIVE_STATES = ("ready", "busy")


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
    )
    app.add_middleware(FalRequestIdAndQueueHost)
    app.include_router(fal.router)
    app.include_router(runware.router)  # Runware and OpenAI check keys themselves, in their own formats
    app.include_router(openai.router)

    @app.get("/health", tags=["server"])
    async def health() -> dict:
        """Liveness of the API process (workers may still be loading: see /ready)."""
        return {"status": "ok", "model": settings.model}

    @app.get("/ready", tags=["server"])
    async def ready(request: Request) -> JSONResponse:
        services: Services = request.app.state.services
        ok, workers = await services.call(readiness, services)
        return JSONResponse({"ready": ok, "workers": workers}, 200 if ok else 503)

    @app.get("/metrics", tags=["server"], include_in_schema=False)
    async def prometheus_metrics() -> Response:
        body, content_type = metrics.exposition()
        return Response(body, media_type=content_type)

    @app.get("/files/{key}", tags=["server"], include_in_schema=False)
    async def file(key: str, request: Request) -> FileResponse:
        services: Services = request.app.state.services
        path = await services.call(services.storage.path, key)
        if path is None:
            raise HTTPException(404, "no such file (it may have expired)")
        return FileResponse(path, headers={"cache-control": "public, max-age=31536000, immutable"})

    return app
