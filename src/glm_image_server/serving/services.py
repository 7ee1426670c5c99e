"""The composition root: builds the API process's services (store, storage, change feed, deliveries,
retention, worker supervisor) and a worker's executor, from one Settings object.

Nothing here imports torch: the API process runs without it, and a worker loads the engine through
`model.loader.load_engine` only when it is built.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any, TypeVar

import anyio

from .. import metrics
from ..config import DeliverySettings, FetchSettings, Settings
from ..core.job import Job, JobStatus
from ..core.request import GenerationRequest, OutputSpec
from ..delivery.sender import DeliverySender, Renderer
from ..keys import owner_label
from ..media.fetch import ImageFetcher, UrlGuard
from ..media.own_files import OwnFiles
from ..media.storage import Storage, open_storage
from ..signing import SigningKey
from ..store import open_store
from ..store.contract import JobStore
from ..worker.main import start_worker, supervise
from ..worker.supervisor import Supervisor
from ..worker.worker import Worker
from .admission import Admission, StoreUnavailable
from .changes import ChangeFeed, SnapshotCache
from .retention import RetentionSweeper

log = logging.getLogger("glm_image_server")
T = TypeVar("T")


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
    webhook_key: SigningKey  # signs fal webhooks; its public half is at /.well-known/jwks.json
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
            key = self.key_label(job.owner)
            metrics.JOBS_SUBMITTED.labels(job.api, key).inc()
            request = job.request
            log.info(
                "job %s accepted: %s %s, %d image(s) at %dx%d, key %s",
                job.id,
                job.api,
                job.app,
                request.num_images,
                request.width,
                request.height,
                key,
            )
            if self.local_worker is not None:
                self.local_worker.wake()
        return created

    def key_label(self, owner: str | None) -> str:
        """Whose work a job is, for logs and metrics: its key's name (or hash); `-` without keys."""
        return owner_label(self.settings.api_keys, owner)

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
    storage = open_storage(settings.storage_url, settings.files_dir)
    snapshots = SnapshotCache(settings.snapshot_ttl_s)
    services = Services(
        settings=settings,
        store=store,
        storage=storage,
        changes=ChangeFeed(store, loop, snapshots, settings.change_poll_s),
        snapshots=snapshots,
        sweeper=RetentionSweeper(store, storage, settings.result_retention_s),
        fetcher=ImageFetcher(FetchSettings.from_settings(settings)),
        admission=Admission(settings, store),
        destinations=UrlGuard(settings.allow_loopback_urls, settings.allow_private_urls),
        webhook_key=SigningKey.load_or_create(settings.webhook_key_path),
        own_files=OwnFiles(storage, settings.public_url, settings.host, settings.port),
    )
    delivery = DeliverySettings.from_settings(settings)
    deliveries = DeliverySender(store, delivery, renderers(services), services.destinations)
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
        services.local_worker = start_worker(settings, store, engine)
    elif settings.workers != 0:
        services.supervisor = supervise(settings, store)
    return services
