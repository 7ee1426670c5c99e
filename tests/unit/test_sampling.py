"""The per-row sampler: own generator per row, no early end token, progress and cancel per token."""

from __future__ import annotations

import pytest
import torch
from transformers import GenerationConfig

from glm_image_server.core.events import Cancelled
from glm_image_server.engine.sampling import RowSampler, sampling_warpers

VOCAB, EOS = 20, 5


def sampler(seeds: list[int], **kwargs) -> RowSampler:
    config = GenerationConfig(temperature=0.9, top_p=0.75)
    generators = [torch.Generator().manual_seed(s) for s in seeds]
    return RowSampler(generators, sampling_warpers(config), prompt_length=3, max_new_tokens=4, **kwargs)


def draw(rows: RowSampler, scores: torch.Tensor, step: int) -> list[int]:
    ids = torch.zeros((scores.shape[0], 3 + step), dtype=torch.long)
    out = rows(ids, scores)
    assert torch.isfinite(out).sum(dim=1).tolist() == [1] * scores.shape[0]  # exactly one token left
    return out.argmax(dim=1).tolist()


def test_a_rows_tokens_do_not_depend_on_its_neighbours() -> None:
    scores = torch.randn(3, VOCAB, generator=torch.Generator().manual_seed(0))
    alone, batched = sampler([7], eos_token_id=None), sampler([7, 8, 9], eos_token_id=None)
    for step in range(4):
        assert draw(alone, scores[:1], step) == draw(batched, scores, step)[:1]


def test_end_token_only_after_the_grid_is_full() -> None:
    scores = torch.zeros(2, VOCAB)
    scores[:, EOS] = 50.0  # the model would all but certainly end here
    rows = sampler([1, 2], eos_token_id=[EOS])
    assert all(EOS not in draw(rows, scores, step) for step in range(3))
    assert draw(rows, scores, 3) == [EOS, EOS]


def test_progress_and_cancel_per_token() -> None:
    seen: list[tuple[int, int]] = []
    rows = sampler(
        [1], eos_token_id=EOS, on_token=lambda d, t: seen.append((d, t)), should_cancel=lambda: len(seen) >= 2
    )
    draw(rows, torch.zeros(1, VOCAB), 0)
    draw(rows, torch.zeros(1, VOCAB), 1)
    with pytest.raises(Cancelled):
        draw(rows, torch.zeros(1, VOCAB), 2)
    assert seen == [(1, 4), (2, 4)]


def test_unsupported_sampling_options_are_refused() -> None:
    with pytest.raises(NotImplementedError, match="min_p"):
        sampling_warpers(GenerationConfig(min_p=0.1))
