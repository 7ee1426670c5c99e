"""The Runware dialect: the real `runware` SDK over WebSocket, REST with Bearer auth, deliveries,
idempotent taskUUIDs, and errors in Runware's format."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import re
import time
import uuid

import httpx
import pytest
from conftest import PLAIN_KEY
from PIL import Image
from runware import IImageInference, Runware
from test_fal_client import data_uri, png_bytes
from websockets.sync.client import connect

MODEL = "runware:glm-image@0"


def task(**fields) -> dict:
    return {
        "taskType": "imageInference",
        "taskUUID": str(uuid.uuid4()),
        "model": MODEL,
        "positivePrompt": "a sign that reads 'OPEN'",
        "width": 128,
        "height": 160,
        "steps": 10,
        **fields,
    }


def decode(data: bytes) -> Image.Image:
    return Image.open(io.BytesIO(data))


def test_sdk_over_websocket(plain_server, tmp_path) -> None:
    reference = tmp_path / "ref.png"
    reference.write_bytes(png_bytes((150, 100)))

    async def scenario():
        client = Runware(api_key=PLAIN_KEY, url=f"ws://127.0.0.1:{plain_server.port}/v1")
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


def test_websocket_protocol_details(plain_server) -> None:
    with connect(f"ws://127.0.0.1:{plain_server.port}/v1") as socket:
        socket.send(json.dumps([task()]))
        error = json.loads(socket.recv(timeout=30))["errors"][0]
        assert (error["code"], error["parameter"]) == ("invalidApiKey", "apiKey")  # not authenticated yet
        socket.send(json.dumps([{"taskType": "authentication", "apiKey": "wrong"}]))
        assert json.loads(socket.recv(timeout=30))["errors"][0]["code"] == "invalidApiKey"
        socket.send(json.dumps([{"taskType": "authentication", "apiKey": PLAIN_KEY}]))
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
def rest(fal_server):
    """REST on the TLS server (loopback webhooks allowed there), with its key as a Bearer token."""
    from conftest import FAL_KEY

    with httpx.Client(
        base_url=f"{fal_server.base_url}/v1", headers={"authorization": f"Bearer {FAL_KEY}"}, timeout=120
    ) as client:
        yield client


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
    deadline = time.monotonic() + 60
    while True:
        polled = rest.post("", json=[{"taskType": "getResponse", "taskUUID": job["taskUUID"]}]).json()["data"]
        if polled[0]["status"] == "success":
            break
        assert polled[0]["status"] == "processing" and time.monotonic() < deadline
        time.sleep(0.1)
    assert decode(httpx.get(polled[0]["imageURL"]).content).size == (128, 160)


def test_rest_auth(fal_server) -> None:
    url = f"{fal_server.base_url}/v1"
    missing = httpx.post(url, json=[task()])
    assert missing.status_code == 401 and missing.json()["errors"][0]["code"] == "invalidApiKey"
    from conftest import FAL_KEY

    leading = httpx.post(url, json=[{"taskType": "authentication", "apiKey": FAL_KEY}, task()], timeout=60)
    assert leading.status_code == 200
    assert [item["taskType"] for item in leading.json()["data"]] == ["authentication", "imageInference"]


def test_webhook_and_upload_endpoint(rest, web) -> None:
    web.routes["/hook"] = (200, b"ok", {})
    web.routes["/put"] = (200, b"", {})
    job = task(
        numberResults=2, webhookURL=web.url("/hook"), uploadEndpoint=web.url("/put"), outputFormat="PNG"
    )
    items = rest.post("", json=[job]).json()["data"]
    deadline = time.monotonic() + 30
    while len([r for r in web.received if r[1] in ("/hook", "/put")]) < 4:
        assert time.monotonic() < deadline, web.received
        time.sleep(0.1)
    hooks = [json.loads(body)["data"] for method, path, body in web.received if path == "/hook"]
    assert [hook[0]["imageUUID"] for hook in hooks] == [item["imageUUID"] for item in items]
    assert all(len(hook) == 1 and hook[0]["taskUUID"] == job["taskUUID"] for hook in hooks)
    puts = [body for method, path, body in web.received if path == "/put" and method == "PUT"]
    assert len(puts) == 2
    for body, item in zip(puts, items, strict=True):
        assert decode(body).size == (128, 160)
        assert body == httpx.get(item["imageURL"]).content


def engine_calls(base_url: str) -> float:
    text = httpx.get(f"{base_url}/metrics").text
    return float(re.search(r"^glm_image_engine_calls_total (\S+)$", text, re.M)[1])


def test_repeated_task_uuid_runs_once(rest, fal_server) -> None:
    job = task()
    before = engine_calls(fal_server.base_url)
    first = rest.post("", json=[job]).json()["data"]
    again = rest.post("", json=[job]).json()["data"]
    async_again = rest.post("", json=[{**job, "deliveryMethod": "async"}]).json()["data"]
    assert first == again
    assert async_again[0]["taskUUID"] == job["taskUUID"]
    assert engine_calls(fal_server.base_url) - before == 1


@pytest.mark.parametrize(
    ("fields", "code", "parameter"),
    [
        ({"positivePrompt": None}, "missingPositivePrompt", "positivePrompt"),
        ({"positivePrompt": "x"}, "invalidPositivePrompt", "positivePrompt"),
        ({"width": 100}, "invalidWidth", "width"),
        ({"height": 4096}, "invalidHeight", "height"),
        ({"steps": 101}, "invalidSteps", "steps"),
        ({"CFGScale": 0.5}, "invalidCFGScale", "CFGScale"),
        ({"numberResults": 21}, "invalidNumberResults", "numberResults"),
        ({"model": "runware:101@1"}, "unsupportedModel", "model"),
        ({"taskUUID": "not-a-uuid"}, "invalidTaskUUID", "taskUUID"),
        ({"outputType": "PNG"}, "invalidOutputType", "outputType"),
        ({"outputFormat": "GIF"}, "invalidOutputFormat", "outputFormat"),
        ({"outputQuality": 10}, "invalidOutputQuality", "outputQuality"),
        ({"ttl": 10}, "invalidTtl", "ttl"),
        ({"webhookURL": "ftp://x"}, "invalidWebhookURL", "webhookURL"),
        ({"inputs": {"referenceImages": [str(uuid.uuid4())]}}, "invalidReferenceImages", "referenceImages"),
        ({"referenceImages": ["%%%"]}, "invalidReferenceImages", "referenceImages"),
        ({"inputs": {"referenceImages": ["a"] * 5}}, "invalidReferenceImages", "referenceImages"),
    ],
)
def test_bad_image_inference(rest, fields: dict, code: str, parameter: str) -> None:
    job = {key: value for key, value in task(**fields).items() if value is not None}
    response = rest.post("", json=[job])
    assert response.status_code == 400, response.text
    (error,) = response.json()["errors"]
    assert (error["code"], error["parameter"], error["taskType"]) == (code, parameter, "imageInference")
    assert error["message"] and "data" not in response.json()


def test_other_bad_tasks(rest) -> None:
    missing = rest.post("", json=[{k: v for k, v in task().items() if k != "positivePrompt"}]).json()
    assert missing["errors"][0]["code"] == "missingPositivePrompt"
    assert rest.post("", content=b"[{").json()["errors"][0]["code"] == "invalidJSON"
    assert (
        rest.post("", json=[{"taskType": "videoInference"}]).json()["errors"][0]["code"]
        == "unsupportedTaskType"
    )
    unknown = rest.post("", json=[{"taskType": "getResponse", "taskUUID": str(uuid.uuid4())}])
    assert unknown.status_code == 404 and unknown.json()["errors"][0]["code"] == "taskFailedOrNotFound"
    bad_upload = rest.post(
        "", json=[{"taskType": "imageUpload", "taskUUID": str(uuid.uuid4()), "image": "aGVsbG8="}]
    )
    assert bad_upload.json()["errors"][0]["code"] == "invalidImage"
    # A reference that cannot be fetched fails the task, in Runware's format, naming the parameter.
    failed = rest.post("", json=[task(inputs={"referenceImages": ["http://127.0.0.1:9/x.png"]})])
    error = failed.json()["errors"][0]
    assert (error["code"], error["parameter"]) == ("invalidReferenceImages", "referenceImages")
    assert "could not fetch" in error["message"]


def test_reference_forms(rest) -> None:
    raw = base64.b64encode(png_bytes((60, 40))).decode()
    upload = rest.post("", json=[{"taskType": "imageUpload", "taskUUID": str(uuid.uuid4()), "image": raw}])
    image_uuid = upload.json()["data"][0]["imageUUID"]
    for refs in ([image_uuid], [data_uri(png_bytes())], [raw], [upload.json()["data"][0]["imageURL"]]):
        response = rest.post("", json=[task(inputs={"referenceImages": refs})])
        assert response.status_code == 200, (refs[0][:40], response.text)
