"""Runware's routes: `POST /v1` (a JSON array of tasks) and a WebSocket on `/v1`, and the task runner
they share. Tasks: authentication, ping, imageInference (model `runware:glm-image@0`), getResponse,
imageUpload. An imageInference's taskUUID is its job id, so a repeated taskUUID returns that task's
results and never runs the work twice.

Images are handed out as each one finishes: getResponse lists the finished ones (and a `processing`
item per image still to come), and the WebSocket pushes one message per image. A WebSocket's
authentication opens a connection session; its inferences are recorded with it in the job store, so a
client that reconnects with the session's `connectionSessionUUID` (and the same key) gets the results it
missed while away, from whichever API process it reaches.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from fastapi import APIRouter, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.requests import HTTPConnection

from ...core.job import Job, JobStatus
from ...core.request import STORED, InvalidRequest
from ...core.results import FinishedImage
from ...delivery.sender import Outgoing, Renderer
from ...media.fetch import decode_data_uri
from ...media.inputs import decode_image
from ...media.storage import upload_key
from ...media.uploads import keep_upload, upload_locator
from ...serving.admission import Refused, TokenBuckets
from ...serving.services import Services
from .. import jsonbody
from ..auth import key_ok, owner_of, presented_key
from ..common import GONE, HUNG_UP, DialectService, client_of, unless_disconnected
from ..errors import RUNWARE_CODES, refused_status
from ..errors import retry_after as retry_after_header
from . import translate
from .protocol import MODEL, REST_OPENAPI, ImageInference, RunwareOptions, TaskError

log = logging.getLogger(__name__)
router = APIRouter(tags=["runware"])
T = TypeVar("T")


class RunwareService(DialectService):
    api = "runware"

    def render(self, job: Job) -> list[dict]:
        """A succeeded job's items (blocking for inline outputs: reads the files)."""
        options = self.options(job, RunwareOptions)
        images = self.render_images(job, options.outputType != "URL")
        return translate.items(job, images, options)

    def render_early(self, job: Job, finished: tuple[FinishedImage, ...]) -> dict[int, dict]:
        """Items, by image index, of the images a running job finished already (blocking when inline);
        with includeCost, only those whose cost is known already."""
        options = self.options(job, RunwareOptions)
        ready = [done for done in finished if done.cost is not None or not options.includeCost]
        images = self.render_stored(job, [done.image for done in ready], options.outputType != "URL")
        items = translate.early_items(job, ready, images, options)
        return {done.index: item for done, item in zip(ready, items, strict=True)}

    async def early(self, job: Job) -> dict[int, dict]:
        """`render_early` of what the store has for a running job now."""
        if job.status != JobStatus.RUNNING:
            return {}
        live = await self.services.call(self.services.store.live, job.id)
        if live is None or not live.images:
            return {}
        return await self.services.call(self.render_early, job, live.images)


def deliveries(services: Services) -> Renderer:
    """uploadEndpoint PUTs and webhookURL POSTs for a finished job: one of each per image, in order."""
    service = RunwareService(services)

    def render(job: Job) -> list[Outgoing]:
        webhook, upload = job.output.webhook_url, job.output.upload_url
        if job.status != JobStatus.SUCCEEDED:
            error = {"errors": [translate.error_item(job).item()]}
            return [Outgoing("POST", webhook, json=error)] if webhook else []
        calls = []
        for image, item in zip(job.result.images, service.render(job), strict=True):
            if upload:
                calls.append(
                    Outgoing(
                        "PUT",
                        upload,
                        content=services.storage.read(image.key),
                        content_type=image.content_type,
                    )
                )
            if webhook:
                calls.append(Outgoing("POST", webhook, json={"data": [item]}))
        return calls

    return render


