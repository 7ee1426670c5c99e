"""Fixtures for every layer: one tiny GLM-Image, built offline once per session and loaded like real
weights, a small web server for inputs and webhooks, and the job store backends (SQLite, PostgreSQL) the
store contract runs on."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers.s3 import S3Server
from helpers.serving import WebServer
from helpers.stores import StoreBackend, throwaway_database

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("model-cache")


@pytest.fixture(scope="session")
def tiny_settings(model_cache: Path):
    from glm_image_server.config import Settings

    return Settings(model="tiny", device="cpu", cache_dir=model_cache)


@pytest.fixture(scope="session")
def pipe(tiny_settings):
    from glm_image_server.config import EngineSettings
    from glm_image_server.engine.loader import load_pipeline

    return load_pipeline(EngineSettings.from_settings(tiny_settings))


@pytest.fixture(scope="session")
def engine(pipe, model_cache: Path):
    from glm_image_server.engine.engine import Engine

    return Engine(pipe, previews=3, preview_cache=model_cache / "previews")


@pytest.fixture
def web():
    server = WebServer()
    yield server
    server.close()


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """One throwaway PostgreSQL database for this test process."""
    with throwaway_database() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request, tmp_path) -> Iterator[StoreBackend]:
    """The store contract's backends: each test using this runs on SQLite and on PostgreSQL."""
    url = request.getfixturevalue("postgres_url") if request.param == "postgres" else None
    store_backend = StoreBackend(request.param, tmp_path, url)
    store_backend.reset()
    yield store_backend
    store_backend.close()


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """moto's S3 server on loopback for this test process; tests make buckets of their own."""
    server = S3Server().start()
    yield server
    server.stop()


@pytest.fixture
def s3_env(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The AWS variables pointing boto3 at the local server, set in this process too."""
    for name, value in s3_server.env.items():
        monkeypatch.setenv(name, value)
    return s3_server.env
