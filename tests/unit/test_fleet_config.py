"""The fleet's Ray Serve config parses with Ray's own schema and names importable code; the worker
autoscaling policy follows the store's queue within the deployment's bounds."""

from __future__ import annotations

import importlib
from pathlib import Path
from types import SimpleNamespace

import yaml
from ray.serve.schema import ServeDeploySchema

from glm_image_server.fleet.app import queue_policy

CONFIG = Path(__file__).resolve().parents[2] / "deploy" / "ray-serve.yaml"


def resolve(path: str):
    module, name = path.split(":")
    return getattr(importlib.import_module(module), name)


def test_the_deploy_config_is_valid_and_importable() -> None:
    config = ServeDeploySchema.model_validate(yaml.safe_load(CONFIG.read_text()))
    (app,) = config.applications
    resolve(app.import_path)
    deployments = {d.name: d for d in app.deployments}
    assert set(deployments) == {"Api", "Worker"}
    assert deployments["Worker"].ray_actor_options.num_gpus == 1
    policy = deployments["Worker"].autoscaling_config["policy"]["policy_function"]
    assert resolve(policy) is queue_policy


def context(queued: float | None, current: int, low: int = 1, high: int = 8) -> SimpleNamespace:
    metrics = {} if queued is None else {"queued_images": {"r1": queued, "r2": queued}}
    return SimpleNamespace(
        aggregated_metrics=metrics,
        current_num_replicas=current,
        capacity_adjusted_min_replicas=low,
        capacity_adjusted_max_replicas=high,
    )


def test_queue_policy_scales_on_queued_images_within_bounds() -> None:
    assert queue_policy(context(None, 3))[0] == 1  # nothing reported: down to the minimum
    assert queue_policy(context(0, 3))[0] == 1
    assert queue_policy(context(17, 1))[0] == 3  # 8 images per worker
    assert queue_policy(context(500, 2))[0] == 8  # capped
    assert queue_policy(context(4, 5))[0] == 5  # work queued: never scale down under running replicas
    assert queue_policy(context(16, 1, low=0, high=1), images_per_worker=4)[0] == 1
