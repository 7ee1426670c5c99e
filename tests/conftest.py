"""Fixtures for every layer: one tiny GLM-Image, built offline once per session and loaded like real
weights, a small web server for inputs and webhooks, the job store backends (SQLite, PostgreSQL) the
store contract runs on, and the services some tests need (PostgreSQL, S3, chromium).

Markers (registered in pyproject.toml) are applied here, so a new test gets its own without thinking:
`unit`, `api`, `e2e` or `container` from its directory; `postgres`, `browser` and `ray` from the fixtures
it uses, directly or through other fixtures (NEEDS), from the `backend` fixture's PostgreSQL run, and for a
test that calls `throwaway_database` itself."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import pytest
from helpers.s3 import S3Server
from helpers.serving import WebServer
from helpers.stores import StoreBackend, throwaway_database

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# One torch thread in this process and in every server, worker and CLI the tests start (GLM_IMAGE_TEST_
# TORCH_THREADS: another count; 0: torch's and the supervisor's defaults). The tiny model's ops are too
# small to split, and on a 2-core machine where the tests, a server and its worker run at once, OpenMP
# threads waiting for a descheduled sibling made the AR stage several times slower.
TORCH_THREADS = os.environ.get("GLM_IMAGE_TEST_TORCH_THREADS", "1")
if TORCH_THREADS != "0":
    os.environ.setdefault("OMP_NUM_THREADS", TORCH_THREADS)  # before any test imports torch
    os.environ.setdefault("GLM_IMAGE_TORCH_THREADS", TORCH_THREADS)  # serve's workers (else: cores / workers)

TESTS = Path(__file__).resolve().parent
LAYERS = ("unit", "api", "e2e", "container")  # tests/<layer>/: the marker of the directory
NEEDS = {  # a fixture in a test's closure -> the marker of what it needs
    "postgres_url": "postgres",
    "postgres_database": "postgres",
    "chromium": "browser",
    "ray_fleet": "ray",
}
CHROMIUM = Path("/usr/bin/chromium")  # Debian's; Playwright never downloads a browser here


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        layer = item.path.resolve().relative_to(TESTS).parts[0]
        if layer in LAYERS:
            item.add_marker(layer)
        for name in {NEEDS[fixture] for fixture in getattr(item, "fixturenames", ()) if fixture in NEEDS}:
            item.add_marker(name)
        code = getattr(getattr(item, "function", None), "__code__", None)
        if code is not None and "throwaway_database" in code.co_names:
            item.add_marker("postgres")


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("model-cache")


@pytest.fixture(scope="session")
def tiny_settings(model_cache: Path):
    from glm_image_server.config import Settings

    return Settings(model="tiny", device="cpu", cache_dir=model_cache)


@pytest.fixture(scope="session")
def pipe(tiny_settings):
    from glm_image_server.engine.loader import load_pipeline
    from glm_image_server.slices import EngineSettings

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


@pytest.fixture(scope="session")
def postgres_database() -> Callable[[], AbstractContextManager[str]]:
    """More throwaway PostgreSQL databases, for a fixture or test that needs its own:
    `with postgres_database() as url:` (dropped on exit)."""
    return throwaway_database


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
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


@pytest.fixture(scope="session")
def chromium() -> Path:
    """Debian's chromium, which the browser tests drive through Playwright (scripts/test installs it)."""
    assert CHROMIUM.exists(), "the browser tests need Debian's chromium: apt-get install -y chromium"
    return CHROMIUM
