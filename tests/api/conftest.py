"""The in-process app: `create_app(settings, engine=engine)` runs a worker thread on the session's tiny
engine beside the API, driven through starlette's TestClient (which runs the app's lifespan)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from helpers.app import app_settings, serve_app
from helpers.keys import FAL_KEY, RUNWARE_KEY


@pytest.fixture(scope="module")
def fal_app(tmp_path_factory: pytest.TempPathFactory, model_cache: Path, engine) -> Iterator[TestClient]:
    """An API key required; loopback URLs allowed (inputs from the `web` fixture). Sends the key."""
    settings = app_settings(
        tmp_path_factory.mktemp("fal-app"), model_cache, api_keys=[FAL_KEY], allow_loopback_urls=True
    )
    yield from serve_app(settings, engine, {"authorization": f"Key {FAL_KEY}"})


@pytest.fixture(scope="module")
def strict_app(tmp_path_factory: pytest.TempPathFactory, model_cache: Path, engine) -> Iterator[TestClient]:
    """Default URL rules: loopback and private addresses refused."""
    yield from serve_app(app_settings(tmp_path_factory.mktemp("strict-app"), model_cache), engine)


@pytest.fixture(scope="module")
def runware_app(tmp_path_factory: pytest.TempPathFactory, model_cache: Path, engine) -> Iterator[TestClient]:
    """Runware's REST API at /v1 with a Bearer key."""
    settings = app_settings(
        tmp_path_factory.mktemp("runware-app"), model_cache, api_keys=[RUNWARE_KEY], allow_loopback_urls=True
    )
    yield from serve_app(settings, engine, {"authorization": f"Bearer {RUNWARE_KEY}"})
