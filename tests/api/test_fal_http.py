"""The fal dialect's HTTP details that no SDK exposes: headers, status codes, the logs flag, sync_mode,
the status stream, API keys and the `queue.*` host."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from helpers.app import app_settings
from helpers.keys import FAL_KEY
from PIL import Image

from glm_image_server.api.app import create_app

T2I = "fal-ai/glm-image"
SMALL = {"image_size": {"width": 96, "height": 64}, "num_inference_steps": 10}


def test_http_details(fal_app: TestClient) -> None:
    submitted = fal_app.post(f"/queue/{T2I}", json={"prompt": "headers", **SMALL})
    body = submitted.json()
    assert submitted.headers["x-fal-request-id"] == body["request_id"]
    assert body["status"] == "IN_QUEUE" and isinstance(body["queue_position"], int)
    status = fal_app.get(body["status_url"], params={"logs": "0"})
    assert status.headers["x-fal-request-id"] == body["request_id"]
    assert status.status_code in (200, 202) and status.json()["logs"] is None
    pending = status.json()["status"] != "COMPLETED"
    assert status.status_code == (202 if pending else 200)
    for flag in ("1", "0", "true", "false"):
        assert fal_app.get(body["status_url"], params={"logs": flag}).status_code in (200, 202)
    assert fal_app.get(body["status_url"], params={"logs": "maybe"}).status_code == 422
    missing = fal_app.get(f"/queue/{T2I}/requests/nope/status")
    assert missing.status_code == 404 and "x-fal-request-id" in missing.headers

    # sync_mode: images come back inline as data URIs.
    inline = fal_app.post(f"/{T2I}", json={"prompt": "inline", "sync_mode": True, **SMALL})
    url = inline.json()["images"][0]["url"]
    assert url.startswith("data:image/jpeg;base64,")
    assert Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).size == (96, 64)


def test_status_stream_events(fal_app: TestClient) -> None:
    """Each event carries only the log lines it is the first to send: a client appending them (fal's JS
    client does) ends with the request's logs, each once."""
    submitted = fal_app.post(f"/queue/{T2I}", json={"prompt": "stream", **SMALL}).json()
    events = []
    with fal_app.stream("GET", submitted["status_url"] + "/stream", params={"logs": "1"}) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line.startswith("data: "):
                events.append(json.loads(line[len("data: ") :]))
    assert events[-1]["status"] == "COMPLETED"
    assert events[-1]["response_url"] == submitted["response_url"]
    assert {"IN_QUEUE", "IN_PROGRESS"} & {event["status"] for event in events[:-1]}
    appended = [entry for event in events for entry in event["logs"]]
    everything = fal_app.get(submitted["status_url"], params={"logs": "1"}).json()["logs"]
    assert len(everything) > 1 and appended == everything


def test_status_stream_keep_alive(
    tmp_path_factory: pytest.TempPathFactory, model_cache: Path, engine
) -> None:
    """A quiet stream sends a comment after `stream_keepalive_s`, so proxies and clients keep it open."""
    settings = app_settings(tmp_path_factory.mktemp("keepalive"), model_cache, stream_keepalive_s=0.05)
    with TestClient(create_app(settings, engine=engine)) as client:
        submitted = client.post(
            f"/queue/{T2I}", json={"prompt": "slow", **SMALL, "num_inference_steps": 60}
        ).json()
        lines = []
        with client.stream("GET", submitted["status_url"] + "/stream") as response:
            lines = [line for line in response.iter_lines() if line]
    comments = [line for line in lines if line.startswith(":")]
    assert comments and all(line == ": keep-alive" for line in comments)
    assert json.loads(lines[-1][len("data: ") :])["status"] == "COMPLETED"


def test_api_key_required(fal_app: TestClient) -> None:
    body = {"prompt": "x", **SMALL}
    assert fal_app.post(f"/{T2I}", json=body, headers={"authorization": ""}).status_code == 401
    assert fal_app.post(f"/{T2I}", json=body, headers={"authorization": "Key wrong"}).status_code == 401
    bearer = fal_app.post(f"/{T2I}", json=body, headers={"authorization": f"Bearer {FAL_KEY}"})
    assert bearer.status_code == 200
    assert fal_app.get("/health", headers={"authorization": ""}).status_code == 200  # health stays open


def test_any_key_works_when_the_server_has_none(strict_app: TestClient) -> None:
    """fal's clients insist on a FAL_KEY: with no keys configured, whatever they send is accepted."""
    body = {"prompt": "x", **SMALL}
    for authorization in ("Key anything-at-all", "Key id:secret", "Bearer whatever", ""):
        submitted = strict_app.post(f"/queue/{T2I}", json=body, headers={"authorization": authorization})
        assert submitted.status_code == 200, submitted.text
        status = strict_app.get(submitted.json()["status_url"], headers={"authorization": authorization})
        assert status.status_code in (200, 202)


def test_queue_host_routes_to_the_queue(fal_app: TestClient) -> None:
    """fal clients derive `queue.<run host>`; such a host reaches the queue without the /queue prefix."""
    host = "queue.localhost:8443"
    response = fal_app.post(f"/{T2I}", headers={"host": host}, json={"prompt": "via host", **SMALL})
    body = response.json()
    assert body["status"] == "IN_QUEUE"
    assert body["status_url"] == f"http://{host}/{T2I}/requests/{body['request_id']}/status"
    status = fal_app.get(f"/{T2I}/requests/{body['request_id']}/status", headers={"host": host})
    assert status.json()["request_id"] == body["request_id"]
    assert fal_app.get("/health", headers={"host": host}).status_code == 200
