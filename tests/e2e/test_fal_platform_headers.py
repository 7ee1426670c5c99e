"""fal's platform headers and its Python client's strictness, with the real fal-client against the TLS
server (helpers.fal_env): `priority="low"` waits behind normal requests, `start_timeout` fails a request
that cannot start in time with a 504 the client does not retry, and the status bodies carry what the
client's parser insists on (`queue_position` when queued, `logs` when running or done)."""

from __future__ import annotations

import time

import fal_client
import pytest
from fal_client.client import FalClientHTTPError
from helpers.waiting import wait_for

T2I = "fal-ai/glm-image"
SMALL = {"image_size": {"width": 96, "height": 64}, "num_inference_steps": 10}
BLOCKER = {"prompt": "keeps the worker busy", "image_size": "square_hd", "num_inference_steps": 100}


def finished(request_id: str) -> fal_client.Completed | None:
    status = fal_client.status(T2I, request_id)
    return status if isinstance(status, fal_client.Completed) else None


def started_at(request_id: str) -> str:
    """When the request left the queue: its "Started after ..." log line's timestamp (ISO 8601, UTC)."""
    status = fal_client.status(T2I, request_id, with_logs=True)
    return next(log["timestamp"] for log in status.logs if log["message"].startswith("Started after"))


def test_priority_start_timeout_and_status_shapes(fal_server, fal_http) -> None:
    blocker = fal_client.submit(T2I, arguments=BLOCKER)
    wait_for(
        lambda: isinstance(fal_client.status(T2I, blocker.request_id), fal_client.InProgress),
        60,
        "the blocker to run",
    )
    running = fal_http.get(f"/queue/{T2I}/requests/{blocker.request_id}/status").json()
    assert running["status"] == "IN_PROGRESS" and running["logs"] is None  # present, null: not asked
    # Its first log line is written just after its claim, and a status read may be served from memory for
    # up to snapshot_ttl_s: asked for, the logs come within moments.
    wait_for(lambda: fal_http.get(running["status_url"], params={"logs": 1}).json()["logs"], 10, "its logs")

    low = fal_client.submit(T2I, arguments={"prompt": "low", **SMALL}, priority="low")
    normal = fal_client.submit(T2I, arguments={"prompt": "normal", **SMALL})
    assert fal_client.status(T2I, normal.request_id) == fal_client.Queued(position=0)  # ahead of `low`
    assert fal_client.status(T2I, low.request_id) == fal_client.Queued(position=1)

    # A request that cannot start within its start timeout: sync, answered 504 and not retried...
    began = time.monotonic()
    with pytest.raises(FalClientHTTPError) as refused:
        fal_client.run(T2I, arguments={"prompt": "in a hurry", **SMALL}, start_timeout=1.5)
    assert 1.5 <= time.monotonic() - began < 10
    error = refused.value
    assert (error.status_code, error.error_type) == (504, "request_timeout")
    assert error.response_headers["x-fal-request-timeout-type"] == "user"
    assert error.response_headers["x-fal-error-type"] == "request_timeout"

    # ... and queued: the request fails, its status says why, its result is that 504.
    late = fal_client.submit(T2I, arguments={"prompt": "late", **SMALL}, start_timeout=1.5)
    assert fal_client.status(T2I, late.request_id) == fal_client.Queued(position=1)  # before `low` too
    completed = wait_for(lambda: finished(late.request_id), 10, "the late request to fail")
    assert completed.error_type == "request_timeout" and "1.5 s" in completed.error
    assert completed.logs is None  # not asked for: the key is there (the client would raise otherwise)
    with pytest.raises(FalClientHTTPError) as result:
        fal_client.result(T2I, late.request_id)
    assert result.value.status_code == 504 and result.value.error_type == "request_timeout"
    assert result.value.response_headers["x-fal-request-timeout-type"] == "user"

    fal_client.cancel(T2I, blocker.request_id)
    for handle in (normal, low):
        fal_client.result(T2I, handle.request_id)  # waits for nothing: both run once the worker is free
    assert started_at(normal.request_id) < started_at(low.request_id)  # submitted second, ran first
