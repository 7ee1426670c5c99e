"""The executor seam: the scheduler has each claimed job prepared (inputs fetched, prompt expanded) in the
background, so a slow input never holds the engine or another job, then has the batch run; typed events
report back. `LocalExecutor` runs a prior batch as one AR call whose tokens each job hands off, and a
decode job's DiT, VAE and post stage from its handoff. A job that fails its own inputs fails alone. Images
that need no look at their siblings are stored and reported (JobImage) as the engine decodes each one.
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
    JobHandedOff,
    JobImage,
    JobLog,
    JobPreview,
    JobProgress,
    JobSucceeded,
)
from ..core.handoff import Handoff
from ..core.job import Job, JobError
from ..core.request import GenerationRequest, InvalidRequest
from ..core.results import GenerationResult, Preview, PreviewImage, Progress
from ..media.references import ReferenceLoader
from ..post.stage import EarlyImage, PostContext, finish_early, finish_images, finishes_early
from .prompting import PromptExpander

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from ..engine.engine import Engine, PriorResult

CancelCheck = Callable[[str], bool]
Stopping = Callable[[], bool]
PREPARE_THREADS = 16  # jobs whose inputs are fetched at once (each waits, it does not compute)
KEPT_REFERENCES = 64  # handed-off jobs whose decoded references this process keeps for their decode stage


class Interrupted(Exception):
    """The worker is stopping: leave the jobs to be run again."""


class Executor(Protocol):
    def prepare(self, job: Job, emit: EventSink, handoff: Handoff | None = None) -> Future[Any]:
        """Start getting a job's inputs ready (a decode stage's: with its `handoff`); the future gives what
        `run` takes, or None when the job failed (its JobFailed event was emitted)."""

    def run(
        self, prepared: Sequence[Any], emit: EventSink, cancelled: CancelCheck, stopping: Stopping
    ) -> None:
        """Run a batch of prepared compatible jobs of one stage; every job ends in exactly one
        JobHandedOff (prior), JobSucceeded or JobFailed event, unless the worker is stopping (raises
        Interrupted: the jobs stay claimed, to run again)."""


@dataclass(frozen=True)
class _Prepared:
    job: Job
    request: GenerationRequest  # the prompt after expansion
    references: tuple[Image.Image, ...]
    timings: dict[str, float]
    handoff: Handoff | None = None  # the decode stage's start
    early: dict[int, EarlyImage] = field(default_factory=dict)  # images stored as they were decoded


def encode_preview(preview: Preview) -> PreviewImage:
    """A preview as a small JPEG (a few KB at latent resolution)."""
    buffer = io.BytesIO()
    preview.picture.save(buffer, "JPEG", quality=80)
    return PreviewImage(
        buffer.getvalue(), "image/jpeg", *preview.picture.size, preview.image, preview.step, preview.steps
    )


def _fail(job: Job, exc: Exception, emit: EventSink) -> None:
    """End a job on an internal error."""
    message = f"generation failed: {type(exc).__name__}: {exc}"
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        message = "the server's disk is full: the images could not be saved"
    emit(JobLog(job.id, message, "ERROR"))
    emit(JobFailed(job.id, JobError(kind="internal", message=message)))


def _guarded(job: Job, emit: EventSink, step: Callable, *args, **kwargs):
    """Run one job's step; a failure ends that job (input or internal error) and returns None."""
    try:
        return step(*args, **kwargs)
    except InvalidRequest as exc:
        emit(JobLog(job.id, f"Invalid input: {exc}", "ERROR"))
        emit(JobFailed(job.id, JobError(kind="input", message=exc.explanation, field=exc.field)))
    except Exception as exc:
        _fail(job, exc, emit)
    return None


