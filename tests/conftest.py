"""Fixtures for every layer: one tiny GLM-Image, built offline once per session and loaded like real
weights, and a small web server for inputs and webhooks."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from helpers.serving import WebServer

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("model-cache")


@pytest.fixture(scope="session")
def tiny_settings(model_cache: Path):
    from glm_image_server.settings import Settings

    return Settings(model="tiny", device="cpu", cache_dir=model_cache)


@pytest.fixture(scope="session")
def pipe(tiny_settings):
    from glm_image_server.model.loader import load_pipeline

    return load_pipeline(tiny_settings)


@pytest.fixture(scope="session")
def engine(pipe):
    from glm_image_server.model.engine import Engine

    return Engine(pipe)


@pytest.fixture
def web():
    server = WebServer()
    yield server
    server.close()
