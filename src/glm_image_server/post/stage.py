"""After the engine, in the worker, on one job's images: safety check -> text check (and best-of-N) ->
encode -> storage -> the job's result, knowing nothing of which API asked. When no step looks at all the
images together, each is stored as soon as it is decoded (`finish_early`), so clients can have it before
its siblings; the job's result then takes those images as they are."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import NamedTuple

from PIL import Image

from .. import metrics
from ..core.request import OutputSpec, quoted_texts
from ..core.results import FinishedImage, GenerationResult, JobResult, StoredImage, TextCheck
from ..media.encode import CONTENT_TYPES, EXTENSIONS, encode_image
from ..media.storage import Storage
from ..slices import PostSettings, PricingSettings
from .safety import SafetyChecker, load_checker
from .text_check import TextChecker, load_text_checker, ranked

Log = Callable[[str, str], None]  # (message, level)


@dataclass(frozen=True)
class PostContext:
    storage: Storage
    checker: SafetyChecker | None
    pricing: PricingSettings
    text_checker: TextChecker | None = None


def load_post(settings: PostSettings, pricing: PricingSettings, storage: Storage) -> PostContext:
    """The post stage as configured: its checkers (their models load on first use), pricing and storage."""
    checker = load_checker(settings.safety_checker, settings.safety_threshold, settings.safety_labels)
    text_checker = load_text_checker(settings.text_checker, settings.text_check_threads)
    return PostContext(storage, checker, pricing, text_checker)


def check_safety(
    checker: SafetyChecker | None, images: list[Image.Image], wanted: bool, log: Log
) -> tuple[list[Image.Image], list[bool], float]:
    """(the images, a flagged one replaced by a black one of the same size; flags per image; seconds)."""
    if wanted and checker is None:
        log("Safety checking is turned off on this server: has_nsfw_concepts is false", "WARN")
    if not wanted or checker is None:
        return images, [False] * len(images), 0.0
    start = time.perf_counter()
    flags = [bool(flag) for flag in checker.check(images)]
    checked = [Image.new("RGB", im.size) if flag else im for im, flag in zip(images, flags, strict=True)]
    seconds = time.perf_counter() - start
    if any(flags):
        log(f"Safety checker flagged {sum(flags)} of {len(flags)} image(s); replaced with black", "WARN")
    else:
        log(f"Safety checker: no image flagged ({seconds:.2f} s)", "INFO")
    return checked, flags, seconds


def describe(check: TextCheck) -> str:
    """`score 0.83 (all found)`, or what is missing."""
    missing = [span.text for span in check.spans if not span.found]
    found = "all found" if not missing else "missing " + ", ".join(repr(text) for text in missing)
    return f"score {check.score:.2f} ({found})"


def check_text(
    checker: TextChecker | None,
    images: Sequence[Image.Image],
    seeds: Sequence[int],
    spans: Sequence[str],
    wanted: bool,
    log: Log,
) -> tuple[list[TextCheck] | None, float]:
    """(each image's quoted spans, read back, or None when not asked, not quoted or not checked; seconds)."""
    if wanted and not spans:
        log("Text check skipped: the prompt quotes no text", "INFO")
    elif wanted and checker is None:
        log("Text checking is turned off on this server: no text_checks", "WARN")
    if not wanted or not spans or checker is None:
        return None, 0.0
    start = time.perf_counter()
    checks = list(checker.check(images, spans))
    if len(checks) != len(images):
        raise RuntimeError(f"the text checker gave {len(checks)} checks for {len(images)} images")
    seconds = time.perf_counter() - start
    quoted = ", ".join(repr(span) for span in spans)
    per_image = "; ".join(f"seed {seed}: {describe(c)}" for seed, c in zip(seeds, checks, strict=True))
    log(f"Text check of {quoted} ({seconds:.2f} s): {per_image}", "INFO")
    return checks, seconds


def choose(keep: int, count: int, checks: Sequence[TextCheck] | None, seeds: Sequence[int], log: Log):
    """Indexes of the images to return: all of them, or the `keep` best candidates by text score, best
    first (ties, and candidates never checked, in seed order)."""
    if not 0 < keep < count:
        return list(range(count))
    if checks is None:
        log(f"Best of {count}: no text check, so the first {keep} candidate(s) in seed order", "WARN")
        return list(range(keep))
    chosen = ranked(checks)[:keep]
    kept = ", ".join(f"seed {seeds[i]} (score {checks[i].score:.2f})" for i in chosen)
    log(f"Best of {count} candidates by text score: kept {kept}", "INFO")
    return chosen


def store_image(
    storage: Storage, image: Image.Image, seed: int, output: OutputSpec, file_prefix: str, position: int
) -> StoredImage:
    """Encode an image in the requested format and save it under `{file_prefix}-{position}.{ext}`."""
    data, kind = encode_image(image, output.format, output.quality), CONTENT_TYPES[output.format]
    key = f"{file_prefix}-{position}.{EXTENSIONS[output.format]}"
    storage.save(key, data)
    return StoredImage(
        key=key, content_type=kind, width=image.width, height=image.height, file_size=len(data), seed=seed
    )


def cost(pricing: PricingSettings, images: Sequence[Image.Image], inference_s: float) -> float:
    """USD for a job, by the configured pricing: per output megapixel or per GPU-second."""
    if pricing.pricing == "gpu_second":
        return inference_s * pricing.price_per_gpu_second
    return sum(image.width * image.height for image in images) / 1e6 * pricing.price_per_megapixel


class EarlyImage(NamedTuple):
    """An image stored as soon as the engine decoded it, and the seconds encoding and saving it took."""

    finished: FinishedImage
    encode_s: float


def finishes_early(output: OutputSpec) -> bool:
    """Whether a job's images can be finished one by one: no step looks at them all together."""
    return not (output.safety_check or output.text_check or output.keep_best)


def finish_early(
    ctx: PostContext, image: Image.Image, seed: int, index: int, output: OutputSpec, file_prefix: str
) -> EarlyImage:
    """Image `index` of a job whose images finish early, stored under the name its result gives it; its cost
    is known now under per-megapixel pricing (GPU seconds are counted when the job ends)."""
    start = time.perf_counter()
    stored = store_image(ctx.storage, image, seed, output, file_prefix, index)
    price = cost(ctx.pricing, [image], 0.0) if ctx.pricing.pricing != "gpu_second" else None
    finished = FinishedImage(index=index, image=stored, nsfw=False, cost=price)
    return EarlyImage(finished, time.perf_counter() - start)


def finish_images(
    ctx: PostContext,
    generated: GenerationResult,
    output: OutputSpec,
    file_prefix: str,
    prompt: str,
    timings: dict[str, float],
    log: Log,
    asked_prompt: str | None = None,
    early: Mapping[int, EarlyImage] | None = None,
) -> JobResult:
    """One job's images, checked, chosen, encoded and stored: its result. The text check looks for the
    quoted spans of `asked_prompt` (as the client sent it); `early` holds images `finish_early` stored."""
    early = early or {}
    metrics.IMAGES.inc(len(generated.images))
    seeds = generated.seeds
    images, flags, safety_s = check_safety(ctx.checker, generated.images, output.safety_check, log)
    spans = quoted_texts(asked_prompt if asked_prompt is not None else prompt)
    checks, text_s = check_text(ctx.text_checker, images, seeds, spans, output.text_check, log)
    chosen = choose(output.keep_best, len(images), checks, seeds, log)
    start = time.perf_counter()
    stored = [
        early[i].finished.image
        if i in early
        else store_image(ctx.storage, images[i], seeds[i], output, file_prefix, position)
        for position, i in enumerate(chosen)
    ]
    encode_s = time.perf_counter() - start + sum(done.encode_s for done in early.values())
    t = generated.timings
    stages = {"safety": safety_s, "text_check": text_s, "encode": encode_s, "inference": t.inference}
    all_timings = {**timings, **asdict(t), **stages}
    for stage, seconds in all_timings.items():
        metrics.STAGE_SECONDS.labels(stage).observe(seconds)
    log(f"Done: AR {t.ar:.2f} s, DiT {t.dit:.2f} s, VAE {t.vae:.2f} s", "INFO")
    return JobResult(
        images=tuple(stored),
        prompt=prompt,
        has_nsfw_concepts=tuple(flags[i] for i in chosen),
        timings=all_timings,
        cost=cost(ctx.pricing, images, t.inference),  # every candidate made, kept or not
        text_checks=None if checks is None else tuple(checks[i] for i in chosen),
    )
