"""Servers as subprocesses (`glm-image serve`, each with one worker process) for the real SDKs.

helpers.fal_env is imported first: it sets fal-client's environment (hosts, key, CA) before any test
module imports fal_client, and the fal_server fixture serves exactly where it points."""

from __future__ import annotations

from pathlib import Path

import helpers.fal_env as fal_env  # first: sets FAL_RUN_HOST & co. before fal_client is imported
import httpx
import pytest
from helpers.keys import FAL_KEY, PLAIN_KEY, RUNWARE_KEY, RUNWARE_OTHER_KEY
from helpers.serving import ServerProcess

TEXT_DOUBLE = "helpers.doubles:ScoreByPixels"  # tests/ is on the servers' path


@pytest.fixture(scope="session")
def fal_server(tmp_path_factory: pytest.TempPathFactory, model_cache: Path):
    """The server as fal clients see it: TLS on FAL_PORT, an API key required; the text checker is the
    double that scores by pixels (OCR cannot read the tiny model's noise)."""
    server = ServerProcess(
        tmp_path_factory.mktemp("fal") / "data",
        model_cache,
        port=fal_env.FAL_PORT,
        tls=(fal_env.SERVER_PEM, fal_env.SERVER_PEM),
        env={"GLM_IMAGE_TEXT_CHECKER": TEXT_DOUBLE},
        args=("--api-key", FAL_KEY),
    ).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def fal_http(fal_server) -> httpx.Client:
    """A plain httpx client on the fal server, with the key (for what fal_client does not expose)."""
    with httpx.Client(
        base_url=fal_server.base_url, headers={"authorization": f"Key {FAL_KEY}"}, timeout=120
    ) as client:
        yield client


@pytest.fixture(scope="session")
def plain_server(tmp_path_factory: pytest.TempPathFactory, model_cache: Path):
    """Default settings (loopback and private URLs refused) on plain HTTP, with an API key; `.client`
    sends it."""
    server = ServerProcess(
        tmp_path_factory.mktemp("plain") / "data",
        model_cache,
        env={"GLM_IMAGE_ALLOW_LOOPBACK_URLS": "0"},
        args=("--api-key", PLAIN_KEY),
    ).start()
    with httpx.Client(
        base_url=server.base_url, headers={"authorization": f"Key {PLAIN_KEY}"}, timeout=120
    ) as server.client:
        yield server
    server.stop()


@pytest.fixture(scope="session")
def runware_server(tmp_path_factory: pytest.TempPathFactory, model_cache: Path):
    """The Runware server: plain HTTP (REST and WebSocket on /v1), loopback URLs allowed (webhooks and
    uploads to the `web` fixture), two keys (RUNWARE_OTHER_KEY is another tenant); `.rest` posts tasks to
    /v1 with RUNWARE_KEY as a Bearer token. Its text checker is the double that scores by pixels, as on the
    fal server."""
    server = ServerProcess(
        tmp_path_factory.mktemp("runware") / "data",
        model_cache,
        env={"GLM_IMAGE_TEXT_CHECKER": TEXT_DOUBLE},
        args=("--api-key", RUNWARE_KEY, "--api-key", RUNWARE_OTHER_KEY),
    ).start()
    with httpx.Client(
        base_url=f"{server.base_url}/v1", headers={"authorization": f"Bearer {RUNWARE_KEY}"}, timeout=120
    ) as server.rest:
        yield server
    server.stop()
