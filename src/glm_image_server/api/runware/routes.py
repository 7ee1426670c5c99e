"""Runware's routes on `/v1`: REST, a JSON array of tasks all answered in one response (items under
`data`, failures under `errors`); and the WebSocket, answering tasks in order except inferences, whose
results are pushed one image at a time as they come (so a slow one never holds up a ping), as are those
a resumed connection session missed. serving.py runs the tasks."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Coroutine
from typing import Any

from fastapi import APIRouter, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import JSONResponse, Response

from ...core.job import Job
from ..auth import presented_key
from ..common import openapi_body, route_class, unless_disconnected
from ..dialect import retry_after
from . import translate
from .protocol import TASK, TaskError
from .serving import Tasks, tasks_in

ERRORS = {TaskError: lambda request, exc: JSONResponse({"errors": [exc.item()]}, exc.status)}
REST_BODY = openapi_body("application/json", {"type": "array", "items": TASK})
router = APIRouter(tags=["runware"], route_class=route_class(ERRORS, strict_json=False))
_SUBMITTING: set[asyncio.Future] = set()  # submissions under way, held until done (asyncio keeps weak refs)


@router.post("/v1", summary="Runware tasks (REST)", openapi_extra=REST_BODY)
@router.post("/v1/", include_in_schema=False)
async def rest(request: Request) -> Response:
    runner = Tasks(request)
    if getattr(request.state, "authenticated", False):
        runner.accept_key(presented_key(request.headers.get("authorization", "")))
    tasks = await tasks_in(await request.body(), runner.services.settings.max_tasks_per_message)
    data, errors, status, wait_s = [], [], 200, 0.0
    for task in tasks:
        try:
            data += await unless_disconnected(request, runner.safely(task, runner.run(task)))
        except TaskError as exc:
            errors.append(exc.item())
            status = exc.status if status == 200 else status
            wait_s = max(wait_s, exc.retry_after_s or 0.0)
    body: dict = {"data": data} if data or not errors else {}
    if errors:
        body["errors"] = errors
    return JSONResponse(body, 200 if data and status < 500 else status, retry_after(wait_s))


def _submitted(done: asyncio.Future) -> None:
    _SUBMITTING.discard(done)
    if not done.cancelled():
        done.exception()  # retrieved: a failure whose connection is gone was answered to nobody


class Connection:
    """One WebSocket and its task runner (with a connection session)."""

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
        async with self.errors_sent():
            await self.send({"data": await self.tasks.safely(task, self.tasks.run(task))})
        for job_id in self.tasks.missed:  # after a resumed authentication
            self.spawn(self.push(job_id, {"taskType": "imageInference", "taskUUID": job_id}))
        self.tasks.missed = []

    @contextlib.asynccontextmanager
    async def errors_sent(self) -> AsyncIterator[None]:
        """A task error raised inside is sent as the task's answer."""
        try:
            yield
        except TaskError as exc:
            await self.send({"errors": [exc.item()]})

    async def infer(self, task: dict, submitting: asyncio.Future[Job]) -> None:
        """Once submitted: the acknowledgement (async) or the results, pushed as they come."""
        async with self.errors_sent():
            job = await asyncio.shield(submitting)
            if task.get("deliveryMethod") == "async":
                await self.send({"data": [translate.processing(job.id)]})
            else:
                await self.push(job.id, task)

    async def push(self, job_id: str, task: dict) -> None:
        """The job's results, one message per image as each finishes (or its error), marked delivered."""
        async with self.errors_sent():
            async for item in self.tasks.stream(job_id, task):
                await self.send({"data": [item]})
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
            tasks: list = []
            async with self.errors_sent():
                tasks = await tasks_in(message["text"], limit)
            for task in tasks:
                await self.take(task)


@router.websocket("/v1")
async def websocket(socket: WebSocket) -> None:
    await socket.accept()
    connection = Connection(socket, Tasks(socket, sessions=True))
    try:
        with contextlib.suppress(WebSocketDisconnect):
            await connection.serve(connection.tasks.services.settings.max_tasks_per_message)
    finally:
        connection.close()
