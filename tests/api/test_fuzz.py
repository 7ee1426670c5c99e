"""Schemathesis against the server's own OpenAPI document: generated requests for every endpoint,
valid and not, must never get a 5xx. The queue is kept full and no worker runs, so every submission is
answered at once (validated, then refused with 429) and nothing hangs; examples are bounded. (/ready
answers 503 by design here: no worker.)"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
import schemathesis
from fastapi.testclient import TestClient
from helpers.app import app_settings
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error

from glm_image_server.api.app import create_app

KEY = "fuzz-key"
DATA = Path(tempfile.mkdtemp(prefix="glm-image-fuzz-"))
APP = create_app(app_settings(DATA, DATA / "models", workers=0, max_queued_jobs=1, api_keys=[KEY]))
schema = schemathesis.openapi.from_asgi("/openapi.json", APP).exclude(path="/ready")


@pytest.fixture(scope="module", autouse=True)
def running_app():
    """The app's lifespan (its services) around the fuzzing, with one queued job filling the queue."""
    with TestClient(APP) as client:
        body = {"prompt": "x", "image_size": {"width": 64, "height": 64}}
        response = client.post("/queue/fal-ai/glm-image", json=body, headers={"authorization": f"Key {KEY}"})
        assert response.status_code == 200, response.text
        yield


@schema.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_no_generated_request_gets_a_server_error(case):
    case.headers = {**(case.headers or {}), "authorization": f"Bearer {KEY}"}
    case.call_and_validate(checks=[not_a_server_error])


def test_the_document_declares_auth_and_bodies_and_docs_need_no_network():
    client = TestClient(APP)
    document = client.get("/openapi.json").json()
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            if path.startswith(("/fal-ai/", "/queue/", "/v1")):
                assert operation["security"], (method, path)
            if method == "post":
                assert operation["requestBody"]["required"], path
    page = client.get("/docs").text
    assets = [part.split('"')[0] for part in page.split('"/docs-assets/')[1:]]
    assert assets and all(client.get(f"/docs-assets/{asset}").status_code == 200 for asset in assets)
    assert "//cdn" not in page
