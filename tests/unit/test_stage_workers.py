"""Workers by role on one store, with the tiny model: a `prior` worker and a `decode` worker make the same
bytes as one `all` worker, for text-to-image and for an edit with two references; the AR stage runs
once per job; a prior worker alone leaves its jobs waiting for a decode worker, which finishes them when
it comes; jobs that differ only in steps and guidance share one AR batch."""

from __future__ import annotations

import io
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from helpers.images import data_uri
from helpers.jobs import make_job
from helpers.stores import sqlite_store
from helpers.waiting import wait_for
from PIL import Image

from glm_image_server.config import Settings
from glm_image_server.core.job import Job, JobStatus
from glm_image_server.core.request import OutputSpec
from glm_image_server.store.sql import SqlJobStore
from glm_image_server.worker.main import start_worker


def noise_png(seed: int, size: tuple[int, int]) -> str:
    import numpy as np

    pixels = np.random.default_rng(seed).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return data_uri(buffer.getvalue())


def workload() -> list[Job]:
    """Two text-to-image jobs of one size (other steps and guidance: one AR batch) and an edit."""
    png = OutputSpec(format="png")
    return [
        make_job("a 'CAFE' sign", steps=3, seed=11, num_images=2, output=png),
        make_job("a 'BAR' sign", steps=2, guidance=4.0, seed=12, output=png),
        make_job(
            "make it blue",
            width=96,
            steps=2,
            seed=13,
            references=(noise_png(1, (64, 96)), noise_png(2, (96, 64))),
            output=png,
        ),
    ]


class Counting:
    """The engine's stages, counted: requests through `prior` and through `decode`."""

    def __init__(self, engine, monkeypatch) -> None:
        self.prior_calls: list[int] = []
        self.decodes = 0
        prior, decode = engine.prior, engine.decode

        def counted_prior(requests, *args, **kwargs):
            self.prior_calls.append(len(requests))
            return prior(requests, *args, **kwargs)

        def counted_decode(*args, **kwargs):
            self.decodes += 1
            return decode(*args, **kwargs)

        monkeypatch.setattr(engine, "prior", counted_prior)
        monkeypatch.setattr(engine, "decode", counted_decode)


@contextmanager
def workers(tmp_path: Path, store: SqlJobStore, engine, roles: list[str]) -> Iterator[Settings]:
    base = Settings(
        data_dir=tmp_path,
        device="cpu",
        safety_checker="none",
        batch_window_s=0.5,
        idle_poll_s=0.05,
        cancel_poll_s=0.05,
    )
    started = [
        start_worker(base.model_copy(update={"role": role, "worker_id": f"{role}-{i}"}), store, engine)
        for i, role in enumerate(roles)
    ]
    try:
        yield base
    finally:
        for worker in started:
            worker.stop()


def images_of(settings: Settings, store: SqlJobStore, jobs: list[Job]) -> list[list[bytes]]:
    wait_for(lambda: all(store.get(job.id).status.finished for job in jobs), 90, "the jobs")
    done = [store.get(job.id) for job in jobs]
    assert [job.status for job in done] == [JobStatus.SUCCEEDED] * len(jobs), [job.error for job in done]
    return [[(settings.files_dir / image.key).read_bytes() for image in job.result.images] for job in done]


def run(tmp_path: Path, engine, roles: list[str]) -> list[list[bytes]]:
    store = sqlite_store(tmp_path / "jobs.sqlite3")
    jobs = workload()
    for job in jobs:
        store.create(job)
    with workers(tmp_path, store, engine, roles) as settings:
        return images_of(settings, store, jobs)


def test_a_prior_and_a_decode_worker_make_the_bytes_of_one_all_worker(engine, tmp_path, monkeypatch):
    counts = Counting(engine, monkeypatch)
    alone = run(tmp_path / "all", engine, ["all"])
    assert sorted(counts.prior_calls) == [1, 2] and counts.decodes == 3  # the two 64² jobs: one AR batch
    split = run(tmp_path / "split", engine, ["prior", "decode"])
    assert split == alone
    assert [len(images) for images in split] == [2, 1, 1]
    assert sorted(counts.prior_calls) == [1, 1, 2, 2] and counts.decodes == 6  # AR once per job


@pytest.mark.slow
def test_a_prior_worker_alone_leaves_jobs_for_a_decode_worker_that_comes_later(engine, tmp_path):
    store = sqlite_store(tmp_path / "jobs.sqlite3")
    jobs = workload()[:2]
    for job in jobs:
        store.create(job)
    with workers(tmp_path, store, engine, ["prior"]):
        wait_for(lambda: store.decode_waiting() == 2, 60, "both jobs handed off")
        waiting = [store.get(job.id) for job in jobs]
        assert all(job.status == JobStatus.RUNNING and job.stage == "decode" for job in waiting)
    with workers(tmp_path, store, engine, ["decode"]) as settings:
        images = images_of(settings, store, jobs)
    assert [len(each) for each in images] == [2, 1]
    logs = [entry.message for entry in store.logs(jobs[0].id)]
    assert any(line.startswith("Decode stage started after") for line in logs), logs
