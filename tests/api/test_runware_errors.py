"""Runware's REST API on the in-process app: auth, and bad tasks answered in Runware's error format."""

from __future__ import annotations

import uuid

import pytest
from fastapi.testclient import TestClient
from helpers.keys import RUNWARE_KEY
from helpers.runware import task


def test_rest_auth(runware_app: TestClient) -> None:
    missing = runware_app.post("/v1", json=[task()], headers={"authorization": ""})
    assert missing.status_code == 401 and missing.json()["errors"][0]["code"] == "invalidApiKey"
    wrong = runware_app.post("/v1", json=[task()], headers={"authorization": "Bearer wrong"})
    assert wrong.status_code == 401 and wrong.json()["errors"][0]["code"] == "invalidApiKey"
    leading = runware_app.post(
        "/v1",
        json=[{"taskType": "authentication", "apiKey": RUNWARE_KEY}, task()],
        headers={"authorization": ""},
    )
    assert leading.status_code == 200
    assert [item["taskType"] for item in leading.json()["data"]] == ["authentication", "imageInference"]


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
def test_bad_image_inference(runware_app: TestClient, fields: dict, code: str, parameter: str) -> None:
    job = {key: value for key, value in task(**fields).items() if value is not None}
    response = runware_app.post("/v1", json=[job])
    assert response.status_code == 400, response.text
    (error,) = response.json()["errors"]
    assert (error["code"], error["parameter"], error["taskType"]) == (code, parameter, "imageInference")
    assert error["message"] and "data" not in response.json()


def test_other_bad_tasks(runware_app: TestClient) -> None:
    missing = runware_app.post("/v1", json=[{k: v for k, v in task().items() if k != "positivePrompt"}])
    assert missing.json()["errors"][0]["code"] == "missingPositivePrompt"
    assert runware_app.post("/v1", content=b"[{").json()["errors"][0]["code"] == "invalidJSON"
    unsupported = runware_app.post("/v1", json=[{"taskType": "videoInference"}])
    assert unsupported.json()["errors"][0]["code"] == "unsupportedTaskType"
    unknown = runware_app.post("/v1", json=[{"taskType": "getResponse", "taskUUID": str(uuid.uuid4())}])
    assert unknown.status_code == 404 and unknown.json()["errors"][0]["code"] == "taskFailedOrNotFound"
    bad_upload = runware_app.post(
        "/v1", json=[{"taskType": "imageUpload", "taskUUID": str(uuid.uuid4()), "image": "aGVsbG8="}]
    )
    assert bad_upload.json()["errors"][0]["code"] == "invalidImage"
    # A reference that cannot be fetched fails the task, in Runware's format, naming the parameter.
    failed = runware_app.post("/v1", json=[task(inputs={"referenceImages": ["http://127.0.0.1:9/x.png"]})])
    error = failed.json()["errors"][0]
    assert (error["code"], error["parameter"]) == ("invalidReferenceImages", "referenceImages")
    assert "could not fetch" in error["message"]
