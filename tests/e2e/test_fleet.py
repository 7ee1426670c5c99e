"""A fleet on one machine: two API processes and one worker process share a PostgreSQL job store and an S3
bucket (moto's server), as separate machines would; the two APIs share one data directory too, as two
`serve` processes with default settings on one host do. A job submitted through API A is polled, streamed
(SSE, woken by NOTIFY) and cancelled through API B; its result URL is a presigned S3 URL; a webhook whose
receiver fails twice is accepted exactly once across both APIs; a Runware WebSocket session begun on A
resumes on B.

A split fleet beside it, on a database and a bucket of its own: an API process and two workers in separate
processes with separate data directories, a `prior` worker (the AR stage) and a `decode` worker (DiT, VAE,
post), as on separate machines. Its text-to-image and one-reference edit results are byte-identical to the
all-in-one worker's above for the same seeds, each job's decode stage ran once, on the decode worker, and
its AR stage once, on the prior worker."""

from __future__ import annotations

import io
import json
import threading
import time
import uuid
from pathlib import Path
from urllib.parse import urlparse

import httpx
import numpy as np
import pytest
from helpers.fleet import WorkerProcess, api_process, fal_body, fleet_env
from helpers.images import data_uri
from helpers.serving import WebServer
from helpers.waiting import holds, wait_for
from PIL import Image
from websockets.sync.client import connect

from glm_image_server.store.sql import SqlJobStore

QUEUE = "/queue/fal-ai/glm-image"


def body(seed: int, size: int = 64, steps: int = 10) -> dict:
    return fal_body("FLEET", seed, size, steps)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory, model_cache: Path, s3_server, postgres_database):
    """(API A, API B, the bucket): a worker first, then the two APIs (each ready once it sees the worker).
    Keep-alives and sync re-reads at 60 s: what reaches a waiter sooner came through NOTIFY."""
    root = tmp_path_factory.mktemp("fleet")
    with postgres_database() as url:
        bucket = s3_server.new_bucket()
        env = fleet_env(
            url,
            bucket,
            s3_server.env,
            GLM_IMAGE_STREAM_KEEPALIVE_S="60",
            GLM_IMAGE_WAIT_POLL_S="60",
            GLM_IMAGE_SAFETY_CHECKER="none",
        )
        worker = WorkerProcess(root / "worker-data", model_cache, env, "gpu-1").start()
        apis = []
        try:
            for _name in ("a", "b"):  # one data directory: with a shared store and S3 it holds no lock
                apis.append(api_process(root / "api-data", model_cache, env).start())
            yield apis[0], apis[1], bucket
        finally:
            for api in apis:
                api.stop()
            worker.stop()


def unsigned(result: dict) -> dict:
    """A result with its presigned URLs cut at the query: each answer signs them anew (X-Amz-Date)."""
    return {**result, "images": [{**image, "url": image["url"].split("?")[0]} for image in result["images"]]}


def test_submit_on_a_then_poll_stream_and_download_on_b(fleet, s3_server) -> None:
    api_a, api_b, bucket = fleet
    with httpx.Client(base_url=api_a.base_url, timeout=60) as a, httpx.Client(base_url=api_b.base_url) as b:
        submitted = a.post(QUEUE, json=body(7, steps=100)).json()
        request_id = submitted["request_id"]
        assert b.get(f"{QUEUE}/requests/{request_id}/status").json()["status"] in ("IN_QUEUE", "IN_PROGRESS")

        events: list[dict] = []
        started = time.monotonic()
        with b.stream(
            "GET", f"{QUEUE}/requests/{request_id}/status/stream", params={"logs": 1}, timeout=60
        ) as s:
            for line in s.iter_lines():
                if line.startswith("data: "):
                    events.append(json.loads(line.removeprefix("data: ")))
                    if events[-1]["status"] == "COMPLETED":
                        break
        assert time.monotonic() - started < 50  # woken by NOTIFY, not by the 60 s keep-alive
        statuses = [event["status"] for event in events]
        assert statuses[-1] == "COMPLETED" and "IN_PROGRESS" in statuses
        assert len(events) >= 3  # progress lines arrived as they happened

        result = b.get(f"{QUEUE}/requests/{request_id}").json()
        assert unsigned(result) == unsigned(a.get(f"{QUEUE}/requests/{request_id}").json())
        url = result["images"][0]["url"]
        assert url.startswith(f"{s3_server.endpoint}/{bucket}/fleet/") and "X-Amz-Signature=" in url
        assert int(dict(p.split("=", 1) for p in urlparse(url).query.split("&"))["X-Amz-Expires"]) > 3600
        image = Image.open(io.BytesIO(httpx.get(url, timeout=30).content))
        assert image.size == (64, 64) and image.format == "PNG"
        assert b.get(urlparse(url).path.replace(f"/{bucket}/fleet", "/files")).status_code == 404


