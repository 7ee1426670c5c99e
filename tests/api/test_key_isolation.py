"""Each key sees only its own jobs: on a server with two keys, every endpoint that reads a job by its id —
fal's status, status stream, result and cancel; Runware's getResponse over REST and over the WebSocket and
a repeated imageInference taskUUID — answers for key A's jobs (of every dialect) to key B exactly as for a
job that does not exist, while key A sees its own job through its own dialect's endpoints. OpenAI has no
endpoint that takes a job id; its jobs are in the table as jobs the others must not reveal. Also: the
log line per accepted job names the key, and /metrics counts jobs per key name. (In-process app, the
tiny engine on a worker thread.)"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from helpers.app import app_settings, serve_app
from helpers.runware import task
from helpers.waiting import wait_for

from glm_image_server.keys import owner_hash

KEY_A, KEY_B = "key-a-111", "key-b-222"
KEYS = [f"alice:{KEY_A}", KEY_B]  # A has a name, B is a plain key
FAL = "/queue/fal-ai/glm-image/requests"
FAL_BODY = {"prompt": "a sign", "image_size": {"width": 64, "height": 64}, "num_inference_steps": 10}
NOT_FOUND = {"detail": "request not found"}


def fal_auth(key: str) -> dict[str, str]:
    return {"authorization": f"Key {key}"}


def bearer(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory, model_cache: Path, engine):
    settings = app_settings(tmp_path_factory.mktemp("keys-app"), model_cache, api_keys=KEYS)
    yield from serve_app(settings, engine)


def _fal_submit(client: TestClient, body: dict) -> str:
    return client.post("/queue/fal-ai/glm-image", json=body, headers=fal_auth(KEY_A)).json()["request_id"]


def _fal_completed(client: TestClient, job_id: str) -> None:
    def status() -> str:
        return client.get(f"{FAL}/{job_id}/status", headers=fal_auth(KEY_A)).json()["status"]

    wait_for(lambda: status() == "COMPLETED", 60, "the fal job", interval=0.1)


def _fal_job(client: TestClient) -> str:
    job_id = _fal_submit(client, FAL_BODY)
    _fal_completed(client, job_id)
    return job_id


def _runware_job(client: TestClient) -> str:
    submitted = task(deliveryMethod="async")
    assert client.post("/v1", json=[submitted], headers=bearer(KEY_A)).status_code == 200
    poll = [{"taskType": "getResponse", "taskUUID": submitted["taskUUID"]}]

    def done() -> bool:
        return client.post("/v1", json=poll, headers=bearer(KEY_A)).json()["data"][0]["status"] == "success"

    wait_for(done, 60, "the Runware task", interval=0.1)
    return submitted["taskUUID"]


def _openai_job(client: TestClient) -> str:
    body = {"prompt": "a sign", "size": "64x64", "num_inference_steps": 10}
    answer = client.post("/v1/images/generations", json=body, headers=bearer(KEY_A))
    assert answer.status_code == 200, answer.text
    jobs = client.get("/ops", headers=bearer(KEY_A)).json()["jobs"]  # OpenAI answers carry no job id
    return next(job["id"] for job in jobs if job["api"] == "openai")


@pytest.fixture(scope="module")
def jobs(client: TestClient) -> dict[str, str]:
    """One finished job of key A in each dialect (finished: the probes below change nothing)."""
    return {"fal": _fal_job(client), "runware": _runware_job(client), "openai": _openai_job(client)}


# Probes: True when the answer shows the job, False when it is exactly the dialect's "no such job";
# any other answer fails the test.


def fal_status(client: TestClient, job_id: str, key: str) -> bool:
    answer = client.get(f"{FAL}/{job_id}/status", headers=fal_auth(key))
    if answer.status_code == 404:
        assert answer.json() == NOT_FOUND
        return False
    assert answer.status_code == 200 and answer.json()["request_id"] == job_id, answer.text
    return True


def fal_stream(client: TestClient, job_id: str, key: str) -> bool:
    answer = client.get(f"{FAL}/{job_id}/status/stream", headers=fal_auth(key))
    if answer.status_code == 404:
        assert answer.json() == NOT_FOUND
        return False
    assert answer.status_code == 200, answer.text
    events = [json.loads(line[6:]) for line in answer.text.splitlines() if line.startswith("data: ")]
    assert events[-1]["request_id"] == job_id and events[-1]["status"] == "COMPLETED"
    return True


def fal_result(client: TestClient, job_id: str, key: str) -> bool:
    answer = client.get(f"{FAL}/{job_id}", headers=fal_auth(key))
    if answer.status_code == 404:
        assert answer.json() == NOT_FOUND
        return False
    assert answer.status_code == 200 and answer.json()["images"], answer.text
    return True


def fal_cancel(client: TestClient, job_id: str, key: str) -> bool:
    answer = client.put(f"{FAL}/{job_id}/cancel", headers=fal_auth(key))
    if answer.status_code == 404:
        assert answer.json() == {"status": "NOT_FOUND"}
        return False
    assert (answer.status_code, answer.json()) == (400, {"status": "ALREADY_COMPLETED"})
    return True


def _runware_answer(body: dict, job_id: str, missing_code: str) -> bool:
    if "errors" in body:
        (error,) = body["errors"]
        assert error["code"] == missing_code and error["taskUUID"] == job_id, body
        return False
    assert body["data"][0]["taskUUID"] == job_id and body["data"][0]["status"] == "success", body
    return True


def runware_get_response(client: TestClient, job_id: str, key: str) -> bool:
    poll = [{"taskType": "getResponse", "taskUUID": job_id}]
    answer = client.post("/v1", json=poll, headers=bearer(key))
    assert answer.status_code == (200 if "data" in answer.json() else 404), answer.text
    return _runware_answer(answer.json(), job_id, "taskFailedOrNotFound")


def runware_socket_get_response(client: TestClient, job_id: str, key: str) -> bool:
    with client.websocket_connect("/v1") as socket:
        socket.send_text(json.dumps([{"taskType": "authentication", "apiKey": key}]))
        assert socket.receive_json()["data"][0]["taskType"] == "authentication"
        socket.send_text(json.dumps([{"taskType": "getResponse", "taskUUID": job_id}]))
        return _runware_answer(socket.receive_json(), job_id, "taskFailedOrNotFound")


def runware_repeated_task(client: TestClient, job_id: str, key: str) -> bool:
    """The same taskUUID again: its owner gets the task's results; anyone else a refusal that reveals
    nothing of it."""
    answer = client.post("/v1", json=[task(taskUUID=job_id)], headers=bearer(key))
    return _runware_answer(answer.json(), job_id, "invalidTaskUUID")


PROBES = {
    "fal": [fal_status, fal_stream, fal_result, fal_cancel],
    "runware": [runware_get_response, runware_socket_get_response, runware_repeated_task],
}
TABLE = [
    pytest.param(probe, endpoint_dialect, job_dialect, id=f"{probe.__name__}-{job_dialect}-job")
    for endpoint_dialect, probes in PROBES.items()
    for probe in probes
    for job_dialect in ("fal", "runware", "openai")
]


@pytest.mark.parametrize(("probe", "endpoint_dialect", "job_dialect"), TABLE)
def test_a_job_is_seen_only_by_its_key_through_its_own_api(
    client: TestClient, jobs: dict[str, str], probe, endpoint_dialect: str, job_dialect: str
) -> None:
    job_id = jobs[job_dialect]
    assert probe(client, job_id, KEY_B) is False
    assert probe(client, job_id, KEY_A) is (endpoint_dialect == job_dialect)


def test_the_ops_view_lists_only_the_callers_jobs(client: TestClient, jobs: dict[str, str]) -> None:
    def listed(key: str) -> set[str]:
        return {job["id"] for job in client.get("/ops", headers=bearer(key)).json()["jobs"]}

    assert set(jobs.values()) <= listed(KEY_A)
    assert not set(jobs.values()) & listed(KEY_B)


def test_another_keys_cancel_leaves_a_queued_job_alone(client: TestClient) -> None:
    body = {**FAL_BODY, "num_inference_steps": 30}
    job_id = _fal_submit(client, body)
    answer = client.put(f"{FAL}/{job_id}/cancel", headers=fal_auth(KEY_B))
    assert (answer.status_code, answer.json()) == (404, {"status": "NOT_FOUND"})
    _fal_completed(client, job_id)
    assert client.get(f"{FAL}/{job_id}", headers=fal_auth(KEY_A)).json()["images"]


def test_logs_and_metrics_name_the_key(client: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="glm_image_server")
    named = client.post("/queue/fal-ai/glm-image", json=FAL_BODY, headers=fal_auth(KEY_A)).json()
    plain = client.post("/v1", json=[task(deliveryMethod="async")], headers=bearer(KEY_B)).json()
    lines = [record.getMessage() for record in caplog.records]
    assert (
        f"job {named['request_id']} accepted: fal fal-ai/glm-image, 1 image(s) at 64x64, key alice" in lines
    )
    plain_id = plain["data"][0]["taskUUID"]
    assert any(line.startswith(f"job {plain_id} accepted: runware ") for line in lines), lines
    assert any(line.endswith(f"key {owner_hash(KEY_B)}") for line in lines if plain_id in line)
    assert all(KEY_A not in line and KEY_B not in line for line in lines)  # never the keys themselves
    metrics = client.get("/metrics").text
    assert 'glm_image_jobs_submitted_total{api="fal",key="alice"}' in metrics
    assert f'glm_image_jobs_submitted_total{{api="runware",key="{owner_hash(KEY_B)}"}}' in metrics
