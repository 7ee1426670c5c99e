"""The engine against the stock diffusers pipeline, and its seeds, progress, cancel and sizes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import GlmImagePipeline
from PIL import Image

from glm_image_server.core.events import Cancelled
from glm_image_server.core.request import GenerationRequest, image_seed

PROMPT = "a shop sign that reads 'OPEN'"


def locators(count: int) -> tuple[str, ...]:
    """Reference locators for a request; the engine gets the decoded images beside it."""
    return tuple(f"stored:ref-{i}" for i in range(count))


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image)


def noise_image(seed: int, size: tuple[int, int]) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))


def stock_pipeline(pipe) -> GlmImagePipeline:
    """A fresh stock pipeline over the same components, with the smallest shim that lets the stock
    image-to-image path run on transformers 5.23 (it packs the per-image feature list for the pipeline's
    `torch.cat` and unpacks it again in `get_image_tokens`)."""
    stock = GlmImagePipeline(**pipe.components)
    stock.set_progress_bar_config(disable=True)
    vle = stock.vision_language_encoder
    features, tokens = type(vle).get_image_features, type(vle).get_image_tokens

    class Shimmed(type(vle)):
        def get_image_features(self, *args, **kwargs):
            out = features(self, *args, **kwargs)
            if len(args) == 2 and not kwargs:  # the pipeline's positional call site
                out.pooler_output = [torch.cat([e.flatten(1).T for e in out.pooler_output])]
            return out

        def get_image_tokens(self, hidden_states, image_grid_thw=None):
            if isinstance(hidden_states, torch.Tensor) and hidden_states.dim() == 2:
                chunks = torch.split(hidden_states, image_grid_thw.prod(-1).tolist())
                hidden_states = [
                    c.T.reshape(-1, int(g[1]), int(g[2]))
                    for c, g in zip(chunks, image_grid_thw, strict=False)
                ]
            return tokens(self, hidden_states, image_grid_thw)

    stock.shim = lambda: setattr(vle, "__class__", Shimmed)
    stock.unshim = lambda: setattr(vle, "__class__", Shimmed.__mro__[1])
    return stock


def test_text_to_image_equals_a_direct_pipeline_call(engine, pipe) -> None:
    (result,) = engine.generate(
        [GenerationRequest(prompt=PROMPT, width=96, height=64, num_inference_steps=4, seed=7)]
    )
    direct = stock_pipeline(pipe)(
        prompt=PROMPT,
        width=96,
        height=64,
        num_inference_steps=4,
        guidance_scale=1.5,
        generator=torch.Generator().manual_seed(7),
    ).images[0]
    assert result.images[0].size == (96, 64)
    assert np.array_equal(pixels(result.images[0]), pixels(direct))


def test_image_to_image_with_two_references_equals_a_direct_pipeline_call(engine, pipe) -> None:
    refs = [noise_image(1, (96, 64)), noise_image(2, (64, 128))]
    request = GenerationRequest(
        prompt="make it blue", width=128, height=96, num_inference_steps=3, seed=3, references=locators(2)
    )
    (result,) = engine.generate([request], [refs])
    stock = stock_pipeline(pipe)
    stock.shim()
    try:
        direct = stock(
            prompt="make it blue",
            image=refs,
            width=128,
            height=96,
            num_inference_steps=3,
            generator=torch.Generator().manual_seed(3),
        ).images[0]
    finally:
        stock.unshim()
    assert np.array_equal(pixels(result.images[0]), pixels(direct))
    # ...and the references matter: the same seed without them gives another image.
    (plain,) = engine.generate([GenerationRequest(prompt="make it blue", width=128, height=96, seed=3)])
    assert not np.array_equal(pixels(result.images[0]), pixels(plain.images[0]))


def test_stock_image_to_image_still_breaks_without_the_fix(pipe) -> None:
    """Canary: when upstream fixes the transformers 5.23 break, model/prior.py's fix 2 can go."""
    with pytest.raises(RuntimeError, match="channels"):
        stock_pipeline(pipe)(
            prompt="x", image=[noise_image(0, (64, 64))], width=64, height=64, num_inference_steps=1
        )


def test_same_seed_same_image_other_seed_other_image(engine) -> None:
    def run(seed: int) -> np.ndarray:
        request = GenerationRequest(prompt=PROMPT, width=64, height=64, num_inference_steps=2, seed=seed)
        return pixels(engine.generate([request])[0].images[0])

    first, again, other = run(11), run(11), run(12)
    assert np.array_equal(first, again)
    assert not np.array_equal(first, other)


def test_global_rng_is_neither_used_nor_changed(engine) -> None:
    request = GenerationRequest(prompt=PROMPT, width=64, height=64, num_inference_steps=2, seed=5)
    torch.manual_seed(123)
    state = torch.get_rng_state()
    first = engine.generate([request])[0].images[0]
    assert torch.equal(torch.get_rng_state(), state)
    torch.manual_seed(456)
    second = engine.generate([request])[0].images[0]
    assert np.array_equal(pixels(first), pixels(second))


