"""Bad input to the fal dialect: 422 with FastAPI's `detail`, or COMPLETED with an error that says what
was wrong. Never a 500, never a hang."""

from __future__ import annotations

import io
import time

import httpx
import pytest
from PIL import Image
from test_fal_client import SMALL, data_uri, png_bytes

T2I, I2I = "fal-ai/glm-image", "fal-ai/glm-image/image-to-image"


def locs(response: httpx.Response) -> list[list]:
    assert response.status_code == 422, response.text
    return [entry["loc"] for entry in response.json()["detail"]]


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        ({"prompt": 5}, ["body", "prompt"]),
        ({"prompt": ""}, ["body", "prompt"]),
        ({"prompt": "   "}, ["body", "prompt"]),
        ({}, ["body", "prompt"]),
        ({"prompt": "x", "num_images": "a"}, ["body", "num_images"]),
        ({"prompt": "x", "num_images": 5}, ["body", "num_images"]),
        ({"prompt": "x", "num_inference_steps": 9}, ["body", "num_inference_steps"]),
        ({"prompt": "x", "num_inference_steps": 101}, ["body", "num_inference_steps"]),
        ({"prompt": "x", "guidance_scale": 0.5}, ["body", "guidance_scale"]),
        ({"prompt": "x", "guidance_scale": "high"}, ["body", "guidance_scale"]),
        ({"prompt": "x", "seed": -1}, ["body", "seed"]),
        ({"prompt": "x", "image_size": "huge"}, ["body", "image_size", "literal[...]"]),
        ({"prompt": "x", "image_size": {"width": 1000, "height": 768}}, ["body", "image_size"]),
        ({"prompt": "x", "image_size": {"width": 4096, "height": 4096}}, ["body", "image_size"]),
        ({"prompt": "x", "output_format": "gif"}, ["body", "output_format"]),
    ],
)
def test_schema_errors(fal_http, body: dict, loc: list) -> None:
    for path in (f"/{T2I}", f"/queue/{T2I}"):
        found = locs(fal_http.post(path, json=body))
        assert any(entry[: len(loc)] == loc or entry[:2] == loc[:2] for entry in found), found


def test_image_to_image_schema_errors(fal_http) -> None:
    ref = data_uri(png_bytes())
    assert locs(fal_http.post(f"/{I2I}", json={"prompt": "x"})) == [["body", "image_urls"]]
    five = fal_http.post(f"/{I2I}", json={"prompt": "x", "image_urls": [ref] * 5})
    assert locs(five) == [["body", "image_urls"]]
    assert "at most 4" in five.json()["detail"][0]["msg"]
    assert locs(fal_http.post(f"/{I2I}", json={"prompt": "x", "image_urls": []})) == [["body", "image_urls"]]
    ftp = fal_http.post(f"/queue/{I2I}", json={"prompt": "x", "image_urls": ["ftp://host/a.png"]})
    assert locs(ftp) == [["body", "image_urls"]]
    assert locs(fal_http.post(f"/{T2I}", content=b"{not json", headers={"content-type": "application/json"}))
    assert locs(fal_http.post(f"/{T2I}", json=["a", "list"]))
    hook = fal_http.post(f"/queue/{T2I}", params={"fal_webhook": "ftp://x"}, json={"prompt": "x"})
    assert locs(hook) == [["query", "fal_webhook"]]


def _wait_completed(client: httpx.Client, status_url: str) -> dict:
    deadline = time.monotonic() + 60
    while (status := client.get(status_url, params={"logs": "1"})).status_code == 202:
        assert time.monotonic() < deadline, "hang"
        time.sleep(0.1)
    assert status.status_code == 200
    return status.json()


def _bomb() -> bytes:
    buffer = io.BytesIO()
    Image.new("1", (10_000, 10_000)).save(buffer, "PNG")  # 100 megapixels in 12 kB
    return buffer.getvalue()


BAD_INPUTS = {
    "unreachable": ("http://127.0.0.1:9/nothing.png", "could not fetch"),
    "not-an-image": ("/text", "not a readable image"),
    "http-404": ("/missing.png", "answered HTTP 404"),
    "bomb": ("/bomb.png", "100000000 pixels"),
    "bomb-data-uri": (data_uri(_bomb()), "100000000 pixels"),
    "bad-base64": ("data:image/png;base64,@@@@", "invalid base64"),
    "redirect-loop": ("/loop", "redirects"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_reference_images(fal_http, web, case: str) -> None:
    web.routes["/text"] = (200, b"<html>hello</html>", {"content-type": "image/png"})
    web.routes["/bomb.png"] = (200, _bomb(), {"content-type": "image/png"})
    web.routes["/loop"] = (302, b"", {"location": "/loop"})
    url, message = BAD_INPUTS[case]
    url = web.url(url) if url.startswith("/") else url
    body = {"prompt": "edit", "image_urls": [data_uri(png_bytes()), url], **SMALL}

    sync = fal_http.post(f"/{I2I}", json=body)
    assert sync.status_code == 422, sync.text
    (detail,) = sync.json()["detail"]
    assert detail["loc"] == ["body", "image_urls", 1] and message in detail["msg"]

    queued = fal_http.post(f"/queue/{I2I}", json=body).json()
    status = _wait_completed(fal_http, queued["status_url"])
    assert status["error_type"] == "validation_error"
    assert status["error"].startswith("image_urls.1: ") and message in status["error"]
    assert any(message in log["message"] for log in status["logs"])
    result = fal_http.get(queued["response_url"])
    assert result.status_code == 422 and result.json()["detail"][0]["loc"] == ["body", "image_urls", 1]


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://127.0.0.1:{port}/ref.png", "loopback"),
        ("http://localhost:{port}/ref.png", "loopback"),
        ("http://[::1]:{port}/ref.png", "loopback"),
        ("http://169.254.169.254/latest/meta-data", "non-public"),
        ("http://10.0.0.1/a.png", "non-public"),
        ("http://192.168.1.1/a.png", "non-public"),
    ],
)
def test_ssrf_guard(plain_server, web, url: str, message: str) -> None:
    web.routes["/ref.png"] = (200, png_bytes(), {"content-type": "image/png"})
    url = url.format(port=web.server.server_address[1])
    response = plain_server.client.post(f"/{I2I}", json={"prompt": "x", "image_urls": [url], **SMALL})
    assert response.status_code == 422
    assert message in response.json()["detail"][0]["msg"] and "refused" in response.json()["detail"][0]["msg"]
    assert not web.received  # never contacted