def test_cancel_on_b_a_job_running_from_a(fleet) -> None:
    api_a, api_b, _ = fleet
    with httpx.Client(base_url=api_a.base_url, timeout=60) as a, httpx.Client(base_url=api_b.base_url) as b:
        request_id = a.post(QUEUE, json=body(8, size=256, steps=100)).json()["request_id"]
        wait_for(
            lambda: b.get(f"{QUEUE}/requests/{request_id}/status").json()["status"] == "IN_PROGRESS",
            60,
            "the job to start",
        )
        assert b.put(f"{QUEUE}/requests/{request_id}/cancel").json() == {"status": "CANCELLATION_REQUESTED"}
        wait_for(
            lambda: a.get(f"{QUEUE}/requests/{request_id}/status").json()["status"] == "COMPLETED",
            30,
            "the cancel to reach the worker",
        )
        result = a.get(f"{QUEUE}/requests/{request_id}")
        assert "cancel" in result.text.lower() and "images" not in result.json()


def test_a_webhook_failing_twice_is_accepted_exactly_once_across_both_apis(fleet) -> None:
    _, api_b, _ = fleet
    receiver = WebServer()
    answers: list[int] = []
    lock = threading.Lock()

    def hook(_handler) -> tuple[int, bytes, dict]:
        with lock:
            answers.append(500 if len(answers) < 2 else 200)
            return answers[-1], b"", {}

    receiver.routes["/hook"] = hook
    try:
        with httpx.Client(base_url=api_b.base_url, timeout=60) as b:
            params = {"fal_webhook": receiver.url("/hook")}
            request_id = b.post(QUEUE, json=body(9), params=params).json()["request_id"]
        wait_for(lambda: 200 in answers, 60, "the webhook to be accepted")
        # Ten retry delays (0.3 s): a second sender would have sent again by now.
        holds(lambda: answers == [500, 500, 200], 3, "two refusals, then one acceptance", 0.1)
        posts = [json.loads(data) for method, path, data in receiver.received if path == "/hook"]
        assert [post["request_id"] for post in posts] == [request_id] * 3
        assert posts[-1]["status"] == "OK"
    finally:
        receiver.close()


def test_a_runware_session_started_on_a_resumes_on_b(fleet) -> None:
    """Sessions live in the job store: a WebSocket client on API A goes away mid-task, reconnects to API B
    with its connectionSessionUUID, and gets the result there (both images, one message each)."""
    api_a, api_b, _ = fleet
    job = {
        "taskType": "imageInference",
        "taskUUID": str(uuid.uuid4()),
        "model": "runware:glm-image@0",
        "positivePrompt": "a sign that reads 'AWAY'",
        "width": 128,
        "height": 128,
        "steps": 10,
        "numberResults": 2,
    }
    auth = {"taskType": "authentication", "apiKey": "any"}  # the fleet has no keys: any key is its key
    with connect(f"ws://127.0.0.1:{api_a.port}/v1") as socket:
        socket.send(json.dumps([auth]))
        session = json.loads(socket.recv(timeout=30))["data"][0]["connectionSessionUUID"]
        socket.send(json.dumps([job]))

    def resumed_on_b() -> list[list[dict]] | None:
        with connect(f"ws://127.0.0.1:{api_b.port}/v1") as socket:
            socket.send(json.dumps([{**auth, "connectionSessionUUID": session}]))
            if json.loads(socket.recv(timeout=30))["data"][0]["connectionSessionUUID"] != session:
                return None
            return [json.loads(socket.recv(timeout=120))["data"] for _ in range(2)]

    pushed = wait_for(resumed_on_b, 60, "the session on B", 0.05)
    assert [len(items) for items in pushed] == [1, 1]
    assert {items[0]["taskUUID"] for items in pushed} == {job["taskUUID"]}
    assert len({items[0]["imageUUID"] for items in pushed}) == 2


