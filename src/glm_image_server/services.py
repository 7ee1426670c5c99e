"""The composition root: builds the API process's services (store, storage, change feed, deliveries,
retention, worker supervisor) and a worker's executor, from one Settings object.

Nothing here imports torch: the API process runs without it, and a worker loads the engine through
`model.loader.load_engine` only when it is built.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any, TypeVar

import anyio

from . import metrics
from .admission import Admission, StoreUnavailable
from .jobs.changes import ChangeFeed, SnapshotCache
from .jobs.deliveries import DeliverySender, Renderer
from .jobs.executor import LocalExecutor
from .jobs.records import Job, JobStatus
from .jobs.retention import RetentionSweeper
from .jobs.sqlite import SqliteJobStore
from .jobs.store import JobStore
from .jobs.supervisor import Supervisor
from .jobs.worker import Worker, default_worker_id
from .media.fetch import ImageFetcher, UrlGuard
from .media.own_files import OwnFiles
from .media.references import ReferenceLoader
from .media.storage import LocalStorage, Storage
from .post import PostContext
from .prompting import PromptExpander
from .safety import load_checker
from .settings import Settings
from .text_check import load_text_checker
from .types import GenerationRequest, OutputSpec

log = logging.getLogger("glm_image_server")
T = TypeVar("T")


def open_store(settings: Settings) -> JobStore:
    """PostgreSQL when a database URL is set (a fleet), else the SQLite file in the data directory."""
    if settings.database_url:
        from .jobs.postgres import PostgresJobStore

        return PostgresJobStore(settings.database_url, settings.max_job_attempts, settings.database_pool_size)
    return SqliteJobStore(settings.database_path, settings.max_job_attempts)


def open_storage(settings: Settings) -> Storage:
    """The S3 bucket when a storage URL is set (a fleet), else files/ in the data directory."""
    if settings.storage_url:
        from .media.s3 import S3Storage

        return S3Storage(settings.storage_url)
    return LocalStorage(settings.files_dir)


@dataclass
class Services:
    """Everything a request handler needs; built once at startup."""

    settings: Settings
    store: JobStore
    storage: Storage
    changes: ChangeFeed
    snapshots: SnapshotCache
    sweeper: RetentionSweeper
    fetcher: ImageFetcher  # for uploads given as URLs (job references are fetched by the workers)
    admission: Admission
    destinations: UrlGuard  # where webhooks and upload PUTs may go (checked at submission and per call)
    own_files: OwnFiles  # our own result and upload URLs given back as inputs: read from storage
    deliveries: DeliverySender | None = None
    supervisor: Supervisor | None = None
    local_worker: Worker | None = None

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run blocking store or file work off the event loop."""
        return await anyio.to_thread.run_sync(fn, *args)

    def new_job(
        self, api: str, app: str, request: GenerationRequest, output: OutputSpec, base_url: str, **fields: Any
    ) -> Job:
        """A queued job; `fields` are the Job's optional ones (id, options, owner...). A result never
        outlives the retention, whatever ttl the client asked for."""
        if output.ttl_s is not None and output.ttl_s > self.settings.result_retention_s:
            output = replace(output, ttl_s=self.settings.result_retention_s)
        return Job(
            **{"id": str(uuid.uuid4()), **fields},
            api=api,
            app=app,
            request=request,
            output=output,
            status=JobStatus.QUEUED,
            created_at=time.time(),
            file_prefix=secrets.token_urlsafe(18),
            base_url=base_url,
        )

    def _admit(self, job: Job, client: str) -> bool:
        self.admission.check(job.owner, client)
        try:
            return self.store.create(job)
        except Exception as exc:  # the store's own errors (a full disk, a lost database) differ per store
            log.error("could not record job %s: %s", job.id, exc)
            raise StoreUnavailable(f"the job could not be recorded ({exc}); try again later", 5.0) from exc

    async def enqueue(self, job: Job, client: str = "") -> bool:
        """Durable before it returns: acknowledge the job only after this. False: the id exists.
        Raises `admission.Refused` when the server takes no new work now (limits, disk, store)."""
        created = await self.call(self._admit, job, client)
        if created:
            metrics.JOBS_SUBMITTED.labels(job.api).inc()
            if self.local_worker is not None:
                self.local_worker.wake()
        return created

    async def wait_finished(self, job_id: str) -> Job | None:
        """The job once it is finished (None if it vanished: expired, or never existed)."""
        while True:
            seen = self.changes.seen(job_id)
            job = await self.call(self.store.get, job_id)
            if job is None or job.status.finished:
                return job
            await self.changes.wait(job_id, self.settings.wait_poll_s, seen)

    def file_url(self, job: Job, key: str) -> str:
        """Where a client downloads a job's file; a presigned URL (S3) lives as long as the job does."""
        lifetime = job.output.ttl_s if job.output.ttl_s is not None else self.settings.result_retention_s
        expires_s = (job.finished_at or time.time()) + lifetime - time.time()
        return self.storage.url(key, self.settings.public_url or job.base_url, expires_s)

    def upload_url(self, key: str, base_url: str) -> str:
        """Where a client downloads an upload it made (kept for the retention period)."""
        return self.storage.url(key, self.settings.public_url or base_url, self.settings.result_retention_s)

    def stop(self) -> None:
        if self.local_worker is not None:
            self.local_worker.stop()
        if self.supervisor is not None:
            self.supervisor.stop()
        for part in (self.changes, self.deliveries, self.sweeper):
            if part is not None:
                part.stop()
        self.store.close()


