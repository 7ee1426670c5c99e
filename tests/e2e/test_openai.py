"""The OpenAI Images dialect with the real `openai` SDK, and its error envelope."""

from __future__ import annotations

import base64
import io

import httpx
import openai
import pytest
from helpers.images import png_bytes
from helpers.keys import PLAIN_KEY
from openai import OpenAI
from PIL import Image

STEPS = {"num_inference_steps": 10}


@pytest.fixture(scope="module")
def client(plain_server) -> OpenAI:
    return OpenAI(base_url=f"{plain_server.base_url}/v1", api_key=PLAIN_KEY, max_retries=0, timeout=120)


def picture(data: bytes) -> Image.Image:
    return Image.open(io.BytesIO(data))


def test_generate(client: OpenAI) -> None:
    result = client.images.generate(
        model="glm-image",
        prompt="a sign that reads 'OPEN'",
        size="128x96",
        n=2,
        extra_body={"seed": 5, **STEPS},
    )
    assert result.size == "128x96" and result.output_format == "png"
    images = [picture(base64.b64decode(item.b64_json)) for item in result.data]
    assert [image.size for image in images] == [(128, 96)] * 2
    assert result.data[0].revised_prompt == "a sign that reads 'OPEN'"
    again = client.images.generate(
        prompt="a sign that reads 'OPEN'", size="128x96", extra_body={"seed": 5, **STEPS}
    )
    assert again.data[0].b64_json == result.data[0].b64_json  # seed is honoured

    as_url = client.images.generate(
        prompt="poster", size="96x64", response_format="url", output_format="jpeg", extra_body=STEPS
    )
    downloaded = picture(httpx.get(as_url.data[0].url).content)
    assert downloaded.format == "JPEG" and downloaded.size == (96, 64)


def test_edit_with_one_image_and_with_a_list(client: OpenAI) -> None:
    one = client.images.edit(
        image=("ref.png", png_bytes((90, 60)), "image/png"),
        prompt="make it blue",
        size="64x96",
        extra_body=STEPS,
    )
    assert picture(base64.b64decode(one.data[0].b64_json)).size == (64, 96)
    several = client.images.edit(
        image=[("a.png", png_bytes((40, 40)), "image/png"), ("b.png", png_bytes((50, 30)), "image/png")],
        prompt="combine them",
        size="96x64",
        n=2,
        output_format="webp",
        extra_body=STEPS,
    )
    assert [picture(base64.b64decode(item.b64_json)).size for item in several.data] == [(96, 64)] * 2
    # size auto: the first image's aspect ratio at about a megapixel.
    auto = client.images.edit(
        image=("wide.png", png_bytes((200, 100)), "image/png"), prompt="x", extra_body=STEPS
    )
    assert auto.size == "1440x736" and picture(base64.b64decode(auto.data[0].b64_json)).size == (1440, 736)


def expect_error(call, status: type[openai.APIStatusError], param: str | None, text: str) -> None:
    with pytest.raises(status) as caught:
        call()
    error = caught.value.body
    assert error["param"] == param and text in error["message"], error
    assert error["type"] in ("invalid_request_error", "server_error")


