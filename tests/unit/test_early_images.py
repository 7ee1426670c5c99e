"""Images finish one by one: the engine decodes a job's images row by row, and the executor stores each
image that needs no look at its siblings as soon as it is decoded, reporting it (JobImage) before the
next image is done; the job's result then carries those very files."""

from __future__ import annotations

import pytest
from helpers.jobs import make_job

from glm_image_server.config import Settings
from glm_image_server.core import transitions
from glm_image_server.core.events import (
    JobEvent,
    JobFailed,
    JobHandedOff,
    JobImage,
    JobProgress,
    JobSucceeded,
)
from glm_image_server.core.job import Job, JobStatus
from glm_image_server.core.request import OutputSpec
from glm_image_server.media.fetch import ImageFetcher
from glm_image_server.media.references import ReferenceLoader
from glm_image_server.media.storage import LocalStorage
from glm_image_server.post.stage import PostContext
from glm_image_server.slices import FetchSettings, PricingSettings
from glm_image_server.worker.executor import LocalExecutor

# Two images by default, decoded one after the other; run as Runware's jobs are (in the executor: running).
CAFE = {
    "prompt": "a 'CAFE' sign",
    "steps": 3,
    "seed": 21,
    "num_images": 2,
    "api": "runware",
    "app": "runware:glm-image@0",
    "status": JobStatus.RUNNING,
}


def run(engine, tmp_path, job: Job, storage: LocalStorage, cancel_after: int | None = None) -> list:
    """The job's events, each with whether image 0's file existed when it was emitted (`cancel_after`:
    the job is cancelled once that many images were reported)."""
    settings = Settings(data_dir=tmp_path, price_per_megapixel=0.5)
    fetcher = ImageFetcher(FetchSettings.from_settings(settings))
    post = PostContext(storage, None, PricingSettings.from_settings(settings))
    executor = LocalExecutor(engine, ReferenceLoader(fetcher, storage), post)
    events: list[tuple[JobEvent, bool]] = []
    first = f"{job.file_prefix}-0.{job.output.format.replace('jpeg', 'jpg')}"

    def emit(event: JobEvent) -> None:
        events.append((event, storage.path(first) is not None))

    def cancelled(_job_id: str) -> bool:
        reported = sum(isinstance(event, JobImage) for event, _ in events)
        return cancel_after is not None and reported >= cancel_after

    # The prior stage hands off its tokens; the decode stage goes on from them, as a worker does.
    executor.run([executor.prepare(job, emit).result()], emit, cancelled, lambda: False)
    (handoff,) = [event.handoff for event, _ in events if isinstance(event, JobHandedOff)]
    decoding = transitions.handed_off(job)
    executor.run([executor.prepare(decoding, emit, handoff).result()], emit, cancelled, lambda: False)
    return events


def milestones(events: list[tuple[JobEvent, bool]]) -> list[tuple[str, int]]:
    """The VAE's progress (images decoded so far) and the images reported stored, in order."""
    seen = []
    for event, _ in events:
        if isinstance(event, JobProgress) and event.stage == "vae":
            seen.append(("decoded", event.done))
        elif isinstance(event, JobImage):
            seen.append(("stored", event.image.index))
    return seen


def test_each_image_is_stored_and_reported_as_soon_as_it_is_decoded(engine, tmp_path) -> None:
    storage = LocalStorage(tmp_path / "files")
    job = make_job(**CAFE, output=OutputSpec(format="png"))
    events = run(engine, tmp_path, job, storage)
    assert milestones(events) == [("decoded", 1), ("stored", 0), ("decoded", 2), ("stored", 1)]
    early = [e.image for e, _ in events if isinstance(e, JobImage)]
    first_reported = next(stored for e, stored in events if isinstance(e, JobImage))
    assert first_reported  # its file was there when it was reported
    (result,) = [e.result for e, _ in events if isinstance(e, JobSucceeded)]
    assert result.images == tuple(done.image for done in early)  # the same files, stored once
    assert [done.image.key for done in early] == [f"{job.file_prefix}-{i}.png" for i in (0, 1)]
    assert [done.image.seed for done in early] == [21, 22]
    assert all(done.cost == pytest.approx(result.cost / 2) and not done.nsfw for done in early)


@pytest.mark.parametrize(
    "output",
    [OutputSpec(safety_check=True), OutputSpec(text_check=True), OutputSpec(text_check=True, keep_best=1)],
    ids=["safety-check", "text-check", "candidates"],
)
def test_images_that_are_judged_together_come_together(engine, tmp_path, output: OutputSpec) -> None:
    storage = LocalStorage(tmp_path / "files")
    events = run(engine, tmp_path, make_job(**CAFE, output=output), storage)
    assert not [e for e, _ in events if isinstance(e, JobImage)]
    (result,) = [e.result for e, _ in events if isinstance(e, JobSucceeded)]
    assert len(result.images) == (output.keep_best or 2)


def test_a_job_cancelled_after_an_early_image_keeps_no_files(engine, tmp_path) -> None:
    storage = LocalStorage(tmp_path / "files")
    job = make_job(**{**CAFE, "num_images": 3}, output=OutputSpec(format="png"))
    events = run(engine, tmp_path, job, storage, cancel_after=1)
    assert any(isinstance(e, JobImage) for e, _ in events)  # one image was stored and handed out...
    assert any(isinstance(e, JobFailed) and e.error.kind == "cancelled" for e, _ in events)
    assert not list((tmp_path / "files").glob("*.png"))  # ...and deleted with the cancelled job
