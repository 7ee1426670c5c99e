"""Reference images of awkward sizes and modes decode, fit the model's grid, and edit without crashing."""

from __future__ import annotations

import io

import numpy as np
import pytest
from helpers.images import data_uri, png_bytes
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from glm_image_server.config import Settings
from glm_image_server.core.request import GenerationRequest, InvalidRequest, size_like
from glm_image_server.engine.engine import Engine
from glm_image_server.engine.references import MAX_ASPECT, crop_to_aspect, fitted_size
from glm_image_server.engine.tiny import build_processor
from glm_image_server.media.fetch import ImageFetcher
from glm_image_server.media.inputs import decode_image
from glm_image_server.media.references import ReferenceLoader
from glm_image_server.media.storage import LocalStorage
from glm_image_server.slices import FetchSettings

REAL_BOUNDS = (512, 2048)  # the real processor's sides: min_pixels 512^2, max_pixels 2048^2
TINY_BOUNDS = (32, 256)


@settings(max_examples=300, deadline=None)
@given(
    width=st.integers(16, 6000),
    height=st.integers(16, 6000),
    bounds=st.sampled_from([REAL_BOUNDS, TINY_BOUNDS]),
)
def test_fitted_sizes_sit_on_the_grid_within_bounds(width: int, height: int, bounds: tuple[int, int]) -> None:
    low, high = bounds
    box = crop_to_aspect(Image.new("1", (width, height)), min(MAX_ASPECT, high / low)).size
    w, h = fitted_size(*box, low, high)
    assert w % 32 == 0 and h % 32 == 0
    assert min(w, h) >= low and max(w, h) <= high
    # The aspect ratio survives up to one grid cell of rounding on each side.
    assert abs(w / h - box[0] / box[1]) <= (box[0] / box[1]) * (32 / min(w, h)) + 1e-9


def test_sizes_already_on_the_grid_are_kept() -> None:
    assert fitted_size(1024, 768, *REAL_BOUNDS) == (1024, 768)
    assert fitted_size(1016, 1016, *REAL_BOUNDS) == (1024, 1024)
    assert fitted_size(300, 200, *REAL_BOUNDS) == (768, 512)
    assert fitted_size(4000, 3000, *REAL_BOUNDS) == (2048, 1536)


def encode(image: Image.Image, fmt: str, **params) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **params)
    return buffer.getvalue()


def gradient(size: tuple[int, int], mode: str = "RGB") -> Image.Image:
    x = np.linspace(0, 255, size[0], dtype=np.uint8)[None, :].repeat(size[1], 0)
    return Image.fromarray(np.stack([x, x[:, ::-1], np.full_like(x, 90)], -1)).convert(mode)


def exif_rotated_jpeg() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    return encode(gradient((200, 100)), "JPEG", exif=exif.tobytes())


def transparent_png() -> bytes:
    image = gradient((300, 200), "RGBA")
    image.putalpha(Image.new("L", image.size, 0))
    return encode(image, "PNG")


AWKWARD = {
    "1000x750 jpeg": (encode(gradient((1000, 750)), "JPEG"), (1000, 750)),
    "300x200 png with alpha": (transparent_png(), (300, 200)),
    "4000x3000 jpeg": (encode(gradient((4000, 3000)), "JPEG", quality=70), (4000, 3000)),
    "grayscale png": (encode(gradient((320, 240), "L"), "PNG"), (320, 240)),
    "cmyk jpeg": (encode(gradient((400, 300), "CMYK"), "JPEG"), (400, 300)),
    "exif-rotated jpeg": (exif_rotated_jpeg(), (100, 200)),
}


MAX_PIXELS = 40_000_000  # the server's default input_max_pixels


def decode(data: bytes, max_pixels: int = MAX_PIXELS, field: str = "image") -> Image.Image:
    return decode_image(data, field, max_pixels)


@pytest.mark.parametrize("name", list(AWKWARD))
def test_awkward_inputs_decode_upright_rgb(name: str) -> None:
    data, size = AWKWARD[name]
    image = decode(data)
    assert image.mode == "RGB" and image.size == size


