"""The job service (serving/jobs.py) on a real store with no worker: `watch` wakes on each change of its
job and ends when it finishes, a queued job past its start deadline fails for whoever reads or waits on
it — on time, even with a long poll interval and a snapshot cached before the deadline — and a caller sees
only its own jobs."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

from helpers.jobs import make_job

from glm_image_server.config import Settings
from glm_image_server.core.job import JobStatus
from glm_image_server.serving.jobs import Caller
from glm_image_server.serving.services import Services, build_services

FAL = Caller("fal")


def run(tmp_path: Path, scenario) -> None:
    """`scenario(services)` on a new event loop, with the change feed running; polls that would hide a
    missed wake-up are long (30 s), snapshots are cached for a minute."""
    settings = Settings(data_dir=tmp_path, wait_poll_s=30, snapshot_ttl_s=60, change_poll_s=0.02)

    async def main() -> None:
        services = build_services(settings, asyncio.get_running_loop())
        services.changes.start()
        try:
            await asyncio.wait_for(scenario(services), 10)
        finally:
            services.changes.stop()
            services.store.close()

    asyncio.run(main())


def later(delay: float, action) -> None:
    timer = threading.Timer(delay, action)
    timer.daemon = True
    timer.start()


def test_a_waiter_sees_a_queued_job_fail_at_its_start_deadline(tmp_path):
    async def scenario(services: Services) -> None:
        job = make_job().model_copy(update={"start_by": time.time() + 0.3})
        assert await services.jobs.submit(FAL, job)
        began = time.monotonic()
        finished = await services.jobs.finished(FAL, job.id)
        assert 0.25 <= time.monotonic() - began < 2  # woken by the deadline, not the 30 s poll
        assert finished.status == JobStatus.FAILED and finished.error.kind == "timeout"

    run(tmp_path, scenario)


def test_a_snapshot_cached_before_the_deadline_does_not_hide_it(tmp_path):
    async def scenario(services: Services) -> None:
        job = make_job().model_copy(update={"start_by": time.time() + 0.2})
        await services.jobs.submit(FAL, job)
        queued = await services.jobs.snapshot(FAL, job.id, progress=True)
        assert queued.job.status == JobStatus.QUEUED and queued.position == 0
        await asyncio.sleep(0.3)
        late = await services.jobs.snapshot(FAL, job.id, progress=True)
        assert late.job.status == JobStatus.FAILED and late.job.error.kind == "timeout"
        assert (await services.jobs.get(FAL, job.id)).status == JobStatus.FAILED

    run(tmp_path, scenario)


def test_watch_wakes_on_each_change_and_ends_when_the_job_finishes(tmp_path):
    async def scenario(services: Services) -> None:
        job = make_job()
        await services.jobs.submit(FAL, job)
        later(0.1, lambda: services.store.add_log(job.id, "INFO", "hello"))
        later(0.4, lambda: services.store.request_cancel(job.id))
        began, seen = time.monotonic(), []
        async for snapshot in services.jobs.watch(FAL, job.id, logs=True):
            seen.append((snapshot.job.status, [entry.message for entry in snapshot.logs]))
        assert time.monotonic() - began < 2
        assert seen[0] == (JobStatus.QUEUED, [])
        assert (JobStatus.QUEUED, ["hello"]) in seen
        assert seen[-1][0] == JobStatus.CANCELLED

    run(tmp_path, scenario)


def test_a_caller_sees_only_its_own_jobs(tmp_path):
    alice, bob, alice_openai = Caller("fal", "alice"), Caller("fal", "bob"), Caller("openai", "alice")

    async def scenario(services: Services) -> None:
        job = services.jobs.new_job(
            alice, "fal-ai/glm-image", make_job().request, make_job().output, "http://t/"
        )
        assert job.owner == "alice" and job.api == "fal"
        await services.jobs.submit(alice, job)
        assert (await services.jobs.get(alice, job.id)).id == job.id
        for other in (bob, alice_openai):
            assert await services.jobs.get(other, job.id) is None
            assert (await services.jobs.snapshot(other, job.id)).job is None
            assert [s.job for s in [s async for s in services.jobs.watch(other, job.id)]] == [None]
            assert await services.jobs.cancel(other, job.id) == "missing"
        assert await services.jobs.cancel(alice, job.id) == "cancelled"

    run(tmp_path, scenario)
