"""Limits, each hit and answered in every dialect's own format: the queue length overall and per key,
the submission rate, wrong keys per address, body sizes (the key checked before the body is read), low
disk space, refused webhook targets, and the Runware ttl capped at the retention. No worker runs here,
so submitted jobs stay queued."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from helpers.app import app_settings, serve_app
from helpers.runware import task

KEY_A, KEY_B = "key-a-111", "key-b-222"
FAL_BODY = {"prompt": "a sign", "image_size": {"width": 64, "height": 64}, "num_inference_steps": 10}


def headers(dialect: str, key: str | None) -> dict[str, str]:
    if key is None:
        return {}
    return {"authorization": f"{'Key' if dialect == 'fal' else 'Bearer'} {key}"}


def submit(client: TestClient, dialect: str, key: str | None = KEY_A, **overrides):
    """A queued submission (OpenAI has none: its requests wait, so only refusals are tried there)."""
    if dialect == "fal":
        return client.post("/queue/fal-ai/glm-image", json=FAL_BODY, headers=headers("fal", key), **overrides)
    if dialect == "runware":
        body = [task(deliveryMethod="async")]
        return client.post("/v1", json=body, headers=headers("runware", key), **overrides)
    body = {"prompt": "a sign", "size": "64x64"}
    return client.post("/v1/images/generations", json=body, headers=headers("openai", key), **overrides)


def assert_dialect_error(response, dialect: str, status: int) -> str:
    """The error is in the dialect's own format; returns its message."""
    assert response.status_code == status, response.text
    body = response.json()
    if dialect == "fal":
        assert isinstance(body["detail"], str | list)
        return str(body["detail"])
    if dialect == "runware":
        (error,) = body["errors"]
        assert error["code"] and error["message"]
        return error["message"]
    assert set(body["error"]) == {"message", "type", "param", "code"}
    return body["error"]["message"]


def no_worker_app(tmp_path: Path, model_cache: Path, **overrides) -> Iterator[TestClient]:
    settings = app_settings(tmp_path, model_cache, workers=0, api_keys=[KEY_A, KEY_B], **overrides)
    yield from serve_app(settings, None)


@pytest.fixture
def app_with(tmp_path: Path, model_cache: Path):
    """`app_with(**settings)`: a started app without workers, closed after the test."""
    started: list[Iterator[TestClient]] = []

    def start(**overrides) -> TestClient:
        running = no_worker_app(tmp_path, model_cache, **overrides)
        started.append(running)
        return next(running)

    yield start
    for running in started:
        next(running, None)


DIALECTS = ("fal", "runware", "openai")


def test_past_the_queue_limit_every_dialect_gets_429_with_retry_after(app_with):
    client = app_with(max_queued_jobs=1)
    assert submit(client, "fal").status_code == 200
    for dialect in DIALECTS:
        response = submit(client, dialect)
        assert "queue is full" in assert_dialect_error(response, dialect, 429)
        assert int(response.headers["retry-after"]) >= 1
    assert client.app.state.services.store.queued_count() == 1


def test_per_key_limit_holds_one_key_while_another_is_served(app_with):
    client = app_with(max_jobs_per_key=1)
    assert submit(client, "fal", KEY_A).status_code == 200
    for dialect in DIALECTS:
        message = assert_dialect_error(submit(client, dialect, KEY_A), dialect, 429)
        assert "this API key already has 1 unfinished jobs" in message
    assert submit(client, "fal", KEY_B).status_code == 200
    assert submit(client, "runware", KEY_B).status_code == 429  # B reached its own limit now


def test_concurrent_submissions_get_exactly_the_caps(app_with):
    """40 submissions at once, 20 per key, against 5 per key and 8 queued: exactly 8 accepted, at most 5
    of either key, every other one a 429."""
    client = app_with(max_queued_jobs=8, max_jobs_per_key=5, submit_rate_per_client=1000)
    keys, start = [KEY_A, KEY_B] * 20, threading.Barrier(40)

    def one(key: str) -> tuple[str, int]:
        start.wait()
        return key, submit(client, "fal", key).status_code

    with ThreadPoolExecutor(40) as pool:
        answers = list(pool.map(one, keys))
    accepted = sorted(key for key, status in answers if status == 200)
    assert {status for _key, status in answers} == {200, 429}
    assert len(accepted) == 8 and max(map(accepted.count, (KEY_A, KEY_B))) <= 5
    assert client.app.state.services.store.queued_count() == 8


