"""Live previews: taken at the chosen DiT steps, small, fitted once per model, and never a change to the
final image."""

from __future__ import annotations

import io

import numpy as np
import torch
from PIL import Image

from glm_image_server.core.request import GenerationRequest
from glm_image_server.core.results import Preview
from glm_image_server.engine.engine import Engine
from glm_image_server.engine.previews import PreviewProjection, preview_steps
from glm_image_server.worker.executor import encode_preview


def test_preview_steps_are_spread_and_never_the_last() -> None:
    assert preview_steps(30, 5) == {5, 10, 15, 20, 25}
    assert preview_steps(4, 3) == {1, 2, 3}
    assert preview_steps(2, 6) == {1}
    assert preview_steps(30, 0) == frozenset() and preview_steps(1, 3) == frozenset()


def test_final_images_are_identical_with_previews_on_and_off(pipe, tmp_path) -> None:
    requests = [GenerationRequest("a red 'CAFE' sign", 64, 96, 4, 2.0, seed=11, num_images=2)]
    seen: list[Preview] = []
    engine = Engine(pipe, previews=3, preview_cache=tmp_path)
    with_previews = engine.generate(requests, on_preview=seen.append)
    without = Engine(pipe, previews=0).generate(requests)
    for a, b in zip(with_previews[0].images, without[0].images, strict=True):
        assert np.array_equal(np.asarray(a), np.asarray(b))
    # 3 previews for each of the 2 images, at latent resolution (1/8 of the side on this VAE).
    assert [(p.image, p.step) for p in seen] == [(i, s) for i in (0, 1) for s in (1, 2, 3)]
    assert all(p.picture.size == (64 // 8, 96 // 8) and p.steps == 4 for p in seen)
    encoded = encode_preview(seen[0])
    assert Image.open(io.BytesIO(encoded.data)).size == (8, 12) and encoded.content_type == "image/jpeg"


def test_no_previews_without_a_callback(pipe) -> None:
    engine = Engine(pipe, previews=3)
    engine.generate([GenerationRequest("x", 64, 64, 3, seed=1)])
    assert engine._projection is None  # nothing fitted: nobody asked for previews


def test_projection_is_fitted_once_and_cached_on_disk(pipe, tmp_path) -> None:
    with torch.inference_mode():
        rng_before = torch.get_rng_state()
        first = PreviewProjection.load_or_fit(pipe.vae, tmp_path)
        assert torch.equal(torch.get_rng_state(), rng_before)  # the fit draws from its own generator
        (cached,) = tmp_path.glob("preview-projection-*.pt")
        again = PreviewProjection.load_or_fit(pipe.vae, tmp_path)
    assert torch.equal(first.weight, again.weight) and torch.equal(first.bias, again.bias)
    assert first.weight.shape == (3, pipe.vae.config.latent_channels) and cached.stat().st_size < 10_000


def test_projection_maps_each_latent_pixel_to_rgb() -> None:
    weight = torch.tensor([[0.5, -0.2, 0.1, 0.0], [0.1, 0.3, -0.4, 0.2], [0.0, 0.1, 0.2, 0.6]])
    projection = PreviewProjection(weight, torch.zeros(3))
    latents = torch.zeros((1, 4, 2, 3))
    latents[0, 0] = 1.0
    picture = np.asarray(projection(latents)).astype(int)
    assert picture.shape == (2, 3, 3)
    assert np.all(picture[..., 0] == round((0.5 + 1) * 127.5)) and np.all(picture[..., 2] == 128)
