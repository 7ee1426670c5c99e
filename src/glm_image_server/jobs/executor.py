"""The executor seam: the scheduler hands it a batch of claimed jobs; it runs them and reports typed
events. `LocalExecutor` runs them here, in this worker process: fetch references and expand prompts, one
engine call for the batch, then the post stage per job. A job that fails its own inputs fails alone.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Protocol

from PIL import Image

from .. import metrics
from ..media.references import ReferenceLoader
from ..post import PostContext, finish_images
from ..prompting import PromptExpander
from ..types import Cancelled, GenerationRequest, GenerationResult, InvalidRequest, Progress
from .events import EventSink, JobFailed, JobLog, JobProgress, JobSucceeded
from .records import Job, JobError

if TYPE_CHECKING:
    from ..model.engine import Engine

CancelCheck = Callable[[str], bool]


class Interrupted(Exception):
    """The worker is stopping: leave the jobs to be run again."""


class Executor(Protocol):
    def run(
        self, jobs: Sequence[Job], emit: EventSink, cancelled: CancelCheck, stopping: Callable[[], bool]
    ) -> None:
        """Run a batch of compatible jobs; every job ends in exactly one JobSucceeded or JobFailed event,
        unless the worker is stopping (raises Interrupted: the jobs stay claimed, to run again)."""


@dataclass(frozen=True)
class _Prepared:
    job: Job
    request: GenerationRequest  # the prompt after expansion
    references: tuple[Image.Image, ...]
    timings: dict[str, float]


def _internal(exc: BaseException) -> JobError:
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

    def run(
        self, jobs: Sequence[Job], emit: EventSink, cancelled: CancelCheck, stopping: Callable[[], bool]
    ) -> None:
        prepared = [p for p in (self._guarded(job, emit, self._prepare, job, emit) for job in jobs) if p]
        if not prepared:
            return
        for p in prepared:
            emit(JobLog(p.job.id, self._describe(p.request, len(prepared))))

        def on_progress(progress: Progress) -> None:
            for p in prepared:
                emit(JobProgress(p.job.id, progress.stage, progress.done, progress.total))

        metrics.ENGINE_CALLS.inc()
        try:
            results = self.engine.generate(
                [p.request for p in prepared],
                [p.references for p in prepared],
                on_progress=on_progress,
                should_cancel=lambda: stopping() or all(cancelled(p.job.id) for p in prepared),
                should_skip=lambda i: cancelled(prepared[i].job.id),
            )
        except Cancelled:
            if stopping():
                raise Interrupted from None
            results = [None] * len(prepared)
        except Exception as exc:
            for p in prepared:
                emit(JobLog(p.job.id, _internal(exc).message, "ERROR"))
                emit(JobFailed(p.job.id, _internal(exc)))
            return
        for p, generated in zip(prepared, results, strict=True):
            self._finish(p, generated, emit, cancelled)

    @staticmethod
    def _describe(request: GenerationRequest, batch: int) -> str:
        r = request
        return (
            f"Generating {r.num_images} image(s) at {r.width}x{r.height}, {r.num_inference_steps} steps, "
            f"guidance {r.guidance_scale:g}, seed {r.seed}"
            + (f", in a batch of {batch} requests" if batch > 1 else "")
        )

    def _finish(
        self, p: _Prepared, generated: GenerationResult | None, emit: EventSink, cancelled: CancelCheck
    ) -> None:
        if generated is None or cancelled(p.job.id):
            emit(JobLog(p.job.id, "Cancelled: stopped before its images were finished", "WARN"))
            emit(JobFailed(p.job.id, JobError(kind="cancelled", message="cancelled")))
            return
        result = self._guarded(p.job, emit, self._post, p, generated, emit)
        if result is not None:
            emit(JobSucceeded(p.job.id, result))

    def _post(self, p: _Prepared, generated: GenerationResult, emit: EventSink):
        def log(message: str, level: str) -> None:
            emit(JobLog(p.job.id, message, level))  # type: ignore[arg-type]

        return finish_images(
            self.post, generated, p.job.output, p.job.file_prefix, p.request.prompt, p.timings, log
        )

    @staticmethod
    def _guarded(job: Job, emit: EventSink, step: Callable, *args):
        """Run one job's step; a failure ends that job (input or internal error) and returns None."""
        try:
            return step(*args)
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
