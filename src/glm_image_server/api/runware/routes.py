"""Runware's routes: `POST /v1` (a JSON array of tasks) and a WebSocket on `/v1`, and the task runner
they share. Tasks: authentication, ping, imageInference (model `runware:glm-image@0`), getResponse,
imageUpload. An imageInference's taskUUID is its job id, so a repeated taskUUID returns that task's
results and never runs the work twice.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from typing import Any

from fastapi import APIRouter, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.requests import HTTPConnection

from ...admission import Refused, TokenBuckets
from ...jobs.deliveries import Outgoing, Renderer
from ...jobs.records import Job, JobStatus
from ...media.fetch import decode_data_uri
from ...media.inputs import decode_image
from ...media.storage import upload_key
from ...media.uploads import keep_upload, upload_locator
from ...services import Services
from ...types import STORED, InvalidRequest
from .. import jsonbody
from ..auth import key_ok, owner_of, presented_key
from ..common import GONE, HUNG_UP, DialectService, client_of, unless_disconnected
from ..errors import RUNWARE_CODES, refused_status
from ..errors import retry_after as retry_after_header
from . import translate
from .protocol import MODEL, REST_OPENAPI, ImageInference, RunwareOptions, TaskError

log = logging.getLogger(__name__)
router = APIRouter(tags=["runware"])


class RunwareService(DialectService):
    api = "runware"

    def render(self, job: Job) -> list[dict]:
        """A succeeded job's items (blocking for inline outputs: reads the files)."""
        options = self.options(job, RunwareOptions)
        images = self.render_images(job, options.outputType != "URL")
        return translate.items(job, images, options)


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
    """Runs tasks for one REST call or one WebSocket connection."""

    def __init__(self, services: Services, base_url: str, client: str, auth_failures: TokenBuckets) -> None:
        self.service, self.services, self.base_url = RunwareService(services), services, base_url
        self.client, self.auth_failures = client, auth_failures
        self.authenticated = not services.settings.api_keys
        self.owner: str | None = None

    def accept_key(self, key: str | None) -> bool:
        """Authenticate with `key` when it is right; the jobs submitted after carry its owner."""
        keys = self.services.settings.api_keys
        if not key_ok(keys, key):
            return False
        self.authenticated, self.owner = True, owner_of(keys, key)
        return True

    async def run_safely(self, task: Any) -> list[dict]:
        """`run`, with any fault of ours as a task error too: every task gets an answer."""
        try:
            return await self.run(task)
        except TaskError:
            raise
        except Refused as exc:
            status = refused_status(exc)
            code = RUNWARE_CODES[status]
            raise TaskError(code, exc.message, None, _task(task), status, exc.retry_after_s) from None
        except Exception as exc:
            log.exception("Runware task failed")
            message = f"the server failed to run this task ({type(exc).__name__})"
            raise TaskError("internalError", message, None, _task(task), status=500) from None

    async def run(self, task: Any) -> list[dict]:
        """A task's data items; raises TaskError."""
        if not isinstance(task, dict) or not isinstance(task.get("taskType"), str):
            raise TaskError("missingTaskType", "each task must be an object with a taskType", "taskType")
        task_type = task["taskType"]
        if task_type == "authentication":
            return [self.authenticate(task)]
        if not self.authenticated:
            message = "authenticate first (an authentication task or a Bearer key)"
            raise TaskError("invalidApiKey", message, "apiKey", task, status=401)
        if task_type == "ping":
            return [{"taskType": "ping", "pong": True}]
        if task_type == "imageUpload":
            return [await self.upload(task)]
        if task_type == "getResponse":
            return await self.get_response(task)
        if task_type == "imageInference":
            job = await self.submit(task)
            if task.get("deliveryMethod") == "async":
                return [{"taskType": "imageInference", "taskUUID": job.id, "status": "processing"}]
            return await self.results(job.id, task)
        raise TaskError("unsupportedTaskType", f"unsupported taskType {task_type!r}", "taskType", task)

    def authenticate(self, task: dict) -> dict:
        key = task.get("apiKey")
        if not self.accept_key(key if isinstance(key, str) else None):
            if self.auth_failures.take(self.client):
                raise TaskError("tooManyRequests", "too many wrong API keys", "apiKey", task, status=429)
            raise TaskError("invalidApiKey", "invalid API key", "apiKey", task, status=401)
        session = task.get("connectionSessionUUID") or str(uuid.uuid4())
        return {"taskType": "authentication", "connectionSessionUUID": session}

    async def submit(self, task: dict) -> Job:
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
        job = self.service.new_job(
            MODEL, request, output, self.base_url, options, id=params.taskUUID, owner=self.owner
        )
        if not await self.service.submit(job, self.client):
            log.info("repeated taskUUID %s: answering with the existing task", job.id)
        return job

    def stored_image(self, image_uuid: uuid.UUID) -> str | None:
        """The `stored:` locator of an imageUUID: an upload, or an image of one of this key's results;
        None when it is neither (or expired). Blocking: reads the store and the storage."""
        storage = self.services.storage
        if (upload := upload_locator(storage, image_uuid)) is not None:
            return upload
        found = translate.result_of(image_uuid)
        job = self.service.own(self.services.store.get(found[0])) if found else None
        if found is None or job is None or job.owner != self.owner or job.result is None:
            return None
        images = job.result.images
        key = images[found[1]].key if found[1] < len(images) else None
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
        job = await self.service.get(str(task.get("taskUUID")))
        if job is None:
            raise TaskError(
                "taskFailedOrNotFound", "no task with that taskUUID", "taskUUID", task, status=404
            )
        if not job.status.finished:
            return [{"taskType": "imageInference", "taskUUID": job.id, "status": "processing"}]
        if job.status != JobStatus.SUCCEEDED:
            error = translate.error_item(job)
            error.status = 200 if error.status == 400 else error.status
            raise error
        return await self.services.call(self.service.render, job)

    async def upload(self, task: dict) -> dict:
        image = task.get("image")
        if not isinstance(image, str) or not image:
            raise TaskError("missingImage", "imageUpload needs an image", "image", task)
        try:
            if image.startswith(("http://", "https://")):  # fetched on the event loop: no thread waits
                image = await self.services.fetcher.fetch_bytes(image, "image")
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


