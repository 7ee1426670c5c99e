"""Shared fixtures: one tiny GLM-Image, built offline once per session and loaded like real weights."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import httpx
import pytest
import trustme
from serving import ServerProcess, WebServer, free_port

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


# fal-client reads its hosts at import, and forces https: give it a TLS server it trusts, on a port chosen
# now, before any test module imports fal_client. The fal_server fixture serves exactly there.
_TLS_DIR = Path(tempfile.mkdtemp(prefix="glm-image-tls-"))
_CA = trustme.CA()
_CA.cert_pem.write_to_path(str(_TLS_DIR / "ca.pem"))
_CA.issue_cert("127.0.0.1", "localhost").private_key_and_cert_chain_pem.write_to_path(
    str(_TLS_DIR / "server.pem")
)
FAL_PORT = free_port()
FAL_KEY = "test-key-123"
PLAIN_KEY = "plain-key-456"
os.environ["FAL_RUN_HOST"] = f"127.0.0.1:{FAL_PORT}"
os.environ["FAL_QUEUE_RUN_HOST"] = f"127.0.0.1:{FAL_PORT}/queue"
os.environ["SSL_CERT_FILE"] = str(_TLS_DIR / "ca.pem")
os.environ["FAL_KEY"] = FAL_KEY


@pytest.fixture(scope="session")
def fal_server(tmp_path_factory: pytest.TempPathFactory, model_cache: Path):
    """The server as fal clients see it: TLS on FAL_PORT, an API key required."""
    server = ServerProcess(
        tmp_path_factory.mktemp("fal") / "data",
        model_cache,
        port=FAL_PORT,
        tls=(_TLS_DIR / "server.pem", _TLS_DIR / "server.pem"),
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


@pytest.fixture
def web():
    server = WebServer()
    yield server
    server.close()


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
