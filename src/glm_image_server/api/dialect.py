"""The dialect seam: each subpackage of api/ speaking one vendor's API exports a `dialect` saying all the
shared modules (app, gate, OpenAPI) need of it, so none of them names a dialect and a new one is a new
subpackage. Also here: errors before or around a dialect's own handling (a refusal, a body too big, a
wrong key, a server fault) in its envelope, so no client gets a bare-text error; and a dialect's
field-name table at work, in building core requests and in errors."""

from __future__ import annotations

import dataclasses
import importlib
import math
import pkgutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from fastapi import APIRouter, FastAPI
from fastapi.responses import JSONResponse
from starlette.types import Scope

from ..delivery.sender import Renderer
from ..serving.admission import LowDisk, Refused
from ..serving.jobs import ServingSettings
from ..serving.services import Services

T = TypeVar("T")
BEARER = ("bearer", {"type": "http", "scheme": "bearer", "description": "`Authorization: Bearer <key>`"})


def detail_error(status: int, message: str) -> JSONResponse:
    """The plain envelope, `{"detail": message}` (FastAPI's own, and the server's endpoints')."""
    return JSONResponse({"detail": message}, status)


@dataclass(frozen=True, eq=False)
class Dialect:
    """One vendor's API on this server."""

    name: str  # the `api` its jobs record: only this dialect reads, renders or cancels them
    routers: tuple[APIRouter, ...]
    prefixes: tuple[str, ...] = ()  # the paths it answers: these prefixes...
    paths: tuple[str, ...] = ()  # ...and these exact paths
    key_schemes: tuple[str, ...] = ("bearer",)  # the Authorization schemes its keys come in
    wrong_key: str | None = None  # the 401's message; None: it may authenticate in the body instead
    error: Callable[[int, str], JSONResponse] = detail_error  # (status, message) in its error envelope
    security: tuple[str, dict] = BEARER  # its OpenAPI security scheme: (name, definition)
    fields: Mapping[str, str] = field(default_factory=dict)  # core field -> its wire name, where they differ
    renderer: Callable[[Services], Renderer] | None = None  # a finished job's webhook POSTs / upload PUTs
    setup: Callable[[FastAPI, ServingSettings], None] | None = None  # app state, middlewares outside the gate
    # Paths under `signed_prefixes` carry a credential standing for a key: `grant(scope)` is what it grants
    # (with the key's `owner`), None when altered or expired; `signed_noun` names such a URL in errors.
    signed_prefixes: tuple[str, ...] = ()
    grant: Callable[[Scope], Any] | None = None
    signed_noun: str = "signed URL"
    exposed_headers: tuple[str, ...] = ()  # response headers its browser clients read (CORS)

    def owns(self, path: str) -> bool:
        return path in self.paths or path.startswith(self.prefixes)


def discover() -> tuple[Dialect, ...]:
    """The `dialect` of every subpackage of api/ that exports one, by package name."""
    found, package = [], importlib.import_module(__package__)
    for module in sorted(pkgutil.iter_modules(package.__path__)):
        if module.ispkg:
            exported = getattr(importlib.import_module(f"{__package__}.{module.name}"), "dialect", None)
            if isinstance(exported, Dialect):
                found.append(exported)
    return tuple(found)


def dialect_of(dialects: Sequence[Dialect], path: str) -> Dialect | None:
    """The dialect whose path was asked; None for the server's own endpoints."""
    return next((dialect for dialect in dialects if dialect.owns(path)), None)


def retry_after(seconds: float | None) -> dict[str, str] | None:
    """The Retry-After header for a wait of `seconds` (whole seconds, at least 1)."""
    return {"retry-after": str(max(1, math.ceil(seconds)))} if seconds else None


def error_response(
    dialect: Dialect | None, status: int, message: str, retry_after_s: float | None = None
) -> JSONResponse:
    """`message` in the dialect's own error envelope (the server's own endpoints': `{"detail": ...}`)."""
    response = (dialect.error if dialect is not None else detail_error)(status, message)
    response.headers.update(retry_after(retry_after_s) or {})
    return response


def refused_status(exc: Refused) -> int:
    if isinstance(exc, LowDisk):
        return 507
    return 429 if exc.kind in ("queue_full", "rate_limited") else 503


def build(model: type[T], wire: object, names: Mapping[str, str], **computed: Any) -> T:
    """A core dataclass from a wire model: each field from its wire name in `names` (else the same name), or
    from `computed` (what the dialect derives); a None keeps the core's default (the seed)."""
    wired = [f.name for f in dataclasses.fields(model) if f.name not in computed]  # type: ignore[arg-type]
    values = {name: getattr(wire, names.get(name, name), None) for name in wired} | computed
    return model(**{name: value for name, value in values.items() if value is not None})


def wire_field(names: Mapping[str, str], field_name: str) -> tuple[str, int | None]:
    """A core field as errors name it (`references[1]`) in wire terms: (`image_urls`, 1)."""
    name, _, index = field_name.partition("[")
    index = index.rstrip("]")
    return names.get(name, name), int(index) if index.isdigit() else None