@pytest.fixture(scope="module")
def split_fleet(tmp_path_factory: pytest.TempPathFactory, model_cache: Path, s3_server, postgres_database):
    """(the API, the split fleet's store): a prior and a decode worker (GLM_IMAGE_ROLE), each with a data
    directory of its own, and an API process, on a database and a bucket no other worker claims from."""
    root = tmp_path_factory.mktemp("split-fleet")
    with postgres_database() as url:
        env = fleet_env(url, s3_server.new_bucket(), s3_server.env, GLM_IMAGE_SAFETY_CHECKER="none")
        workers = [
            WorkerProcess(root / f"{role}-data", model_cache, {**env, "GLM_IMAGE_ROLE": role}, f"{role}-1")
            for role in ("prior", "decode")
        ]
        api = api_process(root / "api-data", model_cache, env)
        store = SqlJobStore(url, max_attempts=3, pool_size=2)
        try:
            for worker in workers:
                worker.start()
            yield api.start(), store
        finally:
            store.close()
            api.stop()
            for worker in workers:
                worker.stop()


def noise_png(seed: int, size: tuple[int, int]) -> str:
    """A reference that shows a mistake in its handling (noise, not one flat colour)."""
    pixels = np.random.default_rng(seed).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return data_uri(buffer.getvalue())


SPLIT_REQUESTS = {  # path under the queue -> a request: text-to-image, and an edit with one reference
    "": body(31, size=64, steps=12),
    "/image-to-image": {**body(32, size=64, steps=10), "image_urls": [noise_png(3, (48, 64))]},
}


def results(client: httpx.Client) -> dict[str, tuple[str, bytes, dict]]:
    """Each of SPLIT_REQUESTS submitted at once, then each one's (request id, image bytes, timings)."""
    ids = {}
    for path, request in SPLIT_REQUESTS.items():
        submitted = client.post(f"{QUEUE}{path}", json=request)
        assert submitted.status_code == 200, submitted.text
        ids[path] = submitted.json()["request_id"]

    def done(request_id: str) -> bool:
        return client.get(f"{QUEUE}/requests/{request_id}/status").json()["status"] == "COMPLETED"

    wait_for(lambda: all(done(i) for i in ids.values()), 120, "the jobs to complete")
    found = {}
    for path, request_id in ids.items():
        result = client.get(f"{QUEUE}/requests/{request_id}").json()
        (image,) = result["images"]
        found[path] = (request_id, httpx.get(image["url"], timeout=30).content, result["timings"])
    return found


def test_a_split_fleet_makes_the_bytes_of_an_all_worker_running_each_stage_once_where_it_belongs(
    fleet, split_fleet
) -> None:
    api, store = split_fleet
    api_a, _, _ = fleet
    with httpx.Client(base_url=api.base_url, timeout=60) as split, httpx.Client(base_url=api_a.base_url) as a:
        split_results, all_results = results(split), results(a)
        assert "\nglm_image_decode_waiting_jobs 0.0\n" in split.get("/metrics").text  # all decoded
    for path, (request_id, data, timings) in split_results.items():
        assert data == all_results[path][1], f"queue{path or ' (text-to-image)'}: the bytes differ"
        assert {"queue", "ar", "decode_queue", "dit", "vae"} <= set(timings)
        job = store.get(request_id)
        # Finished under the first claim of its decode stage, which the decode worker held: the prior
        # worker (the only other worker on this store) ran the one AR stage and no decode stage.
        assert (job.stage, job.worker_id, job.attempts) == ("decode", "decode-1", 1)
        lines = [entry.message for entry in store.logs(request_id)]
        assert sum(line.startswith("Started after") for line in lines) == 1, lines  # one prior stage
        assert sum(line.startswith("Decode stage started after") for line in lines) == 1, lines
        assert not any(line.startswith("Interrupted") for line in lines), lines
