"""Malformed input of every kind gets a clear error in the dialect's own format — never a 500, a dropped
connection or silence: broken and hostile JSON (non-finite numbers, lone surrogates, deep nesting,
absurd numbers), wrong shapes, control characters in ids, and over the WebSocket binary frames and
bad tasks (every task gets a reply)."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from helpers.app import app_settings, serve_app
from helpers.corrupt_images import hostile_files
from helpers.runware import task

DEEP = b"[" * 5000 + b"]" * 5000
BODIES = {
    "not json": b"{prompt: nope",
    "empty": b"",
    "NaN": b'{"prompt": "x", "guidance_scale": NaN}',
    "Infinity": b'{"prompt": "x", "guidance_scale": Infinity, "num_inference_steps": 1e999}',
    "lone surrogate": b'{"prompt": "\\ud800 sign"}',
    "invalid utf-8": b'{"prompt": "\xff\xfe"}',
    "deep nesting": DEEP,
    "deep object": b'{"prompt": ' + b'{"a": ' * 3000 + b"1" + b"}" * 3000 + b"}",
    "huge integers": b'{"prompt": "x", "num_images": 1' + b"0" * 400 + b', "seed": -1' + b"0" * 50 + b"}",
    "absurd size": b'{"prompt": "x", "image_size": {"width": 99999999999999999999, "height": -5}, "n": 99}',
    "array": b'[1, "two", null]',
    "string": b'"just a string"',
    "nul in prompt": b'{"prompt": "a\\u0000b", "n": 0, "num_images": 0}',
    "wrong types": b'{"prompt": ["x"], "num_images": "many", "seed": {}}',
}
INITIATE = "/fal/storage/upload/initiate"
PATHS = {"fal": "/queue/fal-ai/glm-image", "runware": "/v1", "openai": "/v1/images/generations"}


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory, model_cache: Path) -> Iterator[TestClient]:
    """No worker, and a full queue: a body that turns out valid is refused (429) instead of waiting."""
    settings = app_settings(tmp_path_factory.mktemp("malformed"), model_cache, workers=0, max_queued_jobs=1)
    for client in serve_app(settings, None):
        assert client.post("/queue/fal-ai/glm-image", json={"prompt": "x"}).status_code == 200
        yield client


def assert_clean_error(response, dialect: str) -> None:
    assert 400 <= response.status_code < 500, (response.status_code, response.text)
    body = response.json()
    if dialect == "fal":
        assert body["detail"]
    elif dialect == "runware":
        assert all(error["code"] and error["message"] for error in body["errors"])
    else:
        assert body["error"]["message"]


@pytest.mark.parametrize("name", BODIES)
@pytest.mark.parametrize("dialect", PATHS)
def test_malformed_bodies(client, dialect, name):
    response = client.post(PATHS[dialect], content=BODIES[name], headers={"content-type": "application/json"})
    assert_clean_error(response, dialect)


@pytest.mark.parametrize("content_type", [None, "text/plain", "multipart/form-data; boundary=x"])
def test_bodies_with_a_wrong_content_type(client, content_type):
    headers = {"content-type": content_type} if content_type else {}
    for dialect, path in PATHS.items():
        assert_clean_error(client.post(path, content=b'{"prompt": 1', headers=headers), dialect)
    assert_clean_error(client.post("/v1/images/edits", content=b"--x\r\n", headers=headers), "openai")


@pytest.mark.parametrize("request_id", ["%01%02", "a%0d%0aset-cookie:%20x", "%ff%fe", "x" * 5000])
def test_hostile_request_ids_get_a_clean_404(client, request_id):
    for suffix in ("", "/status", "/status/stream", "/cancel"):
        method = client.put if suffix == "/cancel" else client.get
        response = method(f"/queue/fal-ai/glm-image/requests/{request_id}{suffix}")
        assert response.status_code in (404, 422), response.text
        assert "\r" not in response.headers["x-fal-request-id"]


def test_a_binary_websocket_frame_is_closed_with_1003(client):
    with client.websocket_connect("/v1") as socket:
        socket.send_bytes(b"\x00\x01binary")
        message = socket.receive()
    assert (message["type"], message["code"]) == ("websocket.close", 1003)


def test_every_websocket_task_gets_a_reply_and_the_socket_stays_open(client):
    frames = [
        DEEP.decode(),
        "NaN",
        '[1, "two", null]',
        "{}",
        json.dumps([{"taskType": "imageInference", "taskUUID": "not-a-uuid", "model": "x"}]),
        json.dumps([task(width=7)]),
        json.dumps([{"taskType": "getResponse", "taskUUID": "\u0000"}]),
        json.dumps([{"taskType": "imageUpload", "taskUUID": "u", "image": "data:,nope"}]),
    ]
    expected = [1, 1, 3, 1, 1, 1, 1, 1]
    with client.websocket_connect("/v1") as socket:
        for frame, replies in zip(frames, expected, strict=True):
            socket.send_text(frame)
            for _ in range(replies):
                answer = socket.receive_json()
                assert answer["errors"][0]["code"], answer
        socket.send_text(json.dumps([{"taskType": "ping", "ping": True}]))
        assert socket.receive_json()["data"][0]["pong"] is True


def test_too_many_tasks_in_one_message(client):
    tasks = [{"taskType": "ping", "ping": True}] * 33
    (error,) = client.post("/v1", json=tasks).json()["errors"]
    assert error["code"] == "tooManyTasks"
    with client.websocket_connect("/v1") as socket:
        socket.send_text(json.dumps(tasks))
        assert socket.receive_json()["errors"][0]["code"] == "tooManyTasks"


HOSTILE = hostile_files()


@pytest.mark.parametrize("name", HOSTILE)
def test_corrupt_image_files_are_the_clients_error_wherever_they_arrive(client, name):
    """Runware's imageUpload, OpenAI's edits and fal's storage upload decode what they receive: a file
    Pillow cannot read (metadata past its limits, EXIF that is not TIFF, broken chunks) is a 4xx in
    each dialect's format, and the connection stays usable."""
    data = HOSTILE[name]
    image = f"data:image/png;base64,{base64.b64encode(data).decode()}"
    answer = client.post("/v1", json=[{"taskType": "imageUpload", "taskUUID": "u", "image": image}])
    assert_clean_error(answer, "runware")
    assert answer.json()["errors"][0]["code"] == "invalidImage"

    files = {"image": ("a.png", data, "image/png")}
    answer = client.post("/v1/images/edits", data={"prompt": "x"}, files=files)
    assert_clean_error(answer, "openai")
    assert answer.status_code == 400 and "image" in answer.json()["error"]["message"].lower()

    target = client.post(INITIATE, json={"content_type": "image/png", "file_name": "a.png"}).json()
    answer = client.put(target["upload_url"], content=data, headers={"content-type": "image/png"})
    assert_clean_error(answer, "fal")
    assert client.get("/health").status_code == 200
