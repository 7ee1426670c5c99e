"""/metrics reports the queue read from the job store (any replica sees the whole fleet's queue): queued jobs
and images per batch key and the oldest queued job's age — the signal to scale workers on."""

from __future__ import annotations

import re
import time

from helpers.app import app_settings, serve_app


def gauges(text: str, name: str) -> dict[str, float]:
    """{label value (or ""): value} of one metric in Prometheus text."""
    found = {}
    for line in text.splitlines():
        match = re.fullmatch(rf'{name}(?:\{{batch_key="([^"]*)"\}})? (\S+)', line)
        if match:
            found[match.group(1) or ""] = float(match.group(2))
    return found


def test_queue_depth_per_batch_key_and_oldest_age(backend, tmp_path, model_cache) -> None:
    overrides = {"workers": 0}  # nobody claims: the jobs stay queued
    if backend.kind == "postgres":
        overrides["database_url"] = backend.url
    settings = app_settings(tmp_path / "data", model_cache, **overrides)
    running = serve_app(settings, None)
    client = next(running)
    try:
        text = client.get("/metrics").text
        assert gauges(text, "glm_image_queued_jobs") == {}
        assert gauges(text, "glm_image_oldest_queued_seconds") == {"": 0.0}
        small = {"prompt": "a", "image_size": {"width": 64, "height": 64}, "num_inference_steps": 10}
        wide = {**small, "image_size": {"width": 128, "height": 64}}
        for body in (small, {**small, "num_images": 3}, wide):
            assert client.post("/queue/fal-ai/glm-image", json=body).status_code == 200
        time.sleep(0.3)
        text = client.get("/metrics").text
        jobs, images = gauges(text, "glm_image_queued_jobs"), gauges(text, "glm_image_queued_images")
        assert jobs == {"64x64/0": 2, "128x64/0": 1}
        assert images == {"64x64/0": 4, "128x64/0": 1}
        assert 0.3 <= gauges(text, "glm_image_oldest_queued_seconds")[""] < 30
    finally:
        running.close()