def test_errors(client: OpenAI, plain_server) -> None:
    bad = openai.BadRequestError
    expect_error(lambda: client.images.generate(prompt="x", size="100x64"), bad, "size", "multiple of 32")
    expect_error(lambda: client.images.generate(prompt="x", size="big"), bad, "size", "WIDTHxHEIGHT")
    expect_error(lambda: client.images.generate(prompt="x", n=11), bad, "n", "less than or equal to 10")
    expect_error(lambda: client.images.generate(prompt=""), bad, "prompt", "at least 1 character")
    expect_error(lambda: client.images.generate(prompt="x", output_format="gif"), bad, "output_format", "")
    expect_error(lambda: client.images.generate(prompt="x", background="transparent"), bad, "background", "")
    png = ("a.png", png_bytes(), "image/png")
    expect_error(lambda: client.images.edit(image=[png] * 5, prompt="x"), bad, "image", "At most 4")
    expect_error(lambda: client.images.edit(image=png, mask=png, prompt="x"), bad, "mask", "not supported")
    not_image = ("a.png", b"hello", "image/png")
    expect_error(
        lambda: client.images.edit(image=not_image, prompt="x"), bad, "image", "not a readable image"
    )
    wrong_key = OpenAI(base_url=f"{plain_server.base_url}/v1", api_key="wrong", max_retries=0)
    expect_error(lambda: wrong_key.images.generate(prompt="x"), openai.AuthenticationError, None, "API key")
    raw = httpx.post(
        f"{plain_server.base_url}/v1/images/generations",
        content=b"{",
        headers={"authorization": f"Bearer {PLAIN_KEY}", "content-type": "application/json"},
    )
    assert raw.status_code == 400 and raw.json()["error"]["code"] == "invalid_json"
    missing = httpx.post(
        f"{plain_server.base_url}/v1/images/edits",
        data={"prompt": "x"},
        headers={"authorization": f"Bearer {PLAIN_KEY}"},
    )
    assert missing.status_code == 400 and missing.json()["error"]["param"] == "image"


# Long enough (100 DiT steps) that the stream sees the worker's previews as they come.
STREAMED = {"prompt": "a neon sign that reads 'LIVE'", "size": "256x256"}
SLOW = {"seed": 21, "num_inference_steps": 100}


def split(events: list, prefix: str) -> tuple[list, list]:
    kinds = [event.type for event in events]
    partial = [e for e in events if e.type == f"{prefix}.partial_image"]
    completed = [e for e in events if e.type == f"{prefix}.completed"]
    assert len(partial) + len(completed) == len(events), kinds
    assert events[-1].type == f"{prefix}.completed", kinds
    return partial, completed


def test_stream_partial_images_then_the_same_final_image(client: OpenAI) -> None:
    events = list(client.images.generate(**STREAMED, stream=True, partial_images=2, extra_body=SLOW))
    partial, (completed,) = split(events, "image_generation")
    assert len(partial) == 2 and [e.partial_image_index for e in partial] == list(range(len(partial)))
    for event in partial:
        preview = picture(base64.b64decode(event.b64_json))
        assert preview.format == "PNG" and preview.size == (32, 32)  # latent resolution: 1/8 of the side
        assert event.size == "256x256" and event.output_format == "png"
    assert completed.size == "256x256" and completed.usage.total_tokens == 0
    plain = client.images.generate(**STREAMED, extra_body=SLOW)
    assert completed.b64_json == plain.data[0].b64_json  # streaming changes nothing in the image


def test_stream_without_partial_images_sends_only_the_final_event(client: OpenAI) -> None:
    events = list(client.images.generate(**STREAMED, stream=True, partial_images=0, extra_body=SLOW))
    assert [event.type for event in events] == ["image_generation.completed"]
    assert picture(base64.b64decode(events[0].b64_json)).size == (256, 256)


def test_stream_edits(client: OpenAI) -> None:
    stream = client.images.edit(
        image=("ref.png", png_bytes((90, 60)), "image/png"),
        prompt="make it glow",
        size="256x256",
        output_format="jpeg",
        stream=True,
        partial_images=1,
        extra_body=SLOW,
    )
    partial, (completed,) = split(list(stream), "image_edit")
    assert len(partial) == 1 and completed.output_format == "jpeg"
    assert picture(base64.b64decode(completed.b64_json)).format == "JPEG"
    assert all(picture(base64.b64decode(e.b64_json)).format == "JPEG" for e in partial)


def test_stream_errors_arrive_as_the_sdk_expects(client: OpenAI) -> None:
    expect_error(
        lambda: client.images.generate(prompt="x", partial_images=2),
        openai.BadRequestError,
        "partial_images",
        "stream",
    )
    expect_error(
        lambda: client.images.generate(prompt="x", stream=True, partial_images=4),
        openai.BadRequestError,
        "partial_images",
        "less than or equal to 3",
    )
