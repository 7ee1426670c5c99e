"""Bad input to the fal dialect: 422 with FastAPI's `detail`, or COMPLETED with an error that says what
was wrong. Never a 500, never a hang."""

from __future__ import annotations

import io

import httpx
import pytest
from fastapi.testclient import TestClient
from helpers.corrupt_images import hostile_files
from helpers.images import data_uri, png_bytes
from helpers.waiting import wait_for
from PIL import Image

T2I, I2I = "fal-ai/glm-image", "fal-ai/glm-image/image-to-image"
SMALL = {"image_size": {"width": 96, "height": 64}, "num_inference_steps": 10}
PRESETS = "square_hd, square, portrait_4_3, portrait_16_9, landscape_4_3, landscape_16_9"
GRID = "GLM-Image needs width and height to be multiples of 32 from 64 to 2048; got {}"


def details(response: httpx.Response) -> list[tuple[list, str]]:
    """(loc, msg) of each entry of a 422's detail."""
    assert response.status_code == 422, response.text
    return [(entry["loc"], entry["msg"]) for entry in response.json()["detail"]]


def locs(response: httpx.Response) -> list[list]:
    return [loc for loc, _msg in details(response)]


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"prompt": 5}, [(["body", "prompt"], "Input should be a valid string")]),
        ({"prompt": ""}, [(["body", "prompt"], "String should have at least 1 character")]),
        (
            {"prompt": "   "},
            [(["body", "prompt"], "must be a non-empty string (allowed: 1..10000 characters)")],
        ),
        ({}, [(["body", "prompt"], "Field required")]),
        (
            {"prompt": "x", "num_images": "a"},
            [
                (
                    ["body", "num_images"],
                    "Input should be a valid integer, unable to parse string as an integer",
                )
            ],
        ),
        (
            {"prompt": "x", "num_images": 5},
            [(["body", "num_images"], "Input should be less than or equal to 4")],
        ),
        (
            {"prompt": "x", "num_inference_steps": 9},
            [(["body", "num_inference_steps"], "Input should be greater than or equal to 10")],
        ),
        (
            {"prompt": "x", "num_inference_steps": 101},
            [(["body", "num_inference_steps"], "Input should be less than or equal to 100")],
        ),
        (
            {"prompt": "x", "guidance_scale": 0.5},
            [(["body", "guidance_scale"], "Input should be greater than or equal to 1")],
        ),
        (
            {"prompt": "x", "guidance_scale": "high"},
            [
                (
                    ["body", "guidance_scale"],
                    "Input should be a valid number, unable to parse string as a number",
                )
            ],
        ),
        ({"prompt": "x", "seed": -1}, [(["body", "seed"], "Input should be greater than or equal to 0")]),
        (
            {"prompt": "x", "image_size": "huge"},
            [
                (
                    ["body", "image_size"],
                    f"must be one of {PRESETS}, or an object {{width, height}}; got 'huge'",
                )
            ],
        ),
        (
            {"prompt": "x", "image_size": {"width": 1000, "height": 768}},
            [(["body", "image_size"], GRID.format("1000x768"))],
        ),
        (
            {"prompt": "x", "image_size": {"width": 4096, "height": 4096}},
            [(["body", "image_size"], GRID.format("4096x4096"))],
        ),
        (
            {"prompt": "x", "output_format": "gif"},
            [(["body", "output_format"], "Input should be 'jpeg', 'png' or 'webp'")],
        ),
    ],
)
def test_schema_errors(fal_app: TestClient, body: dict, expected: list[tuple[list, str]]) -> None:
    for path in (f"/{T2I}", f"/queue/{T2I}"):
        assert details(fal_app.post(path, json=body)) == expected, path


