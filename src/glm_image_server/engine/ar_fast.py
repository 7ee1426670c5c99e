"""AR fast path: a static KV cache, a decode step that CUDA can replay as a graph, and no host sync per token.

transformers' `generate()` (with `RowSampler`) spends much of the AR stage on the host: per token it rebuilds
masks and 3-D positions, grows a dynamic cache, launches each layer's kernels one by one, and
`torch.multinomial` syncs per row (~1300 tokens at 1024², ~4400 at 2048²). Here the prompt is prefilled as
`generate()` does it and its cache copied into a `StaticCache`; each decode step reads its token, its 3-D
rotary position (the model's own `_cached_decode_position_ids`) and its key mask from fixed device buffers,
so on CUDA it is captured once per call as a graph; sampling is `torch.multinomial`'s one-sample draw written
out without a sync; EOS is masked until the grid is full, so every row runs `max_new_tokens` steps.

Progress and cancel are checked every `REPORT_EVERY` tokens; on CUDA the host then waits for the previous
check's tokens, so a cancel leaves at most 2 x `REPORT_EVERY` queued tokens. On the CPU the tokens equal
`generate()`'s for the same seeds (tested); on CUDA in bf16 the kernels round differently (an H200 with random
weights matched 7% of 512 tokens: docs/benchmarks.md). Either way it is deterministic per seed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import torch
from transformers import DynamicCache, LogitsProcessor, StaticCache

from ..core.events import Cancelled

log = logging.getLogger(__name__)

REPORT_EVERY = 16
SUPPORTED_ATTENTION = ("sdpa", "eager")


def supports_fast_path(vle) -> bool:
    """The decode step hands the model a ready 4-D mask, which the sdpa and eager attentions take."""
    return vle.config.get_text_config()._attn_implementation in SUPPORTED_ATTENTION


class RowPicker:
    """One token per row from float32 logits: EOS masked until the last step, the warpers, softmax, then
    `torch.multinomial`'s one-sample draw: argmax of p / Exp(1) noise from the row's generator."""

    def __init__(
        self,
        generators: Sequence[torch.Generator],
        warpers: Sequence[LogitsProcessor],
        eos_token_id: int | list[int] | None,
        max_new_tokens: int,
        vocab: int,
        device: torch.device,
    ) -> None:
        self.generators = list(generators)
        self.warpers = list(warpers)
        self.max_new_tokens = max_new_tokens
        eos = [eos_token_id] if isinstance(eos_token_id, int) else list(eos_token_id or [])
        early = [e for e in eos if e < vocab]
        self.eos = torch.tensor(early, dtype=torch.long, device=device) if early else None

    def __call__(self, tokens: torch.Tensor, logits: torch.Tensor, step: int) -> torch.Tensor:
        scores = logits
        if self.eos is not None and step < self.max_new_tokens - 1:
            scores = scores.index_fill(1, self.eos, -float("inf"))
        for warper in self.warpers:  # temperature / top-k / top-p: pure tensor ops, no host sync
            scores = warper(tokens, scores)
        probs = torch.nn.functional.softmax(scores, dim=-1)
        noise = torch.stack(
            [torch.empty_like(probs[0]).exponential_(1, generator=g) for g in self.generators]
        )
        return (probs / noise).argmax(dim=-1)


class StaticDecoder:
    """The prompt's cache in a StaticCache, plus the fixed input/output buffers of one decode step."""

    def __init__(self, vle, prefill_cache: DynamicCache, attention_mask: torch.Tensor, steps: int) -> None:
        self.vle = vle
        rows, prompt = attention_mask.shape
        device = attention_mask.device
        self.cache = StaticCache(config=vle.config, max_cache_len=prompt + steps)
        for static, dynamic in zip(self.cache.layers, prefill_cache.layers, strict=True):
            static.lazy_initialization(dynamic.keys, dynamic.values)
            static.update(dynamic.keys, dynamic.values)
        self.keys_valid = torch.zeros((rows, 1, 1, prompt + steps), dtype=torch.bool, device=device)
        self.keys_valid[:, 0, 0, :prompt] = attention_mask.bool()
        table = vle.model._cached_decode_position_ids  # (rows, 3, decode length), set by the prefill
        self.positions = table.permute(1, 0, 2).contiguous()
        self.write_at = torch.tensor([prompt], dtype=torch.long, device=device)
        self.step_index = torch.zeros(1, dtype=torch.long, device=device)
        self.input_ids = torch.zeros((rows, 1), dtype=torch.long, device=device)
        vocab = vle.lm_head.out_features
        self.logits = torch.zeros((rows, vocab), dtype=torch.float32, device=device)
        self.eager = vle.config.get_text_config()._attn_implementation == "eager"
        self.dtype = vle.lm_head.weight.dtype
        self.graph: torch.cuda.CUDAGraph | None = None

    def _mask(self) -> torch.Tensor:
        if not self.eager:
            return self.keys_valid
        blocked = torch.finfo(self.dtype).min
        return torch.zeros_like(self.keys_valid, dtype=self.dtype).masked_fill(~self.keys_valid, blocked)

    def forward(self) -> None:
        """One decode step on the buffers: the token in `input_ids` is appended, `logits` hold the next."""
        self.keys_valid.index_fill_(3, self.write_at, True)
        out = self.vle(
            input_ids=self.input_ids,
            position_ids=self.positions.index_select(2, self.step_index),
            attention_mask=self._mask(),
            past_key_values=self.cache,
            use_cache=True,
            logits_to_keep=1,
        )
        self.logits.copy_(out.logits[:, -1, :])
        self.write_at.add_(1)
        self.step_index.add_(1)

    def warm_up(self) -> None:
        """Run one step and undo it: the counters go back, and the key it wrote is overwritten by the first
        real step (which also sets the same mask entry)."""
        self.forward()
        self.write_at.sub_(1)
        self.step_index.sub_(1)
        for layer in self.cache.layers:
            layer.cumulative_length.sub_(1)

    def capture(self) -> None:
        """Record `forward` as a CUDA graph, after a warm-up step on a side stream."""
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            self.warm_up()
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        # thread_local: CUDA work on the server's other threads (image encoding, the next batch's
        # preprocessing) must not invalidate the capture.
        with torch.cuda.graph(graph, capture_error_mode="thread_local"):
            self.forward()
        self.graph = graph

    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        self.input_ids.copy_(tokens[:, None])
        if self.graph is not None:
            self.graph.replay()
        else:
            self.forward()
        return self.logits


