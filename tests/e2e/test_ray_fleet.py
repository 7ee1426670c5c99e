"""The fleet on a local Ray cluster (started on loopback with docs/deploy.md's commands, 4 logical CPUs):
the application serves a fal queue request (submit, status stream, result: what fal's subscribe does) and a
Runware WebSocket request; a worker replica SIGKILLed mid-job is restarted by Ray and the job completes
byte-identical to a fresh run with its seed; 10 queued jobs all complete. Last, the application is
redeployed as a split fleet (a PriorWorker and a DecodeWorker replica instead of the Worker), which
gives the bytes the Worker gave for a text-to-image request and a one-reference edit."""

from __future__ import annotations

import io
import json
import os
import signal
from pathlib import Path

import httpx
import numpy as np
import pytest
from helpers.fleet import fal_body, fleet_env
from helpers.images import data_uri, decode
from helpers.keys import FAL_KEY
from helpers.ray_cluster import RayFleet
from helpers.runware import task
from helpers.waiting import wait_for
from PIL import Image
from websockets.sync.client import connect

QUEUE = "/queue/fal-ai/glm-image"
QUICK, VICTIM = (64, 10), (256, 60)  # size, steps: the victim lasts long enough to kill its worker


def body(seed: int, size: int, steps: int) -> dict:
    return fal_body("RAY", seed, size, steps)


@pytest.fixture(scope="module")
def ray_fleet(tmp_path_factory: pytest.TempPathFactory, model_cache: Path, s3_server, postgres_database):
    root = tmp_path_factory.mktemp("ray-fleet")
    with postgres_database() as url:
        env = fleet_env(
            url,
            s3_server.new_bucket(),
            s3_server.env,
            HF_HUB_OFFLINE="1",
            GLM_IMAGE_MODEL="tiny",
            GLM_IMAGE_DEVICE="cpu",
            GLM_IMAGE_CACHE_DIR=str(model_cache),
            GLM_IMAGE_DATA_DIR=str(root / "data"),
            GLM_IMAGE_SAFETY_CHECKER="none",
            GLM_IMAGE_API_KEYS=FAL_KEY,
            GLM_IMAGE_LEASE_S="3",
            GLM_IMAGE_HEARTBEAT_S="0.5",
            GLM_IMAGE_MAX_BATCH_SIZE="1",
        )
        fleet = RayFleet(env, root)
        try:
            fleet.start("worker_gpus=0", "api_replicas=1", "worker_replicas=1", "api_cpus=0.5")
            with httpx.Client(
                base_url=fleet.base_url, headers={"authorization": f"Key {FAL_KEY}"}, timeout=120
            ) as client:
                yield fleet, client
        finally:
            fleet.stop()


def test_a_fal_queue_request_streams_and_completes(ray_fleet) -> None:
    _, client = ray_fleet
    request_id = client.post(QUEUE, json=body(1, *QUICK)).json()["request_id"]
    last = None
    with client.stream("GET", f"{QUEUE}/requests/{request_id}/status/stream") as response:
        for line in response.iter_lines():
            if line.startswith("data: "):
                last = json.loads(line.removeprefix("data: "))
                if last["status"] == "COMPLETED":
                    break
    assert last is not None and last["status"] == "COMPLETED"
    (image,) = client.get(f"{QUEUE}/requests/{request_id}").json()["images"]
    assert "X-Amz-Signature=" in image["url"]  # from the bucket, presigned
    assert decode(httpx.get(image["url"], timeout=30).content).size == (64, 64)


def test_a_runware_websocket_request(ray_fleet) -> None:
    fleet, _ = ray_fleet
    with connect(f"ws://127.0.0.1:{fleet.http_port}/v1") as socket:
        socket.send(json.dumps([{"taskType": "authentication", "apiKey": FAL_KEY}]))
        assert json.loads(socket.recv(timeout=60))["data"][0]["taskType"] == "authentication"
        job = task()
        socket.send(json.dumps([job]))
        item = json.loads(socket.recv(timeout=120))["data"][0]
    assert item["taskUUID"] == job["taskUUID"]
    assert decode(httpx.get(item["imageURL"], timeout=30).content).size == (128, 160)