class Tasks:
    """Runs tasks for one REST call or one WebSocket connection (`sessions`: it has a connection
    session, and its sync inferences are recorded with it)."""

    def __init__(
        self,
        services: Services,
        base_url: str,
        client: str,
        auth_failures: TokenBuckets,
        sessions: bool = False,
    ) -> None:
        self.service, self.services, self.base_url = RunwareService(services), services, base_url
        self.client, self.auth_failures, self.sessions = client, auth_failures, sessions
        self.authenticated = not services.settings.api_keys
        self.session: str | None = None
        self.missed: list[str] = []  # a resumed session's jobs whose results the client has not had

    @property
    def owner(self) -> str | None:
        """The key's owner hash: the tasks submitted carry it, and only its tasks can be read."""
        return self.service.owner

    def accept_key(self, key: str | None) -> bool:
        """Authenticate with `key` when it is right; the tasks after are that key's."""
        keys = self.services.settings.api_keys
        if not key_ok(keys, key):
            return False
        self.authenticated, self.service.owner = True, owner_of(keys, key)
        return True

    async def run_safely(self, task: Any) -> list[dict]:
        """`run`, with any fault of ours as a task error too: every task gets an answer."""
        return await self.safely(task, self.run(task))

    async def safely(self, task: Any, work: Awaitable[T]) -> T:
        """`work`'s result; any fault of ours (or a refusal) as the task's error."""
        try:
            return await work
        except Exception as exc:
            raise _task_error(exc, task) from None

    async def run(self, task: Any) -> list[dict]:
        """A task's data items; raises TaskError."""
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
            return await self.results(job.id, task)
        raise TaskError("unsupportedTaskType", f"unsupported taskType {task_type!r}", "taskType", task)

    def check_authenticated(self, task: dict) -> None:
        if not self.authenticated:
            message = "authenticate first (an authentication task or a Bearer key)"
            raise TaskError("invalidApiKey", message, "apiKey", task, status=401)

    async def authenticate(self, task: dict) -> dict:
        key = task.get("apiKey")
        if not self.accept_key(key if isinstance(key, str) else None):
            if self.auth_failures.take(self.client):
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
        """The jobs of a session this key may resume whose results it has not had; None when there is no
        such session for this key (unknown, expired, another key's, or never used for an inference)."""
        try:
            session = str(uuid.UUID(session))
        except ValueError:
            return None
        jobs = await self.services.call(self.services.store.session_jobs, session)
        if not jobs or any(job.owner != self.owner for job in jobs):
            return None
        return [job.job_id for job in jobs if not job.delivered]

    async def submit(self, task: dict) -> Job:
        self.check_authenticated(task)
        try:
            params = ImageInference.model_validate(task)
        except ValidationError as exc:
            raise translate.from_validation(exc, task) from None
        if params.model != MODEL:
            raise TaskError(
                "unsupportedModel", f"this server runs {MODEL}, not {params.model!r}", "model", task
            )
        own_files, base_url = self.services.own_files, self.base_url
        request, output, options = await self.services.call(
            translate.to_internal,
            params,
            task,
            self.stored_image,
            lambda url, field: own_files.locator(url, field, base_url),
        )
        for url, parameter in ((output.webhook_url, "webhookURL"), (output.upload_url, "uploadEndpoint")):
            if problem := await self.service.refused_destination(url):
                raise TaskError(f"invalid{parameter[0].upper()}{parameter[1:]}", problem, parameter, task)
        job = self.service.new_job(MODEL, request, output, self.base_url, options, id=params.taskUUID)
        if not await self.service.submit(job, self.client):
            if await self.service.get(job.id) is None:  # another key's or another API's
                message = "this taskUUID is taken: send a new UUIDv4 for each task"
                raise TaskError("invalidTaskUUID", message, "taskUUID", task)
            log.info("repeated taskUUID %s: answering with the existing task", job.id)
        if self.session is not None and params.deliveryMethod == "sync":  # pushed on the socket: kept
            store = self.services.store
            await self.services.call(store.add_session_job, self.session, job.id, self.owner)
        return job

    def stored_image(self, image_uuid: uuid.UUID) -> str | None:
        """The `stored:` locator of an imageUUID: an upload, or an image of one of this key's results;
        None when it is neither (or expired). Blocking: reads the store and the storage."""
        storage = self.services.storage
        if (upload := upload_locator(storage, image_uuid)) is not None:
            return upload
        found = translate.result_of(image_uuid)
        job = self.service.own(self.services.store.get(found[0])) if found else None
        if found is None or job is None or job.owner != self.owner:
            return None
        if job.result is not None:
            keys = {i: image.key for i, image in enumerate(job.result.images)}
        else:  # still running: the images handed out early are results already (a client may edit one)
            live = self.services.store.live(job.id)
            keys = {done.index: done.image.key for done in (live.images if live else ())}
        key = keys.get(found[1])
        return STORED + key if key is not None and storage.exists(key) else None

    async def results(self, job_id: str, task: dict) -> list[dict]:
        job = await self.service.wait(job_id)
        if job is None:
            raise TaskError(
                "taskFailedOrNotFound", "the task expired or is not an imageInference", "taskUUID", task
            )
        if job.status != JobStatus.SUCCEEDED:
            raise translate.error_item(job)
        return await self.services.call(self.service.render, job)

    async def get_response(self, task: dict) -> list[dict]:
        """The task's images: the finished ones as results, one `processing` item per image to come."""
        job = await self.service.get(str(task.get("taskUUID")))
        if job is None:
            raise TaskError(
                "taskFailedOrNotFound", "no task with that taskUUID", "taskUUID", task, status=404
            )
        if not job.status.finished:
            done = list((await self.service.early(job)).values())
            results = job.output.keep_best or job.request.num_images  # numberResults
            return done + [translate.processing(job.id)] * (results - len(done))
        if job.status != JobStatus.SUCCEEDED:
            error = translate.error_item(job)
            error.status = 200 if error.status == 400 else error.status
            raise error
        return await self.services.call(self.service.render, job)

    async def stream(self, job_id: str, task: dict) -> AsyncIterator[dict]:
        """The task's results one image at a time, each as soon as it is finished and once; raises only
        TaskError (the task's own when it failed)."""
        try:
            async for item in self._stream(job_id, task):
                yield item
        except Exception as exc:
            raise _task_error(exc, task) from None

    async def _stream(self, job_id: str, task: dict) -> AsyncIterator[dict]:
        sent: set[int] = set()
        while True:
            seen = self.services.changes.seen(job_id)
            job = await self.service.get(job_id)
            if job is None:
                raise TaskError("taskFailedOrNotFound", "the task expired", "taskUUID", task)
            if job.status.finished:
                if job.status != JobStatus.SUCCEEDED:
                    raise translate.error_item(job)
                for index, item in enumerate(await self.services.call(self.service.render, job)):
                    if index not in sent:
                        yield item
                return
            for index, item in sorted((await self.service.early(job)).items()):
                if index not in sent:
                    sent.add(index)
                    yield item
            await self.services.changes.wait(job_id, self.services.settings.wait_poll_s, seen)

    async def delivered(self, job_id: str) -> None:
        """Everything of the job reached the client on this connection: a resumed session skips it."""
        if self.session is not None:
            await self.services.call(self.services.store.session_delivered, job_id)

    async def upload(self, task: dict) -> dict:
        image = task.get("image")
        if not isinstance(image, str) or not image:
            raise TaskError("missingImage", "imageUpload needs an image", "image", task)
        try:
            if image.startswith(("http://", "https://")) or translate.is_path(image):
                image = await self._image_at(image)
            image_uuid = await self.services.call(self._keep, image)
        except InvalidRequest as exc:
            raise TaskError("invalidImage", exc.explanation, "image", task) from None
        url = self.services.upload_url(upload_key(image_uuid), self.base_url)
        return {
            "taskType": "imageUpload",
            "taskUUID": task.get("taskUUID"),
            "imageUUID": str(image_uuid),
            "imageURL": url,
        }

    async def _image_at(self, url: str) -> bytes:
        """An upload given as a URL: one of our own files read from storage, any other fetched on the
        event loop (no thread waits). Raises InvalidRequest."""
        services = self.services
        locator = await services.call(services.own_files.locator, url, "image", self.base_url)
        if locator.startswith(STORED):
            return await services.call(services.storage.read, locator.removeprefix(STORED))
        return await services.fetcher.fetch_bytes(url, "image")

    def _keep(self, image: str | bytes) -> uuid.UUID:
        """Decode and keep an upload: fetched bytes, a data URI or bare base64."""
        settings = self.services.settings
        if isinstance(image, str):
            uri = image if image.startswith("data:") else "data:;base64," + "".join(image.split())
            image = decode_data_uri(uri, "image", settings.fetch_max_bytes)
        decoded = decode_image(image, "image", settings.input_max_pixels)
        return keep_upload(self.services.storage, decoded)


