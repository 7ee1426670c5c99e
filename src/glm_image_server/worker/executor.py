"""The executor seam: the scheduler has each claimed job prepared (its inputs fetched, its prompt
expanded) — in the background, so a slow input never holds the engine or another job — then hands it
the batch's prepared jobs to run; it reports typed events. `LocalExecutor` runs them here, in this worker
process: one engine call for the batch, then the post stage per job. A job that fails its own inputs
fails alone. Images that need no look at their siblings are stored as the engine decodes each one and
reported at once (JobImage), so clients can have them before the rest of their job.
"""

from __future__ import annotations

import errno
import io
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Protocol

from PIL import Image

from .. import metrics
from ..core.events import (
    Cancelled,
    EventSink,
    JobFailed,
    JobImage,
    JobLog,
    JobPreview,
    JobProgress,
    JobSucceeded,
)
from ..core.job import Job, JobError
from ..core.request import GenerationRequest, InvalidRequest
from ..core.results import GenerationResult, Preview, PreviewImage, Progress
from ..media.references import ReferenceLoader
from ..post.stage import EarlyImage, PostContext, finish_early, finish_images, finishes_early
from .prompting import PromptExpander

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from ..engine.engine import Engine

CancelCheck = Callable[[str], bool]
PREPARE_THREADS = 16  # jobs whose inputs are fetched at once (each waits, it does not compute)


class Interrupted(Exception):
    """The worker is stopping: leave the jobs to be run again."""


class Executor(Protocol):
    def prepare(self, job: Job, emit: EventSink) -> Future[Any]:
        """Start getting a job's inputs ready; the future gives what `run` takes, or None when the job
        failed (its JobFailed event was emitted)."""

    def run(
        self, prepared: Sequence[Any], emit: EventSink, cancelled: CancelCheck, stopping: Callable[[], bool]
    ) -> None:
        """Run a batch of prepared compatible jobs; every job ends in exactly one JobSucceeded or
        JobFailed event, unless the worker is stopping (raises Interrupted: the jobs stay claimed, to run
        again)."""


@dataclass(frozen=True)
class _Prepared:
    job: Job
    request: GenerationRequest  # the prompt after expansion
    references: tuple[Image.Image, ...]
    timings: dict[str, float]
    early: dict[int, EarlyImage] = field(default_factory=dict)  # images stored as they were decoded


def encode_preview(preview: Preview) -> PreviewImage:
    """A preview as a small JPEG (a few KB at latent resolution)."""
    buffer = io.BytesIO()
    preview.picture.save(buffer, "JPEG", quality=80)
    width, height = preview.picture.size
    return PreviewImage(
        buffer.getvalue(), "image/jpeg", width, height, preview.image, preview.step, preview.steps
    )


def _internal(exc: BaseException) -> JobError:
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        return JobError(kind="internal", message="the server's disk is full: the images could not be saved")
    return JobError(kind="internal", message=f"generation failed: {type(exc).__name__}: {exc}")


