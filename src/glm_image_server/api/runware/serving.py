"""Runware's task runner for REST and WebSockets (routes.py): authentication, ping, imageInference,
getResponse, imageUpload. An imageInference's taskUUID is its job id, so a repeated one is answered with
that task's results, never run twice. Images go out as each finishes. A WebSocket's authentication opens a
connection session: a client reconnecting with its `connectionSessionUUID` and the same key gets the
results it missed, from whichever API process it reaches."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable
from dataclasses import replace
from functools import partial
from typing import Any, TypeVar

from pydantic import ValidationError
from starlette.requests import HTTPConnection

from ...core.job import Job, JobStatus
from ...core.request import STORED, InvalidRequest
from ...core.results import FinishedImage
from ...delivery.sender import Outgoing, Renderer
from ...media.fetch import decode_data_uri
from ...media.storage import upload_key
from ...media.uploads import keep_upload_bytes, upload_locator
from ...serving.admission import Refused
from ...serving.services import Services
from .. import jsonbody
from ..auth import key_ok, owner_of
from ..common import DialectServing
from ..dialect import refused_status
from . import translate
from .protocol import API, CODES, MODEL, ImageInference, RunwareOptions, TaskError

log = logging.getLogger(__name__)
T = TypeVar("T")


def render(services: Services, job: Job) -> list[dict]:
    """A succeeded job's items (blocking for inline outputs)."""
    options = RunwareOptions.model_validate(job.options)
    return translate.items(job, services.jobs.render(job, options.outputType != "URL"), options)


def render_early(services: Services, job: Job, finished: tuple[FinishedImage, ...]) -> dict[int, dict]:
    """Items by index of the images a running job finished, as its result will have them (blocking when
    inline); with includeCost, only those whose cost is known."""
    options = RunwareOptions.model_validate(job.options)
    ready = [done for done in finished if done.cost is not None or not options.includeCost]
    images = services.jobs.render(job, options.outputType != "URL", [done.image for done in ready])
    return {
        done.index: translate.item(job.id, done.index, image, done.nsfw, done.cost or 0.0, None, options)
        for done, image in zip(ready, images, strict=True)
    }


def deliveries(services: Services) -> Renderer:
    """uploadEndpoint PUTs and webhookURL POSTs for a finished job: one of each per image, in order."""

    def outgoing(job: Job) -> list[Outgoing]:
        webhook, upload = job.output.webhook_url, job.output.upload_url
        if job.status != JobStatus.SUCCEEDED:
            error = {"errors": [translate.error_item(job).item()]}
            return [Outgoing("POST", webhook, json=error)] if webhook else []
        calls = []
        for image, item in zip(job.result.images, render(services, job), strict=True):  # type: ignore[union-attr]
            if upload:
                content = services.storage.read(image.key)
                calls.append(Outgoing("PUT", upload, content=content, content_type=image.content_type))
            if webhook:
                calls.append(Outgoing("POST", webhook, json={"data": [item]}))
        return calls

    return outgoing