def _task(task: Any) -> dict | None:
    return task if isinstance(task, dict) else None


def _task_error(exc: Exception, task: Any) -> TaskError:
    """Any failure while running a task, as that task's error: every task gets an answer."""
    if isinstance(exc, TaskError):
        return exc
    if isinstance(exc, Refused):
        status = refused_status(exc)
        return TaskError(RUNWARE_CODES[status], exc.message, None, _task(task), status, exc.retry_after_s)
    log.exception("Runware task failed", exc_info=exc)
    message = f"the server failed to run this task ({type(exc).__name__})"
    return TaskError("internalError", message, None, _task(task), status=500)


def _tasks_of(payload: Any, limit: int) -> list:
    """The tasks of one REST body or WebSocket message; raises TaskError past `limit`."""
    tasks = payload if isinstance(payload, list) else [payload]
    if len(tasks) > limit:
        raise TaskError("tooManyTasks", f"at most {limit} tasks per message, got {len(tasks)}", status=429)
    return tasks


async def _parse(text: bytes | str) -> Any:
    try:
        return await jsonbody.parse(text.encode() if isinstance(text, str) else text)
    except ValueError as exc:
        raise TaskError("invalidJSON", f"messages must be JSON arrays of tasks ({exc})") from None


def _tasks_runner(connection: HTTPConnection, base_url: str, sessions: bool = False) -> Tasks:
    state = connection.app.state
    return Tasks(state.services, base_url, client_of(connection), state.auth_failures, sessions)


