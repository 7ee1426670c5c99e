"""The AR fast path (model/ar_fast.py) against the default AR loop (`generate()` + RowSampler): the very
same tokens for the same seeds, text-to-image with rows of different prompt lengths and image-to-image;
progress and cancel every REPORT_EVERY tokens; the engine switch."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _tiny import load_tiny, noise_image

from glm_image_server.core.events import Cancelled
from glm_image_server.core.request import GenerationRequest
from glm_image_server.engine.ar_fast import REPORT_EVERY, RowPicker, StaticDecoder, sample_tokens
from glm_image_server.engine.engine import Engine
from glm_image_server.engine.prior import chat_inputs, generate_new_tokens, generate_prior_tokens
from glm_image_server.engine.sampling import sampling_warpers

PROMPTS = [
    "a shop sign that reads 'OPEN'",
    "x",
    "a much longer prompt about a cat on a mat under a hat that reads 'HELLO WORLD' in red letters",
    "poster",
]


@pytest.fixture(scope="module")
def pipe(tmp_path_factory: pytest.TempPathFactory):
    return load_tiny(tmp_path_factory.mktemp("tiny"))


def generators(seeds: list[int]) -> list[torch.Generator]:
    return [torch.Generator("cpu").manual_seed(s) for s in seeds]


def both_ways(
    pipe, prompts, height, width, references, seeds, graphs: bool | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """All new tokens (preview grid, grid, end) from the default loop and from the fast path."""
    inputs = chat_inputs(pipe, prompts, height, width, references)
    vle = pipe.vision_language_encoder
    grids_per_row = len(inputs["image_grid_thw"]) // len(prompts)
    max_new, *_ = pipe._compute_generation_params(inputs["image_grid_thw"][:grids_per_row], not references)
    default = generate_new_tokens(vle, inputs, generators(seeds), max_new, None, None)
    config = vle.generation_config
    picker = RowPicker(
        generators(seeds), sampling_warpers(config), config.eos_token_id, max_new, 128, torch.device("cpu")
    )
    return default, sample_tokens(vle, inputs, max_new, picker, graphs=graphs)


@pytest.mark.parametrize(("height", "width"), [(64, 96), (128, 64)])
def test_text_to_image_rows_of_different_lengths_get_the_same_tokens(pipe, height: int, width: int) -> None:
    default, fast = both_ways(pipe, PROMPTS, height, width, None, [1, 2, 3, 4])
    assert fast.shape == default.shape and default.shape[1] > 200
    assert torch.equal(fast, default)


def test_a_single_row_gets_the_same_tokens(pipe) -> None:
    default, fast = both_ways(pipe, PROMPTS[:1], 96, 96, None, [7])
    assert torch.equal(fast, default)


def test_the_capture_warm_up_step_leaves_no_trace(pipe, monkeypatch: pytest.MonkeyPatch) -> None:
    """On CUDA the decode step is warmed up, rewound and captured; here the capture is the warm-up alone,
    and the eager steps after it must give the same tokens."""
    monkeypatch.setattr(StaticDecoder, "capture", StaticDecoder.warm_up)
    default, fast = both_ways(pipe, PROMPTS[:2], 64, 64, None, [1, 2], graphs=True)
    assert torch.equal(fast, default)


def test_image_to_image_gets_the_same_tokens(pipe) -> None:
    refs = [
        [noise_image(1, (96, 64)), noise_image(2, (64, 128))],
        [noise_image(3, (64, 64)), noise_image(4, (128, 96))],
    ]
    default, fast = both_ways(
        pipe, ["make it blue", "combine the two into one poster"], 96, 128, refs, [5, 6]
    )
    assert torch.equal(fast, default)


def test_prior_tokens_equal_with_the_switch(pipe) -> None:
    refs = [[noise_image(9, (64, 96))]] * 2
    for references, prompts in ((None, PROMPTS), (refs, PROMPTS[:2])):
        seeds = list(range(len(prompts)))
        slow = generate_prior_tokens(pipe, prompts, 64, 128, references, generators(seeds))
        fast = generate_prior_tokens(pipe, prompts, 64, 128, references, generators(seeds), fast=True)
        assert torch.equal(fast.token_ids, slow.token_ids)


def test_progress_every_few_tokens_and_cancel(pipe) -> None:
    seen: list[tuple[int, int]] = []
    generate_prior_tokens(
        pipe, ["a"], 64, 64, None, generators([1]), on_token=lambda d, t: seen.append((d, t)), fast=True
    )
    (total,) = {t for _, t in seen}
    assert [d for d, _ in seen] == [*range(REPORT_EVERY, total, REPORT_EVERY), total]

    seen.clear()
    with pytest.raises(Cancelled):
        generate_prior_tokens(
            pipe,
            ["a"],
            64,
            64,
            None,
            generators([1]),
            on_token=lambda d, t: seen.append((d, t)),
            should_cancel=lambda: len(seen) >= 3,
            fast=True,
        )
    assert [d for d, _ in seen] == [REPORT_EVERY, 2 * REPORT_EVERY, 3 * REPORT_EVERY]


def test_engine_switch_gives_the_same_images(pipe) -> None:
    assert Engine(pipe).ar_fast_path is False  # auto: off on the CPU
    requests = [
        GenerationRequest(
            prompt=PROMPTS[0], width=96, height=64, num_inference_steps=2, seed=3, num_images=2
        ),
        GenerationRequest(prompt=PROMPTS[2], width=96, height=64, num_inference_steps=2, seed=4),
    ]
    slow, fast = Engine(pipe).generate(requests), Engine(pipe, ar_fast_path=True).generate(requests)
    for a, b in zip(slow, fast, strict=True):
        assert all(
            np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(a.images, b.images, strict=True)
        )


def test_engine_refuses_the_fast_path_for_attention_it_cannot_mask(
    pipe, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("glm_image_server.engine.engine.supports_fast_path", lambda _vle: False)
    with pytest.raises(ValueError, match="sdpa or eager"):
        Engine(pipe, ar_fast_path=True)
    assert Engine(pipe).ar_fast_path is False
