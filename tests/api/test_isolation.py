"""A dialect sees only its own jobs: a fal URL cannot read, stream or cancel a Runware job, and Runware's
getResponse cannot read a fal job (in-process app, the tiny engine on a worker thread)."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from helpers.waiting import wait_for

from glm_image_server.api.app import create_app
from glm_image_server.config import Settings

FAL = "/queue/fal-ai/glm-image/requests"
SMALL = {"width": 128, "height": 128, "steps": 10}


@pytest.fixture
def client(tmp_path: Path, engine, model_cache: Path):
    settings = Settings(data_dir=tmp_path, cache_dir=model_cache, safety_checker="none", batch_window_s=0)
    with TestClient(create_app(settings, engine=engine)) as client:
        yield client


def _runware_job(client: TestClient) -> str:
    task_uuid = str(uuid.uuid4())
    task = {
        "taskType": "imageInference",
        "taskUUID": task_uuid,
        "model": "runware:glm-image@0",
        "positivePrompt": "a sign",
        **SMALL,
        "deliveryMethod": "async",
    }
    response = client.post("/v1", json=[task])
    assert response.json()["data"][0]["status"] == "processing", response.text
    return task_uuid


def test_fal_urls_do_not_reach_a_runware_job(client: TestClient) -> None:
    job_id = _runware_job(client)
    assert client.get(f"{FAL}/{job_id}/status").status_code == 404
    assert client.get(f"{FAL}/{job_id}/status/stream").status_code == 404
    assert client.get(f"{FAL}/{job_id}").status_code == 404
    assert client.put(f"{FAL}/{job_id}/cancel").json() == {"status": "NOT_FOUND"}
    poll = [{"taskType": "getResponse", "taskUUID": job_id}]

    def done() -> dict | None:
        (item,) = client.post("/v1", json=poll).json().get("data", [{}])
        return item if item.get("status") == "success" else None

    # The job itself was neither read nor cancelled: it completes.
    assert wait_for(done, 60, "the Runware task", interval=0.1)["taskUUID"] == job_id


def test_runware_cannot_read_a_fal_job(client: TestClient) -> None:
    body = {"prompt": "a sign", "image_size": {"width": 64, "height": 64}, "num_inference_steps": 10}
    job_id = client.post("/queue/fal-ai/glm-image", json=body).json()["request_id"]
    answer = client.post("/v1", json=[{"taskType": "getResponse", "taskUUID": job_id}])
    assert answer.status_code == 404
    assert answer.json()["errors"][0]["code"] == "taskFailedOrNotFound"
    result = client.get(f"{FAL}/{job_id}/status").json()
    assert result["status"] in ("IN_QUEUE", "IN_PROGRESS", "COMPLETED")