class LocalExecutor:
    def __init__(
        self,
        engine: Engine,
        references: ReferenceLoader,
        post: PostContext,
        expander: PromptExpander | None = None,
        keep_references: bool = True,
    ) -> None:
        self.engine, self.references, self.post, self.expander = engine, references, post, expander
        self._preparing = ThreadPoolExecutor(max_workers=PREPARE_THREADS, thread_name_prefix="prepare")
        self.keep_references = keep_references  # for the decode stage: a prior-only worker keeps none
        self._kept: dict[str, tuple[Image.Image, ...]] = {}  # references by job, for their decode stage

    def prepare(self, job: Job, emit: EventSink, handoff: Handoff | None = None) -> Future[_Prepared | None]:
        """Jobs with nothing to fetch or expand are ready at once; the others get a thread each (the
        fetches themselves wait on the fetch loop, each under its own deadline)."""
        slow = job.request.references and job.id not in self._kept
        if slow or (job.output.expand_prompt and handoff is None):
            return self._preparing.submit(_guarded, job, emit, self._prepare, job, emit, handoff)
        ready: Future[_Prepared | None] = Future()
        ready.set_result(_guarded(job, emit, self._prepare, job, emit, handoff))
        return ready

    def run(
        self, prepared: Sequence[_Prepared], emit: EventSink, cancelled: CancelCheck, stopping: Stopping
    ) -> None:
        if len({p.handoff is None for p in prepared}) > 1:
            raise ValueError("a batch holds jobs of both stages")  # the scheduler claims one stage at a time
        if prepared and prepared[0].handoff is None:
            self._run_prior(prepared, emit, cancelled, stopping)
        else:
            for p in prepared:
                self._run_decode(p, emit, cancelled, stopping)

    def _run_prior(
        self, prepared: Sequence[_Prepared], emit: EventSink, cancelled: CancelCheck, stopping: Stopping
    ) -> None:
        """One AR call for the batch; each job not cancelled meanwhile hands its tokens off."""

        def on_progress(progress: Progress) -> None:
            for p in prepared:
                emit(JobProgress(p.job.id, progress.stage, progress.done, progress.total))

        for p in prepared:
            emit(JobLog(p.job.id, self._describe(p.request, p.job.output.keep_best, len(prepared))))
        metrics.ENGINE_CALLS.inc()
        try:
            priors = self.engine.prior(
                [p.request for p in prepared],
                [p.references for p in prepared],
                on_progress,
                should_cancel=lambda: stopping() or all(cancelled(p.job.id) for p in prepared),
            )
        except Cancelled:
            if stopping():
                raise Interrupted from None
            priors = [None] * len(prepared)
        except Exception as exc:
            for p in prepared:
                _fail(p.job, exc, emit)
            return
        for p, prior in zip(prepared, priors, strict=True):
            if prior is None or cancelled(p.job.id):
                emit(JobFailed(p.job.id, JobError(kind="cancelled", message="stopped during its AR stage")))
            else:
                emit(JobHandedOff(p.job.id, self._handoff(p, prior)))

    def _handoff(self, p: _Prepared, prior: PriorResult) -> Handoff:
        if p.references and self.keep_references:
            self._kept[p.job.id] = p.references
            while len(self._kept) > KEPT_REFERENCES:
                del self._kept[next(iter(self._kept))]
        timings = {**p.timings, "ar": prior.ar_s}
        return Handoff(p.request.prompt, *prior.tokens.to_numpy(), timings=timings, handed_at=time.time())

    def _run_decode(self, p: _Prepared, emit: EventSink, cancelled: CancelCheck, stopping: Stopping) -> None:
        """The DiT and VAE from the job's stored prior tokens, then its post stage."""
        from ..engine.engine import PriorResult
        from ..engine.prior import PriorTokens

        job, r, handoff = p.job, p.request, p.handoff
        assert handoff is not None
        what = f"{r.num_inference_steps} steps, guidance {r.guidance_scale:g}"
        emit(JobLog(job.id, f"Decoding {r.num_images} image(s) from their prior tokens: {what}"))
        tokens = PriorTokens.from_numpy(
            handoff.token_ids, handoff.image_token_ids, handoff.image_grids, self.engine.device
        )
        try:
            generated = self.engine.decode(
                r,
                p.references,
                PriorResult(tokens, handoff.timings.get("ar", 0.0)),
                lambda progress: emit(JobProgress(job.id, progress.stage, progress.done, progress.total)),
                should_cancel=lambda: stopping() or cancelled(job.id),
                on_preview=lambda preview: emit(JobPreview(job.id, encode_preview(preview))),
                on_image=lambda index, image: self._finish_early(p, index, image, emit),
            )
        except Cancelled:
            if stopping():
                raise Interrupted from None
            generated = None
        except Exception as exc:
            self._discard_early(p)
            _fail(job, exc, emit)
            return
        self._kept.pop(job.id, None)
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
        job = p.job
        if generated is None or cancelled(job.id):
            self._discard_early(p)
            error = JobError(kind="cancelled", message="stopped before its images were finished")
            emit(JobFailed(job.id, error))  # the store logs the cancel line
            return
        result = _guarded(
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
            emit(JobSucceeded(job.id, result))

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

    def _prepare(self, job: Job, emit: EventSink, handoff: Handoff | None) -> _Prepared:
        """Fetch references and expand the prompt (a decode stage has its prompt in its handoff, and its
        references kept from the prior stage where this process ran it): the job, ready for the engine."""
        attempt = f" (attempt {job.attempts})" if job.attempts > 1 else ""
        if handoff is not None:
            waited = max(0.0, time.time() - handoff.handed_at)
            emit(
                JobLog(
                    job.id, f"Decode stage started after {waited:.2f} s waiting for a decode worker{attempt}"
                )
            )
            references = self._kept.get(job.id) or self._fetch(job, emit)[0]
            timings = {**handoff.timings, "decode_queue": waited}
            return _Prepared(job, replace(job.request, prompt=handoff.prompt), references, timings, handoff)
        request = job.request
        queued_s = max(0.0, (job.started_at or time.time()) - job.created_at)
        emit(JobLog(job.id, f"Started after {queued_s:.2f} s in the queue{attempt}"))
        references, fetch_s = self._fetch(job, emit)
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

    def _fetch(self, job: Job, emit: EventSink) -> tuple[tuple[Image.Image, ...], float]:
        """The job's reference images, decoded, and the seconds it took."""
        if not job.request.references:
            return (), 0.0
        start = time.perf_counter()
        emit(JobLog(job.id, f"Fetching {len(job.request.references)} reference image(s)"))
        return self.references.load(job.request.references), time.perf_counter() - start
