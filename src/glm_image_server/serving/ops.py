"""The server's own state for its operators, read from the job store: whether it is ready (a worker with
its model loaded, disk to spare), its workers, and the ops view of the playground. No HTTP here."""

from __future__ import annotations

import time

from .. import metrics
from ..core.job import Job
from .services import Services

LIVE_STATES = ("ready", "busy")
OPS_FIELDS = {"id", "api", "app", "status", "stage", "created_at", "started_at", "finished_at", "worker_id"}


def readiness(services: Services) -> tuple[bool, list[dict]]:
    """Ready when the workers with their model loaded and a live heartbeat run both stages between them (an
    `all` worker, or a `prior` and a `decode` one). Blocking."""
    now, settings = time.time(), services.settings
    workers = [w for w in services.store.workers() if now - w.heartbeat_at < max(60.0, 4 * settings.lease_s)]
    listed = [
        w.model_dump(mode="json", include={"id", "pid", "device", "role", "state", "jobs", "restarts"})
        for w in workers
    ]
    live = {w.role for w in workers if w.state in LIVE_STATES and now - w.heartbeat_at < settings.lease_s}
    return "all" in live or {"prior", "decode"} <= live, listed


def problems(services: Services, has_workers: bool) -> list[str]:
    """What keeps the server from taking work, in words."""
    found = [] if has_workers else ["no worker has its model loaded for each stage (prior and decode)"]
    if services.jobs.drain_by is not None:
        found.append("the server is shutting down")
    if disk := services.admission.disk.problem():
        found.append(disk)
    return found


def _ops_job(services: Services, job: Job) -> dict:
    """A job as the ops view lists it."""
    request = job.request
    return {
        **job.model_dump(mode="json", include=OPS_FIELDS),
        "key": services.jobs.key_label(job.owner),
        "size": f"{request.width}x{request.height}",
        "images": request.num_images,
        "steps": request.num_inference_steps,
        "timings": job.result.timings if job.result else None,
        "error": job.error.message if job.error else None,
    }


def ops_view(services: Services, owner: str | None, limit: int = 30) -> dict:
    """The playground's ops tab: workers, queue depth, the caller's key's recent jobs. Blocking."""
    ready, workers = readiness(services)
    recent = [job for job in services.store.recent(10 * limit) if job.owner == owner][:limit]
    return {
        "ready": ready,
        "workers": workers,
        "queue_depth": services.store.queued_count(),
        "jobs": [_ops_job(services, job) for job in recent],
    }


def prometheus(services: Services) -> tuple[bytes, str]:
    """The metrics page: the processes' counters and histograms, and the queue by batch key. Blocking."""
    body, content_type = metrics.exposition()
    store = services.store
    queue = metrics.queue_exposition(store.queue_depth(), time.time(), store.decode_waiting())
    return body + queue, content_type
