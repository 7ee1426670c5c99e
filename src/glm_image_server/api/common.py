"""What every dialect's request handling shares, knowing none of their formats: who the caller is, waiting
on work only while the client is there, a route class answering errors in the dialect's own words (no
app-wide handler speaks for one dialect), and the text-check report of the snake_case dialects."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from typing import Any, ClassVar, TypeVar

from fastapi.routing import APIRoute
from pydantic import BaseModel
from starlette.requests import HTTPConnection, Request
from starlette.responses import Response

from ..core.job import Job
from ..core.results import SpanCheck
from ..serving.jobs import Caller
from . import jsonbody

T = TypeVar("T")


class HungUp(Exception):
    """The client hung up before its answer was ready: answered 499 (nobody reads it)."""


async def unless_disconnected(connection: Request, work: Awaitable[T]) -> T:
    """`work`'s result; raises HungUp once the client has hung up (only this wait stops; the job goes on)."""
    task, watch = asyncio.ensure_future(work), asyncio.ensure_future(_hung_up(connection))
    done, _pending = await asyncio.wait({task, watch}, return_when=asyncio.FIRST_COMPLETED)
    if task in done:
        watch.cancel()
        return task.result()
    task.cancel()
    raise HungUp


async def _hung_up(connection: Request) -> None:
    while (await connection.receive())["type"] != "http.disconnect":
        pass


class DialectServing:
    """A dialect's serving class: one request (or WebSocket), its base URL in http terms, and the job
    service with its caller (the dialect `api`, the key's owner as the gate found it, the client address)."""

    api: ClassVar[str]

    def __init__(self, request: HTTPConnection) -> None:
        self.request, self.services = request, request.app.state.services
        self.base_url = str(request.base_url)
        if request.scope["type"] == "websocket":  # ws(s)://... as http(s)://...
            self.base_url = self.base_url.replace("ws", "http", 1)
        client = request.client.host if request.client else "unknown"
        self.jobs = self.services.jobs
        self.caller = Caller(self.api, getattr(request.state, "owner", None), client)


class SeededTextCheck(BaseModel):
    """One image's text check as a client gets it: the check, with the image's seed."""

    score: float
    seed: int
    spans: list[SpanCheck]
    detected_text: str


def text_checks(job: Job) -> list[SeededTextCheck] | None:
    """A succeeded job's text checks, one per image (None when it had none)."""
    assert job.result is not None
    if job.result.text_checks is None:
        return None
    return [
        SeededTextCheck(seed=image.seed, **check.model_dump())
        for image, check in zip(job.result.images, job.result.text_checks, strict=True)
    ]


def openapi_body(media_type: str, schema: dict) -> dict:
    """The OpenAPI request body of a route that reads its body itself (to answer failures in its envelope)."""
    return {"requestBody": {"required": True, "content": {media_type: {"schema": schema}}}}


def route_class(
    errors: Mapping[type[Exception], Callable[[Request, Any], Response]], strict_json: bool = True
) -> type[APIRoute]:
    """A dialect's route class: the exceptions in `errors` (its validation errors first) answered by their
    handlers; with `strict_json`, a JSON body that is not strict JSON is a RequestValidationError."""
    kinds = tuple(errors)

    class DialectRoute(APIRoute):
        def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
            handler = super().get_route_handler()

            async def route(request: Request) -> Response:
                try:
                    if strict_json:
                        await jsonbody.parse_body(request)
                    return await handler(request)
                except kinds as exc:
                    return next(errors[kind] for kind in kinds if isinstance(exc, kind))(request, exc)
                except HungUp:
                    return Response(status_code=499)

            return route

    return DialectRoute
