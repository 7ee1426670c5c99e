"""Engine: GenerationRequests -> images, in two stages a job may run in different processes or machines.

`prior` (AR): requests sharing a batch key (size and reference count) share one batched AR call, and come
out as prior tokens the job store can carry. `decode` (glyph encoder, DiT, VAE): one request's rows, one by
one. `generate` is both in one process. Each row draws from generators seeded with its own seed, so its
image is the same alone, in any batch and in any split of the stages, and with one row it equals a direct
`GlmImagePipeline` call. The pipeline keeps per-call state on itself, so calls hold a lock.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NamedTuple

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
ImageCallback = Callable[[int, Image.Image], None]  # (image index, the image)
CancelCheck = Callable[[], bool]


class PriorResult(NamedTuple):
    """One request's prior tokens (a row per image) and the seconds of the AR batch that made them."""

    tokens: PriorTokens
    ar_s: float


class Engine:
    """Switches (docs/benchmarks.md): `ar_fast_path` (ar_fast.py; None: on for CUDA only); `batched_cfg`
    (dit.py) and `vae_tiling` change pixels slightly, hence off by default; `previews` per image when
    `decode` is given `on_preview` (previews.py; the projection cached in `preview_cache`)."""

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
        vle = getattr(pipe, "vision_language_encoder", None)
        fast_ok = vle is not None and supports_fast_path(vle)
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
        on_preview: PreviewCallback | None = None,
    ) -> list[GenerationResult]:
        """Both stages here: `prior` for all requests, then `decode` for each, in request order."""
        refs = list(references) if references is not None else [()] * len(requests)
        priors = self.prior(requests, refs, on_progress, should_cancel)
        return [
            self.decode(request, ref, prior, on_progress, should_cancel, on_preview)
            for request, ref, prior in zip(requests, refs, priors, strict=True)
        ]

    def prior(
        self,
        requests: Sequence[GenerationRequest],
        references: Sequence[Sequence[Image.Image]],
        on_progress: ProgressCallback | None = None,
        should_cancel: CancelCheck | None = None,
    ) -> list[PriorResult]:
        """The AR stage: each request's prior tokens, in request order (`references[i]`: request i's decoded
        images). Raises Cancelled when `should_cancel` says stop."""
        report = on_progress or (lambda _: None)
        results: dict[int, PriorResult] = {}
        groups: dict[str, list[int]] = {}
        for i, (request, refs) in enumerate(zip(requests, references, strict=True)):
            _check_references(request, refs)
            groups.setdefault(request.batch_key, []).append(i)
        with self._lock, torch.inference_mode():
            for members in groups.values():
                spec = requests[members[0]]
                rows = [(i, seed) for i in members for seed in requests[i].seeds]
                fitted = {i: self._fit(references[i]) for i in members}
                start = time.perf_counter()
                tokens = generate_prior_tokens(
                    self.pipe,
                    [requests[i].prompt for i, _ in rows],
                    spec.height,
                    spec.width,
                    [list(fitted[i]) for i, _ in rows] if spec.references else None,
                    [torch.Generator(self.device).manual_seed(seed) for _, seed in rows],
                    on_token=lambda done, total: report(Progress("ar", done, total)),
                    should_cancel=should_cancel,
                    fast=self.ar_fast_path,
                )
                self._sync()
                ar_s = time.perf_counter() - start
                for i in members:
                    picked = [r for r, (row_request, _) in enumerate(rows) if row_request == i]
                    results[i] = PriorResult(tokens.rows(picked), ar_s)
        return [results[i] for i in range(len(requests))]

    def decode(
        self,
        request: GenerationRequest,
        references: Sequence[Image.Image],
        prior: PriorResult,
        on_progress: ProgressCallback | None = None,
        should_cancel: CancelCheck | None = None,
        on_preview: PreviewCallback | None = None,
        on_image: ImageCallback | None = None,
    ) -> GenerationResult:
        """The decode stage: one request's images, row by row (batched DiT rows would round differently, so
        a row's image would depend on its neighbours; the AR stage dominates anyway). `on_image` gets each
        image once decoded; `on_preview` `self.previews` previews per image. Raises Cancelled on cancel."""
        _check_references(request, references)
        report = on_progress or (lambda _: None)
        cancel = should_cancel or (lambda: False)
        steps, seeds = request.num_inference_steps, request.seeds
        chosen = preview_steps(steps, self.previews) if on_preview is not None else frozenset()
        with self._lock, torch.inference_mode():
            if chosen and self._projection is None:
                self._projection = PreviewProjection.load_or_fit(self.pipe.vae, self.preview_cache)
            fitted = self._fit(references)
            images: list[Image.Image] = []
            dit_s = vae_s = 0.0
            for r, seed in enumerate(seeds):
                if cancel():
                    raise Cancelled("cancelled before the DiT stage")
                start = time.perf_counter()
                step_end = self._step_end(r, steps, len(seeds), chosen, report, cancel, on_preview)
                latents = self._denoise(request, seed, fitted, prior.tokens.row(r), step_end)
                self._sync()
                dit_s += time.perf_counter() - start
                start = time.perf_counter()
                images.append(self._decode(latents))
                vae_s += time.perf_counter() - start
                report(Progress("vae", r + 1, len(seeds)))
                if on_image is not None:
                    on_image(r, images[-1])
        return GenerationResult(images, seeds, StageTimings(ar=prior.ar_s, dit=dit_s, vae=vae_s))

    def _fit(self, references: Sequence[Image.Image]) -> tuple[Image.Image, ...]:
        return tuple(fit_reference(ref, self.min_ref_side, self.max_ref_side) for ref in references)

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def _step_end(self, r, steps, rows, chosen, report, cancel, on_preview):
        """The DiT loop's callback after each of row `r`'s steps: preview (at `chosen`), progress, cancel."""

        def step_end(_pipe, step: int, _timestep, tensors: dict) -> dict:
            if step + 1 in chosen and on_preview is not None and self._projection is not None:
                on_preview(Preview(0, r, step + 1, steps, self._projection(tensors["latents"])))
            report(Progress("dit", r * steps + step + 1, rows * steps))
            if cancel():
                raise Cancelled("cancelled during the DiT stage")
            return tensors

        return step_end

    def _denoise(self, spec: GenerationRequest, seed: int, references, prior: PriorTokens, step_end):
        """The pipeline's DiT loop from given prior tokens; it stops before its own VAE decode."""
        generator = torch.Generator("cpu").manual_seed(seed)
        if self.batched_cfg:
            shape = (spec.height, spec.width, spec.num_inference_steps, spec.guidance_scale)
            return denoise(self.pipe, spec.prompt, references, *shape, prior, generator, step_end)
        return self.pipe(
            prompt=spec.prompt,
            image=list(references) or None,
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

    def _decode(self, latents: torch.Tensor) -> Image.Image:
        vae = self.pipe.vae
        latents = latents.to(vae.dtype)
        mean, std = latent_stats(vae, latents.device, latents.dtype)
        with vae_tiling(vae, self.vae_tiling and needs_tiling(vae, latents)):
            pixels = vae.decode(latents * std + mean, return_dict=False)[0]
        return self.pipe.image_processor.postprocess(pixels, output_type="pil")[0]


def _check_references(request: GenerationRequest, references: Sequence[Image.Image]) -> None:
    if len(references) != len(request.references):
        raise ValueError(f"{len(request.references)} references given, {len(references)} decoded")
