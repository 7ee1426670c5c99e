"""After the engine: safety check -> encode -> storage -> the job's result, as plain functions.

Runs in the worker, on the images of one job; nothing here knows which API asked for them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from PIL import Image

from . import metrics
from .jobs.records import JobResult, StoredImage
from .media.encode import CONTENT_TYPES, EXTENSIONS, encode_image
from .media.storage import LocalStorage
from .safety import SafetyChecker
from .settings import Settings
from .types import GenerationResult, OutputSpec

Log = Callable[[str, str], None]  # (message, level)


@dataclass(frozen=True)
class PostContext:
    storage: LocalStorage
    checker: SafetyChecker | None
    settings: Settings


@dataclass(frozen=True)
class Checked:
    images: list[Image.Image]
    flags: list[bool]
    seconds: float


def check_safety(checker: SafetyChecker | None, images: list[Image.Image], wanted: bool, log: Log) -> Checked:
    """Flags per image; a flagged image is replaced by a black one of the same size."""
    if not wanted:
        return Checked(images, [False] * len(images), 0.0)
    if checker is None:
        log("Safety checking is turned off on this server: has_nsfw_concepts is false", "WARN")
        return Checked(images, [False] * len(images), 0.0)
    start = time.perf_counter()
    flags = [bool(flag) for flag in checker.check(images)]
    checked = [Image.new("RGB", im.size) if flag else im for im, flag in zip(images, flags, strict=True)]
    seconds = time.perf_counter() - start
    if any(flags):
        log(f"Safety checker flagged {sum(flags)} of {len(flags)} image(s); replaced with black", "WARN")
    else:
        log(f"Safety checker: no image flagged ({seconds:.2f} s)", "INFO")
    return Checked(checked, flags, seconds)


def encode_and_store(
    storage: LocalStorage,
    images: Sequence[Image.Image],
    seeds: Sequence[int],
    output: OutputSpec,
    file_prefix: str,
) -> list[StoredImage]:
    """Encode each image in the requested format and save it under `{file_prefix}-{i}.{ext}`."""
    stored = []
    for i, (image, seed) in enumerate(zip(images, seeds, strict=True)):
        data = encode_image(image, output.format, output.quality)
        key = f"{file_prefix}-{i}.{EXTENSIONS[output.format]}"
        storage.save(key, data)
        content_type = CONTENT_TYPES[output.format]
        stored.append(
            StoredImage(
                key=key,
                content_type=content_type,
                width=image.width,
                height=image.height,
                file_size=len(data),
                seed=seed,
            )
        )
    return stored


def cost(settings: Settings, images: Sequence[Image.Image], inference_s: float) -> float:
    """USD for a job, by the configured pricing: per output megapixel or per GPU-second."""
    if settings.pricing == "gpu_second":
        return inference_s * settings.price_per_gpu_second
    return sum(image.width * image.height for image in images) / 1e6 * settings.price_per_megapixel


def finish_images(
    ctx: PostContext,
    generated: GenerationResult,
    output: OutputSpec,
    file_prefix: str,
    prompt: str,
    timings: dict[str, float],
    log: Log,
) -> JobResult:
    """One job's images, checked, encoded and stored: its result."""
    metrics.IMAGES.inc(len(generated.images))
    checked = check_safety(ctx.checker, generated.images, output.safety_check, log)
    start = time.perf_counter()
    stored = encode_and_store(ctx.storage, checked.images, generated.seeds, output, file_prefix)
    t = generated.timings
    all_timings = {
        **timings,
        "ar": t.ar,
        "dit": t.dit,
        "vae": t.vae,
        "safety": checked.seconds,
        "encode": time.perf_counter() - start,
        "inference": t.inference,
    }
    for stage, seconds in all_timings.items():
        metrics.STAGE_SECONDS.labels(stage).observe(seconds)
    log(f"Done: AR {t.ar:.2f} s, DiT {t.dit:.2f} s, VAE {t.vae:.2f} s", "INFO")
    return JobResult(
        images=tuple(stored),
        prompt=prompt,
        has_nsfw_concepts=tuple(checked.flags),
        timings=all_timings,
        cost=cost(ctx.settings, checked.images, t.inference),
    )