def build_executor(settings: Settings, engine=None) -> LocalExecutor:
    """A worker's executor: the engine (loaded from `settings` unless given), reference loading, the
    safety and text checkers, prompt expansion and storage."""
    if engine is None:
        from .model.loader import load_engine

        engine = load_engine(settings)
    storage = open_storage(settings)
    references = ReferenceLoader(ImageFetcher(settings), storage)
    checker = load_checker(settings.safety_checker, settings.safety_threshold, settings.safety_labels)
    expander = None
    if settings.expansion_base_url:
        expander = PromptExpander(
            settings.expansion_base_url,
            settings.expansion_model,
            settings.expansion_api_key,
            settings.expansion_timeout_s,
        )
    post = PostContext(
        storage, checker, settings, load_text_checker(settings.text_checker, settings.text_check_threads)
    )
    return LocalExecutor(engine, references, post, expander)


def start_services(
    settings: Settings,
    renderers: Callable[[Services], Mapping[str, Renderer]],
    loop: asyncio.AbstractEventLoop,
    engine=None,
) -> Services:
    """The API process's services. `renderers` gives each dialect's delivery renderer. Workers: `engine`
    given (tests) runs one on a thread here; else `settings.workers` worker processes are started (0: none;
    they join with `glm-image worker`)."""
    store = open_store(settings)
    storage = open_storage(settings)
    snapshots = SnapshotCache(settings.snapshot_ttl_s)
    services = Services(
        settings=settings,
        store=store,
        storage=storage,
        changes=ChangeFeed(store, loop, snapshots, settings.change_poll_s),
        snapshots=snapshots,
        sweeper=RetentionSweeper(store, storage, settings.result_retention_s),
        fetcher=ImageFetcher(settings),
        admission=Admission(settings, store),
        destinations=UrlGuard(settings.allow_loopback_urls, settings.allow_private_urls),
        own_files=OwnFiles(storage, settings),
    )
    deliveries = DeliverySender(store, settings, renderers(services), services.destinations)
    services.deliveries = deliveries
    services.changes.listeners = (deliveries.wake,)
    changes = services.changes
    expired = store.expire_leases(time.time())
    if expired.requeued or expired.failed:
        log.info("jobs left by stopped workers: %d queued again, %d failed", expired.requeued, expired.failed)
    services.sweeper.sweep()  # also the half-written files a crash or a full disk left
    for part in (changes, deliveries, services.sweeper):
        part.start()
    if engine is not None:
        worker = Worker(settings, store, settings.worker_id or default_worker_id(), str(engine.device))
        worker.start_heartbeat()
        worker.start_thread(build_executor(settings, engine))
        services.local_worker = worker
    elif settings.workers != 0:
        services.supervisor = Supervisor(settings, store)
        services.supervisor.start()
    return services


def start_worker(settings: Settings) -> Worker:
    """A worker on the store in `settings`, loading its model and then running jobs on a thread of this
    process (a Ray Serve worker replica; `run_worker` for a process of its own)."""
    store = open_store(settings)
    worker = Worker(settings, store, settings.worker_id or default_worker_id(), settings.device)
    worker.start_heartbeat()
    executor = build_executor(settings)
    worker.device = str(executor.engine.device)
    worker.start_thread(executor)
    return worker


def run_worker(settings: Settings) -> None:
    """`glm-image worker`: one worker process on the store in `settings`, until SIGTERM/SIGINT."""
    import signal

    os.nice(settings.worker_nice)  # the API process (and its event loop) goes first on a shared CPU
    store = open_store(settings)
    worker = Worker(settings, store, settings.worker_id or default_worker_id(), settings.device)
    worker.start_heartbeat()
    executor = build_executor(settings)
    worker.device = str(executor.engine.device)

    def stop(_signum, _frame) -> None:
        worker.stop(timeout=0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    worker.serve(executor)