@router.post("/v1", summary="Runware tasks (REST)", openapi_extra=REST_OPENAPI)
@router.post("/v1/", include_in_schema=False)
async def rest(request: Request) -> JSONResponse:
    tasks_runner = _tasks_runner(request, str(request.base_url))
    if getattr(request.state, "authenticated", False):
        tasks_runner.accept_key(presented_key(request.headers.get("authorization", "")))
    try:
        tasks = _tasks_of(
            await _parse(await request.body()), request.app.state.services.settings.max_tasks_per_message
        )
    except TaskError as exc:
        return JSONResponse({"errors": [exc.item()]}, exc.status)
    data, errors, status, retry_after = [], [], 200, 0.0
    for task in tasks:
        try:
            items = await unless_disconnected(request, tasks_runner.run_safely(task))
            if items is GONE:
                return HUNG_UP
            data += items
        except TaskError as exc:
            errors.append(exc.item())
            status = exc.status if status == 200 else status
            retry_after = max(retry_after, exc.retry_after_s or 0.0)
    body: dict = {"data": data} if data or not errors else {}
    if errors:
        body["errors"] = errors
    return JSONResponse(body, 200 if data and status < 500 else status, retry_after_header(retry_after))


_SUBMITTING: set[asyncio.Future] = set()  # submissions under way, held until done (asyncio keeps weak refs)


