"""The Runware dialect on its own server: the real `runware` SDK over WebSocket, REST with Bearer auth,
deliveries, idempotent taskUUIDs and reference forms. (Bad tasks and auth on the in-process app:
tests/api/test_runware_errors.py.)"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import uuid

import httpx
import pytest
from helpers.images import data_uri, decode, png_bytes
from helpers.keys import RUNWARE_KEY
from helpers.runware import MODEL, task
from helpers.waiting import wait_for
from runware import IImageInference, Runware
from websockets.sync.client import connect


def test_sdk_over_websocket(runware_server, tmp_path) -> None:
    reference = tmp_path / "ref.png"
    reference.write_bytes(png_bytes((150, 100)))

    async def scenario():
        client = Runware(api_key=RUNWARE_KEY, url=f"ws://127.0.0.1:{runware_server.port}/v1")
        await client.connect()
        try:
            uploaded = await client.uploadImage(str(reference))
            urls = await client.imageInference(
                IImageInference(
                    model=MODEL,
                    positivePrompt="make it a poster that reads 'GLM'",
                    width=128,
                    height=160,
                    steps=10,
                    numberResults=3,
                    outputType="URL",
                    outputFormat="PNG",
                    includeCost=True,
                    referenceImages=[uploaded.imageUUID],
                )
            )
            inline = await client.imageInference(
                IImageInference(
                    model=MODEL,
                    positivePrompt="inline",
                    width=128,
                    height=128,
                    steps=10,
                    outputType="base64Data",
                )
            )
            return uploaded, urls, inline
        finally:
            await client.disconnect()

    uploaded, urls, inline = asyncio.run(scenario())
    assert uuid.UUID(uploaded.imageUUID)
    assert len(urls) == 3 and len({image.seed for image in urls}) == 3
    assert len({image.imageUUID for image in urls}) == 3
    for image in urls:
        picture = decode(httpx.get(image.imageURL).content)
        assert picture.format == "PNG" and picture.size == (128, 160)
        assert image.cost == pytest.approx(0.05 * 128 * 160 / 1e6, rel=1e-3)  # fal's $0.05/MP by default
        assert image.NSFWContent is False
    (one,) = inline
    assert decode(base64.b64decode(one.imageBase64Data)).size == (128, 128)
    assert one.cost is None  # only when asked


def test_websocket_protocol_details(runware_server) -> None:
    with connect(f"ws://127.0.0.1:{runware_server.port}/v1") as socket:
        socket.send(json.dumps([task()]))
        error = json.loads(socket.recv(timeout=30))["errors"][0]
        assert (error["code"], error["parameter"]) == ("invalidApiKey", "apiKey")  # not authenticated yet
        socket.send(json.dumps([{"taskType": "authentication", "apiKey": "wrong"}]))
        assert json.loads(socket.recv(timeout=30))["errors"][0]["code"] == "invalidApiKey"
        socket.send(json.dumps([{"taskType": "authentication", "apiKey": RUNWARE_KEY}]))
        session = json.loads(socket.recv(timeout=30))["data"][0]
        assert session["taskType"] == "authentication" and uuid.UUID(session["connectionSessionUUID"])
        # A slow task does not hold up a ping sent after it; its results are pushed when done.
        socket.send(json.dumps([task(width=512, height=512)]))
        socket.send(json.dumps([{"taskType": "ping", "ping": True}]))
        assert json.loads(socket.recv(timeout=30)) == {"data": [{"taskType": "ping", "pong": True}]}
        assert json.loads(socket.recv(timeout=60))["data"][0]["imageURL"]
        socket.send("not json")
        assert json.loads(socket.recv(timeout=30))["errors"][0]["code"] == "invalidJSON"


@pytest.fixture
def rest(runware_server) -> httpx.Client:
    """REST on the Runware server (loopback webhooks allowed there), with its key as a Bearer token."""
    return runware_server.rest


def test_rest_sync_and_async_with_get_response(rest) -> None:
    sync = rest.post("", json=[task(outputType="dataURI", outputFormat="WEBP", seed=5, numberResults=2)])
    assert sync.status_code == 200
    items = sync.json()["data"]
    assert [item["seed"] for item in items] == [5, 6]
    for item in items:
        header, data = item["imageDataURI"].split(",", 1)
        assert header == "data:image/webp;base64" and decode(base64.b64decode(data)).size == (128, 160)

    job = task()
    ack = rest.post("", json=[{**job, "deliveryMethod": "async"}]).json()["data"][0]
    assert ack == {"taskType": "imageInference", "taskUUID": job["taskUUID"], "status": "processing"}

    def succeeded() -> dict | None:
        poll = [{"taskType": "getResponse", "taskUUID": job["taskUUID"]}]
        (item,) = rest.post("", json=poll).json()["data"]
        assert item["status"] in ("processing", "success"), item
        return item if item["status"] == "success" else None

    item = wait_for(succeeded, 60, "the async task", 0.1)
    assert decode(httpx.get(item["imageURL"]).content).size == (128, 160)


def test_webhook_and_upload_endpoint(rest, web) -> None:
    web.routes["/hook"] = (200, b"ok", {})
    web.routes["/put"] = (200, b"", {})
    job = task(
        numberResults=2, webhookURL=web.url("/hook"), uploadEndpoint=web.url("/put"), outputFormat="PNG"
    )
    items = rest.post("", json=[job]).json()["data"]
    wait_for(
        lambda: sum(path in ("/hook", "/put") for _, path, _ in web.received) >= 4,
        30,
        "two webhooks and two uploads",
        0.1,
    )
    hooks = [json.loads(body)["data"] for method, path, body in web.received if path == "/hook"]
    assert [hook[0]["imageUUID"] for hook in hooks] == [item["imageUUID"] for item in items]
    assert all(len(hook) == 1 and hook[0]["taskUUID"] == job["taskUUID"] for hook in hooks)
    puts = [body for method, path, body in web.received if path == "/put" and method == "PUT"]
    assert len(puts) == 2
    for body, item in zip(puts, items, strict=True):
        assert decode(body).size == (128, 160)
        assert body == httpx.get(item["imageURL"]).content


def engine_calls(base_url: str) -> float:
    """Engine calls so far, summed over the server's processes (its worker counts them)."""
    text = httpx.get(f"{base_url}/metrics").text
    return float(re.search(r"^glm_image_engine_calls_total (\S+)$", text, re.M)[1])


