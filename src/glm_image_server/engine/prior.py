"""The AR stage: prompt (+ reference images) -> prior token grid for the DiT.

Follows `GlmImagePipeline.generate_prior_tokens` (diffusers 0.42.1) step for step, with three fixes:
  1. per-row random generators instead of reseeding torch's global RNG (see sampling.py);
  2. reference-image features are handed to `get_image_tokens` as the per-image list transformers 5.23
     returns; the pipeline's `torch.cat` of that list breaks image-to-image;
  3. progress per token and a cancel check, through the sampler.
With `fast=True` ar_fast.py's decode loop replaces `generate()`: the same tokens on the CPU, fewer host syncs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from .ar_fast import RowPicker, sample_tokens
from .sampling import RowSampler, sampling_warpers


@dataclass
class PriorTokens:
    """token_ids: (rows, (H/16)*(W/16)) DiT-grid tokens. For edits, per row: the references' upsampled
    tokens, concatenated, and their (t, h, w) grids on the DiT grid; None for text-to-image."""

    token_ids: torch.Tensor
    image_token_ids: list[torch.Tensor] | None
    image_grids: list[torch.Tensor] | None

    def row(self, r: int) -> PriorTokens:
        """Row r alone, in the shapes the pipeline takes for a batch of one."""
        return self.rows([r])

    def rows(self, picked: Sequence[int]) -> PriorTokens:
        """The picked rows, in that order."""
        return PriorTokens(
            self.token_ids[list(picked)],
            [self.image_token_ids[r] for r in picked] if self.image_token_ids is not None else None,
            [self.image_grids[r] for r in picked] if self.image_grids is not None else None,
        )

    def to_numpy(self) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
        """(token ids, reference token ids, reference grids), a row per image: what a handoff stores."""
        refs = grids = None
        if self.image_token_ids is not None and self.image_grids is not None:
            refs = torch.stack(self.image_token_ids).cpu().numpy()
            grids = torch.stack(self.image_grids).cpu().numpy()
        return self.token_ids.cpu().numpy(), refs, grids

    @classmethod
    def from_numpy(
        cls, token_ids: np.ndarray, refs: np.ndarray | None, grids: np.ndarray | None, device: torch.device
    ) -> PriorTokens:
        def tensor(array: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(array.astype(np.int64)).to(device)

        if refs is None or grids is None:
            return cls(tensor(token_ids), None, None)
        return cls(tensor(token_ids), [tensor(row) for row in refs], [tensor(row) for row in grids])


def _upsample(token_ids: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """d32 grid -> d16 DiT grid, nearest neighbour; (h*w,) -> (4*h*w,)."""
    grid = token_ids.view(1, 1, h, w).float()
    return torch.nn.functional.interpolate(grid, scale_factor=2, mode="nearest").long().view(-1)


def _reference_tokens(
    pipe, inputs, rows: int, refs_per_row: int, grids_per_row: int
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Encode each row's reference images to upsampled prior tokens, with their upsampled grids."""
    grid_thw = inputs["image_grid_thw"]
    index = [r * grids_per_row + i for r in range(rows) for i in range(refs_per_row)]
    source_grids = grid_thw[index]
    vle = pipe.vision_language_encoder
    features = vle.get_image_features(pixel_values=inputs["pixel_values"], image_grid_thw=source_grids)
    ids_d32 = vle.get_image_tokens(features.pooler_output, source_grids)  # fix 2: no torch.cat
    per_image = torch.split(ids_d32, source_grids.prod(dim=-1).tolist())
    upsampled = [_upsample(ids, int(g[1]), int(g[2])) for ids, g in zip(per_image, source_grids, strict=True)]
    grids = source_grids.clone()
    grids[:, 1:] *= 2
    tokens = [torch.cat(upsampled[r * refs_per_row : (r + 1) * refs_per_row]) for r in range(rows)]
    return tokens, list(torch.split(grids, refs_per_row))


def chat_inputs(
    pipe, prompts: Sequence[str], height: int, width: int, references: Sequence[Sequence[Image.Image]] | None
):
    """The AR model's inputs for a batch of prompts (left-padded), on the pipeline's device."""
    messages = []
    for r, prompt in enumerate(prompts):
        content = [{"type": "image", "image": img} for img in (references[r] if references else [])]
        messages.append([{"role": "user", "content": [*content, {"type": "text", "text": prompt}]}])
    return pipe.processor.apply_chat_template(
        messages,
        tokenize=True,
        return_dict=True,
        return_tensors="pt",
        processor_kwargs={"padding": len(prompts) > 1, "target_h": height, "target_w": width},
    ).to(pipe._execution_device)


def generate_new_tokens(
    vle,
    inputs,
    generators: Sequence[torch.Generator],
    max_new_tokens: int,
    on_token: Callable[[int, int], None] | None,
    should_cancel: Callable[[], bool] | None,
) -> torch.Tensor:
    """transformers' `generate()` with the per-row sampler; the new tokens only."""
    prompt_length, config = inputs["input_ids"].shape[-1], vle.generation_config
    warpers, eos = sampling_warpers(config), config.eos_token_id
    sampler = RowSampler(generators, warpers, prompt_length, max_new_tokens, eos, on_token, should_cancel)
    outputs = vle.generate(
        **inputs,
        max_new_tokens=max_new_tokens,
        do_sample=False,  # the sampler has already picked each token; argmax just reads it
        temperature=None,
        top_p=None,
        top_k=None,
        logits_processor=[sampler],
    )
    return outputs[:, prompt_length:]


def generate_prior_tokens(
    pipe,
    prompts: Sequence[str],
    height: int,
    width: int,
    references: Sequence[Sequence[Image.Image]] | None,
    generators: Sequence[torch.Generator],
    on_token: Callable[[int, int], None] | None = None,
    should_cancel: Callable[[], bool] | None = None,
    fast: bool = False,
) -> PriorTokens:
    """Sample prior tokens for each row; every row of an edit batch has the same number of references.
    `fast`: ar_fast.py's decode loop (progress and cancel every few tokens) instead of `generate()`."""
    rows = len(prompts)
    inputs = chat_inputs(pipe, prompts, height, width, references)

    refs_per_row = len(references[0]) if references else 0
    grid_thw = inputs["image_grid_thw"]
    grids_per_row = len(grid_thw) // rows
    max_new_tokens, offset, token_h, token_w = pipe._compute_generation_params(
        image_grid_thw=grid_thw[:grids_per_row], is_text_to_image=not references
    )
    image_tokens = image_grids = None
    if references:
        image_tokens, image_grids = _reference_tokens(pipe, inputs, rows, refs_per_row, grids_per_row)

    vle = pipe.vision_language_encoder
    if fast:
        config, vocab = vle.generation_config, vle.lm_head.out_features
        warpers, device = sampling_warpers(config), pipe._execution_device
        picker = RowPicker(generators, warpers, config.eos_token_id, max_new_tokens, vocab, device)
        new_tokens = sample_tokens(vle, inputs, max_new_tokens, picker, on_token, should_cancel)
    else:
        new_tokens = generate_new_tokens(vle, inputs, generators, max_new_tokens, on_token, should_cancel)
    grid = new_tokens[:, offset : offset + token_h * token_w]
    token_ids = torch.stack([_upsample(row, token_h, token_w) for row in grid])
    return PriorTokens(token_ids, image_tokens, image_grids)
