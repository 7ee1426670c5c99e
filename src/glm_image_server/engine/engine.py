"""Engine: a batch of GenerationRequests -> images, through AR -> DiT -> VAE.

Every image of every request is one row; rows of requests that share a batch key share one batched AR
call, then go through the DiT and VAE one by one. Each row draws from generators seeded with its own
seed (AR sampling on the model's device, initial latents on the CPU), so with one row the output equals
a direct `GlmImagePipeline` call with that seed. The engine is not re-entrant (the diffusers pipeline
keeps per-call state on itself): calls are serialised by a lock.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

from ..core.events import Cancelled
from ..core.request import GenerationRequest
from ..core.results import GenerationResult, Preview, Progress, StageTimings
from .ar_fast import supports_fast_path
from .dit import denoise, needs_tiling, vae_tiling
from .previews import PreviewProjection, latent_stats, preview_steps
from .prior import PriorTokens, generate_prior_tokens
from .references import fit_reference, side_bounds

ProgressCallback = Callable[[Progress], None]
PreviewCallback = Callable[[Preview], None]
ImageCallback = Callable[[int, int, Image.Image], None]  # (request index, image index, the image)
CancelCheck = Callable[[], bool]
SkipCheck = Callable[[int], bool]


@dataclass(frozen=True)
class _Row:
    request: int
    image: int  # index among its request's images
    prompt: str
    seed: int
    references: tuple[Image.Image, ...]


@dataclass(frozen=True)
class _Calls:
    """A `generate` call's callbacks, defaulted to no-ops (`preview`: None when not asked for)."""

    report: ProgressCallback
    cancel: CancelCheck
    skip: SkipCheck
    image: ImageCallback
    preview: PreviewCallback | None


class _Skipped(Exception):
    """Unwinds the DiT loop of a request that was dropped from its batch."""


