"""Invalid requests fail on construction with a typed error naming the field and what is allowed."""

from __future__ import annotations

import pytest
from PIL import Image

from glm_image_server.core.request import (
    GenerationRequest,
    InvalidRequest,
    OutputSpec,
    image_seed,
    parse_size,
    size_like,
)

REF = "data:image/png;base64,AAAA"  # references are locators; they are fetched and decoded by a worker


@pytest.mark.parametrize(
    ("fields", "field", "allowed"),
    [
        ({"width": 1000}, "width", "multiples of 32 from 64 to 2048"),
        ({"height": 48}, "height", "multiples of 32 from 64 to 2048"),
        ({"width": 4096}, "width", "multiples of 32 from 64 to 2048"),
        ({"width": 32}, "width", "multiples of 32 from 64 to 2048"),
        ({"num_inference_steps": 0}, "num_inference_steps", "1..100"),
        ({"num_inference_steps": 101}, "num_inference_steps", "1..100"),
        ({"references": (REF,) * 5}, "references", "0..4 images"),
        ({"prompt": ""}, "prompt", "1..10000 characters"),
        ({"prompt": "   "}, "prompt", "1..10000 characters"),
        ({"prompt": "x" * 10_001}, "prompt", "1..10000 characters"),
        ({"num_images": 0}, "num_images", "1..20"),
        ({"guidance_scale": -1.0}, "guidance_scale", "1..50"),
        ({"guidance_scale": 0.5}, "guidance_scale", "1..50"),
        ({"guidance_scale": 50.5}, "guidance_scale", "1..50"),
        ({"guidance_scale": True}, "guidance_scale", "1..50"),
        ({"num_images": 21}, "num_images", "1..20"),
        ({"seed": -1}, "seed", f"0..{2**63 - 1}"),
        ({"seed": 2**63}, "seed", f"0..{2**63 - 1}"),
        ({"references": ("ftp://host/a.png",)}, "references[0]", "URLs or data URIs"),
        ({"references": (REF, "/etc/passwd")}, "references[1]", "URLs or data URIs"),
    ],
)
def test_invalid_fields_name_field_and_range(fields: dict, field: str, allowed: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        GenerationRequest(**{"prompt": "a cat", **fields})
    assert caught.value.field == field
    assert caught.value.allowed == allowed
    assert field in str(caught.value) and allowed in str(caught.value)


def test_unknown_size_preset_lists_the_valid_ones() -> None:
    with pytest.raises(InvalidRequest) as caught:
        parse_size("square_xl")
    assert caught.value.field == "size"
    assert "square_hd" in caught.value.allowed and "WIDTHxHEIGHT" in caught.value.allowed


def test_sizes_parse_from_presets_and_wxh() -> None:
    assert parse_size("square_hd") == (1024, 1024)
    assert parse_size("landscape_16_9") == (1024, 576)
    assert parse_size("1024x768") == (1024, 768)


def test_valid_edges_are_accepted() -> None:
    refs = (REF, "https://example.com/a.png", "http://example.com/b.png", "stored:upload-key")
    low = GenerationRequest(
        prompt="x", width=64, height=2048, num_inference_steps=1, guidance_scale=1.0, seed=0, references=refs
    )
    assert (low.width, low.height, low.num_inference_steps, low.guidance_scale) == (64, 2048, 1, 1.0)
    assert low.seed == 0 and low.references == refs and low.seeds == [0]
    high = GenerationRequest(
        prompt="y" * 10_000,
        width=2048,
        height=64,
        num_inference_steps=100,
        guidance_scale=50.0,
        seed=2**63 - 1,
        num_images=20,
    )
    assert (high.width, high.height, high.num_inference_steps, high.guidance_scale) == (2048, 64, 100, 50.0)
    assert high.num_images == 20 and len(high.seeds) == 20 and high.seeds[1] == 0  # the seed wraps
    assert high.references == () and len(high.prompt) == 10_000
    assert low.batch_key != high.batch_key


def test_output_spec_validation() -> None:
    assert OutputSpec() == OutputSpec(format="jpeg", quality=95, safety_check=False)
    with pytest.raises(InvalidRequest) as caught:
        OutputSpec(format="gif")
    assert caught.value.field == "output_format" and caught.value.allowed == "jpeg, png, webp"
    for quality in (0, 101):
        with pytest.raises(InvalidRequest) as caught:
            OutputSpec(quality=quality)
        assert caught.value.field == "output_quality" and caught.value.allowed == "1..100"


@pytest.mark.parametrize(("size", "expected"), [((1000, 750), (1184, 896)), ((300, 200), (1248, 832))])
def test_auto_size_keeps_aspect_at_about_a_megapixel(
    size: tuple[int, int], expected: tuple[int, int]
) -> None:
    width, height = size_like(Image.new("RGB", size))
    assert (width, height) == expected
    assert width % 32 == 0 and height % 32 == 0


def test_image_seeds_count_up_and_wrap() -> None:
    assert [image_seed(7, i) for i in range(3)] == [7, 8, 9]
    assert image_seed(2**63 - 1, 1) == 0
