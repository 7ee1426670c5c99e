"""The fleet on Ray Serve: API replicas (the FastAPI app as ingress, on CPUs) and worker replicas (the
model, or one stage of it, a GPU each), placed and restarted by Ray. Only composition: every replica builds
its part from the same Settings (GLM_IMAGE_*) and they meet in the shared job store (PostgreSQL) and object
store (S3), never through Ray, so a restarted replica loses nothing the store's leases do not hand back.
Workers: `Worker` (the whole model), `PriorWorker` (AR) and `DecodeWorker` (DiT, VAE, post), each pool
scaling on its own stage's queue. `serve run glm_image_server.fleet.app:build [key=value ...]` or
`serve run deploy/ray-serve.yaml`."""

from __future__ import annotations

import math
import time
from typing import Any, ClassVar

from fastapi import FastAPI
from ray import serve
from ray.serve.config import AutoscalingContext

from ..api.app import create_app
from ..config import Settings
from ..worker.main import start_worker

WORKER_OPTIONS: dict[str, Any] = {
    "health_check_period_s": 5,
    "health_check_timeout_s": 30,
    "graceful_shutdown_timeout_s": 30,
}


def api_app() -> FastAPI:
    """Built in each API replica: the server with no workers of its own (the worker replicas claim)."""
    return create_app(Settings(workers=0))


@serve.deployment(name="Api", ray_actor_options={"num_cpus": 1})
@serve.ingress(api_app)
class Api:
    """HTTP and WebSocket ingress; any replica answers for any job."""

    def __init__(self, *workers: Any) -> None:
        self.workers = workers  # bound only so that one application deploys them all


class RoleWorker:
    """A worker of `role` and its scheduler loop on a thread: claims its stages' work until stopped."""

    role: ClassVar[str] = "all"

    def __init__(self) -> None:
        self.settings = Settings(role=self.role)  # the rest from GLM_IMAGE_* in the replica's environment
        self.worker = start_worker(self.settings)

    def check_health(self) -> None:
        """Ray restarts a replica whose loop died (a dead process it notices by itself)."""
        if self.worker._loop is None or not self.worker._loop.is_alive():
            raise RuntimeError(f"worker {self.worker.id} stopped running jobs")

    def record_autoscaling_stats(self) -> dict[str, float]:
        """The prior stage's queue (`queue_policy`), the same for every replica: it is the store's."""
        depth = self.worker.store.queue_depth()
        oldest = min((created for *_, created in depth), default=None)
        return {
            "queued_images": float(sum(images for _, _, images, _ in depth)),
            "oldest_queued_s": 0.0 if oldest is None else time.time() - oldest,
        }

    def __del__(self) -> None:
        worker = getattr(self, "worker", None)
        if worker is not None:
            worker.stop(timeout=10)  # its running jobs finish or go back to their stage with its lease


@serve.deployment(name="Worker", ray_actor_options={"num_cpus": 1, "num_gpus": 1}, **WORKER_OPTIONS)
class Worker(RoleWorker):
    """Both stages in one replica (the whole model on its GPU); scales on the queued images."""


@serve.deployment(name="PriorWorker", ray_actor_options={"num_cpus": 1, "num_gpus": 1}, **WORKER_OPTIONS)
class PriorWorker(RoleWorker):
    """The AR stage: claims prior batches and hands their tokens off; scales on the queued images."""

    role = "prior"


@serve.deployment(name="DecodeWorker", ray_actor_options={"num_cpus": 1, "num_gpus": 1}, **WORKER_OPTIONS)
class DecodeWorker(RoleWorker):
    """DiT, VAE and the post stage, one handed-off job at a time; scales on the jobs waiting for it."""

    role = "decode"

    def record_autoscaling_stats(self) -> dict[str, float]:
        """The decode stage's queue (`decode_policy`): jobs handed off, waiting for a decode worker."""
        return {"decode_waiting": float(self.worker.store.decode_waiting())}


def _replicas(ctx: AutoscalingContext, metric: str, per_replica: float) -> int:
    """Replicas for the reported backlog (`per_replica` each), no fewer than are busy while work waits."""
    waiting = max(ctx.aggregated_metrics.get(metric, {}).values(), default=0.0)  # all report one store
    busy = ctx.current_num_replicas if waiting else 0
    wanted = max(busy, math.ceil(waiting / per_replica))
    return max(ctx.capacity_adjusted_min_replicas, min(ctx.capacity_adjusted_max_replicas, wanted))


def queue_policy(ctx: AutoscalingContext, images_per_worker: float = 8.0) -> tuple[int, dict]:
    """Autoscaling of `Worker` and `PriorWorker`: a replica per `images_per_worker` queued images."""
    return _replicas(ctx, "queued_images", images_per_worker), {}


def decode_policy(ctx: AutoscalingContext, jobs_per_worker: float = 2.0) -> tuple[int, dict]:
    """Autoscaling of `DecodeWorker`: a replica per `jobs_per_worker` jobs handed off and waiting."""
    return _replicas(ctx, "decode_waiting", jobs_per_worker), {}


def build(args: dict[str, str]) -> serve.Application:
    """`serve run glm_image_server.fleet.app:build key=value ...`: api_replicas (2), api_cpus (1);
    worker_replicas (1), prior_replicas (0), decode_replicas (0), a role at 0 not deployed; and the GPUs
    of each role's replica: worker_gpus, prior_gpus, decode_gpus (1 each; 0: on CPUs). `split` below."""
    pools = []
    for deployment, role in ((Worker, "worker"), (PriorWorker, "prior"), (DecodeWorker, "decode")):
        replicas = int(args.get(f"{role}_replicas", 1 if role == "worker" else 0))
        if replicas > 0:
            options = {"num_cpus": 1, "num_gpus": float(args.get(f"{role}_gpus", 1))}
            pools.append(deployment.options(num_replicas=replicas, ray_actor_options=options).bind())
    if not pools:
        raise ValueError("no workers: set worker_replicas, or prior_replicas and decode_replicas")
    api_options = {"num_cpus": float(args.get("api_cpus", 1))}
    api = Api.options(num_replicas=int(args.get("api_replicas", 2)), ray_actor_options=api_options)
    return api.bind(*pools)


app = build({})  # one Api pool and one Worker pool (whole-model GPUs); its deployments section overrides
split = build({"worker_replicas": "0", "prior_replicas": "1", "decode_replicas": "1"})  # prior + decode
