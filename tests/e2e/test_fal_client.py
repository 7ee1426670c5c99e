"""The real fal-client library against `glm-image serve`, over TLS, unpatched: only its documented
environment (FAL_RUN_HOST, FAL_QUEUE_RUN_HOST, FAL_KEY, SSL_CERT_FILE; set by helpers.fal_env, which
tests/e2e/conftest.py imports before this module imports fal_client). The fal HTTP details no SDK
exposes are tested on the in-process app: tests/api/test_fal_http.py."""

from __future__ import annotations

import functools
import time

import fal_client
import pytest
from helpers.images import data_uri, download, png_bytes
from helpers.waiting import wait_for

T2I = "fal-ai/glm-image"
I2I = "fal-ai/glm-image/image-to-image"
SMALL = {"image_size": {"width": 96, "height": 64}, "num_inference_steps": 10}


def check_images(result: dict, width: int, height: int, count: int = 1, fmt: str = "JPEG") -> list[bytes]:
    assert len(result["images"]) == count
    assert result["has_nsfw_concepts"] == [False] * count
    blobs = []
    for image in result["images"]:
        data, decoded = download(image["url"])
        assert decoded.format == fmt
        assert decoded.size == (width, height) == (image["width"], image["height"])
        assert image["file_size"] == len(data)
        assert image["content_type"] == f"image/{fmt.lower()}"
        blobs.append(data)
    return blobs


def test_run_text_to_image(fal_server) -> None:
    result = fal_client.run(T2I, arguments={"prompt": "a sign that reads 'OPEN'", "seed": 7, **SMALL})
    assert result["seed"] == 7
    assert result["prompt"] == "a sign that reads 'OPEN'"
    assert result["timings"]["inference"] > 0
    (first,) = check_images(result, 96, 64)
    again = fal_client.run(T2I, arguments={"prompt": "a sign that reads 'OPEN'", "seed": 7, **SMALL})
    assert check_images(again, 96, 64) == [first]  # same seed, same bytes
    assert again["images"][0]["url"] != result["images"][0]["url"]  # each request its own files


def test_run_image_to_image_with_url_and_data_uri(fal_server, web) -> None:
    web.routes["/ref.png"] = (200, png_bytes((120, 90)), {"content-type": "image/png"})
    result = fal_client.run(
        I2I,
        arguments={
            "prompt": "make it blue",
            "image_urls": [web.url("/ref.png"), data_uri(png_bytes((50, 70), (0, 0, 255)))],
            "num_images": 2,
            "output_format": "png",
            **SMALL,
        },
    )
    check_images(result, 96, 64, count=2, fmt="PNG")
    assert ("GET", "/ref.png", b"") in web.received


def test_subscribe_sees_queue_progress_and_logs(fal_server, web) -> None:
    web.routes["/ref.png"] = (200, png_bytes(), {"content-type": "image/png"})
    # A job ahead of ours, so ours is seen waiting in the queue.
    blocker = fal_client.submit(T2I, arguments={"prompt": "ahead", "image_size": "square"})
    updates = []
    result = fal_client.subscribe(
        I2I,
        # 100 steps: long enough to be seen running between two reads of the change log (50 ms apart).
        arguments={"prompt": "edit", "image_urls": web.url("/ref.png"), **SMALL, "num_inference_steps": 100},
        with_logs=True,
        on_queue_update=updates.append,
    )
    check_images(result, 96, 64)
    kinds = [type(update).__name__ for update in updates]
    assert kinds[0] == "Queued" and updates[0].position in (0, 1)  # behind the blocker, if still queued
    assert "InProgress" in kinds and kinds[-1] == "Completed"
    assert kinds.index("Queued") < kinds.index("InProgress") < kinds.index("Completed")
    messages = [log["message"] for log in updates[-1].logs]
    assert any(m.startswith("Fetching 1 reference") for m in messages)
    assert any(m.startswith("DiT: 100/100 steps") for m in messages)
    assert all(log["level"] in ("INFO", "WARN", "ERROR", "DEBUG") for log in updates[-1].logs)
    assert updates[-1].metrics["inference_time"] > 0
    progress_logs = [u.logs for u in updates if type(u).__name__ == "InProgress"]
    assert any(progress_logs), "no logs while in progress"
    assert fal_client.result(T2I, blocker.request_id)["images"]


@pytest.mark.parametrize("app", [T2I, I2I])
def test_submit_status_result(fal_server, app: str) -> None:
    arguments = {"prompt": "poster", "seed": 11, **SMALL}
    if app == I2I:
        arguments["image_urls"] = [data_uri(png_bytes())]
    handle = fal_client.submit(app, arguments=arguments)
    # The app's sub-path is dropped from status/result URLs: both apps share one request store.
    assert "/image-to-image/" not in handle.status_url

    def completed() -> fal_client.Completed | None:
        status = fal_client.status(app, handle.request_id, with_logs=True)
        return status if isinstance(status, fal_client.Completed) else None

    status = wait_for(completed, 60, "the request to complete", 0.1)
    assert status.error is None and status.logs
    result = fal_client.result(app, handle.request_id)
    assert result["seed"] == 11
    check_images(result, 96, 64)
    # The other app's name finds the same request.
    other = I2I if app == T2I else T2I
    assert fal_client.result(other, handle.request_id) == result


def test_cancel_queued_and_running(fal_server, fal_http) -> None:
    long = {"prompt": "long", "image_size": "square_hd", "num_inference_steps": 100}
    running = fal_client.submit(T2I, arguments=long)
    queued = fal_client.submit(T2I, arguments={"prompt": "never runs", **SMALL})

    def in_progress() -> bool:
        return isinstance(fal_client.status(T2I, running.request_id), fal_client.InProgress)

    def completed(handle: fal_client.SyncRequestHandle) -> fal_client.Completed | None:
        status = fal_client.status(T2I, handle.request_id)
        return status if isinstance(status, fal_client.Completed) else None

    wait_for(in_progress, 60, "the long request to run", 0.05)

    response = fal_http.put(f"/queue/{T2I}/requests/{queued.request_id}/cancel")
    assert (response.status_code, response.json()) == (200, {"status": "OK"})
    cancelled_at = time.monotonic()
    fal_client.cancel(T2I, running.request_id)  # raises on an error status

    for handle in (running, queued):
        status = wait_for(functools.partial(completed, handle), 60, "the cancelled request to end", 0.05)
        assert status.error_type == "request_cancelled"
        with pytest.raises(fal_client.client.FalClientHTTPError):
            fal_client.result(T2I, handle.request_id)
    assert time.monotonic() - cancelled_at < 5  # stopped at a token or step, not after 100 steps

    again = fal_http.put(f"/queue/{T2I}/requests/{running.request_id}/cancel")
    assert (again.status_code, again.json()) == (400, {"status": "ALREADY_COMPLETED"})
    missing = fal_http.put(f"/queue/{T2I}/requests/00000000-0000-4000-8000-000000000000/cancel")
    assert (missing.status_code, missing.json()) == (404, {"status": "NOT_FOUND"})
