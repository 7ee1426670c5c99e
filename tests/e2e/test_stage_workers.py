"""`serve --workers prior,decode`: the AR stage in one worker process, the DiT and VAE in another, handed
over through the job store. With the real SDKs (fal-client, openai, runware) its images are the bytes of a
one-worker server for the same seeds, text-to-image and an edit with two references; /ready lists both
roles. A decode worker killed mid-DiT, or a prior worker killed mid-AR, costs no job: every one completes
once with the same bytes, and the AR stage runs again only for the job the prior worker was running.

The reference server is the session's fal server (one `all` worker). fal-client reads its host once, on
import; it reaches the split server through its two URL constants, set for the test."""

from __future__ import annotations

import asyncio
import base64
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import fal_client
import fal_client.client as fal_hosts
import helpers.fal_env as fal_env
import httpx
import pytest
from helpers.images import data_uri, png_bytes
from helpers.keys import FAL_KEY
from helpers.runware import MODEL
from helpers.serving import ServerProcess
from helpers.waiting import wait_for
from openai import OpenAI
from runware import IImageInference, Runware

QUEUE = "/queue/fal-ai/glm-image"
REFS = [data_uri(png_bytes((120, 90), (200, 30, 30))), data_uri(png_bytes((70, 50), (0, 0, 255)))]
FAST = {"image_size": {"width": 96, "height": 64}, "num_inference_steps": 10, "output_format": "png"}


def split_server(tmp_path: Path, model_cache: Path, **env: str) -> ServerProcess:
    pem = fal_env.SERVER_PEM
    return ServerProcess(
        tmp_path / "split",
        model_cache,
        tls=(pem, pem),
        env={"GLM_IMAGE_ALLOW_LOOPBACK_URLS": "1", **env},
        args=("--api-key", FAL_KEY, "--workers", "prior,decode"),
    ).start()


@pytest.fixture(scope="module")
def split(tmp_path_factory: pytest.TempPathFactory, model_cache: Path) -> Iterator[ServerProcess]:
    server = split_server(tmp_path_factory.mktemp("stages"), model_cache)
    yield server
    server.stop()


def http(server: ServerProcess) -> httpx.Client:
    return httpx.Client(base_url=server.base_url, headers={"authorization": f"Key {FAL_KEY}"}, timeout=120)


def fal_images(server: ServerProcess, monkeypatch: pytest.MonkeyPatch | None = None) -> list[bytes]:
    """fal-client: text-to-image (two images) and an edit of two references, by the queue."""
    if monkeypatch is not None:
        monkeypatch.setattr(fal_hosts, "RUN_URL_FORMAT", f"https://127.0.0.1:{server.port}/")
        monkeypatch.setattr(fal_hosts, "QUEUE_URL_FORMAT", f"https://127.0.0.1:{server.port}/queue/")
    t2i = fal_client.subscribe(
        "fal-ai/glm-image", arguments={"prompt": "a 'CAFE' sign", "seed": 31, "num_images": 2, **FAST}
    )
    edit = fal_client.subscribe(
        "fal-ai/glm-image/image-to-image",
        arguments={"prompt": "make it blue", "seed": 32, "image_urls": REFS, **FAST},
    )
    return [httpx.get(image["url"]).content for image in [*t2i["images"], *edit["images"]]]


def openai_images(server: ServerProcess) -> list[bytes]:
    with httpx.Client(verify=str(fal_env.TLS_DIR / "ca.pem")) as transport:
        client = OpenAI(
            base_url=f"{server.base_url}/v1", api_key=FAL_KEY, http_client=transport, max_retries=0
        )
        extra = {"seed": 33, "num_inference_steps": 10}
        made = client.images.generate(
            model="glm-image", prompt="a 'BAR' sign", size="96x64", extra_body=extra
        )
        edited = client.images.edit(
            model="glm-image",
            prompt="make it green",
            image=[("a.png", png_bytes((120, 90))), ("b.png", png_bytes((64, 96), (0, 90, 0)))],
            size="96x64",
            extra_body=extra,
        )
    return [base64.b64decode(item.b64_json) for item in [*made.data, *edited.data]]


def runware_images(server: ServerProcess) -> list[bytes]:
    async def scenario() -> list[bytes]:
        client = Runware(api_key=FAL_KEY, url=f"wss://127.0.0.1:{server.port}/v1")
        await client.connect()
        try:
            images = await client.imageInference(
                IImageInference(
                    model=MODEL,
                    positivePrompt="a 'TEA' sign",
                    width=128,
                    height=128,
                    steps=10,
                    seed=34,
                    outputType="base64Data",
                    outputFormat="PNG",
                    referenceImages=REFS,
                )
            )
        finally:
            await client.disconnect()
        return [base64.b64decode(image.imageBase64Data) for image in images]

    return asyncio.run(scenario())


