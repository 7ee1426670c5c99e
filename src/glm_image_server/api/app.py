"""The ASGI app: wires store, scheduler, storage and engine, and mounts the dialects."""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
import uuid
from collections.abc import Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import anyio
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import FileResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from .. import __version__, metrics
from ..jobs.records import Job, JobSpec, JobStatus
from ..jobs.retention import RetentionSweeper
from ..jobs.runner import JobRunner
from ..jobs.scheduler import Scheduler
from ..jobs.sqlite import SqliteJobStore
from ..jobs.store import JobStore
from ..jobs.webhooks import WebhookSender
from ..media.fetch import ImageFetcher
from ..media.storage import LocalStorage, file_url
from ..prompting import PromptExpander
from ..safety import load_checker
from ..settings import Settings
from . import fal, openai, runware
from .auth import key_ok, presented_key
from .changes import ChangeFeed, SnapshotCache

log = logging.getLogger("glm_image_server")
T = TypeVar("T")
WAIT_POLL_S = 1.0  # re-read the store at least this often while waiting for a change


@dataclass
class Services:
    """Everything a request handler needs; built once at startup."""

    settings: Settings
    store: JobStore
    storage: LocalStorage
    scheduler: Scheduler
    webhooks: WebhookSender
    sweeper: RetentionSweeper
    fetcher: ImageFetcher
    changes: ChangeFeed
    snapshots: SnapshotCache

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run blocking store or file work off the event loop."""
        return await anyio.to_thread.run_sync(fn, *args)

    def new_job(self, api: str, app: str, spec: JobSpec, base_url: str, **fields: Any) -> Job:
        """A queued job for `spec`; `fields` are the Job's optional ones (id, webhook_url, options...)."""
        return Job(
            **{"id": str(uuid.uuid4()), **fields},
            api=api,
            app=app,
            spec=spec,
            status=JobStatus.QUEUED,
            created_at=time.time(),
            file_prefix=secrets.token_urlsafe(18),
            base_url=base_url,
        )

    async def enqueue(self, job: Job) -> bool:
        """Durable before it returns: acknowledge the job only after this. False: the id exists."""
        created = await self.call(self.store.create, job)
        if created:
            metrics.JOBS_SUBMITTED.labels(job.api).inc()
            self.scheduler.wake()
        return created

    async def wait_finished(self, job_id: str) -> Job | None:
        """The job once it is finished (None if it vanished: expired, or never existed)."""
        while True:
            job = await self.call(self.store.get, job_id)
            if job is None or job.status.finished:
                return job
            await self.changes.wait(job_id, WAIT_POLL_S)

    def file_url(self, job: Job, key: str) -> str:
        return file_url(self.settings.public_url, job.base_url, key)

    def stop(self) -> None:
        self.scheduler.stop()
        self.webhooks.stop()
        self.sweeper.stop()
        self.fetcher.close()


def _load_engine(settings: Settings):
    from ..model.engine import Engine
    from ..model.loader import load_pipeline, quiet_library_logs

    quiet_library_logs()
    return Engine(load_pipeline(settings))


def start_services(settings: Settings, engine, loop: asyncio.AbstractEventLoop) -> Services:
    """Load the model (unless given), recover jobs a previous run left, start the worker threads."""
    if engine is None:
        engine = _load_engine(settings)
    store = SqliteJobStore(settings.database_path)
    requeued, failed = store.recover(settings.max_job_attempts)
    if requeued or failed:
        log.info("recovered jobs from the last run: %d queued again, %d failed", requeued, failed)
    storage = LocalStorage(settings.files_dir)
    fetcher = ImageFetcher(settings)
    changes = ChangeFeed(loop)
    renderers = {
        "fal": fal.deliveries_for(storage, settings),
        "runware": runware.deliveries_for(storage, settings),
    }
    webhooks = WebhookSender(store, settings, renderers, fetcher.guard)

    snapshots = SnapshotCache()

    def on_change(job_id: str) -> None:
        snapshots.invalidate(job_id)
        changes.notify(job_id)
        webhooks.wake()

    checker = load_checker(settings.safety_checker, settings.safety_threshold, settings.safety_labels)
    expander = None
    if settings.expansion_base_url:
        expander = PromptExpander(
            settings.expansion_base_url,
            settings.expansion_model,
            settings.expansion_api_key,
            settings.expansion_timeout_s,
        )
    runner = JobRunner(engine, store, storage, fetcher, settings, checker, expander, on_change)
    services = Services(
        settings=settings,
        store=store,
        storage=storage,
        scheduler=Scheduler(store, runner, settings.max_batch_size, settings.batch_window_s),
        webhooks=webhooks,
        sweeper=RetentionSweeper(store, storage, settings.result_retention_s),
        fetcher=fetcher,
        changes=changes,
        snapshots=snapshots,
    )
    services.sweeper.sweep()
    for worker in (services.scheduler, services.webhooks, services.sweeper):
        worker.start()
    return services


async def require_api_key(request: Request) -> None:
    """`Authorization: Key <key>` (fal) or `Bearer <key>`; open when no keys are configured."""
    key = presented_key(request.headers.get("authorization", ""), ("key", "bearer"))
    if key_ok(request.app.state.services.settings.api_keys, key):
        return
    raise HTTPException(401, "missing or invalid API key: send 'Authorization: Key <key>' or 'Bearer <key>'")


class RequestIdAndQueueHost:
    """Pure ASGI middleware: an `x-fal-request-id` header on every response (the job id where there is
    one), and requests for a host named `queue.*` routed to the queue paths, as fal's clients expect of
    `queue.<run host>`."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state = scope.setdefault("state", {})
        host = next((v for k, v in scope["headers"] if k == b"host"), b"")
        if host.startswith(b"queue.") and scope["path"].startswith(f"/{fal.OWNER}/"):
            scope = {**scope, "path": "/queue" + scope["path"], "raw_path": b"/queue" + scope["raw_path"]}
            state["queue_host"] = True

        async def send_with_id(message) -> None:
            if message["type"] == "http.response.start":
                request_id = state.get("request_id") or str(uuid.uuid4())
                headers = [*message.get("headers", []), (b"x-fal-request-id", request_id.encode())]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_id)


def create_app(settings: Settings, engine=None) -> FastAPI:
    """`engine`: an already loaded Engine (tests); by default the model in `settings` is loaded."""

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        loop = asyncio.get_running_loop()
        services = await anyio.to_thread.run_sync(start_services, settings, engine, loop)
        app.state.services = services
        log.info("ready: model %s, data in %s", settings.model, settings.data_dir)
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
    app.add_middleware(RequestIdAndQueueHost)
    app.include_router(fal.router, dependencies=[Depends(require_api_key)])
    app.include_router(runware.router)  # each checks keys itself, answering in its own error format
    app.include_router(openai.router)

    @app.get("/health", tags=["server"])
    async def health() -> dict:
        return {"status": "ok", "model": settings.model}

    @app.get("/metrics", tags=["server"], include_in_schema=False)
    async def prometheus_metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/files/{key}", tags=["server"], include_in_schema=False)
    async def file(key: str, request: Request) -> FileResponse:
        services: Services = request.app.state.services
        path = await services.call(services.storage.path, key)
        if path is None:
            raise HTTPException(404, "no such file (it may have expired)")
        return FileResponse(path, headers={"cache-control": "public, max-age=31536000, immutable"})

    return app
