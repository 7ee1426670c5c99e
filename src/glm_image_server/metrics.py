"""Prometheus metrics, served at /metrics."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

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