def test_the_split_plan_makes_the_bytes_of_one_worker_with_every_sdk(fal_server, split, monkeypatch) -> None:
    with http(split) as client:
        roles = sorted(worker["role"] for worker in client.get("/ready").json()["workers"])
    assert roles == ["decode", "prior"]
    reference = fal_images(fal_server) + openai_images(fal_server) + runware_images(fal_server)
    made = openai_images(split) + runware_images(split)
    made = fal_images(split, monkeypatch) + made
    assert len(made) == len(reference) == 6
    assert made == reference


def submit(client: httpx.Client, size: int, steps: int, seed: int) -> str:
    body = {
        "prompt": f"a sign that reads 'JOB {seed}'",
        "image_size": {"width": size, "height": size},
        "num_inference_steps": steps,
        "seed": seed,
        "output_format": "png",
    }
    response = client.post(QUEUE, json=body)
    response.raise_for_status()
    return response.json()["request_id"]


def logs(client: httpx.Client, request_id: str) -> list[str]:
    body = client.get(f"{QUEUE}/requests/{request_id}/status", params={"logs": 1}).json()
    return [entry["message"] for entry in body["logs"]]


def worker(client: httpx.Client, role: str) -> dict:
    return next(
        w for w in client.get("/ready").json()["workers"] if w["role"] == role and w["state"] != "dead"
    )


def all_complete(client: httpx.Client, ids: list[str]) -> None:
    def done() -> bool:
        return all(client.get(f"{QUEUE}/requests/{i}/status").json()["status"] == "COMPLETED" for i in ids)

    wait_for(done, 240, "every job")


def bytes_of(client: httpx.Client, request_id: str) -> bytes:
    (image,) = client.get(f"{QUEUE}/requests/{request_id}").json()["images"]
    return httpx.get(image["url"], verify=str(fal_env.TLS_DIR / "ca.pem")).content


def same_as_one_worker(fal_server, split_client: httpx.Client, ids: list[str], shapes: list[tuple]) -> None:
    with http(fal_server) as reference:
        for request_id, (size, steps, seed) in zip(ids, shapes, strict=True):
            body = {
                "prompt": f"a sign that reads 'JOB {seed}'",
                "image_size": {"width": size, "height": size},
                "num_inference_steps": steps,
                "seed": seed,
                "output_format": "png",
            }
            (image,) = reference.post("/fal-ai/glm-image", json=body).json()["images"]
            expected = httpx.get(image["url"], verify=str(fal_env.TLS_DIR / "ca.pem")).content
            assert bytes_of(split_client, request_id) == expected, request_id


@pytest.mark.parametrize("stage", ["decode", "prior"])
def test_a_worker_killed_mid_stage_costs_no_job(fal_server, tmp_path, model_cache, stage: str) -> None:
    """The victim is the first of seven jobs: 256² with 40 steps (a long DiT) for the decode worker,
    1024² (4,096 AR tokens) for the prior worker; six quick jobs queue behind it."""
    server = split_server(tmp_path, model_cache, GLM_IMAGE_MAX_BATCH_SIZE="1")
    victim = (256, 40, 50) if stage == "decode" else (1024, 10, 50)
    shapes = [victim, *[(64, 10, 51 + i) for i in range(6)]]
    try:
        with http(server) as client:
            ids = [submit(client, *shape) for shape in shapes]
            marker = "Decode stage started" if stage == "decode" else "Started after"
            wait_for(
                lambda: any(marker in line for line in logs(client, ids[0])), 120, f"the victim's {stage}"
            )
            if stage == "decode":
                wait_for(lambda: any("DiT: " in line for line in logs(client, ids[0])), 60, "its DiT")
            os.kill(worker(client, stage)["pid"], signal.SIGKILL)
            all_complete(client, ids)
            lines = {i: logs(client, i) for i in ids}
            ar_runs = {i: sum(line.startswith("Generating ") for line in found) for i, found in lines.items()}
            decodes = {
                i: sum(line.startswith("Decode stage started") for line in found)
                for i, found in lines.items()
            }
            assert any("Interrupted" in line for line in lines[ids[0]]), lines[ids[0]]
            if stage == "decode":
                assert set(ar_runs.values()) == {1}, ar_runs  # the AR stage never ran again
                assert decodes[ids[0]] == 2 and "stored prior tokens" in " ".join(lines[ids[0]])
            else:
                assert ar_runs[ids[0]] == 2 and all(ar_runs[i] == 1 for i in ids[1:]), ar_runs
            assert all(decodes[i] == 1 for i in ids[1:]), decodes
            same_as_one_worker(fal_server, client, [ids[0], ids[1]], shapes[:2])
    finally:
        server.stop()