def test_transparency_becomes_white() -> None:
    assert decode(transparent_png()).getpixel((10, 10)) == (255, 255, 255)


def test_undecodable_and_oversized_inputs_are_invalid_requests() -> None:
    with pytest.raises(InvalidRequest, match="not a readable image") as caught:
        decode(b"definitely not an image", field="image_urls[0]")
    assert caught.value.field == "image_urls[0]"
    with pytest.raises(InvalidRequest, match="at most 10000 pixels"):
        decode(encode(gradient((200, 100)), "PNG"), max_pixels=10_000)
    with pytest.raises(InvalidRequest, match="could not be decoded"):
        decode(encode(gradient((200, 100)), "PNG")[:300])


@pytest.fixture(scope="module")
def real_bounds_engine(pipe) -> Engine:
    """The tiny model with the real processor's reference bounds, where upstream's size bugs show."""
    from diffusers import GlmImagePipeline

    low, high = REAL_BOUNDS
    processor = build_processor(pipe.processor.tokenizer, low * low, high * high)
    variant = GlmImagePipeline(**{**pipe.components, "processor": processor})
    variant.set_progress_bar_config(disable=True)
    return Engine(variant)


@pytest.mark.parametrize("name", list(AWKWARD))
def test_awkward_references_edit_without_crashing(engine, real_bounds_engine, name: str) -> None:
    reference = decode(AWKWARD[name][0])
    for eng in (engine, real_bounds_engine):
        request = GenerationRequest(
            prompt="make it blue",
            width=96,
            height=64,
            num_inference_steps=1,
            seed=1,
            references=("stored:r",),
        )
        assert eng.generate([request], [(reference,)])[0].images[0].size == (96, 64)


LARGEST = pytest.param((2304, 2304), marks=pytest.mark.slow)  # two such references: ~25 s


@pytest.mark.parametrize("size", [(1016, 1016), (384, 384), LARGEST, (512, 2048), (3000, 500)])
def test_sizes_that_crash_upstream_work(real_bounds_engine, size: tuple[int, int]) -> None:
    refs = (gradient(size), gradient((size[1], size[0])))
    request = GenerationRequest(
        prompt="edit", width=64, height=64, num_inference_steps=1, seed=1, references=("stored:a", "stored:b")
    )
    assert real_bounds_engine.generate([request], [refs])[0].images[0].size == (64, 64)


def test_auto_output_size_follows_the_first_reference(engine) -> None:
    reference = decode(AWKWARD["exif-rotated jpeg"][0])  # portrait 100x200
    width, height = size_like(reference, pixels=128 * 128)
    request = GenerationRequest(
        prompt="edit", width=width, height=height, num_inference_steps=1, seed=1, references=("stored:r",)
    )
    assert engine.generate([request], [(reference,)])[0].images[0].size == (width, height) == (96, 192)


def test_reference_loader_reads_uploads_data_uris_and_urls(tmp_path, web) -> None:
    """Locators -> decoded images, in order: `stored:` uploads from storage, data URIs and URLs through the
    guarded fetcher; a bad one is an InvalidRequest naming its index."""
    storage = LocalStorage(tmp_path / "files")
    storage.save("upload-abc.png", png_bytes((30, 20)))
    web.routes["/ref.png"] = (200, png_bytes((50, 40)), {"content-type": "image/png"})
    loader = ReferenceLoader(
        ImageFetcher(FetchSettings.from_settings(Settings(allow_loopback_urls=True))), storage
    )
    try:
        images = loader.load(("stored:upload-abc.png", data_uri(png_bytes((40, 10))), web.url("/ref.png")))
        assert [image.size for image in images] == [(30, 20), (40, 10), (50, 40)]
        with pytest.raises(InvalidRequest, match="expired or does not exist") as caught:
            loader.load((data_uri(png_bytes()), "stored:upload-gone.png"))
        assert caught.value.field == "references[1]"
    finally:
        loader.close()
