"""The fleet's Ray Serve config parses with Ray's own schema and names importable code: a split fleet of
an AR pool and a decode pool, each scaled by its own policy; `build` composes the deployments of each role
asked for; the worker autoscaling policies follow their stage's queue within the deployment's bounds, and
a decode replica reports the jobs handed off and waiting in the store."""

from __future__ import annotations

import importlib
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import yaml
from helpers.jobs import make_job
from helpers.stores import sqlite_store
from ray.serve.schema import ServeDeploySchema

from glm_image_server.core import transitions
from glm_image_server.core.handoff import Handoff
from glm_image_server.fleet.app import DecodeWorker, PriorWorker, build, decode_policy, queue_policy
from glm_image_server.metrics import queue_exposition

CONFIG = Path(__file__).resolve().parents[2] / "deploy" / "ray-serve.yaml"


def resolve(path: str):
    module, name = path.split(":")
    return getattr(importlib.import_module(module), name)


def test_the_deploy_config_is_a_valid_and_importable_split_fleet() -> None:
    config = ServeDeploySchema.model_validate(yaml.safe_load(CONFIG.read_text()))
    (app,) = config.applications
    built = resolve(app.import_path)._bound_deployment
    deployments = {d.name: d for d in app.deployments}
    assert set(deployments) == {"Api", "PriorWorker", "DecodeWorker"}
    assert {built.name, *(pool._bound_deployment.name for pool in built.init_args)} == set(deployments)
    policies = {}
    for name in ("PriorWorker", "DecodeWorker"):
        assert deployments[name].ray_actor_options.num_gpus == 1
        policies[name] = resolve(deployments[name].autoscaling_config["policy"]["policy_function"])
    assert policies == {"PriorWorker": queue_policy, "DecodeWorker": decode_policy}


def pools(app) -> dict[str, tuple[int, float, str]]:
    """Each worker deployment an application binds: (replicas, GPUs per replica, the role it runs)."""
    found = {}
    for pool in app._bound_deployment.init_args:
        d = pool._bound_deployment
        found[d.name] = (d.num_replicas, d.ray_actor_options["num_gpus"], d.func_or_class.role)
    return found


def test_build_composes_the_pools_asked_for() -> None:
    assert pools(build({})) == {"Worker": (1, 1.0, "all")}
    split = build({"worker_replicas": "0", "prior_replicas": "1", "decode_replicas": "3", "decode_gpus": "0"})
    assert pools(split) == {"PriorWorker": (1, 1.0, "prior"), "DecodeWorker": (3, 0.0, "decode")}
    with pytest.raises(ValueError, match="no workers"):
        build({"worker_replicas": "0"})


def context(metric: str, value: float | None, current: int, low: int = 1, high: int = 8) -> SimpleNamespace:
    metrics = {} if value is None else {metric: {"r1": value, "r2": value}}
    return SimpleNamespace(
        aggregated_metrics=metrics,
        current_num_replicas=current,
        capacity_adjusted_min_replicas=low,
        capacity_adjusted_max_replicas=high,
    )


def test_queue_policy_scales_on_queued_images_within_bounds() -> None:
    def queued(value: float | None, current: int, **bounds: int) -> SimpleNamespace:
        return context("queued_images", value, current, **bounds)

    assert queue_policy(queued(None, 3))[0] == 1  # nothing reported: down to the minimum
    assert queue_policy(queued(0, 3))[0] == 1
    assert queue_policy(queued(17, 1))[0] == 3  # 8 images per worker
    assert queue_policy(queued(500, 2))[0] == 8  # capped
    assert queue_policy(queued(4, 5))[0] == 5  # work queued: never scale down under running replicas
    assert queue_policy(queued(16, 1, low=0, high=1), images_per_worker=4)[0] == 1
    assert queue_policy(context("decode_waiting", 40, 1))[0] == 1  # the decode queue is not its business


def test_decode_policy_scales_on_the_jobs_waiting_for_a_decode_worker() -> None:
    def waiting(value: float | None, current: int, **bounds: int) -> SimpleNamespace:
        return context("decode_waiting", value, current, **bounds)

    assert decode_policy(waiting(None, 3))[0] == 1
    assert decode_policy(waiting(0, 4))[0] == 1
    assert decode_policy(waiting(7, 1))[0] == 4  # 2 waiting jobs per worker
    assert decode_policy(waiting(7, 1), jobs_per_worker=1)[0] == 7
    assert decode_policy(waiting(100, 2, high=12))[0] == 12
    assert decode_policy(waiting(1, 5))[0] == 5  # jobs wait: never scale down under running replicas
    assert decode_policy(context("queued_images", 64, 1))[0] == 1  # the AR queue is the prior pool's


def replica(deployment, store):
    """A replica of `deployment` on `store` without its model (what Ray would construct, minus loading)."""
    instance = deployment.func_or_class.__new__(deployment.func_or_class)
    instance.worker = SimpleNamespace(store=store, stop=lambda timeout: None)
    return instance


def test_each_pool_reports_its_own_stage_queue(tmp_path: Path) -> None:
    store = sqlite_store(tmp_path / "jobs.db")
    try:
        for seed in range(3):
            assert store.create(make_job(seed=seed, num_images=2))
        handoff = Handoff("p", np.zeros((2, 16), dtype=np.int32), timings={"ar": 1.0}, handed_at=1.0)
        (first,) = store.claim_batch("prior-1", 2, 30)
        assert store.hand_off(first.id, handoff.to_bytes(), transitions.claim_of(first))
        decode, prior = replica(DecodeWorker, store), replica(PriorWorker, store)
        assert decode.record_autoscaling_stats() == {"decode_waiting": 1.0}
        assert prior.record_autoscaling_stats()["queued_images"] == 4.0  # the two jobs still queued
        exposed = queue_exposition(store.queue_depth(), time.time(), store.decode_waiting()).decode()
        assert "\nglm_image_decode_waiting_jobs 1.0\n" in exposed  # /metrics shows the decode pool's queue
        store.claim_batch("decode-1", 1, 30, stage="decode")
        assert decode.record_autoscaling_stats() == {"decode_waiting": 0.0}  # claimed: no longer waiting
    finally:
        store.close()
