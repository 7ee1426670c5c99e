"""The Runware dialect at `/v1`: REST (a JSON array of tasks per POST) and WebSocket on the same path.

Tasks: authentication, ping, imageInference (model `runware:glm-image@0`), getResponse, imageUpload.
An imageInference's taskUUID is its job id, so a repeated taskUUID returns that task's results and never
runs the work twice. Where Runware's generic defaults would hurt GLM-Image we use GLM-Image's: 30 steps
(not 100) and CFGScale 1.5 (not 10); steps stop at 100.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import re
import uuid
from typing import TYPE_CHECKING, Any, Literal

from fastapi import APIRouter, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ..jobs.records import STORED, Job, JobError, JobSpec, JobStatus
from ..jobs.webhooks import Outgoing
from ..media.encode import encode_image
from ..media.fetch import decode_data_uri
from ..media.inputs import decode_image
from ..media.storage import LocalStorage, file_url, upload_key
from ..settings import Settings
from ..types import MAX_REFERENCES, MAX_SEED, SIZE_MULTIPLE, InvalidRequest, random_seed
from .auth import key_ok, presented_key

if TYPE_CHECKING:
    from .app import Services

log = logging.getLogger(__name__)
router = APIRouter(tags=["runware"])

MODEL = "runware:glm-image@0"
OUTPUT_FORMATS = {"JPG": "jpeg", "PNG": "png", "WEBP": "webp"}
IMAGE_FIELDS = {"URL": "imageURL", "dataURI": "imageDataURI", "base64Data": "imageBase64Data"}
IMAGE_NAMESPACE = uuid.UUID("5b0f1f4e-3c1a-4d43-9d1e-6f1c0a7e2b10")  # imageUUIDs derive from taskUUIDs
BASE64 = re.compile(r"^[A-Za-z0-9+/=\s]+$")


class TaskError(Exception):
    """One task's error, as Runware reports it: `{code, message, parameter, taskType, taskUUID}`."""

    def __init__(
        self,
        code: str,
        message: str,
        parameter: str | None = None,
        task: dict | None = None,
        status: int = 400,
    ) -> None:
        super().__init__(message)
        self.code, self.message, self.parameter, self.status = code, message, parameter, status
        self.task_type = (task or {}).get("taskType")
        self.task_uuid = (task or {}).get("taskUUID")

    def item(self) -> dict:
        return {
            "code": self.code,
            "message": self.message,
            "parameter": self.parameter,
            "taskType": self.task_type,
            "taskUUID": self.task_uuid,
        }


def _cap(name: str) -> str:
    return name[:1].upper() + name[1:]


def _from_validation(exc: ValidationError, task: dict) -> TaskError:
    first = exc.errors()[0]
    names = [part for part in first["loc"] if isinstance(part, str)]
    parameter = names[-1] if names else "task"
    if first["type"] == "missing":
        return TaskError(f"missing{_cap(parameter)}", f"missing parameter: {parameter}", parameter, task)
    message = first["msg"].removeprefix("Value error, ")
    return TaskError(f"invalid{_cap(parameter)}", f"invalid {parameter}: {message}", parameter, task)


class Safety(BaseModel):
    checkContent: bool = False
    mode: Literal["none", "fast"] | None = None


class Inputs(BaseModel):
    referenceImages: list[str] | None = Field(default=None, min_length=1, max_length=MAX_REFERENCES)