class Tasks(DialectServing):
    """Runs tasks for one REST call or WebSocket (`sessions`: with a connection session recording its sync
    inferences), as the key of an authentication task or of the header."""

    api = API

    def __init__(self, connection: HTTPConnection, sessions: bool = False) -> None:
        super().__init__(connection)
        self.sessions = sessions
        self.auth_failures = connection.app.state.auth_failures
        self.authenticated = not self.services.settings.api_keys
        self.session: str | None = None
        self.missed: list[str] = []  # a resumed session's jobs whose results the client has not had

    def accept_key(self, key: str | None) -> bool:
        """Authenticate with `key` when it is right: the tasks after are that key's."""
        keys = self.services.settings.api_keys
        if not key_ok(keys, key):
            return False
        self.authenticated, self.caller = True, replace(self.caller, owner=owner_of(keys, key))
        return True

    async def safely(self, task: Any, work: Awaitable[T]) -> T:
        """`work`'s result; any fault of ours (or a refusal) as the task's error."""
        try:
            return await work
        except Exception as exc:
            raise task_error(exc, task) from None

    async def run(self, task: Any) -> list[dict]:
        """A task's data items; raises TaskError (run it `safely`: any fault of ours is one too)."""
        if not isinstance(task, dict) or not isinstance(task.get("taskType"), str):
            raise TaskError("missingTaskType", "each task must be an object with a taskType", "taskType")
        task_type = task["taskType"]
        if task_type == "authentication":
            return [await self.authenticate(task)]
        self.check_authenticated(task)
        if task_type == "ping":
            return [{"taskType": "ping", "pong": True}]
        if task_type == "imageUpload":
            return [await self.upload(task)]
        if task_type == "getResponse":
            return await self.get_response(task)
        if task_type == "imageInference":
            job = await self.submit(task)
            if task.get("deliveryMethod") == "async":
                return [translate.processing(job.id)]
            if (job := await self.jobs.finished(self.caller, job.id)) is None:
                message = "the task expired or is not an imageInference"
                raise TaskError("taskFailedOrNotFound", message, "taskUUID", task)
            if job.status != JobStatus.SUCCEEDED:
                raise translate.error_item(job)
            return await self.jobs.call(render, self.services, job)
        raise TaskError("unsupportedTaskType", f"unsupported taskType {task_type!r}", "taskType", task)

    def check_authenticated(self, task: dict) -> None:
        if not self.authenticated:
            message = "authenticate first (an authentication task or a Bearer key)"
            raise TaskError("invalidApiKey", message, "apiKey", task, status=401)

    async def authenticate(self, task: dict) -> dict:
        key = task.get("apiKey")
        if not self.accept_key(key if isinstance(key, str) else None):
            if self.auth_failures.take(self.caller.client):
                raise TaskError("tooManyRequests", "too many wrong API keys", "apiKey", task, status=429)
            raise TaskError("invalidApiKey", "invalid API key", "apiKey", task, status=401)
        session = str(uuid.uuid4())
        if self.sessions:
            asked = task.get("connectionSessionUUID")
            missed = await self._resumable(asked) if isinstance(asked, str) else None
            if missed is not None:
                session, self.missed = str(uuid.UUID(asked)), missed
            self.session = session
        return {"taskType": "authentication", "connectionSessionUUID": session}

    async def _resumable(self, session: str) -> list[str] | None:
        """The undelivered jobs of a session this key may resume; None when it may not, or there is none."""
        try:
            session = str(uuid.UUID(session))
        except ValueError:
            return None
        jobs = await self.jobs.call(self.services.sessions.session_jobs, session)
        if not jobs or any(job.owner != self.caller.owner for job in jobs):
            return None
        return [job.job_id for job in jobs if not job.delivered]

    async def submit(self, task: dict) -> Job:
        self.check_authenticated(task)
        try:
            params = ImageInference.model_validate(task)
        except ValidationError as exc:
            raise translate.from_validation(exc, task) from None
        if params.model != MODEL:
            message = f"this server runs {MODEL}, not {params.model!r}"
            raise TaskError("unsupportedModel", message, "model", task)
        own_url = partial(self.jobs.own_files.locator, base_url=self.base_url)  # (URL, field) -> locator
        request, output, options = await self.jobs.call(
            translate.to_internal, params, task, self.stored_image, own_url
        )
        for url, parameter in ((output.webhook_url, "webhookURL"), (output.upload_url, "uploadEndpoint")):
            if problem := await self.jobs.refused_destination(url):
                raise TaskError(f"invalid{translate.cap(parameter)}", problem, parameter, task)
        job = self.jobs.new_job(
            self.caller, MODEL, request, output, self.base_url, options, id=params.taskUUID
        )
        if not await self.jobs.submit(self.caller, job):
            if await self.jobs.get(self.caller, job.id) is None:  # another key's or another API's
                message = "this taskUUID is taken: send a new UUIDv4 for each task"
                raise TaskError("invalidTaskUUID", message, "taskUUID", task)
            log.info("repeated taskUUID %s: answering with the existing task", job.id)
        if self.session is not None and params.deliveryMethod == "sync":  # pushed on the socket: kept
            await self.jobs.call(
                self.services.sessions.add_session_job, self.session, job.id, self.caller.owner
            )
        return job

    def stored_image(self, image_uuid: uuid.UUID) -> str | None:
        """The `stored:` locator of an imageUUID (an upload or this key's result), else None. Blocking."""
        storage = self.services.storage
        if (upload := upload_locator(storage, image_uuid)) is not None:
            return upload
        found = translate.result_of(image_uuid)
        image = self.jobs.images(self.caller, found[0]).get(found[1]) if found else None
        return STORED + image.key if image is not None and storage.exists(image.key) else None

    async def get_response(self, task: dict) -> list[dict]:
        """The task's images: the finished ones as results, one `processing` item per image to come."""
        snapshot = await self.jobs.snapshot(self.caller, str(task.get("taskUUID")), progress=True, fresh=True)
        job = snapshot.job
        if job is None:
            message = "no task with that taskUUID"
            raise TaskError("taskFailedOrNotFound", message, "taskUUID", task, status=404)
        if not job.status.finished:
            done = list((await self._early(job, snapshot.live)).values())
            results = job.output.keep_best or job.request.num_images  # numberResults
            return done + [translate.processing(job.id)] * (results - len(done))
        if job.status != JobStatus.SUCCEEDED:
            error = translate.error_item(job)
            error.status = 200 if error.status == 400 else error.status
            raise error
        return await self.jobs.call(render, self.services, job)

    async def _early(self, job: Job, live: Any) -> dict[int, dict]:
        if live is None or not live.images:
            return {}
        return await self.jobs.call(render_early, self.services, job, live.images)

    async def stream(self, job_id: str, task: dict) -> AsyncIterator[dict]:
        """The task's results, each image once as soon as it is finished; raises only TaskError."""
        sent: set[int] = set()
        try:
            async for snapshot in self.jobs.watch(self.caller, job_id, progress=True):
                job = snapshot.job
                if job is None:
                    raise TaskError("taskFailedOrNotFound", "the task expired", "taskUUID", task)
                if job.status.finished and job.status != JobStatus.SUCCEEDED:
                    raise translate.error_item(job)
                if job.status.finished:
                    items = dict(enumerate(await self.jobs.call(render, self.services, job)))
                else:
                    items = await self._early(job, snapshot.live)
                for index, item in sorted(items.items()):
                    if index not in sent:
                        sent.add(index)
                        yield item
                if job.status.finished:  # its last image was sent: marked at once, even as the client goes
                    await asyncio.shield(self.delivered(job_id))
        except Exception as exc:
            raise task_error(exc, task) from None

    async def delivered(self, job_id: str) -> None:
        """Everything of the job reached the client on this connection: a resumed session skips it."""
        if self.session is not None:
            await self.jobs.call(self.services.sessions.session_delivered, job_id)

    async def upload(self, task: dict) -> dict:
        image = task.get("image")
        if not isinstance(image, str) or not image:
            raise TaskError("missingImage", "imageUpload needs an image", "image", task)
        try:
            if image.startswith(("http://", "https://")) or translate.is_path(image):
                # one of our own files is read from storage, any other fetched on the event loop
                locator = await self.jobs.call(self.jobs.own_files.locator, image, "image", self.base_url)
                if locator.startswith(STORED):
                    image = await self.jobs.call(self.services.storage.read, locator.removeprefix(STORED))
                else:
                    image = await self.services.fetcher.fetch_bytes(image, "image")
            image_uuid = uuid.uuid4()
            await self.jobs.call(self._keep, image, image_uuid)
        except InvalidRequest as exc:
            raise TaskError("invalidImage", exc.explanation, "image", task) from None
        url = self.jobs.upload_url(upload_key(image_uuid), self.base_url)
        return {
            "taskType": "imageUpload",
            "taskUUID": task.get("taskUUID"),
            "imageUUID": str(image_uuid),
            "imageURL": url,
        }

    def _keep(self, image: str | bytes, image_uuid: uuid.UUID) -> None:
        """Decode and keep an upload: fetched bytes, a data URI or bare base64. Blocking."""
        settings = self.services.settings
        if isinstance(image, str):
            uri = image if image.startswith("data:") else "data:;base64," + "".join(image.split())
            image = decode_data_uri(uri, "image", settings.fetch_max_bytes)
        keep_upload_bytes(self.services.storage, image, "image", settings.input_max_pixels, image_uuid)


def task_error(exc: Exception, task: Any) -> TaskError:
    """Any failure while running a task, as that task's error: every task gets an answer."""
    if isinstance(exc, TaskError):
        return exc
    task = task if isinstance(task, dict) else None
    if isinstance(exc, Refused):
        status = refused_status(exc)
        return TaskError(CODES[status], exc.message, None, task, status, exc.retry_after_s)
    log.exception("Runware task failed", exc_info=exc)
    message = f"the server failed to run this task ({type(exc).__name__})"
    return TaskError("internalError", message, None, task, 500)


async def tasks_in(message: bytes | str, limit: int) -> list:
    """The tasks of one REST body or WebSocket message; raises TaskError for bad JSON or past `limit`."""
    try:
        payload = await jsonbody.parse(message.encode() if isinstance(message, str) else message)
    except ValueError as exc:
        raise TaskError("invalidJSON", f"messages must be JSON arrays of tasks ({exc})") from None
    tasks = payload if isinstance(payload, list) else [payload]
    if len(tasks) > limit:
        raise TaskError("tooManyTasks", f"at most {limit} tasks per message, got {len(tasks)}", status=429)
    return tasks
