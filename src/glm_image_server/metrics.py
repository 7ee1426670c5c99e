"""Prometheus metrics at /metrics, summed over processes (`serve` and its workers share one
PROMETHEUS_MULTIPROC_DIR). The queue is read from the job store at scrape time, so every API replica
reports the whole fleet's queue (the signal to scale workers on)."""

from __future__ import annotations

import os
from types import SimpleNamespace

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector

ENGINE_CALLS = Counter("glm_image_engine_calls", "AR batches run (one prior-stage engine call per batch)")
IMAGES = Counter("glm_image_images_generated", "Images generated")
# `key`: the submitting key's name (or hash) — one value per configured key, `-` without keys.
JOBS_SUBMITTED = Counter("glm_image_jobs_submitted", "Jobs accepted", ["api", "key"])
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


def queue_exposition(depth: list[tuple[str, int, int, float]], now: float, decode_waiting: int = 0) -> bytes:
    """The queue's gauges, from `JobStore.queue_depth()` rows: (key, jobs, images, oldest created_at), and
    the decode stage's (`JobStore.decode_waiting()`: jobs handed off, waiting for a decode worker)."""
    jobs = GaugeMetricFamily(
        "glm_image_queued_jobs", "Jobs waiting to run, per batch key", labels=["batch_key"]
    )
    images = GaugeMetricFamily(
        "glm_image_queued_images", "Images the queued jobs ask for, per batch key", labels=["batch_key"]
    )
    oldest = GaugeMetricFamily(
        "glm_image_oldest_queued_seconds", "Age of the oldest queued job (0: the queue is empty)"
    )
    for key, count, image_count, _ in depth:
        jobs.add_metric([key], count)
        images.add_metric([key], image_count)
    first = min((created for *_, created in depth), default=None)
    oldest.add_metric([], 0.0 if first is None else max(0.0, now - first))
    decode = GaugeMetricFamily(
        "glm_image_decode_waiting_jobs", "Jobs whose AR stage is done, waiting for a decode worker"
    )
    decode.add_metric([], decode_waiting)
    # generate_latest needs only something with `collect()`
    return generate_latest(SimpleNamespace(collect=lambda: [jobs, images, oldest, decode]))