class ImageInference(BaseModel):
    model_config = ConfigDict(extra="ignore")

    taskType: Literal["imageInference"]
    taskUUID: str
    model: str
    positivePrompt: str = Field(min_length=2, max_length=3000)
    width: int = Field(default=1024, ge=128, le=2048)
    height: int = Field(default=1024, ge=128, le=2048)
    seed: int | None = Field(default=None, ge=0, le=MAX_SEED)
    steps: int = Field(default=30, ge=1, le=100)
    CFGScale: float = Field(default=1.5, ge=1, le=30)
    numberResults: int = Field(default=1, ge=1, le=20)
    inputs: Inputs | None = None
    referenceImages: list[str] | None = Field(default=None, max_length=MAX_REFERENCES)  # runware 0.5 SDK
    outputType: Literal["URL", "dataURI", "base64Data"] = "URL"
    outputFormat: Literal["JPG", "PNG", "WEBP"] = "JPG"
    outputQuality: int = Field(default=95, ge=20, le=99)
    deliveryMethod: Literal["sync", "async"] = "sync"
    webhookURL: str | None = None
    uploadEndpoint: str | None = None
    ttl: int | None = Field(default=None, ge=60)
    includeCost: bool = False
    safety: Safety | None = None

    @field_validator("taskUUID")
    @classmethod
    def _uuid(cls, value: str) -> str:
        try:
            return str(uuid.UUID(value))
        except ValueError:
            raise ValueError(f"must be a UUID v4, got {value!r}") from None

    @field_validator("width", "height")
    @classmethod
    def _grid(cls, value: int) -> int:
        if value % SIZE_MULTIPLE:
            raise ValueError(f"must be a multiple of {SIZE_MULTIPLE} between 128 and 2048, got {value}")
        return value

    @field_validator("webhookURL", "uploadEndpoint")
    @classmethod
    def _http(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError(f"must be an http(s) URL, got {value[:60]!r}")
        return value

    @property
    def references(self) -> list[str]:
        return (self.inputs.referenceImages if self.inputs else None) or self.referenceImages or []


# --- rendering -------------------------------------------------------------------------------------


def render_items(job: Job, storage: LocalStorage, settings: Settings) -> list[dict]:
    """A succeeded job's results, one item per image. Blocking (inline outputs read the files)."""
    assert job.result is not None
    output_type = job.options.get("outputType", "URL")
    items = []
    for i, image in enumerate(job.result.images):
        item: dict[str, Any] = {
            "taskType": "imageInference",
            "taskUUID": job.id,
            "imageUUID": str(uuid.uuid5(IMAGE_NAMESPACE, f"{job.id}/{i}")),
            "status": "success",
            "seed": image.seed,
            "NSFWContent": job.result.has_nsfw_concepts[i],
        }
        if output_type == "URL":
            item["imageURL"] = file_url(settings.public_url, job.base_url, image.key)
        else:
            data = base64.b64encode(storage.read(image.key)).decode()
            inline = f"data:{image.content_type};base64,{data}" if output_type == "dataURI" else data
            item[IMAGE_FIELDS[output_type]] = inline
        if job.options.get("includeCost"):
            item["cost"] = round(job.result.cost / len(job.result.images), 10)
        items.append(item)
    return items


FIELD_PARAMETERS = {"references": "referenceImages", "prompt": "positivePrompt"}


def error_item(job: Job) -> TaskError:
    error = job.error or JobError(kind="internal", message="failed")
    task = {"taskType": "imageInference", "taskUUID": job.id}
    if error.kind == "cancelled":
        return TaskError("taskCancelled", error.message, None, task)
    if error.kind == "internal":
        return TaskError("taskFailed", error.message, None, task, status=500)
    parameter = FIELD_PARAMETERS.get((error.field or "").split("[")[0], error.field)
    return TaskError(f"invalid{_cap(parameter or 'Input')}", error.message, parameter, task)


def deliveries_for(storage: LocalStorage, settings: Settings):
    """uploadEndpoint PUTs and webhookURL POSTs for a finished job: one of each per image, in order."""

    def deliveries(job: Job) -> list[Outgoing]:
        if job.status != JobStatus.SUCCEEDED:
            error = {"errors": [error_item(job).item()]}
            return [Outgoing("POST", job.webhook_url, json=error)] if job.webhook_url else []
        calls = []
        for image, item in zip(job.result.images, render_items(job, storage, settings), strict=True):
            if job.upload_url:
                calls.append(
                    Outgoing(
                        "PUT",
                        job.upload_url,
                        content=storage.read(image.key),
                        content_type=image.content_type,
                    )
                )
            if job.webhook_url:
                calls.append(Outgoing("POST", job.webhook_url, json={"data": [item]}))
        return calls

    return deliveries


# --- tasks -----------------------------------------------------------------------------------------


class Tasks:
    """Runs tasks for one REST call or one WebSocket connection."""

    def __init__(self, services: Services, base_url: str) -> None:
        self.services, self.base_url = services, base_url
        self.authenticated = not services.settings.api_keys

    def check_key(self, key: str | None) -> bool:
        return key_ok(self.services.settings.api_keys, key)

    async def run(self, task: Any) -> list[dict]:
        """A task's data items; raises TaskError."""
        if not isinstance(task, dict) or not isinstance(task.get("taskType"), str):
            raise TaskError("missingTaskType", "each task must be an object with a taskType", "taskType")
        task_type = task["taskType"]
        if task_type == "authentication":
            if not self.check_key(task.get("apiKey")):
                raise TaskError("invalidApiKey", "invalid API key", "apiKey", task, status=401)
            self.authenticated = True
            session = task.get("connectionSessionUUID") or str(uuid.uuid4())
            return [{"taskType": "authentication", "connectionSessionUUID": session}]
        if not self.authenticated:
            raise TaskError(
                "invalidApiKey",
                "authenticate first (an authentication task or a Bearer key)",
                "apiKey",
                task,
                status=401,
            )
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

    async def submit(self, task: dict) -> Job:
        try:
            params = ImageInference.model_validate(task)
        except ValidationError as exc:
            raise _from_validation(exc, task) from None
        if params.model != MODEL:
            raise TaskError(
                "unsupportedModel", f"this server runs {MODEL}, not {params.model!r}", "model", task
            )
        references = tuple(self._reference(ref, i, task) for i, ref in enumerate(params.references))
        spec = JobSpec(
            prompt=params.positivePrompt,
            width=params.width,
            height=params.height,
            num_inference_steps=params.steps,
            guidance_scale=params.CFGScale,
            seed=params.seed if params.seed is not None else random_seed(),
            num_images=params.numberResults,
            image_urls=references,
            output_format=OUTPUT_FORMATS[params.outputFormat],
            output_quality=params.outputQuality,
            safety_check=bool(params.safety and params.safety.checkContent and params.safety.mode != "none"),
        )
        try:
            spec.to_request()
        except InvalidRequest as exc:
            raise TaskError(f"invalid{_cap(exc.field)}", exc.explanation, exc.field, task) from None
        job = self.services.new_job(
            "runware",
            MODEL,
            spec,
            self.base_url,
            id=params.taskUUID,
            webhook_url=params.webhookURL,
            upload_url=params.uploadEndpoint,
            ttl_s=params.ttl if params.outputType == "URL" else None,
            options={"outputType": params.outputType, "includeCost": params.includeCost},
        )
        if not await self.services.enqueue(job):
            log.info("repeated taskUUID %s: answering with the existing task", job.id)
        return job

    def _reference(self, ref: str, index: int, task: dict) -> str:
        def bad(why: str) -> TaskError:
            return TaskError(
                "invalidReferenceImages", f"referenceImages[{index}] {why}", "referenceImages", task
            )

        if ref.startswith(("http://", "https://", "data:")):
            return ref
        with contextlib.suppress(ValueError):
            key = upload_key(uuid.UUID(ref))
            if self.services.storage.path(key) is None:
                raise bad(f"is an unknown imageUUID {ref!r} (upload it first, or it expired)")
            return STORED + key
        if BASE64.match(ref):
            return "data:;base64," + "".join(ref.split())
        raise bad("must be an imageUUID, a URL, a data URI or base64 data")

    async def results(self, job_id: str, task: dict) -> list[dict]:
        services = self.services
        job = await services.wait_finished(job_id)
        if job is None:
            raise TaskError("taskFailedOrNotFound", "the task expired before it finished", "taskUUID", task)
        if job.status != JobStatus.SUCCEEDED:
            raise error_item(job)
        return await services.call(render_items, job, services.storage, services.settings)

    async def get_response(self, task: dict) -> list[dict]:
        services = self.services
        job = await services.call(services.store.get, str(task.get("taskUUID")))
        if job is None or job.api != "runware":
            raise TaskError(
                "taskFailedOrNotFound", "no task with that taskUUID", "taskUUID", task, status=404
            )
        if not job.status.finished:
            return [{"taskType": "imageInference", "taskUUID": job.id, "status": "processing"}]
        if job.status != JobStatus.SUCCEEDED:
            error = error_item(job)
            error.status = 200 if error.status == 400 else error.status
            raise error
        return await services.call(render_items, job, services.storage, services.settings)

    async def upload(self, task: dict) -> dict:
        image = task.get("image")
        if not isinstance(image, str) or not image:
            raise TaskError("missingImage", "imageUpload needs an image", "image", task)
        services = self.services

        def store() -> uuid.UUID:
            fetcher = services.fetcher
            if image.startswith(("http://", "https://")):
                decoded = fetcher.fetch(image, "image")
            else:
                uri = image if image.startswith("data:") else "data:;base64," + "".join(image.split())
                data = decode_data_uri(uri, "image", fetcher.max_bytes)
                decoded = decode_image(data, "image", max_pixels=fetcher.max_pixels)
            image_uuid = uuid.uuid4()
            services.storage.save(upload_key(image_uuid), encode_image(decoded, "png"))
            return image_uuid

        try:
            image_uuid = await services.call(store)
        except InvalidRequest as exc:
            raise TaskError("invalidImage", exc.explanation, "image", task) from None
        return {
            "taskType": "imageUpload",
            "taskUUID": task.get("taskUUID"),
            "imageUUID": str(image_uuid),
            "imageURL": file_url(services.settings.public_url, self.base_url, upload_key(image_uuid)),
        }


def _tasks_of(payload: Any) -> list:
    return payload if isinstance(payload, list) else [payload]


@router.post("/v1", summary="Runware tasks (REST)")
@router.post("/v1/", include_in_schema=False)
async def rest(request: Request) -> JSONResponse:
    tasks_runner = Tasks(request.app.state.services, str(request.base_url))
    if tasks_runner.check_key(presented_key(request.headers.get("authorization", ""))):
        tasks_runner.authenticated = True
    try:
        payload = json.loads(await request.body())
    except ValueError:
        error = TaskError("invalidJSON", "the body must be a JSON array of tasks")
        return JSONResponse({"errors": [error.item()]}, 400)
    data, errors, status = [], [], 200
    for task in _tasks_of(payload):
        try:
            data += await tasks_runner.run(task)
        except TaskError as exc:
            errors.append(exc.item())
            status = exc.status if status == 200 else status
    body: dict = {"data": data} if data or not errors else {}
    if errors:
        body["errors"] = errors
    return JSONResponse(body, 200 if data and status < 500 else status)


@router.websocket("/v1")
async def websocket(socket: WebSocket) -> None:
    await socket.accept()
    base_url = str(socket.base_url).replace("ws://", "http://", 1).replace("wss://", "https://", 1)
    tasks_runner = Tasks(socket.app.state.services, base_url)
    lock = asyncio.Lock()
    running: set[asyncio.Task] = set()

    async def send(payload: dict) -> None:
        async with lock:
            await socket.send_text(json.dumps(payload))

    async def answer(task: Any) -> None:
        try:
            await send({"data": await tasks_runner.run(task)})
        except TaskError as exc:
            await send({"errors": [exc.item()]})

    try:
        while True:
            text = await socket.receive_text()
            try:
                payload = json.loads(text)
            except ValueError:
                await send(
                    {"errors": [TaskError("invalidJSON", "messages must be JSON arrays of tasks").item()]}
                )
                continue
            for task in _tasks_of(payload):
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
