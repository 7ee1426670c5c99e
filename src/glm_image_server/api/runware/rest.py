"""Runware's REST API: `POST /v1` with a JSON array of tasks, each answered in the one response — its
items under `data`, its failure under `errors` (serving.py runs them)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from ..auth import presented_key
from ..common import openapi_body, route_class, unless_disconnected
from ..errors import retry_after
from .protocol import TASK, TaskError
from .serving import Tasks, tasks_in

ERRORS = {TaskError: lambda request, exc: JSONResponse({"errors": [exc.item()]}, exc.status)}
router = APIRouter(tags=["runware"], route_class=route_class(ERRORS, strict_json=False))


@router.post(
    "/v1",
    summary="Runware tasks (REST)",
    openapi_extra=openapi_body("application/json", {"type": "array", "items": TASK}),
)
@router.post("/v1/", include_in_schema=False)
async def rest(request: Request) -> Response:
    runner = Tasks(request, str(request.base_url))
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
