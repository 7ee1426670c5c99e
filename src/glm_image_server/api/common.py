"""What every dialect does the same way: create and submit a job, wait for it, read, cancel and render
only its own jobs, and read image files off the event loop. A dialect adds its wire models and its
translation; nothing here knows any dialect's formats.
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any, TypeVar

from pydantic import BaseModel
from starlette.requests import HTTPConnection, Request
from starlette.responses import Response

from ..core.job import Job, JobError, JobStatus
from ..core.request import GenerationRequest, InvalidRequest, OutputSpec
from ..core.results import StoredImage
from ..media.fetch import BlockedUrl
from ..serving.services import Services
from ..store.contract import CancelOutcome, JobStore

M = TypeVar("M", bound=BaseModel)
T = TypeVar("T")


class Gone(Enum):
    """The client hung up before its answer was ready."""

    GONE = "gone"


GONE = Gone.GONE
HUNG_UP = Response(status_code=499)  # nobody reads it; uvicorn needs a response all the same
FAILED = JobError(kind="internal", message="failed")


@dataclass(frozen=True)
class RenderedImage:
    """A stored image as a client gets it: a URL on this server, or its bytes inline (base64)."""

    image: StoredImage
    url: str | None = None
    base64: str | None = None

    @property
    def data_uri(self) -> str:
        return f"data:{self.image.content_type};base64,{self.base64}"


def input_error(exc: InvalidRequest) -> JobError:
    return JobError(kind="input", message=exc.explanation, field=exc.field)


def job_error(job: Job) -> JobError:
    return job.error or FAILED


def on_time(store: JobStore, job: Job | None) -> Job | None:
    """The job as it stands, after failing it if it is queued past its start deadline (a worker's next
    claim would fail it too; a reader should not see it wait on). Blocking: call off the event loop."""
    if job is None or job.status != JobStatus.QUEUED or job.start_by is None or job.start_by > time.time():
        return job
    store.expire_start_deadlines(time.time())
    return store.get(job.id)


def client_of(connection: HTTPConnection) -> str:
    """The client's address (the key for per-address limits)."""
    return connection.client.host if connection.client else "unknown"


def owner_of_request(connection: HTTPConnection) -> str | None:
    """The submitting key's hash, as the gate (api/gate.py) found it."""
    return getattr(connection.state, "owner", None)


async def unless_disconnected(connection: Request, work: Awaitable[T]) -> T | Gone:
    """`work`'s result, or GONE once the client has hung up (the job goes on; only this wait stops, so
    abandoned sync requests cost nothing)."""
    task, watch = asyncio.ensure_future(work), asyncio.ensure_future(_hung_up(connection))
    done, _pending = await asyncio.wait({task, watch}, return_when=asyncio.FIRST_COMPLETED)
    if task in done:
        watch.cancel()
        return task.result()
    task.cancel()
    return GONE


async def _hung_up(connection: Request) -> None:
    while (await connection.receive())["type"] != "http.disconnect":
        pass


def is_http_url(url: str | None) -> bool:
    return url is None or url.startswith(("http://", "https://"))


class DialectService:
    """One dialect's view of the job store for one caller: it sees only the jobs that dialect created
    (`api` on the job) with the caller's key (`owner`, None on a server without keys). Every lookup of a
    job by id goes through `own`, so another dialect's or another key's job answers as if it did not
    exist."""

    api: str = ""

    def __init__(self, services: Services, owner: str | None = None) -> None:
        self.services, self.owner = services, owner

    def new_job(
        self,
        app: str,
        request: GenerationRequest,
        output: OutputSpec,
        base_url: str,
        options: BaseModel | None = None,
        **fields: Any,
    ) -> Job:
        dumped = options.model_dump(mode="json") if options is not None else {}
        fields = {"owner": self.owner, **fields}
        return self.services.new_job(self.api, app, request, output, base_url, options=dumped, **fields)

    async def submit(self, job: Job, client: str = "") -> bool:
        """Durable when it returns. False: a job with that id exists already (it is not replaced).
        Raises `admission.Refused` when the server takes no new work now."""
        return await self.services.enqueue(job, client)

    async def refused_destination(self, url: str | None) -> str | None:
        """Why a webhook or upload URL will never be called (the same guard as at send time), or None."""
        if url is None:
            return None
        try:
            await self.services.destinations.acheck(url)
        except BlockedUrl as exc:
            return f"refused: {exc}"
        return None

    async def own_files(self, references: tuple[str, ...], base_url: str) -> tuple[str, ...]:
        """References to this server's own files (results, uploads) as `stored:` locators, read from
        storage instead of fetched; the rest as given. Raises InvalidRequest (`references[i]`) for one of
        ours that is gone or malformed."""
        if not references:
            return references
        return await self.services.call(self.services.own_files.locators, references, base_url)

    def own(self, job: Job | None) -> Job | None:
        """`job` when this caller may see it, else None."""
        return job if job is not None and job.api == self.api and job.owner == self.owner else None

    async def get(self, job_id: str) -> Job | None:
        store = self.services.store
        return self.own(await self.services.call(lambda: on_time(store, store.get(job_id))))

    async def wait(self, job_id: str) -> Job | None:
        """The job once finished; None when it is not this dialect's or vanished (expired)."""
        return self.own(await self.services.wait_finished(job_id))

    async def cancel(self, job_id: str) -> CancelOutcome:
        if await self.get(job_id) is None:
            return "missing"
        outcome = await self.services.call(self.services.store.request_cancel, job_id)
        self.services.changes.notify(job_id)
        return outcome

    @staticmethod
    def options(job: Job, model: type[M]) -> M:
        """The dialect's typed options stored with the job."""
        return model.model_validate(job.options)

    def render_images(self, job: Job, inline: bool) -> list[RenderedImage]:
        """Blocking when inline (reads the files): call through `render_images_async` from handlers."""
        assert job.result is not None
        return self.render_stored(job, job.result.images, inline)

    def render_stored(self, job: Job, images: Sequence[StoredImage], inline: bool) -> list[RenderedImage]:
        """Some of the job's stored images (also those a running job finished already); blocking when
        inline."""
        read = self.services.storage.read
        if inline:
            return [RenderedImage(im, base64=base64.b64encode(read(im.key)).decode()) for im in images]
        return [RenderedImage(im, url=self.services.file_url(job, im.key)) for im in images]

    async def render_images_async(self, job: Job, inline: bool) -> list[RenderedImage]:
        if not inline:
            return self.render_images(job, inline)
        return await self.services.call(self.render_images, job, inline)
