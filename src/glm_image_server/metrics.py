"""Prometheus metrics, served at /metrics. Workers count in their own processes: `serve` gives them
and itself one PROMETHEUS_MULTIPROC_DIR, and /metrics adds up every process's values."""

from __future__ import annotations

import os

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

ENGINE_CALLS = Counter("glm_image_engine_calls", "Engine.generate calls (one per batch of requests)")
IMAGES = Counter("glm_image_images_generated", "Images generated")
JOBS_SUBMITTED = Counter("glm_image_jobs_submitted", "Jobs accepted", ["api"])
JOBS_FINISHED = Counter("glm_image_jobs_finished", "Jobs finished", ["api", "status"])
STAGE_SECONDS = Histogram(
    "glm_image_stage_seconds",
    "Seconds per stage of a job",
    ["stage"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25, 60, 120, 300),
)


def exposition() -> tuple[bytes, str]:
    """The text format, summed over all processes when running multi-process."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(), CONTENT_TYPE_LATEST
