"""Batching: compatible jobs share an engine call, and no request's images depend on its neighbours."""

from __future__ import annotations

import time

import httpx
import numpy as np
import pytest
import torch
from serving import ServerProcess
from test_job_store import make_job

from glm_image_server.jobs.sqlite import SqliteJobStore
from glm_image_server.model.prior import generate_prior_tokens
from glm_image_server.types import GenerationRequest

TARGET = "a shop sign that reads 'OPEN'"
NEIGHBOURS = [
    "x",
    "a much longer prompt about a cat on a mat under a hat that reads 'HELLO WORLD' in red letters",
    "poster",
    "一张海报\uff0c上面写着\u201c你好\u201d",
]


def test_ar_tokens_and_images_do_not_depend_on_the_batch(pipe, engine) -> None:
    def tokens(prompts: list[str], seeds: list[int]) -> torch.Tensor:
        generators = [torch.Generator("cpu").manual_seed(seed) for seed in seeds]
        return generate_prior_tokens(pipe, prompts, 128, 96, None, generators).token_ids

    alone = tokens([TARGET], [7])[0]
    for position in (0, 2, 4):
        prompts, seeds = [*NEIGHBOURS], [100, 101, 102, 103]
        prompts.insert(position, TARGET)
        seeds.insert(position, 7)
        assert torch.equal(tokens(prompts, seeds)[position], alone)

    def request(prompt: str, seed: int, n: int = 1) -> GenerationRequest:
        return GenerationRequest(
            prompt=prompt, width=128, height=96, num_inference_steps=4, seed=seed, num_images=n
        )

    (single,) = engine.generate([request(TARGET, 7)])
    batch = [request(p, 100 + i, n=2 if i == 1 else 1) for i, p in enumerate(NEIGHBOURS)]
    batch.insert(2, request(TARGET, 7))
    together = engine.generate(batch)
    assert np.array_equal(np.asarray(together[2].images[0]), np.asarray(single.images[0]))
    # And each neighbour equals its own single run.
    (first,) = engine.generate([request(NEIGHBOURS[0], 100)])
    assert np.array_equal(np.asarray(together[0].images[0]), np.asarray(first.images[0]))


def test_skipping_one_request_leaves_the_others_alone(engine) -> None:
    batch = [
        GenerationRequest(prompt=p, width=96, height=64, num_inference_steps=4, seed=i)
        for i, p in enumerate("abc")
    ]
    results = engine.generate(batch, should_skip=lambda i: i == 1)
    assert results[1] is None and results[0] is not None and results[2] is not None
    (alone,) = engine.generate([batch[2]])
    assert np.array_equal(np.asarray(results[2].images[0]), np.asarray(alone.images[0]))


def test_claim_batch_groups_by_key_in_order(tmp_path) -> None:
    store = SqliteJobStore(tmp_path / "jobs.sqlite3")

    def job(width: int, n: int = 1):
        made = make_job()
        return made.model_copy(
            update={"spec": made.spec.model_copy(update={"width": width, "num_images": n})}
        )

    a, b, c, big, d = job(64), job(96), job(64), job(64, n=7), job(64)
    for each in (a, b, c, big, d):
        store.create(each)
    assert [j.id for j in store.claim_batch(8)] == [a.id, c.id, d.id]  # big does not fit after three
    assert [j.id for j in store.claim_batch(8)] == [b.id]  # the oldest queued heads the next batch
    assert [j.id for j in store.claim_batch(8)] == [big.id]
    assert store.claim_batch(8) == []


@pytest.fixture(scope="module")
def batching_server(tmp_path_factory, model_cache):
    server = ServerProcess(
        tmp_path_factory.mktemp("batching") / "data", model_cache, env={"GLM_IMAGE_BATCH_WINDOW_S": "0.5"}
    ).start()
    with httpx.Client(base_url=server.base_url, timeout=120) as server.client:
        yield server
    server.stop()


def _wait(client: httpx.Client, submitted: dict) -> dict:
    deadline = time.monotonic() + 120
    while (status := client.get(submitted["status_url"], params={"logs": 1})).status_code == 202:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    return status.json()


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
    deadline = time.monotonic() + 60
    while client.get(submitted[1]["status_url"]).json()["status"] != "IN_PROGRESS":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    cancel = client.put(submitted[1]["cancel_url"])
    assert cancel.status_code == 202
    statuses = [_wait(client, s) for s in submitted]
    assert statuses[1]["error_type"] == "request_cancelled"
    for kept in (0, 2):
        assert "error" not in statuses[kept]
        assert client.get(submitted[kept]["response_url"]).json()["images"][0]["width"] == 256
