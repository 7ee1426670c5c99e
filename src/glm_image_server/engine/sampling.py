"""AR token sampling with one random generator per batch row.

transformers' `generate()` samples with torch's global RNG, which the pipeline reseeds per call: unsafe with
concurrent requests, and a row's tokens would depend on its batch neighbours. Here a logits processor samples
each row with its own `torch.Generator` and leaves only the chosen token finite, so argmax
(`generate(do_sample=False)`) emits it. For one row the draws equal the pipeline's (same warpers, same
`torch.multinomial` stream).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from transformers import (
    GenerationConfig,
    LogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from ..core.events import Cancelled


def sampling_warpers(config: GenerationConfig) -> list[LogitsProcessor]:
    """The warpers `generate(do_sample=True)` would apply for this config, in its order."""
    params = GenerationConfig._get_default_generation_params()
    params.update({k: v for k, v in config.to_dict().items() if v is not None})
    unsupported = [k for k in ("top_h", "min_p") if params.get(k) is not None] + [
        k for k in ("typical_p", "epsilon_cutoff", "eta_cutoff") if 0.0 < (params.get(k) or 0.0) < 1.0
    ]
    if unsupported:
        raise NotImplementedError(f"AR sampling options not supported by the engine: {unsupported}")
    warpers: list[LogitsProcessor] = []
    if params["temperature"] not in (None, 1.0):
        warpers.append(TemperatureLogitsWarper(params["temperature"]))
    if params["top_k"]:
        warpers.append(TopKLogitsWarper(top_k=params["top_k"]))
    if params["top_p"] is not None and params["top_p"] < 1.0:
        warpers.append(TopPLogitsWarper(top_p=params["top_p"]))
    return warpers


class RowSampler(LogitsProcessor):
    """Samples each row with its own generator; reports progress and honours cancel once per token. EOS
    is masked until the token grid is full (upstream ends rows at 1023 of 1024 tokens, crashing the DiT)."""

    def __init__(
        self,
        generators: Sequence[torch.Generator],
        warpers: Sequence[LogitsProcessor],
        prompt_length: int,
        max_new_tokens: int,
        eos_token_id: int | list[int] | None,
        on_token: Callable[[int, int], None] | None = None,
        should_cancel: Callable[[], bool] | None = None,
    ) -> None:
        self.generators = list(generators)
        self.warpers = list(warpers)
        self.prompt_length = prompt_length
        self.max_new_tokens = max_new_tokens
        self.eos_token_ids = [eos_token_id] if isinstance(eos_token_id, int) else list(eos_token_id or [])
        self.on_token = on_token
        self.should_cancel = should_cancel

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        step = input_ids.shape[1] - self.prompt_length
        if self.should_cancel is not None and self.should_cancel():
            raise Cancelled("cancelled during the AR stage")
        early_eos = [e for e in self.eos_token_ids if e < scores.shape[-1]]
        if early_eos and step < self.max_new_tokens - 1:
            scores = scores.clone()
            scores[:, early_eos] = -float("inf")
        for warper in self.warpers:
            scores = warper(input_ids, scores)
        probs = torch.nn.functional.softmax(scores, dim=-1)
        chosen = torch.cat(
            [torch.multinomial(probs[i : i + 1], 1, generator=g) for i, g in enumerate(self.generators)]
        )
        out = torch.full_like(scores, -float("inf"))
        out.scatter_(1, chosen, 0.0)
        if self.on_token is not None:
            self.on_token(step + 1, self.max_new_tokens)
        return out
