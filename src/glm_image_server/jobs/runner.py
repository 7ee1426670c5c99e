"""Run one claimed job: fetch its references, generate, encode, store the files, record the result."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from PIL import Image

from .. import metrics
from ..media.encode import CONTENT_TYPES, EXTENSIONS, encode_image
from ..media.fetch import ImageFetcher
from ..media.inputs import decode_image
from ..media.storage import LocalStorage
from ..model.engine import Engine
from ..prompting import PromptExpander
from ..safety import SafetyChecker
from ..settings import Settings
from ..types import Cancelled, GenerationRequest, GenerationResult, InvalidRequest, Progress, image_seed
from .records import STORED, Job, JobError, JobResult, JobStatus, LogLevel, StoredImage
from .store import JobStore

log = logging.getLogger(__name__)

STAGE_UNITS = {"ar": "AR: {} tokens", "dit": "DiT: {} steps", "vae": "VAE: {} images decoded"}


class Interrupted(Exception):
    """The server is stopping: leave the job to be run again after the restart."""


class _ProgressLog:
    """Turns per-token/per-step progress into a few log lines: each quarter of each stage."""

    def __init__(self, write: Callable[[str], None]) -> None:
        self.write = write

    def __call__(self, progress: Progress) -> None:
        quarter = max(1, progress.total // 4)
        if progress.done == progress.total or progress.done % quarter == 0:
            self.write(STAGE_UNITS[progress.stage].format(f"{progress.done}/{progress.total}"))


@dataclass(frozen=True)
class _Prepared:
    job: Job
    request: GenerationRequest
    timings: dict[str, float]


class JobRunner:
    def __init__(
        self,
        engine: Engine,
        store: JobStore,
        storage: LocalStorage,
        fetcher: ImageFetcher,
        settings: Settings,
        checker: SafetyChecker | None = None,
        expander: PromptExpander | None = None,
        on_change: Callable[[str], None] = lambda _id: None,
    ) -> None:
        self.engine, self.store, self.storage, self.fetcher = engine, store, storage, fetcher
        self.settings, self.checker, self.expander = settings, checker, expander
        self.on_change = on_change
        self._fetch_pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="fetch")

    def _log(self, job: Job, message: str, level: LogLevel = "INFO") -> None:
        self.store.add_log(job.id, level, message)
        self.on_change(job.id)

    def run(self, jobs: list[Job], cancelled: Callable[[str], bool], stopping: Callable[[], bool]) -> None:
        """Runs a batch of compatible jobs through one engine call, each to its own final state; a job
        that fails or is cancelled never fails its neighbours. Raises Interrupted when `stopping` turns
        true (the jobs are left to run again after a restart)."""
        prepared = [p for p in (self._guarded(job, self._prepare, job) for job in jobs) if p is not None]
        if not prepared:
            return
        for p in prepared:
            spec = p.job.spec
            batch = f", in a batch of {len(prepared)} requests" if len(prepared) > 1 else ""
            self._log(
                p.job,
                f"Generating {spec.num_images} image(s) at {spec.width}x{spec.height}, "
                f"{spec.num_inference_steps} steps, guidance {spec.guidance_scale:g}, seed {spec.seed}"
                + batch,
            )

        def log_to_all(message: str) -> None:
            for p in prepared:
                self._log(p.job, message)

        progress = _ProgressLog(log_to_all)
        metrics.ENGINE_CALLS.inc()
        try:
            results = self.engine.generate(
                [p.request for p in prepared],
                on_progress=progress,
                should_cancel=lambda: stopping() or all(cancelled(p.job.id) for p in prepared),
                should_skip=lambda i: cancelled(prepared[i].job.id),
            )
        except Cancelled:
            if stopping():
                raise Interrupted from None
            results = [None] * len(prepared)
        except Exception as exc:
            for p in prepared:
                self._fail_internal(p.job, exc)
            return
        for p, generated in zip(prepared, results, strict=True):
            if generated is None or cancelled(p.job.id):
                self._finish(
                    p.job, JobStatus.CANCELLED, error=JobError(kind="cancelled", message="cancelled")
                )
                continue
            result = self._guarded(p.job, self._complete, p, generated)
            if result is not None:
                self._finish(p.job, JobStatus.SUCCEEDED, result=result)

    def _guarded(self, job: Job, step: Callable, *args):
        """Run one job's step; a failure finishes that job (input or internal error) and returns None."""
        try:
            return step(*args)
        except InvalidRequest as exc:
            self._log(job, f"Invalid input: {exc}", "ERROR")
            error = JobError(kind="input", message=exc.explanation, field=exc.field)
            self._finish(job, JobStatus.FAILED, error=error)
        except Exception as exc:
            self._fail_internal(job, exc)
        return None

    def _fail_internal(self, job: Job, exc: Exception) -> None:
        log.error("job %s failed", job.id, exc_info=exc)
        message = f"generation failed: {type(exc).__name__}: {exc}"
        self._log(job, message, "ERROR")
        self._finish(job, JobStatus.FAILED, error=JobError(kind="internal", message=message))

    def _finish(self, job: Job, status: JobStatus, **outcome) -> None:
        if self.store.finish(job.id, status, **outcome):
            metrics.JOBS_FINISHED.labels(job.api, status.value).inc()
        self.on_change(job.id)

    def _reference(self, url: str, field: str) -> Image.Image:
        if not url.startswith(STORED):
            return self.fetcher.fetch(url, field)
        path = self.storage.path(url.removeprefix(STORED))
        if path is None:
            raise InvalidRequest(field, "the uploaded image has expired or does not exist", "a recent upload")
        return decode_image(path.read_bytes(), field, max_pixels=self.fetcher.max_pixels)

    def _prepare(self, job: Job) -> _Prepared:
        """Fetch references and expand the prompt: the job's request, ready for the engine."""
        spec = job.spec
        queued_s = max(0.0, (job.started_at or time.time()) - job.created_at)
        attempt = f" (attempt {job.attempts}, after a restart)" if job.attempts > 1 else ""
        self._log(job, f"Started after {queued_s:.2f} s in the queue{attempt}")
        spec.to_request()  # out-of-range values fail before any fetch

        fetch_start = time.perf_counter()
        references: tuple[Image.Image, ...] = ()
        if spec.image_urls:
            self._log(job, f"Fetching {len(spec.image_urls)} reference image(s)")
            fields = [f"references[{i}]" for i in range(len(spec.image_urls))]
            references = tuple(self._fetch_pool.map(self._reference, spec.image_urls, fields))
        fetch_s = time.perf_counter() - fetch_start

        expansion_start = time.perf_counter()
        prompt = spec.prompt
        if spec.expand_prompt:
            if self.expander is None:
                line = "Prompt expansion is not configured on this server; the prompt was used as given"
            else:
                prompt, line = self.expander.expand(spec.prompt)
            self._log(job, line)
        expansion_s = time.perf_counter() - expansion_start
        timings = {"queue": queued_s, "fetch": fetch_s, "expansion": expansion_s}
        return _Prepared(job, spec.to_request(references, prompt=prompt), timings)

    def _complete(self, prepared: _Prepared, generated: GenerationResult) -> JobResult:
        """Safety check, encode and store one job's images."""
        job, spec = prepared.job, prepared.job.spec
        metrics.IMAGES.inc(len(generated.images))
        images, flags, safety_s = self._check(job, generated.images)

        encode_start = time.perf_counter()
        stored = []
        ext = EXTENSIONS[spec.output_format]
        for i, image in enumerate(images):
            data = encode_image(image, spec.output_format, spec.output_quality)
            key = f"{job.file_prefix}-{i}.{ext}"
            self.storage.save(key, data)
            stored.append(
                StoredImage(
                    key=key,
                    content_type=CONTENT_TYPES[spec.output_format],
                    width=image.width,
                    height=image.height,
                    file_size=len(data),
                    seed=image_seed(generated.seed, i),
                )
            )
        encode_s = time.perf_counter() - encode_start
        t = generated.timings
        timings = {
            **prepared.timings,
            "ar": t.ar,
            "dit": t.dit,
            "vae": t.vae,
            "safety": safety_s,
            "encode": encode_s,
            "inference": t.inference,
        }
        for stage, seconds in timings.items():
            metrics.STAGE_SECONDS.labels(stage).observe(seconds)
        self._log(job, f"Done: AR {t.ar:.2f} s, DiT {t.dit:.2f} s, VAE {t.vae:.2f} s")
        return JobResult(
            images=tuple(stored),
            seed=generated.seed,
            prompt=prepared.request.prompt,
            has_nsfw_concepts=tuple(flags),
            timings=timings,
            cost=self._cost(images, t.inference),
        )

    def _check(self, job: Job, images: list[Image.Image]) -> tuple[list[Image.Image], list[bool], float]:
        """Flags per image; a flagged image is replaced by a black one of the same size."""
        if not job.spec.safety_check:
            return images, [False] * len(images), 0.0
        if self.checker is None:
            self._log(job, "Safety checking is turned off on this server: has_nsfw_concepts is false", "WARN")
            return images, [False] * len(images), 0.0
        start = time.perf_counter()
        flags = [bool(flag) for flag in self.checker.check(images)]
        checked = [
            Image.new("RGB", image.size) if flag else image for image, flag in zip(images, flags, strict=True)
        ]
        seconds = time.perf_counter() - start
        if any(flags):
            self._log(
                job,
                f"Safety checker flagged {sum(flags)} of {len(flags)} image(s); replaced with black",
                "WARN",
            )
        else:
            self._log(job, f"Safety checker: no image flagged ({seconds:.2f} s)")
        return checked, flags, seconds

    def _cost(self, images: list[Image.Image], inference_s: float) -> float:
        if self.settings.pricing == "gpu_second":
            return inference_s * self.settings.price_per_gpu_second
        megapixels = sum(image.width * image.height for image in images) / 1e6
        return megapixels * self.settings.price_per_megapixel
