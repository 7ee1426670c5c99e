"""`serve --quantize int8` on this CPU with the real SDKs: the worker loads the AR language model and the DiT
with int8 weights (torchao) and answers the OpenAI and Runware clients with images of the asked size, the
same bytes for the same seed; `--quantize fp8` on a CPU stops at start with one line naming the need."""

from __future__ import annotations

import asyncio
import base64
import io
import subprocess
import sys
from pathlib import Path

import pytest
from helpers.keys import PLAIN_KEY
from helpers.runware import MODEL
from helpers.serving import ServerProcess, child_env
from openai import OpenAI
from PIL import Image
from runware import IImageInference, Runware


@pytest.fixture(scope="module")
def int8_server(tmp_path_factory: pytest.TempPathFactory, model_cache: Path):
    server = ServerProcess(
        tmp_path_factory.mktemp("int8") / "data",
        model_cache,
        args=("--api-key", PLAIN_KEY, "--quantize", "int8"),
    ).start()
    yield server
    server.stop()


def test_openai_and_runware_clients_get_images_from_an_int8_server(int8_server) -> None:
    client = OpenAI(base_url=f"{int8_server.base_url}/v1", api_key=PLAIN_KEY, max_retries=0, timeout=120)
    extra = {"seed": 9, "num_inference_steps": 10}
    first = client.images.generate(model="glm-image", prompt="a 'MILK' sign", size="96x64", extra_body=extra)
    again = client.images.generate(model="glm-image", prompt="a 'MILK' sign", size="96x64", extra_body=extra)
    picture = Image.open(io.BytesIO(base64.b64decode(first.data[0].b64_json)))
    assert picture.size == (96, 64)
    assert first.data[0].b64_json == again.data[0].b64_json  # deterministic with its seed

    async def runware() -> list:
        sdk = Runware(api_key=PLAIN_KEY, url=f"ws://127.0.0.1:{int8_server.port}/v1")
        await sdk.connect()
        try:
            return await sdk.imageInference(
                IImageInference(
                    model=MODEL, positivePrompt="a 'TEA' sign", width=128, height=128, steps=10, seed=4
                )
            )
        finally:
            await sdk.disconnect()

    (image,) = asyncio.run(runware())
    assert image.imageURL and image.seed == 4
    assert "(role all) from" in int8_server.log() and "quantize int8, offload none)" in int8_server.log()


def test_fp8_on_a_cpu_is_refused_at_start(tmp_path: Path, model_cache: Path) -> None:
    command = [sys.executable, "-m", "glm_image_server.cli", "worker", "--data-dir", str(tmp_path)]
    command += ["--model", "tiny", "--device", "cpu", "--quantize", "fp8"]
    done = subprocess.run(
        command, env=child_env(model_cache, {}), capture_output=True, text=True, timeout=120
    )
    assert done.returncode != 0
    assert "quantize=fp8 needs a CUDA GPU" in done.stderr, done.stderr[-2000:]
