"""Worker processes: `serve --workers N` runs jobs in N processes while the API process never loads
torch; a worker killed mid-job is restarted and its job runs again with its seed, nothing lost or doubled."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import httpx
import pytest
from helpers.serving import ServerProcess, WebServer
from helpers.waiting import wait_for

QUEUE = "/queue/fal-ai/glm-image"
QUICK, VICTIM = (64, 64, 10), (256, 256, 60)  # width, height, steps: the victim lasts long enough to kill


def _submit(
    client: httpx.Client, width: int, height: int, steps: int, seed: int, webhook: str | None = None
) -> str:
    body = {
        "prompt": f"a sign that reads 'JOB {seed}'",
        "image_size": {"width": width, "height": height},
        "num_inference_steps": steps,
        "seed": seed,
        "output_format": "png",
        "enable_safety_checker": False,
    }
    params = {"fal_webhook": webhook} if webhook else None
    response = client.post(QUEUE, json=body, params=params)
    response.raise_for_status()
    return response.json()["request_id"]


def _status(client: httpx.Client, request_id: str) -> dict:
    return client.get(f"{QUEUE}/requests/{request_id}/status").json()


def _maps(pid: int) -> str:
    return Path(f"/proc/{pid}/maps").read_text()


@pytest.fixture
def two_workers(tmp_path: Path, model_cache: Path):
    server = ServerProcess(tmp_path / "data", model_cache, args=("--workers", "2")).start()
    yield server
    server.stop()


def test_two_workers_run_two_jobs_at_once_and_the_api_process_has_no_torch(
    two_workers: ServerProcess,
) -> None:
    with httpx.Client(base_url=two_workers.base_url, timeout=30) as client:
        ready = client.get("/ready").json()
        assert sorted(w["id"] for w in ready["workers"]) == ["w0", "w1"]
        ids = [_submit(client, 512, 512, 100, 1), _submit(client, 576, 512, 100, 2)]  # two batch keys

        def both_running() -> dict | None:
            states = [_status(client, i)["status"] for i in ids]
            workers = client.get("/ready").json()["workers"]
            busy = {job for w in workers for job in w["jobs"]}
            return {"workers": workers} if states == ["IN_PROGRESS"] * 2 and busy == set(ids) else None

        seen = wait_for(both_running, 120, "both jobs IN_PROGRESS in two workers")
        pids = {w["pid"] for w in seen["workers"]}
        assert len(pids) == 2 and two_workers.process.pid not in pids
        for request_id in ids:
            client.put(f"{QUEUE}/requests/{request_id}/cancel")

    assert "libtorch" not in _maps(two_workers.process.pid)  # the API process never loads the model
    assert all("libtorch" in _maps(pid) for pid in pids)


def test_a_killed_worker_is_restarted_and_every_job_completes_once(tmp_path: Path, model_cache: Path) -> None:
    receiver = WebServer()
    receiver.routes["/hook"] = (200, b"ok", {})
    server = ServerProcess(
        tmp_path / "data", model_cache, env={"GLM_IMAGE_MAX_BATCH_SIZE": "1"}, args=("--workers", "1")
    ).start()
    try:
        with httpx.Client(base_url=server.base_url, timeout=60) as client:
            hook = receiver.url("/hook")
            ids = [_submit(client, *VICTIM if i == 1 else QUICK, 100 + i, hook) for i in range(10)]
            victim = ids[1]
            wait_for(
                lambda: _status(client, victim)["status"] == "IN_PROGRESS", 120, "the second job to start"
            )
            (worker,) = client.get("/ready").json()["workers"]
            assert worker["jobs"] == [victim]
            os.kill(worker["pid"], signal.SIGKILL)

            wait_for(
                lambda: all(_status(client, i)["status"] == "COMPLETED" for i in ids), 240, "all 10 jobs"
            )
            results = [client.get(f"{QUEUE}/requests/{i}").json() for i in ids]
            assert all(len(r["images"]) == 1 for r in results), results

            logs = _status_logs(client, victim)
            assert any("Interrupted" in line and "exited with -9" in line for line in logs), logs
            restarted = wait_for(_restarted(client), 60, "/ready to show the restarted worker")
            assert restarted["pid"] != worker["pid"] and restarted["restarts"] >= 1

            fresh = client.post(
                "/fal-ai/glm-image",
                json={
                    "prompt": "a sign that reads 'JOB 101'",
                    "image_size": {"width": VICTIM[0], "height": VICTIM[1]},
                    "num_inference_steps": VICTIM[2],
                    "seed": 101,
                    "output_format": "png",
                    "enable_safety_checker": False,
                },
            ).json()
            rerun = httpx.get(results[1]["images"][0]["url"]).content
            assert rerun == httpx.get(fresh["images"][0]["url"]).content  # byte-identical with its seed

        hooks = wait_for(lambda: _hooks(receiver, ids), 60, "a webhook for every job")
        for request_id, bodies in hooks.items():
            assert all(body == bodies[0] for body in bodies), f"repeated webhook for {request_id} differs"
            assert bodies[0]["status"] == "OK"
    finally:
        server.stop()
        receiver.close()


def _status_logs(client: httpx.Client, request_id: str) -> list[str]:
    body = client.get(f"{QUEUE}/requests/{request_id}/status", params={"logs": 1}).json()
    return [entry["message"] for entry in body["logs"]]


def _restarted(client: httpx.Client):
    def check() -> dict | None:
        workers = client.get("/ready").json()["workers"]
        return next((w for w in workers if w["state"] in ("ready", "busy") and w["restarts"] >= 1), None)

    return check


def _hooks(receiver: WebServer, ids: list[str]) -> dict[str, list[dict]] | None:
    bodies: dict[str, list[dict]] = {}
    for method, path, body in list(receiver.received):
        if method == "POST" and path == "/hook":
            payload = json.loads(body)
            bodies.setdefault(payload["request_id"], []).append(payload)
    return bodies if set(bodies) == set(ids) else None
