"""`/ready` (and the ops view) list each worker with its role: a plan's prior and decode workers, and the
in-process worker, which runs both stages (`all`). Ready means both stages have a loaded worker."""

from __future__ import annotations

import time
from pathlib import Path

from helpers.app import app_settings, serve_app

from glm_image_server.core.job import Role, WorkerInfo, WorkerState


def info(worker_id: str, role: Role, state: WorkerState) -> WorkerInfo:
    now = time.time()
    return WorkerInfo(
        id=worker_id, pid=100, device="cuda:0", state=state, role=role, heartbeat_at=now, started_at=now
    )


def test_ready_lists_each_worker_with_its_role(tmp_path: Path, model_cache: Path) -> None:
    settings = app_settings(tmp_path, model_cache, workers=0)  # the workers are another box's
    for client in serve_app(settings, None):
        missing = ["no worker has its model loaded for each stage (prior and decode)"]
        assert client.get("/ready").json()["problems"] == missing
        store = client.app.state.services.store
        store.heartbeat(info("w0", "prior", "ready"))
        store.heartbeat(info("w1", "decode", "loading"))
        response = client.get("/ready")
        assert response.status_code == 503 and response.json()["problems"] == missing  # no decode stage yet
        workers = response.json()["workers"]
        assert [(w["id"], w["role"], w["state"]) for w in workers] == [
            ("w0", "prior", "ready"),
            ("w1", "decode", "loading"),
        ]
        store.heartbeat(info("w1", "decode", "ready"))
        assert client.get("/ready").status_code == 200
        assert set(workers[0]) == {"id", "pid", "device", "role", "state", "jobs", "restarts"}
        ops = client.get("/ops").json()
        assert [(w["id"], w["role"]) for w in ops["workers"]] == [("w0", "prior"), ("w1", "decode")]


def test_the_in_process_worker_runs_every_stage(tmp_path: Path, model_cache: Path, engine) -> None:
    for client in serve_app(app_settings(tmp_path, model_cache), engine):
        deadline = time.monotonic() + 30
        while (ready := client.get("/ready")).status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert ready.status_code == 200, ready.text
        assert [w["role"] for w in ready.json()["workers"]] == ["all"]
