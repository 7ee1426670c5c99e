"""A result given back as an edit's reference, with the default URL rules (loopback refused): read from
storage, not fetched. A file that is gone, or a path that leaves the storage, is an input error in the
dialect's own format."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from helpers.app import app_settings, serve_app
from helpers.runware import task

T2I, I2I = "fal-ai/glm-image", "fal-ai/glm-image/image-to-image"
SMALL = {"image_size": {"width": 96, "height": 64}, "num_inference_steps": 10}
KEY_A, KEY_B = "own-files-key-a", "own-files-key-b"


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory, model_cache: Path, engine) -> Iterator[TestClient]:
    settings = app_settings(tmp_path_factory.mktemp("own-files"), model_cache, api_keys=[KEY_A, KEY_B])
    assert not settings.allow_loopback_urls
    yield from serve_app(settings, engine, {"authorization": f"Key {KEY_A}"})


def fal_result_url(app: TestClient) -> str:
    response = app.post(f"/{T2I}", json={"prompt": "a red square", **SMALL})
    assert response.status_code == 200, response.text
    return response.json()["images"][0]["url"]


def test_fal_edit_of_a_result_by_its_url_and_its_path(app: TestClient) -> None:
    url = fal_result_url(app)
    assert url.startswith("http://testserver/files/")
    for ref in (url, url.removeprefix("http://testserver")):
        edit = app.post(f"/{I2I}", json={"prompt": "make it blue", "image_urls": [ref], **SMALL})
        assert edit.status_code == 200, edit.text
        assert edit.json()["images"][0]["url"] != url


@pytest.mark.parametrize(
    ("ref", "message"),
    [
        ("http://testserver/files/gone-0.png", "has expired or does not exist"),
        ("/files/../jobs.sqlite3", "names no file of this server"),
        ("/etc/passwd", "is not a file of this server"),
    ],
)
def test_fal_own_url_that_names_no_file_is_a_422(app: TestClient, ref: str, message: str) -> None:
    for path in (f"/{I2I}", f"/queue/{I2I}"):
        response = app.post(path, json={"prompt": "x", "image_urls": [ref], **SMALL})
        assert response.status_code == 422, response.text
        (detail,) = response.json()["detail"]
        assert detail["loc"] == ["body", "image_urls", 0] and message in detail["msg"]


def runware(app: TestClient, key: str, **fields) -> dict:
    body = [task(**fields)]
    return app.post("/v1", json=body, headers={"authorization": f"Bearer {key}"}).json()


def test_runware_edit_of_a_result_by_its_image_uuid_and_its_url(app: TestClient) -> None:
    first = runware(app, KEY_A, numberResults=2)["data"]
    for ref in (first[1]["imageUUID"], first[0]["imageURL"]):
        edit = runware(app, KEY_A, referenceImages=[ref])
        assert "errors" not in edit, edit
        assert edit["data"][0]["imageUUID"] not in {item["imageUUID"] for item in first}


def test_runware_another_keys_result_uuid_is_unknown(app: TestClient) -> None:
    (item,) = runware(app, KEY_A)["data"]
    (error,) = runware(app, KEY_B, referenceImages=[item["imageUUID"]])["errors"]
    assert (error["code"], error["parameter"]) == ("invalidReferenceImages", "referenceImages")
    assert "unknown imageUUID" in error["message"]


def test_runware_own_url_that_is_gone_is_an_error(app: TestClient) -> None:
    (error,) = runware(app, KEY_A, referenceImages=["http://testserver/files/gone-1.png"])["errors"]
    assert (error["code"], error["parameter"]) == ("invalidReferenceImages", "referenceImages")
    assert "referenceImages[0]" in error["message"] and "expired or does not exist" in error["message"]
