"""Strict JSON for request bodies: orjson refuses NaN, infinities, lone surrogates, invalid UTF-8 and nesting
deeper than 1024, which otherwise broke a response or the store later; big bodies are parsed off the loop.
`parse_body` runs under FastAPI's body handling, so a bad body is the dialect's usual 422."""

from __future__ import annotations

import json
from typing import Any

import anyio
import orjson
from fastapi.exceptions import RequestValidationError
from starlette.requests import Request

OFF_LOOP_BYTES = 64 * 1024


async def parse(data: bytes) -> Any:
    """Raises json.JSONDecodeError (orjson's is one) with what is wrong and where."""
    if len(data) > OFF_LOOP_BYTES:
        return await anyio.to_thread.run_sync(orjson.loads, data)
    return orjson.loads(data)


async def parse_body(request: Request) -> None:
    """Parse a JSON body strictly before FastAPI does (it uses this parse); raises RequestValidationError."""
    kind = (request.headers.get("content-type") or "application/json").split(";")[0].strip().lower()
    is_json = kind == "application/json" or kind.endswith("+json")
    if request.method not in ("POST", "PUT", "PATCH") or not is_json:
        return
    if body := await request.body():
        try:
            request._json = await parse(body)
        except json.JSONDecodeError as exc:
            error = {"type": "json_invalid", "loc": ("body", exc.pos), "msg": f"invalid JSON: {exc.msg}"}
            raise RequestValidationError([error]) from None
