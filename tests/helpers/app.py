"""The in-process app: `create_app(settings, engine=engine)` runs a worker thread on an already loaded
engine beside the API; starlette's TestClient drives it and runs its lifespan."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from fastapi.testclient import TestClient

from glm_image_server.api.app import create_app
from glm_image_server.config import Settings


def app_settings(data_dir: Path, model_cache: Path, **overrides) -> Settings:
    """The tiny model on the CPU; the safety checker is off unless asked for, so nothing slow loads."""
    fields = {"model": "tiny", "device": "cpu", "cache_dir": model_cache, "safety_checker": "none"}
    return Settings(data_dir=data_dir, **{**fields, **overrides})


def serve_app(settings: Settings, engine, headers: dict[str, str] | None = None) -> Iterator[TestClient]:
    """Yields a client of the running app (for a fixture: `yield from serve_app(...)`)."""
    with TestClient(create_app(settings, engine=engine), headers=headers or {}) as client:
        yield client
