"""Verified text rendering through real servers and the real clients of every dialect: the quoted text
read back per image, and the best of N candidates kept by it.

The tiny model draws noise, which no OCR can read, so the fal and Runware servers load the double
helpers.doubles:ScoreByPixels by name: it scores each image by a hash of its pixels, so the test can work
out which candidate must win from the candidates made plainly. The default server (`plain_server`) runs
the real OCR. (The OCR on drawn text, the scoring and the choice directly: tests/unit/test_text_check.py.)
"""

from __future__ import annotations

import asyncio
import base64

import fal_client
import httpx
from helpers.doubles import ScoreByPixels
from helpers.images import decode, download
from helpers.keys import RUNWARE_KEY
from helpers.runware import MODEL, task
from helpers.waiting import wait_for
from openai import OpenAI
from runware import IImageInference, Runware

T2I = "fal-ai/glm-image"
PROMPT = 'a shop sign that reads "OPEN LATE"'
SMALL = {"image_size": {"width": 96, "height": 64}, "num_inference_steps": 10, "output_format": "png"}


def scores(blobs: list[bytes]) -> list[float]:
    return [ScoreByPixels.score(decode(blob)) for blob in blobs]


def best_first(values: list[float]) -> list[int]:
    return sorted(range(len(values)), key=lambda i: -values[i])  # stable: ties in seed order


def expected_check(score: float, seed: int) -> dict:
    span = {"text": "OPEN LATE", "found": score >= 0.5, "similarity": score}
    return {"score": score, "seed": seed, "spans": [span], "detected_text": f"pixels {score}"}


def test_fal_client_gets_the_best_of_four(fal_server) -> None:
    plain = fal_client.run(T2I, arguments={"prompt": PROMPT, "seed": 11, "num_images": 4, **SMALL})
    assert "text_checks" not in plain  # not asked for: fal's output as fal has it
    blobs = [download(image["url"])[0] for image in plain["images"]]
    best = best_first(scores(blobs))[0]

    arguments = {"prompt": PROMPT, "seed": 11, "enable_text_check": True, "text_check_candidates": 4}
    handle = fal_client.submit(T2I, arguments={**arguments, **SMALL})
    result = handle.get()
    assert len(result["images"]) == 1 and result["seed"] == 11 + best
    assert result["text_checks"] == [expected_check(scores(blobs)[best], 11 + best)]
    assert download(result["images"][0]["url"])[0] == blobs[best]
    assert result["timings"]["text_check"] > 0
    alone = fal_client.run(T2I, arguments={"prompt": PROMPT, "seed": 11 + best, **SMALL})
    assert download(alone["images"][0]["url"])[0] == blobs[best]  # that seed alone: the same bytes

    logs = [log["message"] for log in fal_client.status(T2I, handle.request_id, with_logs=True).logs]
    assert any(line.startswith("Generating 4 candidate(s) to keep the best 1") for line in logs)
    assert any(line.startswith("Text check of 'OPEN LATE'") and "seed 14: score" in line for line in logs)
    assert f"Best of 4 candidates by text score: kept seed {11 + best} (score " in "\n".join(logs)


def test_fal_checks_every_image_without_candidates(fal_http) -> None:
    body = {"prompt": PROMPT, "seed": 30, "num_images": 2, "enable_text_check": True, **SMALL}
    result = fal_http.post(f"/{T2I}", json=body).json()
    assert [check["seed"] for check in result["text_checks"]] == [30, 31]  # seed order, none dropped
    values = scores([download(image["url"])[0] for image in result["images"]])
    assert [check["score"] for check in result["text_checks"]] == values
    unquoted = fal_http.post(f"/{T2I}", json={**body, "prompt": "a blank sign", "num_images": 1}).json()
    assert "text_checks" not in unquoted and len(unquoted["images"]) == 1
    too_many = fal_http.post(f"/{T2I}", json={**body, "text_check_candidates": 9})
    assert too_many.status_code == 422
    assert too_many.json()["detail"][0]["loc"] == ["body", "text_check_candidates"]


