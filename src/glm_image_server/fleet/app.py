"""The fleet on Ray Serve: API replicas (the FastAPI app as ingress, on CPUs) and worker replicas (one
model each, a GPU each where there are GPUs), placed and restarted by Ray. This is only composition:
every replica builds its part from the same Settings (GLM_IMAGE_* in its environment), and they meet in
the shared job store (PostgreSQL) and object store (S3) — requests never travel between replicas through
Ray, so a replica Ray restarts loses nothing the store's leases do not hand back.

`serve run glm_image_server.fleet.app:build [key=value ...]` or `serve run deploy/ray-serve.yaml`.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any

from fastapi import FastAPI
from ray import serve
from ray.serve.config import AutoscalingContext

from ..api.app import create_app
from ..config import Settings
from ..worker.main import start_worker

log = logging.getLogger("glm_image_server.fleet")


def api_app() -> FastAPI:
    """Built in each API replica: the server with no workers of its own (the worker replicas claim)."""
    return create_app(Settings(workers=0))


@serve.deployment(name="Api", ray_actor_options={"num_cpus": 1})
@serve.ingress(api_app)
class Api:
    """HTTP and WebSocket ingress; any replica answers for any job."""

    def __init__(self, workers: Any = None) -> None:
        self.workers = workers  # bound only so that one application deploys both


@serve.deployment(
    name="Worker",
    ray_actor_options={"num_cpus": 1, "num_gpus": 1},
    health_check_period_s=5,
    health_check_timeout_s=30,
    graceful_shutdown_timeout_s=30,
)
class Worker:
    """One model and its scheduler loop on a thread: claims batches from the store until stopped."""

    def __init__(self) -> None:
        self.settings = Settings()
        self.worker = start_worker(self.settings)

    def check_health(self) -> None:
        """Ray restarts a replica whose loop died (a dead process it notices by itself)."""
        if self.worker._loop is None or not self.worker._loop.is_alive():
            raise RuntimeError(f"worker {self.worker.id} stopped running jobs")

    def record_autoscaling_stats(self) -> dict[str, float]:
        """The queue, for `queue_policy`: the same for every replica (it is the store's)."""
        depth = self.worker.store.queue_depth()
        oldest = min((created for *_, created in depth), default=None)
        return {
            "queued_images": float(sum(images for _, _, images, _ in depth)),
            "oldest_queued_s": 0.0 if oldest is None else time.time() - oldest,
        }

    def __del__(self) -> None:
        worker = getattr(self, "worker", None)
        if worker is not None:
            worker.stop(timeout=10)  # its running jobs finish or go back to the queue with its lease


def queue_policy(ctx: AutoscalingContext, images_per_worker: float = 8.0) -> tuple[int, dict]:
    """Ray Serve autoscaling policy for the worker deployment: enough replicas for the queued images
    (`images_per_worker` each, e.g. the batch size), within the deployment's min and max."""
    metrics = ctx.aggregated_metrics.get("queued_images", {})
    queued = max(metrics.values(), default=0.0)  # every replica reports the same store
    busy = ctx.current_num_replicas if queued else 0
    wanted = max(busy, math.ceil(queued / images_per_worker))
    low, high = ctx.capacity_adjusted_min_replicas, ctx.capacity_adjusted_max_replicas
    return max(low, min(high, wanted)), {}


def build(args: dict[str, str]) -> serve.Application:
    """The application, for `serve run glm_image_server.fleet.app:build key=value ...`: api_replicas (2),
    worker_replicas (1), worker_gpus (1; 0 runs workers on CPUs), api_cpus (1)."""
    workers = Worker.options(
        num_replicas=int(args.get("worker_replicas", 1)),
        ray_actor_options={"num_cpus": 1, "num_gpus": float(args.get("worker_gpus", 1))},
    )
    api = Api.options(
        num_replicas=int(args.get("api_replicas", 2)),
        ray_actor_options={"num_cpus": float(args.get("api_cpus", 1))},
    )
    return api.bind(workers.bind())


app = build({})  # `serve run deploy/ray-serve.yaml` imports this; its deployments section overrides
