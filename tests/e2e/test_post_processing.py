"""Safety checking, prompt expansion, cost and timings, through the fal and Runware dialects of a server.
(The checker, quoted-text finder and pricing directly: tests/unit/test_post.py.)"""

from __future__ import annotations

import io
import json
import time
import uuid

import httpx
import numpy as np
import pytest
from helpers.serving import ServerProcess, WebServer
from helpers.waiting import wait_for
from PIL import Image

from glm_image_server.worker.prompting import SYSTEM_PROMPT

SMALL = {"image_size": {"width": 128, "height": 128}, "num_inference_steps": 10}
STAGES = {"queue", "fetch", "expansion", "ar", "dit", "vae", "safety", "encode", "inference"}


def is_black(url: str) -> bool:
    image = Image.open(io.BytesIO(httpx.get(url).content)).convert("RGB")
    return int(np.asarray(image).max()) <= 8  # JPEG of pure black stays near 0


@pytest.fixture(scope="module")
def llm():
    """A local server speaking OpenAI's chat-completions protocol, scripted by the user prompt."""
    server = WebServer()

    def complete(handler):
        body = json.loads(server.received[-1][2])
        prompt = body["messages"][-1]["content"]
        if "slow" in prompt:
            time.sleep(3)
        reply = "A detailed photograph of a storefront at dusk, its sign reading a word."
        if "drop" not in prompt:
            reply = f"A detailed photograph of {prompt}, warm light, crisp focus, photographic style."
        answer = {"choices": [{"index": 0, "message": {"role": "assistant", "content": reply}}]}
        return 200, json.dumps(answer).encode(), {"content-type": "application/json"}

    server.routes["/v1/chat/completions"] = complete
    yield server
    server.close()


@pytest.fixture(scope="module")
def featured(tmp_path_factory, model_cache, llm):
    """A server with a flagging checker double, prompt expansion against `llm`, and $0.10/MP."""
    env = {
        "GLM_IMAGE_SAFETY_CHECKER": "helpers.doubles:FlagOddImages",  # tests/ is on the server's path
        "GLM_IMAGE_EXPANSION_BASE_URL": llm.url("/v1"),
        "GLM_IMAGE_EXPANSION_MODEL": "glm-test",
        "GLM_IMAGE_EXPANSION_API_KEY": "llm-key",
        "GLM_IMAGE_EXPANSION_TIMEOUT_S": "1",
        "GLM_IMAGE_PRICE_PER_MEGAPIXEL": "0.1",
    }
    server = ServerProcess(tmp_path_factory.mktemp("featured") / "data", model_cache, env=env).start()
    with httpx.Client(base_url=server.base_url, timeout=120) as server.client:
        yield server
    server.stop()


def test_flagged_images_are_blacked_out_in_fal_results(featured) -> None:
    result = featured.client.post(
        "/fal-ai/glm-image", json={"prompt": "three", "num_images": 3, **SMALL}
    ).json()
    assert result["has_nsfw_concepts"] == [False, True, False]
    assert [is_black(image["url"]) for image in result["images"]] == [False, True, False]
    assert set(result["timings"]) >= STAGES and result["timings"]["inference"] > 0
    unchecked = featured.client.post(
        "/fal-ai/glm-image",
        json={"prompt": "three", "num_images": 3, "enable_safety_checker": False, **SMALL},
    ).json()
    assert unchecked["has_nsfw_concepts"] == [False] * 3
    assert not any(is_black(image["url"]) for image in unchecked["images"])


def test_flags_and_cost_in_runware_results(featured) -> None:
    def run(**fields) -> list[dict]:
        task = {
            "taskType": "imageInference",
            "taskUUID": str(uuid.uuid4()),
            "model": "runware:glm-image@0",
            "positivePrompt": "three",
            "width": 128,
            "height": 256,
            "steps": 10,
            "numberResults": 3,
            "includeCost": True,
            **fields,
        }
        return featured.client.post("/v1", json=[task]).json()["data"]

    checked = run(safety={"checkContent": True})
    assert [item["NSFWContent"] for item in checked] == [False, True, False]
    assert is_black(checked[1]["imageURL"]) and not is_black(checked[0]["imageURL"])
    assert [item["cost"] for item in checked] == [pytest.approx(0.1 * 128 * 256 / 1e6)] * 3
    assert [item["NSFWContent"] for item in run()] == [False] * 3
    assert [item["NSFWContent"] for item in run(safety={"checkContent": True, "mode": "none"})] == [False] * 3


def _logs(client: httpx.Client, body: dict) -> tuple[dict, list[str]]:
    submitted = client.post("/queue/fal-ai/glm-image", json=body).json()

    def finished() -> httpx.Response | None:
        status = client.get(submitted["status_url"], params={"logs": 1})
        return status if status.status_code != 202 else None

    status = wait_for(finished, 120, "the job to finish", 0.1)
    result = client.get(submitted["response_url"]).json()
    return result, [log["message"] for log in status.json()["logs"]]


def test_prompt_expansion(featured, llm) -> None:
    prompt = 'a bakery sign that reads "CROISSANT" and it\'s snowing'
    result, logs = _logs(featured.client, {"prompt": prompt, "enable_prompt_expansion": True, **SMALL})
    assert (
        result["prompt"] == f"A detailed photograph of {prompt}, warm light, crisp focus, photographic style."
    )
    assert any(line.startswith("Prompt expanded by glm-test") for line in logs)
    request = json.loads(llm.received[-1][2])
    assert request["model"] == "glm-test" and request["messages"][0]["content"] == SYSTEM_PROMPT
    assert request["messages"][1] == {"role": "user", "content": prompt}

    dropped = "a shop sign that reads 'OPEN LATE' (drop it)"
    result, logs = _logs(featured.client, {"prompt": dropped, "enable_prompt_expansion": True, **SMALL})
    assert result["prompt"] == dropped
    assert any("dropped the quoted text 'OPEN LATE'" in line for line in logs)

    slow = "a slow sign"
    started = time.monotonic()
    result, logs = _logs(featured.client, {"prompt": slow, "enable_prompt_expansion": True, **SMALL})
    assert result["prompt"] == slow and any("timed out after 1 s" in line for line in logs)
    assert result["timings"]["expansion"] < 2.5  # gave up after its 1 s, not the LLM's 3 s
    assert time.monotonic() - started < 30  # and the job went on at once (generous: 2 busy cores)

    plain, logs = _logs(featured.client, {"prompt": "no expansion", **SMALL})
    assert plain["prompt"] == "no expansion" and not any("expan" in line for line in logs)


def test_real_nudenet_passes_a_benign_image(plain_server) -> None:
    result, logs = _logs(plain_server.client, {"prompt": "a sign that reads 'OPEN'", **SMALL})
    assert result["has_nsfw_concepts"] == [False]
    assert any(line.startswith("Safety checker: no image flagged") for line in logs)
    assert result["timings"]["safety"] > 0
    assert not is_black(result["images"][0]["url"])
    unconfigured, logs = _logs(plain_server.client, {"prompt": "x", "enable_prompt_expansion": True, **SMALL})
    assert unconfigured["prompt"] == "x" and any("not configured" in line for line in logs)
