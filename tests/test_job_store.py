"""The SQLite job store: ordering, one claimant per job, cancel, restart recovery, retention."""

from __future__ import annotations

import threading
import time
import uuid

from glm_image_server.jobs.records import Job, JobResult, JobSpec, JobStatus, StoredImage
from glm_image_server.jobs.retention import RetentionSweeper
from glm_image_server.jobs.sqlite import SqliteJobStore
from glm_image_server.media.storage import LocalStorage


def make_job(prompt: str = "p", webhook: str | None = None) -> Job:
    spec = JobSpec(prompt=prompt, width=64, height=64, num_inference_steps=10, guidance_scale=1.5, seed=1)
    return Job(
        id=str(uuid.uuid4()),
        api="fal",
        app="fal-ai/glm-image",
        spec=spec,
        status=JobStatus.QUEUED,
        created_at=time.time(),
        file_prefix=uuid.uuid4().hex,
        base_url="http://test/",
        webhook_url=webhook,
    )


def test_fifo_positions_and_single_claimant(tmp_path) -> None:
    store = SqliteJobStore(tmp_path / "jobs.sqlite3")
    jobs = [make_job(str(n)) for n in range(30)]
    for job in jobs:
        store.create(job)
    assert [store.queue_position(job.id) for job in jobs[:3]] == [0, 1, 2]

    claimed: list[str] = []
    lock = threading.Lock()

    def worker() -> None:
        other = SqliteJobStore(tmp_path / "jobs.sqlite3")  # its own connections, as another process would
        while job := other.claim_next():
            with lock:
                claimed.append(job.id)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(claimed) == sorted(job.id for job in jobs)  # each exactly once
    assert store.get(jobs[0].id).status == JobStatus.RUNNING and store.get(jobs[0].id).attempts == 1


def test_cancel_outcomes(tmp_path) -> None:
    store = SqliteJobStore(tmp_path / "jobs.sqlite3")
    queued, running = make_job(webhook="http://hook/"), make_job()
    store.create(running)
    store.create(queued)
    assert store.claim_next().id == running.id
    assert store.request_cancel(queued.id) == "cancelled"
    assert store.get(queued.id).status == JobStatus.CANCELLED
    assert [d.job_id for d in store.due_webhooks(time.time())] == [queued.id]  # its webhook still goes out
    assert store.request_cancel(running.id) == "requested" and store.cancel_requested(running.id)
    assert store.get(running.id).status == JobStatus.RUNNING
    assert store.finish(running.id, JobStatus.CANCELLED)
    assert store.request_cancel(running.id) == "finished"
    assert store.request_cancel("nope") == "missing"
    assert not store.finish(running.id, JobStatus.SUCCEEDED)  # a final state is final


def test_recover_requeues_then_gives_up(tmp_path) -> None:
    store = SqliteJobStore(tmp_path / "jobs.sqlite3")
    job = make_job()
    store.create(job)
    for attempt in (1, 2):
        assert store.claim_next().attempts == attempt
        assert store.recover(max_attempts=3) == (1, 0)
        assert store.get(job.id).status == JobStatus.QUEUED
    store.claim_next()
    assert store.recover(max_attempts=3) == (0, 1)
    assert store.get(job.id).status == JobStatus.FAILED
    assert "3 times" in store.get(job.id).error.message


def test_retention_deletes_rows_logs_and_files(tmp_path) -> None:
    store = SqliteJobStore(tmp_path / "jobs.sqlite3")
    storage = LocalStorage(tmp_path / "files")
    old, fresh = make_job(), make_job()
    for job in (old, fresh):
        store.create(job)
        store.claim_next()
        store.add_log(job.id, "INFO", "hello")
        key = f"{job.file_prefix}-0.png"
        storage.save(key, b"png")
        image = StoredImage(key=key, content_type="image/png", width=1, height=1, file_size=3, seed=1)
        result = JobResult(images=(image,), seed=1, prompt="p", has_nsfw_concepts=(False,), timings={})
        store.finish(job.id, JobStatus.SUCCEEDED, result=result)
    sweeper = RetentionSweeper(store, storage, retention_s=60)
    assert sweeper.sweep() == 0
    sweeper.retention_s = 0.0  # everything finished is now past retention
    time.sleep(0.01)
    assert sweeper.sweep() == 2
    assert store.get(old.id) is None and store.logs(old.id) == []
    assert storage.path(f"{old.file_prefix}-0.png") is None
    assert list((tmp_path / "files").iterdir()) == []


def test_ttl_overrides_retention(tmp_path) -> None:
    store = SqliteJobStore(tmp_path / "jobs.sqlite3")
    short, default = make_job().model_copy(update={"ttl_s": 0.0}), make_job()
    for job in (short, default):
        store.create(job)
        store.claim_next()
        store.finish(job.id, JobStatus.FAILED)
    time.sleep(0.01)
    assert [job.id for job in store.delete_expired(time.time(), retention_s=3600)] == [short.id]
    assert store.get(default.id) is not None
    assert not store.create(default)  # an existing id is refused, not overwritten