def _submitted(done: asyncio.Future) -> None:
    _SUBMITTING.discard(done)
    if not done.cancelled():
        done.exception()  # retrieved: a failure whose connection is gone was answered to nobody


class Connection:
    """One WebSocket: tasks are answered in order, except inferences, whose results are pushed one image
    at a time on tasks of their own (a slow inference never holds up a ping); after an authentication
    that resumed a session, the results that session missed are pushed too."""

    def __init__(self, socket: WebSocket, tasks: Tasks) -> None:
        self.socket, self.tasks = socket, tasks
        self._lock = asyncio.Lock()
        self._running: set[asyncio.Task] = set()

    async def send(self, payload: dict) -> None:
        async with self._lock:
            await self.socket.send_text(json.dumps(payload))

    def spawn(self, work: Coroutine[Any, Any, None]) -> None:
        running = asyncio.create_task(work)
        self._running.add(running)
        running.add_done_callback(self._running.discard)

    def close(self) -> None:
        for running in self._running:  # the jobs themselves go on; only this connection's waits stop
            running.cancel()

    async def take(self, task: Any) -> None:
        """Answer one task (an inference: start it and push its results when they come)."""
        if isinstance(task, dict) and task.get("taskType") == "imageInference":
            # Submitted to the end even if the client goes now (it sent the task); only the push stops.
            submitting = asyncio.ensure_future(self.tasks.safely(task, self.tasks.submit(task)))
            _SUBMITTING.add(submitting)
            submitting.add_done_callback(_submitted)
            self.spawn(self.infer(task, submitting))
            return
        await self.answer(lambda: self.tasks.run_safely(task))
        for job_id in self.tasks.missed:  # after a resumed authentication
            self.spawn(self.push(job_id, {"taskType": "imageInference", "taskUUID": job_id}))
        self.tasks.missed = []

    async def answer(self, work: Callable[[], Awaitable[list[dict]]]) -> None:
        """Send `work`'s items, or its task error."""
        try:
            await self.send({"data": await work()})
        except TaskError as exc:
            await self.send({"errors": [exc.item()]})

    async def infer(self, task: dict, submitting: asyncio.Future[Job]) -> None:
        """Once submitted: the acknowledgement (async) or the results, pushed as they come."""
        try:
            job = await asyncio.shield(submitting)
        except TaskError as exc:
            await self.send({"errors": [exc.item()]})
            return
        if task.get("deliveryMethod") == "async":
            await self.send({"data": [translate.processing(job.id)]})
            return
        await self.push(job.id, task)

    async def push(self, job_id: str, task: dict) -> None:
        """The job's results, one message per image as each finishes (or its error); then its session
        has had them."""
        try:
            async for item in self.tasks.stream(job_id, task):
                await self.send({"data": [item]})
        except TaskError as exc:
            await self.send({"errors": [exc.item()]})
        await self.tasks.delivered(job_id)

    async def serve(self, limit: int) -> None:
        """Take the client's messages until it goes; at most `limit` tasks per message."""
        while True:
            message = await self.socket.receive()
            if message["type"] == "websocket.disconnect":
                return
            if message.get("text") is None:
                await self.socket.close(1003, "send tasks as JSON text messages")
                return
            try:
                tasks = _tasks_of(await _parse(message["text"]), limit)
            except TaskError as exc:
                await self.send({"errors": [exc.item()]})
                continue
            for task in tasks:
                await self.take(task)


@router.websocket("/v1")
async def websocket(socket: WebSocket) -> None:
    await socket.accept()
    base_url = str(socket.base_url).replace("ws://", "http://", 1).replace("wss://", "https://", 1)
    connection = Connection(socket, _tasks_runner(socket, base_url, sessions=True))
    try:
        await connection.serve(socket.app.state.services.settings.max_tasks_per_message)
    except WebSocketDisconnect:
        pass
    finally:
        connection.close()
