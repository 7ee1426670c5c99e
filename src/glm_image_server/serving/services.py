"""The composition root of the API process: builds its services (store, storage, change feed, job service,
deliveries, retention, workers) from one Settings object, and stops them. Nothing here imports torch."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from ..config import Settings
from ..delivery.sender import DeliverySender, Renderer
from ..media.fetch import ImageFetcher, UrlGuard
from ..media.own_files import OwnFiles
from ..media.storage import Storage, open_storage
from ..signing import SigningKey
from ..slices import DeliverySettings, FetchSettings
from ..store import open_store
from ..store.contract import JobStore, SessionStore
from ..worker.main import start_worker, supervise
from ..worker.plan import api_only
from ..worker.supervisor import Supervisor
from ..worker.worker import Worker
from .admission import Admission, LimitsSettings
from .changes import ChangeFeed, SnapshotCache
from .jobs import JobService, ServingSettings
from .retention import RetentionSweeper

log = logging.getLogger("glm_image_server")


@dataclass
class Services:
    """Everything a request handler needs; built once at startup."""

    settings: ServingSettings  # what the handlers read
    store: JobStore
    sessions: SessionStore  # connection sessions (Runware's WebSockets): the same store, its own interface
    storage: Storage
    changes: ChangeFeed
    jobs: JobService
    sweeper: RetentionSweeper
    fetcher: ImageFetcher  # for uploads given as URLs (job references are fetched by the workers)
    admission: Admission
    webhook_key: SigningKey  # signs fal webhooks; its public half is at /.well-known/jwks.json
    deliveries: DeliverySender | None = None
    supervisor: Supervisor | None = None
    local_worker: Worker | None = None

    call = staticmethod(JobService.call)  # blocking store or file work, off the event loop

    def stop(self) -> None:
        for part in (self.local_worker, self.supervisor, self.changes, self.deliveries, self.sweeper):
            if part is not None:
                part.stop()
        self.store.close()


def build_services(settings: Settings, loop: asyncio.AbstractEventLoop) -> Services:
    """The services over a freshly opened store and storage; nothing started yet."""
    store, storage = open_store(settings), open_storage(settings.storage_url, settings.files_dir)
    changes = ChangeFeed(store, loop, SnapshotCache(settings.snapshot_ttl_s), settings.change_poll_s)
    admission = Admission(LimitsSettings.from_settings(settings))
    destinations = UrlGuard(settings.allow_loopback_urls, settings.allow_private_urls)
    own_files = OwnFiles(storage, settings.public_url, settings.host, settings.port)
    serving = ServingSettings.from_settings(settings)
    return Services(
        settings=serving,
        store=store,
        sessions=store,
        storage=storage,
        changes=changes,
        jobs=JobService(serving, store, storage, changes, admission, destinations, own_files),
        sweeper=RetentionSweeper(store, storage, settings.result_retention_s),
        fetcher=ImageFetcher(FetchSettings.from_settings(settings)),
        admission=admission,
        webhook_key=SigningKey.load_or_create(settings.webhook_key_path),
    )


def start_services(
    settings: Settings,
    renderers: Callable[[Services], Mapping[str, Renderer]],
    loop: asyncio.AbstractEventLoop,
    engine=None,
) -> Services:
    """The API process's services, started; `renderers` gives each dialect's delivery renderer (by `api`).
    With `engine` (tests) a worker runs on a thread here; else `settings.workers` processes are started."""
    services = build_services(settings, loop)
    store, delivery = services.store, DeliverySettings.from_settings(settings)
    deliveries = DeliverySender(store, delivery, renderers(services), services.jobs.destinations)
    services.deliveries, services.changes.listeners = deliveries, (deliveries.wake,)
    expired = store.expire_leases(time.time())
    if expired.requeued or expired.failed:
        log.info("jobs left by stopped workers: %d queued again, %d failed", expired.requeued, expired.failed)
    services.sweeper.sweep()  # also the half-written files a crash or a full disk left
    for part in (services.changes, deliveries, services.sweeper):
        part.start()
    if engine is not None:
        worker = start_worker(settings, store, engine)
        services.local_worker, services.jobs.wake = worker, worker.wake
    elif not api_only(settings.workers):
        services.supervisor = supervise(settings, store)
    return services
