"""The job service: what every dialect (and the playground) does with jobs, the same way, with no HTTP.
Submit (admission, the durable write, metrics, the "accepted" line); get and cancel the caller's own jobs;
`watch` a job as snapshots (the one loop behind sync waits, status streams and pushed results); render
its images. A queued job read past its `start_by` is failed first (the store's rule, which a worker's next
claim applies too), and a watcher wakes at that deadline, so a waiting client sees it fail on time."""

from __future__ import annotations

import base64
import logging
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

import anyio
from pydantic import BaseModel

from .. import metrics
from ..core.job import Job, JobError, JobStatus, LiveState, LogEntry
from ..core.request import GenerationRequest, OutputSpec
from ..core.results import StoredImage
from ..keys import owner_label
from ..media.fetch import BlockedUrl, UrlGuard
from ..media.own_files import OwnFiles
from ..media.storage import Storage
from ..slices import Slice
from ..store.contract import CancelOutcome, JobStore, OverCap, StoreUnavailable
from .admission import Admission, Refused
from .changes import ChangeFeed

log = logging.getLogger("glm_image_server")
T = TypeVar("T")
DEADLINE_SLACK_S = 0.01  # wake just past a start deadline, so the read sees it passed
FAILED = JobError(kind="internal", message="failed")
STORE_RETRY_S = 2.0


@dataclass(frozen=True)
class ServingSettings(Slice):
    """What the job service and the dialects' handlers read (`Services.settings`)."""

    api_keys: tuple[str, ...]
    public_url: str | None
    data_dir: Path
    model: str
    result_retention_s: float
    wait_poll_s: float
    stream_keepalive_s: float
    lease_s: float
    max_tasks_per_message: int
    fetch_max_bytes: int
    input_max_pixels: int
    safety_default: bool
    expansion_base_url: str | None
    pricing: str
    price_per_megapixel: float
    price_per_gpu_second: float


@dataclass(frozen=True)
class Caller:
    """Who asks: a dialect (the `api` its jobs record), the key's owner hash (None on a server without
    keys) and the client's address (per-address limits). It sees only the jobs with its `api` and owner."""

    api: str
    owner: str | None = None
    client: str = ""

    def own(self, job: Job | None) -> Job | None:
        """`job` when this caller may see it, else None (as if it did not exist)."""
        return job if job is not None and job.api == self.api and job.owner == self.owner else None


@dataclass(frozen=True)
class Snapshot:
    """A job as read at one moment (None: gone or not the caller's); with `progress`, its queue position
    while queued and live state while running; `logs` when asked."""

    job: Job | None
    position: int = 0
    logs: list[LogEntry] | None = None
    live: LiveState | None = None


@dataclass(frozen=True)
class RenderedImage:
    """A stored image as a client gets it: a URL on this server, or its bytes inline (base64)."""

    image: StoredImage
    url: str | None = None
    base64: str | None = None

    @property
    def data_uri(self) -> str:
        return f"data:{self.image.content_type};base64,{self.base64}"


def unavailable(exc: StoreUnavailable) -> Refused:
    """How a client hears of a store it cannot reach: the detail goes to the log, not to the client."""
    log.warning("%s", exc)
    return Refused("the job store is unavailable right now; try again shortly", STORE_RETRY_S, "unavailable")


def shutting_down() -> Refused:
    """New jobs, and waits past the drain, while the server stops."""
    return Refused("the server is shutting down; try again shortly", 5.0, "unavailable")


def failure(job: Job) -> JobError:
    return job.error or FAILED


def overdue(job: Job | None, now: float) -> bool:
    """Queued past its start deadline: the next read or claim fails it."""
    start_by = job.start_by if job is not None and job.status == JobStatus.QUEUED else None
    return start_by is not None and start_by <= now