class Engine:
    """Switches (docs/benchmarks.md says what each buys): `ar_fast_path` (ar_fast.py; the same tokens; None:
    on for CUDA only); `batched_cfg` (dit.py) and `vae_tiling` (tile seams) change pixels slightly, hence
    off by default; `previews`: live previews per image when `generate` is given `on_preview` (previews.py,
    its projection cached in `preview_cache`), read from the latents without changing the images."""

    def __init__(
        self,
        pipe,
        ar_fast_path: bool | None = None,
        batched_cfg: bool = False,
        vae_tiling: bool = False,
        previews: int = 0,
        preview_cache: Path | None = None,
    ) -> None:
        self.pipe = pipe
        self.device: torch.device = pipe._execution_device
        fast_ok = supports_fast_path(pipe.vision_language_encoder)
        if ar_fast_path and not fast_ok:
            raise ValueError("ar_fast_path needs the AR model on sdpa or eager attention")
        self.ar_fast_path = fast_ok and self.device.type == "cuda" if ar_fast_path is None else ar_fast_path
        self.batched_cfg, self.vae_tiling = batched_cfg, vae_tiling
        self.previews, self.preview_cache = previews, preview_cache
        self._projection: PreviewProjection | None = None
        self.min_ref_side, self.max_ref_side = side_bounds(pipe.processor.image_processor)
        self._lock = threading.Lock()

    def generate(
        self,
        requests: Sequence[GenerationRequest],
        references: Sequence[Sequence[Image.Image]] | None = None,
        on_progress: ProgressCallback | None = None,
        should_cancel: CancelCheck | None = None,
        should_skip: SkipCheck | None = None,
        on_preview: PreviewCallback | None = None,
        on_image: ImageCallback | None = None,
    ) -> list[GenerationResult | None]:
        """Run the requests; results come back in request order. `references[i]` are request i's decoded
        reference images (as many as its `references` locators). Raises Cancelled when `should_cancel`
        says stop. `on_preview` gets `self.previews` small previews per image during the DiT stage;
        `on_image` gets each image as soon as it is decoded (images finish one by one: the DiT and VAE
        run row by row).
        `should_skip(i)` true drops request i's remaining DiT/VAE work (its result is None) while its
        neighbours go on; its AR rows, batched with theirs, run to the end regardless."""
        decoded_refs = list(references) if references is not None else [()] * len(requests)
        for request, refs in zip(requests, decoded_refs, strict=True):
            if len(refs) != len(request.references):
                raise ValueError(f"{len(request.references)} references given, {len(refs)} decoded")
        calls = _Calls(
            on_progress or (lambda _: None),
            should_cancel or (lambda: False),
            should_skip or (lambda _: False),
            on_image or (lambda _request, _image, _picture: None),
            on_preview,
        )
        images: dict[int, list[Image.Image]] = {i: [] for i in range(len(requests))}
        timings: dict[int, StageTimings] = {}
        groups: dict[str, list[int]] = {}
        for i, request in enumerate(requests):
            groups.setdefault(request.batch_key, []).append(i)
        with self._lock, torch.inference_mode():
            for members in groups.values():
                fitted = {i: self._fit(decoded_refs[i]) for i in members}
                rows = [
                    _Row(i, k, requests[i].prompt, seed, fitted[i])
                    for i in members
                    for k, seed in enumerate(requests[i].seeds)
                ]
                decoded, stage_timings = self._run_group(requests[members[0]], rows, calls)
                for row, image in zip(rows, decoded, strict=True):
                    images[row.request].append(image)
                    timings[row.request] = stage_timings
        return [
            None if None in images[i] else GenerationResult(images[i], requests[i].seeds, timings[i])
            for i in range(len(requests))
        ]

    def _fit(self, references: Sequence[Image.Image]) -> tuple[Image.Image, ...]:
        return tuple(fit_reference(ref, self.min_ref_side, self.max_ref_side) for ref in references)

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def _run_group(
        self, spec: GenerationRequest, rows: list[_Row], calls: _Calls
    ) -> tuple[list[Image.Image | None], StageTimings]:
        """One batch of rows that share size, steps, guidance and reference count."""
        report, steps = calls.report, spec.num_inference_steps
        chosen = preview_steps(steps, self.previews) if calls.preview is not None else frozenset()
        if chosen and self._projection is None:
            self._projection = PreviewProjection.load_or_fit(self.pipe.vae, self.preview_cache)

        # 1. AR: prior tokens for all rows in one batched generate(), one generator per row.
        start = time.perf_counter()
        prior = generate_prior_tokens(
            self.pipe,
            [row.prompt for row in rows],
            spec.height,
            spec.width,
            [list(row.references) for row in rows] if spec.references else None,
            [torch.Generator(self.device).manual_seed(row.seed) for row in rows],
            on_token=lambda done, total: report(Progress("ar", done, total)),
            should_cancel=calls.cancel,
            fast=self.ar_fast_path,
        )
        self._sync()
        ar_time = time.perf_counter() - start

        # 2. DiT, then 3. VAE, one row at a time: batching them changes float rounding (a row's image would
        # depend on its neighbours) and buys little, as the AR stage dominates.
        total_steps = steps * len(rows)
        dit_time = vae_time = 0.0
        decoded: list[Image.Image | None] = []
        for r, row in enumerate(rows):
            if calls.cancel():
                raise Cancelled("cancelled before the DiT stage")
            image = latents = None
            start = time.perf_counter()
            if calls.skip(row.request):
                report(Progress("dit", (r + 1) * steps, total_steps))
            else:  # None when the row's request is dropped mid-denoise
                step_end = self._step_end(row, r, steps, total_steps, calls, chosen)
                latents = self._denoise(spec, row, prior.row(r), step_end)
            if latents is not None:
                self._sync()
                dit_time += time.perf_counter() - start
                start = time.perf_counter()
                image = self._decode(latents)
                vae_time += time.perf_counter() - start
            decoded.append(image)
            report(Progress("vae", r + 1, len(rows)))
            if image is not None:
                calls.image(row.request, row.image, image)
        return decoded, StageTimings(ar=ar_time, dit=dit_time, vae=vae_time)

    def _step_end(
        self, row: _Row, r: int, steps: int, total_steps: int, calls: _Calls, chosen: frozenset[int]
    ):
        """What the DiT loop calls after row `r`'s steps: a preview at the `chosen` steps, progress, then
        cancel and skip checks."""

        def step_end(_pipe, step: int, _timestep, tensors: dict) -> dict:
            if step + 1 in chosen and calls.preview is not None and self._projection is not None:
                latents = self._projection(tensors["latents"])
                calls.preview(Preview(row.request, row.image, step + 1, steps, latents))
            calls.report(Progress("dit", r * steps + step + 1, total_steps))
            if calls.cancel():
                raise Cancelled("cancelled during the DiT stage")
            if calls.skip(row.request):
                raise _Skipped
            return tensors

        return step_end

    def _denoise(
        self, spec: GenerationRequest, row: _Row, prior: PriorTokens, step_end
    ) -> torch.Tensor | None:
        """The pipeline's DiT loop from given prior tokens; it stops before its own VAE decode. None when
        the row's request was dropped part-way."""
        generator = torch.Generator("cpu").manual_seed(row.seed)
        try:
            if self.batched_cfg:
                shape = (spec.height, spec.width, spec.num_inference_steps, spec.guidance_scale)
                return denoise(self.pipe, row.prompt, row.references, *shape, prior, generator, step_end)
            return self.pipe(
                prompt=row.prompt,
                image=list(row.references) or None,
                height=spec.height,
                width=spec.width,
                num_inference_steps=spec.num_inference_steps,
                guidance_scale=spec.guidance_scale,
                prior_token_ids=prior.token_ids,
                prior_token_image_ids=prior.image_token_ids,
                source_image_grid_thw=prior.image_grids,
                generator=generator,
                output_type="latent",
                callback_on_step_end=step_end,
            ).images
        except _Skipped:
            return None

    def _decode(self, latents: torch.Tensor) -> Image.Image:
        vae = self.pipe.vae
        latents = latents.to(vae.dtype)
        mean, std = latent_stats(vae, latents.device, latents.dtype)
        with vae_tiling(vae, self.vae_tiling and needs_tiling(vae, latents)):
            pixels = vae.decode(latents * std + mean, return_dict=False)[0]
        return self.pipe.image_processor.postprocess(pixels, output_type="pil")[0]