def _tasks_runner(connection: HTTPConnection, base_url: str) -> Tasks:
    state = connection.app.state
    return Tasks(state.services, base_url, client_of(connection), state.auth_failures)


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


@router.websocket("/v1")
async def websocket(socket: WebSocket) -> None:
    await socket.accept()
    base_url = str(socket.base_url).replace("ws://", "http://", 1).replace("wss://", "https://", 1)
    tasks_runner = _tasks_runner(socket, base_url)
    limit = socket.app.state.services.settings.max_tasks_per_message
    lock = asyncio.Lock()
    running: set[asyncio.Task] = set()

    async def send(payload: dict) -> None:
        async with lock:
            await socket.send_text(json.dumps(payload))

    async def answer(task: Any) -> None:
        try:
            await send({"data": await tasks_runner.run_safely(task)})
        except TaskError as exc:
            await send({"errors": [exc.item()]})

    try:
        while True:
            message = await socket.receive()
            if message["type"] == "websocket.disconnect":
                return
            if message.get("text") is None:
                await socket.close(1003, "send tasks as JSON text messages")
                return
            try:
                tasks = _tasks_of(await _parse(message["text"]), limit)
            except TaskError as exc:
                await send({"errors": [exc.item()]})
                continue
            for task in tasks:
                if isinstance(task, dict) and task.get("taskType") == "imageInference":
                    job = asyncio.create_task(answer(task))  # results are pushed when they are done
                    running.add(job)
                    job.add_done_callback(running.discard)
                else:
                    await answer(task)
    except WebSocketDisconnect:
        pass
    finally:
        for job in running:  # the jobs themselves go on; only this connection's waits stop
            job.cancel()