def test_runware_sdk_and_rest(runware_server) -> None:
    fields = {"positivePrompt": PROMPT, "width": 128, "height": 128, "steps": 10, "seed": 50}
    plain = runware_server.rest.post("/", json=[task(**fields, numberResults=2, outputFormat="PNG")])
    blobs = [httpx.get(item["imageURL"]).content for item in plain.json()["data"]]
    best = best_first(scores(blobs))[0]

    async def sdk():
        client = Runware(api_key=RUNWARE_KEY, url=f"ws://127.0.0.1:{runware_server.port}/v1")
        await client.connect()
        try:
            return await client.imageInference(
                IImageInference(
                    model=MODEL,
                    outputFormat="PNG",
                    includeCost=True,
                    extraArgs={"textCheck": {"candidates": 2}},  # the SDK's way to pass a field through
                    **fields,
                )
            )
        finally:
            await client.disconnect()

    [image] = asyncio.run(sdk())
    assert image.seed == 50 + best and httpx.get(image.imageURL).content == blobs[best]
    assert image.cost == round(2 * 128 * 128 / 1e6 * 0.05, 10)  # both candidates

    checked = task(**fields, numberResults=1, outputFormat="PNG", textCheck={"candidates": 2})
    [item] = runware_server.rest.post("/", json=[checked]).json()["data"]
    score = scores(blobs)[best]
    assert item["seed"] == 50 + best
    assert item["textCheck"] == {
        "score": score,
        "spans": [{"text": "OPEN LATE", "found": score >= 0.5, "similarity": score}],
        "detectedText": f"pixels {score}",
    }
    error = runware_server.rest.post("/", json=[{**checked, "textCheck": {"candidates": 0}}]).json()
    assert error["errors"][0]["code"] == "invalidCandidates"


def test_openai_sdk_through_extra_body(runware_server) -> None:
    client = OpenAI(base_url=f"{runware_server.base_url}/v1", api_key=RUNWARE_KEY, max_retries=0, timeout=120)
    common = {"prompt": PROMPT, "size": "96x64"}
    plain = client.images.generate(n=3, extra_body={"seed": 70, "num_inference_steps": 10}, **common)
    blobs = [base64.b64decode(item.b64_json) for item in plain.data]
    assert all(getattr(item, "text_check", None) is None for item in plain.data)
    order = best_first(scores(blobs))[:2]

    extra = {"seed": 70, "num_inference_steps": 10, "text_check": True, "text_check_candidates": 3}
    result = client.images.generate(n=2, extra_body=extra, **common)
    assert [base64.b64decode(item.b64_json) for item in result.data] == [blobs[i] for i in order]
    checks = [item.text_check for item in result.data]  # extra fields stay readable on the SDK's models
    assert checks == [expected_check(scores(blobs)[i], 70 + i) for i in order]


def test_the_real_ocr_in_the_default_server(plain_server) -> None:
    body = {"prompt": "a sign that reads 'OPEN'", "enable_text_check": True, "enable_safety_checker": False}
    submitted = plain_server.client.post(
        f"/queue/{T2I}", json={**body, **SMALL, "image_size": "square"}
    ).json()

    def completed() -> bool:
        return plain_server.client.get(submitted["status_url"]).json()["status"] == "COMPLETED"

    wait_for(completed, 120, "the job", 0.1)
    result = plain_server.client.get(submitted["response_url"])
    [check] = result.json()["text_checks"]
    assert check["spans"][0]["text"] == "OPEN" and not check["spans"][0]["found"]  # noise reads as no sign
    assert check["score"] < 1 and result.json()["timings"]["text_check"] > 0
    logs = plain_server.client.get(submitted["status_url"], params={"logs": 1}).json()["logs"]
    assert any(log["message"].startswith("Text check of 'OPEN' (") for log in logs)