def test_submission_rate_per_key(app_with):
    client = app_with(submit_rate_per_client=0.5)  # bursts of 1
    assert submit(client, "fal", KEY_A).status_code == 200
    response = submit(client, "fal", KEY_A)
    assert "too many submissions" in assert_dialect_error(response, "fal", 429)
    assert int(response.headers["retry-after"]) >= 1
    assert submit(client, "fal", KEY_B).status_code == 200


def test_wrong_keys_are_throttled_per_address_and_a_right_key_still_works(app_with):
    client = app_with(auth_failures_per_minute=3)
    for _ in range(3):
        assert_dialect_error(submit(client, "fal", "wrong"), "fal", 401)
    for dialect in DIALECTS:
        response = submit(client, dialect, "wrong")
        assert "wrong API key" in assert_dialect_error(response, dialect, 429)
        assert int(response.headers["retry-after"]) >= 1
    assert submit(client, "fal", KEY_A).status_code == 200


@pytest.mark.parametrize("dialect", DIALECTS)
def test_a_body_over_the_limit_gets_413_with_a_valid_key(app_with, dialect):
    client = app_with(max_body_bytes=2000)
    response = client.post(
        {"fal": "/queue/fal-ai/glm-image", "runware": "/v1", "openai": "/v1/images/generations"}[dialect],
        content=b'{"prompt": "' + b"x" * 5000 + b'"}',
        headers={**headers(dialect, KEY_A), "content-type": "application/json"},
    )
    assert "larger than 2000 bytes" in assert_dialect_error(response, dialect, 413)


def test_without_a_key_the_body_is_refused_before_it_is_read(app_with):
    client = app_with(max_body_bytes=2000, max_unauthenticated_body_bytes=1000)
    big = b'{"prompt": "' + b"x" * 1500 + b'"}'
    json_type = {"content-type": "application/json"}
    assert_dialect_error(client.post("/queue/fal-ai/glm-image", content=big, headers=json_type), "fal", 401)
    assert_dialect_error(client.post("/v1/images/generations", content=big, headers=json_type), "openai", 401)
    # Runware may authenticate inside the body: without a Bearer key only a small body is read.
    assert_dialect_error(client.post("/v1", content=big, headers=json_type), "runware", 413)


def test_low_disk_space_gets_507_everywhere_and_ready_says_why(app_with):
    client = app_with(min_free_disk_mb=10**12)
    for dialect in DIALECTS:
        assert "low disk space" in assert_dialect_error(submit(client, dialect), dialect, 507)
    ready = client.get("/ready")
    assert ready.status_code == 503
    assert any("low disk space" in problem for problem in ready.json()["problems"])
    assert client.app.state.services.store.queued_count() == 0


def test_refused_webhook_targets_are_rejected_at_submission(app_with):
    client = app_with()  # default URL rules: loopback refused
    response = client.post(
        "/queue/fal-ai/glm-image?fal_webhook=http://127.0.0.1:9/hook",
        json=FAL_BODY,
        headers=headers("fal", KEY_A),
    )
    assert response.status_code == 422
    assert "loopback" in response.json()["detail"][0]["msg"]
    body = [task(deliveryMethod="async", webhookURL="http://10.0.0.7/hook")]
    (error,) = client.post("/v1", json=body, headers=headers("runware", KEY_A)).json()["errors"]
    assert (error["code"], error["parameter"]) == ("invalidWebhookURL", "webhookURL")
    assert client.app.state.services.store.queued_count() == 0


def test_a_runware_ttl_never_outlives_the_retention(app_with):
    client = app_with(result_retention_s=120)
    body = [task(deliveryMethod="async", ttl=10**9)]
    response = client.post("/v1", json=body, headers=headers("runware", KEY_A))
    assert response.status_code == 200, response.text
    job = client.app.state.services.store.get(body[0]["taskUUID"])
    assert job.output.ttl_s == 120
