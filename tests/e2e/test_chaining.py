"""A generated image given back as the next edit's reference, with each dialect's real client and the
default URL rules (loopback refused): fal's Python client against `serve --tls self-signed` with any
FAL_KEY (the server has no keys), Runware's SDK with a result's imageUUID, OpenAI's SDK with an image
downloaded from a `url` response."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from helpers.images import decode
from helpers.keys import PLAIN_KEY
from helpers.runware import MODEL
from helpers.serving import ServerProcess
from openai import OpenAI
from runware import IImageInference, Runware

FAL_CHAIN = Path(__file__).parent / "scripts" / "fal_chain.py"


@pytest.fixture(scope="module")
def self_signed_server(tmp_path_factory: pytest.TempPathFactory, model_cache: Path):
    """Default settings (no keys, loopback URLs refused) plus `--tls self-signed`."""
    server = ServerProcess(
        tmp_path_factory.mktemp("self-signed") / "data",
        model_cache,
        env={"GLM_IMAGE_ALLOW_LOOPBACK_URLS": "0"},
        args=("--tls", "self-signed"),
    ).start()
    yield server
    server.stop()


def test_fal_client_edits_its_own_result_over_self_signed_tls(self_signed_server: ServerProcess) -> None:
    server = self_signed_server
    assert f"clients trust {server.ca}" in server.log()  # the path to trust is printed
    host = f"127.0.0.1:{server.port}"
    env = {
        **os.environ,
        "FAL_RUN_HOST": host,
        "FAL_QUEUE_RUN_HOST": f"{host}/queue",
        "SSL_CERT_FILE": str(server.ca),
        "FAL_KEY": "anything-at-all",  # the server has no keys: any key is accepted
    }
    done = subprocess.run(
        [sys.executable, str(FAL_CHAIN)], env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr + server.log()[-3000:]
    chained = json.loads(done.stdout.strip().splitlines()[-1])
    assert chained["first"].startswith(f"https://{host}/files/")
    assert "Completed" in chained["updates"]
    with httpx.Client(verify=server.verify(), timeout=30) as client:
        first, edit = (decode(client.get(chained[name]).content) for name in ("first", "edit"))
    assert first.size == edit.size == (96, 64) and chained["edit"] != chained["first"]
    assert "refused" not in server.log()


def test_runware_sdk_edits_a_result_by_its_image_uuid(plain_server: ServerProcess) -> None:
    def inference(**fields) -> IImageInference:
        return IImageInference(model=MODEL, width=128, height=160, steps=10, outputType="URL", **fields)

    async def scenario():
        client = Runware(api_key=PLAIN_KEY, url=f"ws://127.0.0.1:{plain_server.port}/v1")
        await client.connect()
        try:
            first = await client.imageInference(inference(positivePrompt="a red square", numberResults=2))
            edit = await client.imageInference(
                inference(positivePrompt="make it blue", referenceImages=[first[1].imageUUID])
            )
            return first, edit
        finally:
            await client.disconnect()

    first, (edit,) = asyncio.run(scenario())
    assert edit.imageUUID not in {image.imageUUID for image in first}
    assert decode(plain_server.client.get(edit.imageURL).content).size == (128, 160)


def test_openai_sdk_edits_an_image_downloaded_from_a_url_response(plain_server: ServerProcess) -> None:
    client = OpenAI(base_url=f"{plain_server.base_url}/v1", api_key=PLAIN_KEY, max_retries=0, timeout=120)
    steps = {"num_inference_steps": 10}
    first = client.images.generate(
        prompt="a red square", size="96x64", response_format="url", output_format="png", extra_body=steps
    )
    downloaded = httpx.get(first.data[0].url, timeout=30)
    assert downloaded.status_code == 200 and decode(downloaded.content).size == (96, 64)
    edit = client.images.edit(
        image=("previous.png", downloaded.content, "image/png"),
        prompt="make it blue",
        size="64x96",
        extra_body=steps,
    )
    assert decode(base64.b64decode(edit.data[0].b64_json)).size == (64, 96)