def test_repeated_task_uuid_runs_once(rest, runware_server) -> None:
    job = task()
    before = engine_calls(runware_server.base_url)
    first = rest.post("", json=[job]).json()["data"]
    again = rest.post("", json=[job]).json()["data"]
    async_again = rest.post("", json=[{**job, "deliveryMethod": "async"}]).json()["data"]
    assert first == again
    assert async_again[0]["taskUUID"] == job["taskUUID"]
    assert engine_calls(runware_server.base_url) - before == 1


def test_reference_forms_are_all_used(rest) -> None:
    """Every way to pass a reference reaches the model: the same image by upload UUID, raw base64 and
    upload URL makes the very same bytes, and each edit differs from text-to-image with that seed."""
    raw = base64.b64encode(png_bytes((60, 40), (20, 160, 40))).decode()
    upload = rest.post("", json=[{"taskType": "imageUpload", "taskUUID": str(uuid.uuid4()), "image": raw}])
    uploaded = upload.json()["data"][0]

    def run(**fields) -> bytes:
        fixed = {"seed": 5, "outputType": "dataURI", "outputFormat": "PNG", "width": 128, "height": 128}
        response = rest.post("", json=[task(**fixed, **fields)])
        assert response.status_code == 200, response.text
        header, data = response.json()["data"][0]["imageDataURI"].split(",", 1)
        assert header == "data:image/png;base64"
        return base64.b64decode(data)

    text_to_image = run()
    same_image = [
        run(inputs={"referenceImages": [refs]}) for refs in (uploaded["imageUUID"], raw, uploaded["imageURL"])
    ]
    assert same_image[0] == same_image[1] == same_image[2]
    assert same_image[0] != text_to_image
    other = run(inputs={"referenceImages": [data_uri(png_bytes((80, 60), (0, 0, 255)))]})
    assert other != text_to_image and other != same_image[0]
    top_level = run(referenceImages=[uploaded["imageUUID"]])  # the field outside `inputs` works too
    assert top_level == same_image[0]
    assert decode(text_to_image).size == (128, 128)