def _capture_or_eager(decoder: StaticDecoder, graphs: bool | None, device: torch.device) -> None:
    if graphs is False or (graphs is None and device.type != "cuda"):
        return
    try:
        decoder.capture()
    except RuntimeError as exc:  # a host sync or unsupported op inside the step: run it eagerly
        if graphs:
            raise
        log.warning("AR decode step could not be captured as a CUDA graph, running it eagerly: %s", exc)
        decoder.graph = None


def sample_tokens(
    vle,
    inputs,
    max_new_tokens: int,
    picker: RowPicker,
    on_token: Callable[[int, int], None] | None = None,
    should_cancel: Callable[[], bool] | None = None,
    graphs: bool | None = None,
) -> torch.Tensor:
    """(rows, max_new_tokens) sampled tokens, as `generate()` with a `RowSampler` returns them after the
    prompt. `graphs`: capture the decode step as a CUDA graph (None: on CUDA only)."""
    device = inputs["input_ids"].device
    rows = inputs["input_ids"].shape[0]
    attention_mask = inputs.get("attention_mask")
    if attention_mask is None:
        attention_mask = torch.ones_like(inputs["input_ids"])
    # The prompt pass exactly as `generate()` runs it, then its cache moved into the static one.
    prefill_cache = DynamicCache(config=vle.config)
    out = vle(**inputs, past_key_values=prefill_cache, use_cache=True, logits_to_keep=1, position_ids=None)
    logits = out.logits[:, -1, :].to(dtype=torch.float32)
    decoder = StaticDecoder(vle, prefill_cache, attention_mask, max_new_tokens - 1)
    del prefill_cache, out
    _capture_or_eager(decoder, graphs, device)
    tokens = torch.zeros((rows, max_new_tokens), dtype=torch.long, device=device)
    pending: torch.cuda.Event | None = None  # the previous report's point in the CUDA stream
    for step in range(max_new_tokens):
        if step % REPORT_EVERY == 0 and should_cancel is not None and should_cancel():
            raise Cancelled("cancelled during the AR stage")
        chosen = picker(tokens, logits, step)
        tokens[:, step] = chosen
        if step + 1 < max_new_tokens:
            logits = decoder.step(chosen)
        done = step + 1
        if done % REPORT_EVERY == 0 or done == max_new_tokens:
            if device.type == "cuda":  # keep the host at most two report intervals ahead of the device
                if pending is not None:
                    pending.synchronize()
                pending = torch.cuda.Event()
                pending.record()
            if on_token is not None:
                on_token(done, max_new_tokens)
    return tokens