class LocalExecutor:
    def __init__(
        self,
        engine: Engine,
        references: ReferenceLoader,
        post: PostContext,
        expander: PromptExpander | None = None,
    ) -> None:
        self.engine, self.references, self.post, self.expander = engine, references, post, expander
        self._preparing = ThreadPoolExecutor(max_workers=PREPARE_THREADS, thread_name_prefix="prepare")

    def prepare(self, job: Job, emit: EventSink) -> Future[_Prepared | None]:
        """Jobs with nothing to fetch or expand are ready at once; the others get a thread each (the
        fetches themselves wait on the fetch loop, each under its own deadline)."""
        if job.request.references or job.output.expand_prompt:
            return self._preparing.submit(self._guarded, job, emit, self._prepare, job, emit)
        ready: Future[_Prepared | None] = Future()
        ready.set_result(self._guarded(job, emit, self._prepare, job, emit))
        return ready

    def run(
        self,
        prepared: Sequence[_Prepared],
        emit: EventSink,
        cancelled: CancelCheck,
        stopping: Callable[[], bool],
    ) -> None:
        if not prepared:
            return
        for p in prepared:
            emit(JobLog(p.job.id, self._describe(p.request, p.job.output.keep_best, len(prepared))))

        def on_progress(progress: Progress) -> None:
            for p in prepared:
                emit(JobProgress(p.job.id, progress.stage, progress.done, progress.total))

        def on_preview(preview: Preview) -> None:
            emit(JobPreview(prepared[preview.request].job.id, encode_preview(preview)))

        def on_image(request: int, index: int, image: Image.Image) -> None:
            self._finish_early(prepared[request], index, image, emit)

        metrics.ENGINE_CALLS.inc()
        try:
            results = self.engine.generate(
                [p.request for p in prepared],
                [p.references for p in prepared],
                on_progress=on_progress,
                should_cancel=lambda: stopping() or all(cancelled(p.job.id) for p in prepared),
                should_skip=lambda i: cancelled(prepared[i].job.id),
                on_preview=on_preview,
                on_image=on_image,
            )
        except Cancelled:
            if stopping():
                raise Interrupted from None
            results = [None] * len(prepared)
        except Exception as exc:
            for p in prepared:
                self._discard_early(p)
                emit(JobLog(p.job.id, _internal(exc).message, "ERROR"))
                emit(JobFailed(p.job.id, _internal(exc)))
            return
        for p, generated in zip(prepared, results, strict=True):
            self._finish(p, generated, emit, cancelled)

    @staticmethod
    def _describe(r: GenerationRequest, keep_best: int, batch: int) -> str:
        what = f"{r.num_images} image(s)"
        if keep_best:
            what = f"{r.num_images} candidate(s) to keep the best {keep_best}"
        return (
            f"Generating {what} at {r.width}x{r.height}, {r.num_inference_steps} steps, "
            f"guidance {r.guidance_scale:g}, seed {r.seed}"
            + (f", in a batch of {batch} requests" if batch > 1 else "")
        )

    def _finish(
        self, p: _Prepared, generated: GenerationResult | None, emit: EventSink, cancelled: CancelCheck
    ) -> None:
        if generated is None or cancelled(p.job.id):
            self._discard_early(p)
            error = JobError(kind="cancelled", message="stopped before its images were finished")
            emit(JobFailed(p.job.id, error))  # the store logs the cancel line
            return
        job = p.job
        result = self._guarded(
            job,
            emit,
            finish_images,
            self.post,
            generated,
            job.output,
            job.file_prefix,
            p.request.prompt,
            p.timings,
            lambda message, level: emit(JobLog(job.id, message, level)),
            asked_prompt=job.request.prompt,
            early=p.early,
        )
        if result is None:
            self._discard_early(p)
        else:
            emit(JobSucceeded(p.job.id, result))

    def _discard_early(self, p: _Prepared) -> None:
        """A job that did not succeed keeps no files: retention deletes only a result's images."""
        for done in p.early.values():
            key = done.finished.image.key
            try:
                self.post.storage.delete(key)
            except OSError as exc:
                log.warning("could not delete %s of failed job %s: %s", key, p.job.id, exc)

    def _finish_early(self, p: _Prepared, index: int, image: Image.Image, emit: EventSink) -> None:
        """Store one decoded image of a job whose images finish one by one, and report it. A failure here
        is only logged: the job's post stage stores the image again, and fails the job if it must."""
        job = p.job
        if not finishes_early(job.output):
            return
        try:
            done = finish_early(self.post, image, p.request.seeds[index], index, job.output, job.file_prefix)
        except Exception as exc:
            line = f"Image {index} could not be stored early ({exc}); it is stored with the rest"
            emit(JobLog(job.id, line, "WARN"))
            return
        p.early[index] = done
        emit(JobImage(job.id, done.finished))

    @staticmethod
    def _guarded(job: Job, emit: EventSink, step: Callable, *args, **kwargs):
        """Run one job's step; a failure ends that job (input or internal error) and returns None."""
        try:
            return step(*args, **kwargs)
        except InvalidRequest as exc:
            emit(JobLog(job.id, f"Invalid input: {exc}", "ERROR"))
            emit(JobFailed(job.id, JobError(kind="input", message=exc.explanation, field=exc.field)))
        except Exception as exc:
            emit(JobLog(job.id, _internal(exc).message, "ERROR"))
            emit(JobFailed(job.id, _internal(exc)))
        return None

    def _prepare(self, job: Job, emit: EventSink) -> _Prepared:
        """Fetch references and expand the prompt: the job's request, ready for the engine."""
        request = job.request
        queued_s = max(0.0, (job.started_at or time.time()) - job.created_at)
        attempt = f" (attempt {job.attempts})" if job.attempts > 1 else ""
        emit(JobLog(job.id, f"Started after {queued_s:.2f} s in the queue{attempt}"))
        start = time.perf_counter()
        references: tuple[Image.Image, ...] = ()
        if request.references:
            emit(JobLog(job.id, f"Fetching {len(request.references)} reference image(s)"))
            references = self.references.load(request.references)
        fetch_s = time.perf_counter() - start
        start = time.perf_counter()
        if job.output.expand_prompt:
            if self.expander is None:
                line = "Prompt expansion is not configured on this server; the prompt was used as given"
                prompt = request.prompt
            else:
                prompt, line = self.expander.expand(request.prompt)
            emit(JobLog(job.id, line))
            if prompt != request.prompt:
                request = replace(request, prompt=prompt)
        timings = {"queue": queued_s, "fetch": fetch_s, "expansion": time.perf_counter() - start}
        return _Prepared(job, request, references, timings)