def test_missing_seed_is_chosen_on_creation_and_reported(engine) -> None:
    request = GenerationRequest(prompt=PROMPT, width=64, height=64, num_inference_steps=2)
    assert isinstance(request.seed, int) and 0 <= request.seed < 2**32
    other = GenerationRequest(prompt=PROMPT, width=64, height=64, num_inference_steps=2)
    assert other.seed != request.seed  # random per request (equal once in 2**32)
    (result,) = engine.generate([request])
    assert result.seeds == [request.seed]
    (again,) = engine.generate(
        [GenerationRequest(prompt=PROMPT, width=64, height=64, num_inference_steps=2, seed=request.seed)]
    )
    assert np.array_equal(pixels(result.images[0]), pixels(again.images[0]))


def test_image_i_of_a_request_is_the_image_of_seed_plus_i(engine) -> None:
    many = GenerationRequest(prompt=PROMPT, width=64, height=64, num_inference_steps=2, seed=40, num_images=3)
    (result,) = engine.generate([many])
    assert result.seeds == [40, 41, 42] and len(result.images) == 3
    for i, image in enumerate(result.images):
        single = GenerationRequest(
            prompt=PROMPT, width=64, height=64, num_inference_steps=2, seed=image_seed(40, i)
        )
        assert np.array_equal(pixels(image), pixels(engine.generate([single])[0].images[0]))
    assert not np.array_equal(pixels(result.images[0]), pixels(result.images[1]))


def test_mixed_requests_come_back_in_order_with_their_own_sizes(engine) -> None:
    requests = [
        GenerationRequest(prompt="a", width=64, height=64, num_inference_steps=1, seed=1),
        GenerationRequest(prompt="b", width=128, height=64, num_inference_steps=1, seed=2, num_images=2),
        GenerationRequest(prompt="c", width=64, height=64, num_inference_steps=1, seed=3),
    ]
    results = engine.generate(requests)
    assert [r.seeds for r in results] == [[1], [2, 3], [3]]
    assert [[im.size for im in r.images] for r in results] == [[(64, 64)], [(128, 64)] * 2, [(64, 64)]]
    assert all(r.timings.ar > 0 and r.timings.dit > 0 and r.timings.vae > 0 for r in results)


def test_progress_counts_tokens_then_steps(engine) -> None:
    events = []
    request = GenerationRequest(prompt=PROMPT, width=128, height=64, num_inference_steps=3, seed=1)
    engine.generate([request], on_progress=events.append)
    ar = [e for e in events if e.stage == "ar"]
    dit = [e for e in events if e.stage == "dit"]
    # t2i: a preview grid of about 16x16, then the (H/32)x(W/32) grid, then the end token.
    (total,) = {e.total for e in ar}
    assert total > 2 * 4 + 200
    assert [e.done for e in ar] == list(range(1, total + 1))
    assert [(e.done, e.total) for e in dit] == [(1, 3), (2, 3), (3, 3)]
    assert events.index(ar[-1]) < events.index(dit[0]) and events[-1].stage == "vae"


@pytest.mark.parametrize(("stage", "after"), [("ar", 10), ("dit", 2)])
def test_cancel_stops_at_the_next_token_or_step(engine, stage: str, after: int) -> None:
    seen: list = []

    def should_cancel() -> bool:
        return sum(e.stage == stage for e in seen) >= after

    request = GenerationRequest(prompt=PROMPT, width=64, height=64, num_inference_steps=5, seed=1)
    with pytest.raises(Cancelled):
        engine.generate([request], on_progress=seen.append, should_cancel=should_cancel)
    assert sum(e.stage == stage for e in seen) == after
    if stage == "ar":
        assert not any(e.stage == "dit" for e in seen)
    # The engine is usable again right after a cancel.
    assert engine.generate([request])[0].images[0].size == (64, 64)


@pytest.mark.parametrize(("width", "height"), [(64, 64), (2048, 64), (64, 2048), (160, 96)])
def test_sizes_across_the_range(engine, width: int, height: int) -> None:
    request = GenerationRequest(prompt=PROMPT, width=width, height=height, num_inference_steps=1, seed=1)
    assert engine.generate([request])[0].images[0].size == (width, height)


@pytest.mark.slow  # 2048²: the AR stage's 4,096 tokens and a full-size VAE decode, ~30 s
def test_largest_size(engine) -> None:
    request = GenerationRequest(prompt=PROMPT, width=2048, height=2048, num_inference_steps=1, seed=1)
    assert engine.generate([request])[0].images[0].size == (2048, 2048)


@pytest.mark.parametrize("count", [1, 3, 4])
def test_one_to_four_references(engine, count: int) -> None:
    refs = tuple(noise_image(i, (64 + 32 * i, 96)) for i in range(count))
    request = GenerationRequest(
        prompt="combine them", width=96, height=64, num_inference_steps=1, seed=1, references=locators(count)
    )
    assert engine.generate([request], [refs])[0].images[0].size == (96, 64)


def test_references_must_match_the_request(engine) -> None:
    request = GenerationRequest(
        prompt="x", width=64, height=64, num_inference_steps=1, references=locators(2)
    )
    with pytest.raises(ValueError, match="2 references given, 1 decoded"):
        engine.generate([request], [(noise_image(0, (64, 64)),)])