@dataclass
class JobService:
    """One per API process (`Services.jobs`), for every dialect; each call names its `Caller`."""

    settings: ServingSettings
    store: JobStore
    storage: Storage
    changes: ChangeFeed  # and its snapshot cache
    admission: Admission
    destinations: UrlGuard  # where webhooks and upload PUTs may go (checked at submission and per call)
    own_files: OwnFiles  # our own result and upload URLs given back as inputs: read from storage
    wake: Callable[[], None] = lambda: None  # a worker in this process, when there is one
    drain_by: float | None = None  # shutting down: no new jobs, and every wait answers by then

    def drain(self, within_s: float) -> None:
        """The server is stopping (SIGTERM): refuse new jobs; waiting sync requests get `within_s` more, then
        a 503 (the jobs stay, for the next start). A second signal does not move the deadline."""
        if self.drain_by is None:
            self.drain_by = time.time() + within_s

    def _draining(self, wait_s: float) -> float:
        """How long a watcher may wait now; raises Refused once the drain is over."""
        if self.drain_by is None:
            return wait_s
        if (left := self.drain_by - time.time()) <= 0:
            raise shutting_down()
        return min(wait_s, left)

    @staticmethod
    async def call(fn: Callable[..., T], *args: Any) -> T:
        """Blocking store or file work, off the event loop; an unavailable store is a Refused (a 503)."""
        try:
            return await anyio.to_thread.run_sync(fn, *args)
        except StoreUnavailable as exc:
            raise unavailable(exc) from exc

    # --- submitting
    def new_job(
        self,
        caller: Caller,
        app: str,
        request: GenerationRequest,
        output: OutputSpec,
        base_url: str,
        options: BaseModel | None = None,
        **fields: Any,
    ) -> Job:
        """A queued job of the caller's; `options` are the dialect's, kept to render it later; `fields`
        the Job's optional ones (id, priority...). A result never outlives the retention."""
        if output.ttl_s is not None and output.ttl_s > self.settings.result_retention_s:
            output = replace(output, ttl_s=self.settings.result_retention_s)
        return Job(
            **{"id": str(uuid.uuid4()), "owner": caller.owner, **fields},
            api=caller.api,
            app=app,
            request=request,
            output=output,
            options=options.model_dump(mode="json") if options is not None else {},
            status=JobStatus.QUEUED,
            created_at=time.time(),
            file_prefix=secrets.token_urlsafe(18),
            base_url=base_url,
        )

    async def submit(self, caller: Caller, job: Job) -> bool:
        """Durable before it returns: acknowledge the job only after this. False: the id exists (it is not
        replaced). Raises `admission.Refused` when the server takes no new work now (limits, disk, store)."""
        if not await self.call(self._admit, job, caller.client):
            return False
        key, request = self.key_label(job.owner), job.request
        metrics.JOBS_SUBMITTED.labels(job.api, key).inc()
        images = f"{request.num_images} image(s) at {request.width}x{request.height}"
        log.info("job %s accepted: %s %s, %s, key %s", job.id, job.api, job.app, images, key)
        self.wake()
        return True

    def _admit(self, job: Job, client: str) -> bool:
        if self.drain_by is not None:
            raise shutting_down()
        self.admission.check(job.owner, client)
        try:
            return self.store.create(job, self.admission.caps)
        except OverCap as exc:
            raise self.admission.refusal(exc) from exc
        except StoreUnavailable:
            raise  # `call` answers it
        except Exception as exc:  # any other failure to write: the job is not acknowledged
            log.error("could not record job %s: %s", job.id, exc)
            message = f"the job could not be recorded ({exc}); try again later"
            raise Refused(message, 5.0, "unavailable") from exc

    def key_label(self, owner: str | None) -> str:
        """Whose work a job is, for logs and metrics: its key's name (or hash); `-` without keys."""
        return owner_label(self.settings.api_keys, owner)

    async def refused_destination(self, url: str | None) -> str | None:
        """Why a webhook or upload URL will never be called (the same guard as at send time), or None."""
        try:
            if url is not None:
                await self.destinations.acheck(url)
        except BlockedUrl as exc:
            return f"refused: {exc}"
        return None

    async def local_references(self, references: tuple[str, ...], base_url: str) -> tuple[str, ...]:
        """References to our own files (results, uploads) as `stored:` locators, read from storage instead
        of fetched; the rest as given. Raises InvalidRequest for one of ours that is gone or malformed."""
        if not references:
            return references
        return await self.call(self.own_files.locators, references, base_url)

    # --- reading
    def read(self, caller: Caller, job_id: str) -> Job | None:
        """The caller's job as it stands now (failed first if overdue). Blocking: the store."""
        return caller.own(self._on_time(self.store.get(job_id)))

    async def get(self, caller: Caller, job_id: str) -> Job | None:
        return await self.call(self.read, caller, job_id)

    def images(self, caller: Caller, job_id: str) -> dict[int, StoredImage]:
        """The caller's job's images by index: its result's, or those a running job finished. Blocking."""
        job = self.read(caller, job_id)
        if job is None or job.result is not None:
            return dict(enumerate(job.result.images)) if job is not None and job.result else {}
        live = self.store.live(job_id) if job.status == JobStatus.RUNNING else None
        return {done.index: done.image for done in (live.images if live else ())}

    def _on_time(self, job: Job | None) -> Job | None:
        """A job just read, failed first if queued past `start_by`."""
        if not overdue(job, time.time()):
            return job
        self.store.expire_start_deadlines(time.time())
        return self.store.get(job.id)  # type: ignore[union-attr]

    def _snapshot(self, job_id: str, logs: bool, progress: bool) -> Snapshot | None:
        """Blocking; shared by every caller (the snapshot cache), so ownership is checked after."""
        job = self._on_time(self.store.get(job_id))
        if job is None:
            return None
        queued, running = job.status == JobStatus.QUEUED, job.status == JobStatus.RUNNING
        return Snapshot(
            job,
            self.store.queue_position(job_id) if progress and queued else 0,
            self.store.logs(job_id) if logs else None,
            self.store.live(job_id) if progress and running else None,
        )

    async def snapshot(
        self, caller: Caller, job_id: str, logs: bool = False, progress: bool = False, fresh: bool = False
    ) -> Snapshot:
        """The job now: `fresh` from the store, else from the snapshot cache while it has not changed."""
        key, read = (job_id, logs, progress), lambda: self.call(self._snapshot, job_id, logs, progress)
        found = await (read() if fresh else self.changes.snapshots.load(key, read))
        if found is not None and overdue(found.job, time.time()):  # cached before its deadline passed
            self.changes.snapshots.invalidate(job_id)
            found = await read()
        return found if found is not None and caller.own(found.job) else Snapshot(None)

    async def watch(
        self,
        caller: Caller,
        job_id: str,
        logs: bool = False,
        progress: bool = False,
        every_s: float | Callable[[], float] | None = None,
    ) -> AsyncIterator[Snapshot]:
        """Snapshots of the job: now, then after each change, at its start deadline and at least every
        `every_s` (or what it returns; default `wait_poll_s`), until one shows it finished or gone."""
        while True:
            seen = self.changes.seen(job_id)
            snapshot = await self.snapshot(caller, job_id, logs, progress)
            yield snapshot
            job = snapshot.job
            if job is None or job.status.finished:
                return
            wait_s = every_s() if callable(every_s) else every_s or self.settings.wait_poll_s
            if job.status == JobStatus.QUEUED and job.start_by is not None:
                wait_s = min(wait_s, max(0.0, job.start_by - time.time()) + DEADLINE_SLACK_S)
            await self.changes.wait(job_id, self._draining(wait_s), seen)

    async def finished(self, caller: Caller, job_id: str) -> Job | None:
        """The job once it is finished; None when it is gone (not the caller's, or expired meanwhile)."""
        last: Job | None = None
        async for snapshot in self.watch(caller, job_id):
            last = snapshot.job
        return last

    async def cancel(self, caller: Caller, job_id: str) -> CancelOutcome:
        """Queued: cancelled now. Running: flagged (its worker stops at the next token or step)."""
        if await self.get(caller, job_id) is None:
            return "missing"
        outcome = await self.call(self.store.request_cancel, job_id)
        self.changes.notify(job_id)
        return outcome

    # --- rendering
    def render(
        self, job: Job, inline: bool, images: Sequence[StoredImage] | None = None
    ) -> list[RenderedImage]:
        """The job's result images (or `images`) as URLs, or inline (blocking: `arender` from handlers)."""
        images = job.result.images if images is None and job.result is not None else images or ()
        if inline:
            read = self.storage.read
            return [RenderedImage(im, base64=base64.b64encode(read(im.key)).decode()) for im in images]
        return [RenderedImage(im, url=self.file_url(job, im.key)) for im in images]

    async def arender(self, job: Job, inline: bool) -> list[RenderedImage]:
        return await self.call(self.render, job, inline) if inline else self.render(job, inline)

    def file_url(self, job: Job, key: str) -> str:
        """Where a client downloads a job's file; a presigned URL (S3) lives as long as the job does."""
        lifetime = job.output.ttl_s if job.output.ttl_s is not None else self.settings.result_retention_s
        expires_s = (job.finished_at or time.time()) + lifetime - time.time()
        return self.storage.url(key, self.settings.public_url or job.base_url, expires_s)

    def upload_url(self, key: str, base_url: str) -> str:
        """Where a client downloads an upload it made (kept for the retention period)."""
        return self.storage.url(key, self.settings.public_url or base_url, self.settings.result_retention_s)