def test_a_killed_worker_replica_is_restarted_and_every_job_completes(ray_fleet) -> None:
    _, client = ray_fleet
    ids = [
        client.post(QUEUE, json=body(100 + i, *(VICTIM if i == 1 else QUICK))).json()["request_id"]
        for i in range(10)
    ]
    victim = ids[1]

    def status(request_id: str) -> str:
        return client.get(f"{QUEUE}/requests/{request_id}/status").json()["status"]

    def holder() -> list[dict]:  # a worker lists its batch once the batch's inputs are prepared
        return [w for w in client.get("/ready").json()["workers"] if victim in w["jobs"]]

    wait_for(lambda: status(victim) == "IN_PROGRESS", 120, "the long job to start")
    (worker,) = wait_for(holder, 60, "the worker running the long job to list it")
    os.kill(worker["pid"], signal.SIGKILL)

    wait_for(lambda: all(status(i) == "COMPLETED" for i in ids), 300, "all 10 jobs")
    results = [client.get(f"{QUEUE}/requests/{i}").json() for i in ids]
    assert all(len(result["images"]) == 1 for result in results), results
    workers = client.get("/ready").json()["workers"]
    assert any(w["pid"] != worker["pid"] and w["state"] in ("ready", "busy") for w in workers)
    logs = client.get(f"{QUEUE}/requests/{victim}/status", params={"logs": 1}).json()["logs"]
    assert any("Interrupted" in entry["message"] for entry in logs), logs

    fresh = client.post("/fal-ai/glm-image", json=body(101, *VICTIM)).json()
    rerun = httpx.get(results[1]["images"][0]["url"], timeout=30).content
    assert rerun == httpx.get(fresh["images"][0]["url"], timeout=30).content  # byte-identical, its seed


SPLIT = ("worker_replicas=0", "prior_replicas=1", "decode_replicas=1", "prior_gpus=0", "decode_gpus=0")


def noise_png(seed: int) -> str:
    pixels = np.random.default_rng(seed).integers(0, 255, (64, 48, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return data_uri(buffer.getvalue())


def images_of(client: httpx.Client, requests: dict[str, dict]) -> dict[str, bytes]:
    """Each request (by queue path) submitted at once; each one's image once all completed."""
    ids = {path: client.post(f"{QUEUE}{path}", json=r).json()["request_id"] for path, r in requests.items()}

    def completed() -> bool:
        return all(
            client.get(f"{QUEUE}/requests/{i}/status").json()["status"] == "COMPLETED" for i in ids.values()
        )

    wait_for(completed, 180, "the jobs to complete")
    found = {}
    for path, request_id in ids.items():
        (image,) = client.get(f"{QUEUE}/requests/{request_id}").json()["images"]
        found[path] = httpx.get(image["url"], timeout=30).content
    return found


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_the_split_deployments_make_the_bytes_of_the_worker(ray_fleet) -> None:
    """Last in this module: it replaces the application's Worker with the split pools."""
    fleet, client = ray_fleet
    requests = {"": body(201, *QUICK), "/image-to-image": {**body(202, *QUICK), "image_urls": [noise_png(5)]}}
    before = images_of(client, requests)
    old = {w["pid"] for w in client.get("/ready").json()["workers"]}  # the Worker replica(s), dead or alive

    fleet.deploy(*SPLIT, "api_replicas=1", "api_cpus=0.5")

    def replaced() -> bool:
        new = [w for w in client.get("/ready").json()["workers"] if w["pid"] not in old]
        return len([w for w in new if w["state"] in ("ready", "busy")]) == 2 and not any(map(alive, old))

    wait_for(replaced, 240, "a PriorWorker and a DecodeWorker replica, and no Worker process left")
    assert images_of(client, requests) == before
