"""From a plan to worker processes: the supervisor gives each plan entry's worker its id, role, GPU,
quantization and offload in its environment (no process is started here), the worker reads them back as
its settings, and its heartbeat tells the store its role."""

from __future__ import annotations

import pytest

from glm_image_server.config import Settings
from glm_image_server.core.job import WorkerInfo
from glm_image_server.slices import EngineSettings, WorkerSettings
from glm_image_server.worker.gpus import Gpu, given_gpus
from glm_image_server.worker.plan import make_plan
from glm_image_server.worker.supervisor import Supervisor, settings_env
from glm_image_server.worker.worker import Worker


class Heartbeats:
    """The part of the store a worker's heartbeat and the supervisor's constructor touch."""

    def __init__(self) -> None:
        self.seen: list[WorkerInfo] = []

    def heartbeat(self, info: WorkerInfo) -> None:
        self.seen.append(info)


def supervisor_for(settings: Settings, gpus: list[Gpu]) -> Supervisor:
    plan = make_plan(settings, gpus)
    return Supervisor(WorkerSettings.from_settings(settings), settings_env(settings), Heartbeats(), plan)


def test_each_worker_gets_its_entry(monkeypatch) -> None:
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    settings = Settings(torch_threads=None)
    gpus = [Gpu(0, "GPU-aaaa", 24.0), Gpu(1, "3", 24.0)]  # CUDA_VISIBLE_DEVICES names them so
    children = supervisor_for(settings, gpus).children
    assert [(c.worker_id, c.role, c.device) for c in children] == [
        ("w0", "prior", "cuda:GPU-aaaa"),
        ("w1", "decode", "cuda:3"),
    ]
    for child, role, device in zip(children, ("prior", "decode"), ("GPU-aaaa", "3"), strict=True):
        env = child.env
        assert env["GLM_IMAGE_WORKER_ID"] == child.worker_id and env["GLM_IMAGE_ROLE"] == role
        assert env["CUDA_VISIBLE_DEVICES"] == device and env["GLM_IMAGE_DEVICE"] == "cuda"
        assert (env["GLM_IMAGE_QUANTIZE"], env["GLM_IMAGE_OFFLOAD"]) == ("none", "none")
        assert env["GLM_IMAGE_SUPERVISED"] == "1"


def test_quantization_and_offload_of_the_plan_reach_the_worker(monkeypatch) -> None:
    children = supervisor_for(Settings(device="cuda"), given_gpus(["24GB"])).children
    assert len(children) == 1
    env = children[0].env
    assert (env["GLM_IMAGE_ROLE"], env["GLM_IMAGE_QUANTIZE"], env["GLM_IMAGE_OFFLOAD"]) == (
        "all",
        "int8",
        "model",
    )
    assert env["GLM_IMAGE_DEVICE"] == "cuda" and env["CUDA_VISIBLE_DEVICES"] == "0"
    # The worker process builds its settings from that environment.
    monkeypatch.setattr("os.environ", env)
    engine = EngineSettings.from_settings(Settings())
    assert (engine.role, engine.quantize, engine.offload, engine.device) == ("all", "int8", "model", "cuda")


def test_workers_on_the_cpu(monkeypatch) -> None:
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    settings = Settings(workers="prior,decode", device="cpu", torch_threads=None)
    supervisor = supervisor_for(settings, [])
    assert [(c.role, c.device) for c in supervisor.children] == [("prior", "cpu"), ("decode", "cpu")]
    for child in supervisor.children:
        assert "CUDA_VISIBLE_DEVICES" not in child.env and child.env["GLM_IMAGE_DEVICE"] == "cpu"
        # The cores are divided by the plan's workers.
        assert int(child.env["GLM_IMAGE_TORCH_THREADS"]) >= 1


def test_torch_threads_divide_the_cores_by_the_workers(monkeypatch) -> None:
    monkeypatch.setattr("os.cpu_count", lambda: 16)
    settings = Settings(workers="prior,decode,decode,decode", device="cpu", torch_threads=None)
    threads = {c.env["GLM_IMAGE_TORCH_THREADS"] for c in supervisor_for(settings, []).children}
    assert threads == {"4"}


def test_no_workers_for_the_api_alone() -> None:
    assert supervisor_for(Settings(workers=0), given_gpus(["80GB"])).children == []


@pytest.mark.parametrize("role", ["all", "prior", "decode"])
def test_the_heartbeat_says_the_role(role: str) -> None:
    store = Heartbeats()
    worker = Worker(WorkerSettings.from_settings(Settings(role=role, worker_id="w7")), store)  # type: ignore[arg-type]
    worker.set_state("loading")
    assert [(info.id, info.role, info.state) for info in store.seen] == [("w7", role, "loading")]