def test_image_to_image_schema_errors(fal_app: TestClient) -> None:
    ref = data_uri(png_bytes())
    assert details(fal_app.post(f"/{I2I}", json={"prompt": "x"})) == [
        (["body", "image_urls"], "Field required")
    ]
    five = fal_app.post(f"/{I2I}", json={"prompt": "x", "image_urls": [ref] * 5})
    assert locs(five) == [["body", "image_urls"]]
    assert "at most 4" in five.json()["detail"][0]["msg"]
    empty = fal_app.post(f"/{I2I}", json={"prompt": "x", "image_urls": []})
    assert locs(empty) == [["body", "image_urls"]] and "at least 1" in empty.json()["detail"][0]["msg"]
    ftp = fal_app.post(f"/queue/{I2I}", json={"prompt": "x", "image_urls": ["ftp://host/a.png"]})
    assert locs(ftp) == [["body", "image_urls"]]
    assert "image_urls[0] must be an http(s) URL or a data URI" in ftp.json()["detail"][0]["msg"]
    not_json = fal_app.post(f"/{T2I}", content=b"{not json", headers={"content-type": "application/json"})
    assert [loc[0] for loc in locs(not_json)] == ["body"]
    a_list = fal_app.post(f"/{T2I}", json=["a", "list"])
    assert details(a_list) == [(["body"], "the body must be a JSON object")]
    no_type = fal_app.post(f"/{T2I}", content=b'{"prompt": "x"}')
    assert details(no_type) == [
        (
            ["body"],
            "the body must be a JSON object sent with Content-Type: application/json (got no Content-Type)",
        )
    ]


def test_validation_errors_carry_no_empty_context(fal_app: TestClient) -> None:
    grid = fal_app.post(f"/queue/{T2I}", json={"prompt": "x", "image_size": {"width": 100, "height": 64}})
    (entry,) = grid.json()["detail"]
    assert "ctx" not in entry and not entry["msg"].startswith("Value error")
    steps = fal_app.post(f"/queue/{T2I}", json={"prompt": "x", "num_inference_steps": 5})
    assert steps.json()["detail"][0]["ctx"] == {"ge": 10}  # a useful context stays
    hook = fal_app.post(f"/queue/{T2I}", params={"fal_webhook": "ftp://x"}, json={"prompt": "x"})
    assert details(hook) == [(["query", "fal_webhook"], "must be an http(s) URL")]


def _wait_completed(client: TestClient, status_url: str) -> dict:
    def finished() -> httpx.Response | None:
        status = client.get(status_url, params={"logs": "1"})
        return status if status.status_code != 202 else None

    status = wait_for(finished, 60, "the job to finish", interval=0.1)
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
    "text-chunk-inflates": (data_uri(hostile_files()["png-ztxt-inflates"]), "not a readable image"),
    "exif-not-tiff": (data_uri(hostile_files()["png-exif-not-tiff"]), "could not be decoded"),
    "redirect-loop": ("/loop", "redirects"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_reference_images(fal_app: TestClient, web, case: str) -> None:
    web.routes["/text"] = (200, b"<html>hello</html>", {"content-type": "image/png"})
    web.routes["/bomb.png"] = (200, _bomb(), {"content-type": "image/png"})
    web.routes["/loop"] = (302, b"", {"location": "/loop"})
    url, message = BAD_INPUTS[case]
    url = web.url(url) if url.startswith("/") else url
    body = {"prompt": "edit", "image_urls": [data_uri(png_bytes()), url], **SMALL}

    sync = fal_app.post(f"/{I2I}", json=body)
    assert sync.status_code == 422, sync.text
    (detail,) = sync.json()["detail"]
    assert detail["loc"] == ["body", "image_urls", 1] and message in detail["msg"]

    queued = fal_app.post(f"/queue/{I2I}", json=body).json()
    status = _wait_completed(fal_app, queued["status_url"])
    assert status["error_type"] == "validation_error"
    assert status["error"].startswith("image_urls.1: ") and message in status["error"]
    assert any(message in log["message"] for log in status["logs"])
    result = fal_app.get(queued["response_url"])
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
def test_ssrf_guard(strict_app: TestClient, web, url: str, message: str) -> None:
    web.routes["/ref.png"] = (200, png_bytes(), {"content-type": "image/png"})
    url = url.format(port=web.server.server_address[1])
    response = strict_app.post(f"/{I2I}", json={"prompt": "x", "image_urls": [url], **SMALL})
    assert response.status_code == 422
    (detail,) = response.json()["detail"]
    assert detail["loc"] == ["body", "image_urls", 0]
    assert message in detail["msg"] and "refused" in detail["msg"]
    assert not web.received  # never contacted
