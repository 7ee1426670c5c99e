"""Batching through a running server: compatible jobs share an engine call, their images match single
runs, and cancelling one job of a batch leaves the others alone."""

from __future__ import annotations

import httpx
import pytest
from helpers.serving import ServerProcess
from helpers.waiting import wait_for

TARGET = "a shop sign that reads 'OPEN'"
NEIGHBOURS = [
    "x",
    "a much longer prompt about a cat on a mat under a hat that reads 'HELLO WORLD' in red letters",
    "poster",
    "一张海报\uff0c上面写着\u201c你好\u201d",
]


@pytest.fixture(scope="module")
def batching_server(tmp_path_factory, model_cache):
    server = ServerProcess(
        tmp_path_factory.mktemp("batching") / "data", model_cache, env={"GLM_IMAGE_BATCH_WINDOW_S": "0.5"}
    ).start()
    with httpx.Client(base_url=server.base_url, timeout=120) as server.client:
        yield server
    server.stop()


def _wait(client: httpx.Client, submitted: dict) -> dict:
    def finished() -> httpx.Response | None:
        status = client.get(submitted["status_url"], params={"logs": 1})
        return status if status.status_code != 202 else None

    return wait_for(finished, 120, "the job to finish", 0.05).json()


def test_server_batches_and_images_match_single_runs(batching_server) -> None:
    client = batching_server.client
    size = {"image_size": {"width": 128, "height": 96}, "num_inference_steps": 10}
    bodies = [{"prompt": p, "seed": 100 + i, **size} for i, p in enumerate(NEIGHBOURS)]
    bodies.insert(2, {"prompt": TARGET, "seed": 7, **size})
    submitted = [client.post("/queue/fal-ai/glm-image", json=body).json() for body in bodies]
    statuses = [_wait(client, s) for s in submitted]
    assert all("error" not in s for s in statuses)
    assert all(any("in a batch of 5 requests" in log["message"] for log in s["logs"]) for s in statuses)
    batched = httpx.get(client.get(submitted[2]["response_url"]).json()["images"][0]["url"]).content
    alone = client.post("/fal-ai/glm-image", json=bodies[2]).json()
    assert httpx.get(alone["images"][0]["url"]).content == batched
    engine_calls = [line for line in httpx.get(f"{batching_server.base_url}/metrics").text.splitlines()]
    assert "glm_image_engine_calls_total 2.0" in engine_calls  # one batch of five, then the single run


def test_cancelling_one_job_of_a_batch(batching_server) -> None:
    client = batching_server.client
    body = {"image_size": {"width": 256, "height": 256}, "num_inference_steps": 60}
    submitted = [
        client.post("/queue/fal-ai/glm-image", json={"prompt": f"p{i}", **body}).json() for i in range(3)
    ]

    def second_running() -> bool:
        return client.get(submitted[1]["status_url"]).json()["status"] == "IN_PROGRESS"

    wait_for(second_running, 60, "the second job to run", 0.05)
    cancel = client.put(submitted[1]["cancel_url"])
    assert cancel.status_code == 202
    statuses = [_wait(client, s) for s in submitted]
    assert statuses[1]["error_type"] == "request_cancelled"
    for kept in (0, 2):
        assert "error" not in statuses[kept]
        assert client.get(submitted[kept]["response_url"]).json()["images"][0]["width"] == 256
