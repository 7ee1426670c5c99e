"""The job store contract on SQLite and PostgreSQL: claims, leases, requeues, stale claims, cancels,
retention, workers; and the upgrades of SQLite version-1 and version-3 and PostgreSQL migration-2 databases,
and migrating once when replicas start together."""

from __future__ import annotations

import json
import queue
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest
from helpers.jobs import make_job
from helpers.stores import load_postgres_dump, raw_rows, sqlite_store, throwaway_database
from helpers.waiting import wait_for

from glm_image_server.core.job import Claim, Job, JobError, JobStatus, WorkerInfo
from glm_image_server.core.request import GenerationRequest, OutputSpec
from glm_image_server.core.results import JobResult, StoredImage
from glm_image_server.store.contract import JobStore, Requeued
from glm_image_server.store.migrations import HEAD, migrate
from glm_image_server.store.sql import SqlJobStore

DATA = Path(__file__).parent.parent / "data"


def result_for(job: Job) -> JobResult:
    image = StoredImage(key="k.jpg", content_type="image/jpeg", width=512, height=512, file_size=3, seed=7)
    return JobResult(images=(image,), prompt=job.request.prompt, has_nsfw_concepts=(False,), timings={})


@pytest.fixture
def store(backend) -> JobStore:
    return backend.open(max_attempts=3)


def submit(store: JobStore, *jobs: Job) -> list[Job]:
    for job in jobs:
        assert store.create(job)
    return list(jobs)


def expire_all(store: JobStore):
    return store.expire_leases(time.time() + 3600)


def test_create_rejects_a_duplicate_id(store):
    job = make_job()
    assert store.create(job)
    assert not store.create(job.model_copy(update={"app": "other"}))
    assert store.get(job.id) == job


def test_claims_are_first_in_first_out(store):
    # Different sizes: different batch keys, so each claim takes exactly one job.
    jobs = submit(store, *(make_job(f"job {i}", width=64 + 32 * i) for i in range(4)))
    assert [store.queue_position(job.id) for job in jobs] == [0, 1, 2, 3]
    claimed = [store.claim_batch("w1", 8, 30) for _ in range(4)]
    assert [[job.id for job in batch] for batch in claimed] == [[job.id] for job in jobs]
    assert store.claim_batch("w1", 8, 30) == []
    first = store.get(jobs[0].id)
    assert first.status == JobStatus.RUNNING
    assert (first.worker_id, first.attempts) == ("w1", 1)
    assert first.started_at is not None


def test_claim_batch_groups_by_batch_key_up_to_max_images(store):
    a = make_job("a", num_images=2)
    other = make_job("other key", width=1024)
    c = make_job("c", num_images=3)
    d = make_job("d", num_images=4)  # would make 9 images: heads a later batch
    e = make_job("e", num_images=1)  # still fits after d is skipped
    submit(store, a, other, c, d, e)
    batch = store.claim_batch("w1", 6, 30)
    assert [job.id for job in batch] == [a.id, c.id, e.id]
    assert all(job.status == JobStatus.RUNNING for job in batch)
    assert [job.id for job in store.claim_batch("w1", 6, 30)] == [other.id]
    assert [job.id for job in store.claim_batch("w1", 6, 30)] == [d.id]


def test_a_job_bigger_than_max_images_is_still_claimed_alone(store):
    big = make_job("big", num_images=4)
    small = make_job("small", num_images=1)
    submit(store, big, small)
    assert [job.id for job in store.claim_batch("w1", 2, 30)] == [big.id]


def test_concurrent_claims_take_each_job_once(backend):
    store = backend.open()
    jobs = submit(store, *(make_job(f"job {i}") for i in range(24)))
    claimed: dict[str, list[str]] = {}
    errors: list[BaseException] = []
    start = threading.Barrier(4)

    def claim(worker: str) -> None:
        own = backend.open()  # as another worker process would
        mine = claimed.setdefault(worker, [])
        try:
            start.wait(10)  # all four claim at once
            while batch := own.claim_batch(worker, 1, 30):
                mine.extend(job.id for job in batch)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=claim, args=(f"w{i}",)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)
    assert not errors
    everything = [job_id for ids in claimed.values() for job_id in ids]
    assert sorted(everything) == sorted(job.id for job in jobs)
    assert len(set(everything)) == len(everything)
    for worker, ids in claimed.items():
        for job_id in ids:
            assert store.get(job_id).worker_id == worker


def test_an_expired_lease_requeues_the_job_with_the_same_request(store):
    (job,) = submit(store, make_job(seed=1234, num_images=2))
    (claimed,) = store.claim_batch("w1", 8, 30)
    assert claimed.request == job.request
    assert store.expire_leases(time.time()) == Requeued(0, 0)  # nothing expired yet
    assert store.get(job.id).status == JobStatus.RUNNING

    outcome = expire_all(store)
    assert (outcome.requeued, outcome.failed) == (1, 0)
    requeued = store.get(job.id)
    assert requeued.status == JobStatus.QUEUED
    assert requeued.request == job.request
    assert requeued.request.seed == 1234
    assert requeued.attempts == 1
    assert requeued.worker_id is None
    assert any("Interrupted" in entry.message for entry in store.logs(job.id))

    (again,) = store.claim_batch("w2", 8, 30)
    assert (again.id, again.attempts, again.worker_id) == (job.id, 2, "w2")
    assert again.request == job.request


def test_the_next_claim_batch_requeues_expired_leases_first(store):
    (job,) = submit(store, make_job())
    store.claim_batch("w1", 8, 1.0)
    assert store.claim_batch("w2", 8, 30) == []  # the lease still holds
    time.sleep(1.1)
    (taken,) = store.claim_batch("w2", 8, 30)
    assert (taken.id, taken.worker_id, taken.attempts) == (job.id, "w2", 2)


def test_a_job_fails_after_max_attempts_claims(store):
    (job,) = submit(store, make_job())
    for attempt in (1, 2):
        (claimed,) = store.claim_batch("w1", 8, 30)
        assert claimed.attempts == attempt
        assert expire_all(store).requeued == 1
    (claimed,) = store.claim_batch("w1", 8, 30)
    assert claimed.attempts == 3
    outcome = expire_all(store)
    assert (outcome.requeued, outcome.failed) == (0, 1)
    failed = store.get(job.id)
    assert failed.status == JobStatus.FAILED
    assert failed.error.kind == "internal"
    assert "3 times" in failed.error.message
    assert failed.finished_at is not None
    assert store.claim_batch("w1", 8, 30) == []


def test_release_requeues_only_that_workers_jobs_and_logs_why(store):
    a, b, c = submit(store, make_job("a", width=64), make_job("b", width=96), make_job("c", width=128))
    store.claim_batch("w1", 8, 30)  # a
    store.claim_batch("w2", 8, 30)  # b
    store.claim_batch("w1", 8, 30)  # c
    outcome = store.release("w1", "the worker process died")
    assert (outcome.requeued, outcome.failed) == (2, 0)
    assert store.get(a.id).status == JobStatus.QUEUED
    assert store.get(c.id).status == JobStatus.QUEUED
    assert store.get(b.id).status == JobStatus.RUNNING
    assert store.get(b.id).worker_id == "w2"
    for job in (a, c):
        lines = [entry for entry in store.logs(job.id) if "the worker process died" in entry.message]
        assert len(lines) == 1
        assert lines[0].level == "WARN"
    assert store.logs(b.id) == []
    assert store.release("w1", "again") == Requeued(0, 0)
    # Queue order is kept: a is ahead of c.
    assert store.queue_position(a.id) == 0
    assert store.queue_position(c.id) == 1


def test_a_stale_claim_cannot_finish_the_job(store):
    (job,) = submit(store, make_job())
    store.claim_batch("w1", 8, 30)
    expire_all(store)
    store.claim_batch("w2", 8, 30)
    before = store.get(job.id)
    result = result_for(job)

    assert not store.finish(
        job.id, JobStatus.SUCCEEDED, result=result, claim=Claim(worker_id="w1", attempt=1)
    )
    assert not store.finish(
        job.id, JobStatus.SUCCEEDED, result=result, claim=Claim(worker_id="w2", attempt=1)
    )
    assert not store.finish(
        job.id, JobStatus.SUCCEEDED, result=result, claim=Claim(worker_id="w1", attempt=2)
    )
    assert store.get(job.id) == before

    assert store.finish(job.id, JobStatus.SUCCEEDED, result=result, claim=Claim(worker_id="w2", attempt=2))
    done = store.get(job.id)
    assert done.status == JobStatus.SUCCEEDED
    assert done.result == result
    # Finished: nothing finishes it again, with or without a claim.
    assert not store.finish(job.id, JobStatus.FAILED, error=JobError(kind="internal", message="x"))
    assert store.get(job.id).status == JobStatus.SUCCEEDED


def test_the_same_worker_with_an_old_attempt_is_stale(store):
    (job,) = submit(store, make_job())
    store.claim_batch("w1", 8, 30)
    expire_all(store)
    store.claim_batch("w1", 8, 30)
    assert not store.finish(job.id, JobStatus.FAILED, claim=Claim(worker_id="w1", attempt=1))
    assert store.get(job.id).status == JobStatus.RUNNING
    assert store.finish(job.id, JobStatus.FAILED, claim=Claim(worker_id="w1", attempt=2))


def test_a_claim_cannot_finish_a_queued_job(store):
    (job,) = submit(store, make_job())
    store.claim_batch("w1", 8, 30)
    expire_all(store)  # back in the queue
    assert not store.finish(job.id, JobStatus.SUCCEEDED, claim=Claim(worker_id="w1", attempt=1))
    assert store.get(job.id).status == JobStatus.QUEUED


def test_a_claimant_that_stops_renewing_loses_its_jobs_to_another(backend):
    """Real time, short leases: `alive` renews, `silent` stops; after the lease `alive` takes over the silent
    claimant's jobs with their seeds, and the silent one can no longer finish them."""
    lease_s = 0.6
    silent, alive = backend.open(), backend.open()
    jobs = submit(silent, *(make_job(f"job {i}", seed=100 + i) for i in range(3)))
    assert [job.id for job in silent.claim_batch("silent", 2, lease_s)] == [jobs[0].id, jobs[1].id]
    assert [job.id for job in alive.claim_batch("alive", 1, lease_s)] == [jobs[2].id]
    deadline = time.monotonic() + 10
    taken: list[Job] = []
    while not taken and time.monotonic() < deadline:
        assert alive.renew("alive", lease_s, [job.id for job in jobs]) == 1 + len(taken)
        taken = alive.claim_batch("alive", 8, lease_s)
        time.sleep(0.1)
    assert [(job.id, job.request.seed, job.attempts) for job in taken] == [
        (jobs[0].id, 100, 2),
        (jobs[1].id, 101, 2),
    ]
    assert time.monotonic() < deadline
    assert not silent.finish(jobs[0].id, JobStatus.SUCCEEDED, claim=Claim(worker_id="silent", attempt=1))
    taken_over = Claim(worker_id="alive", attempt=2)
    assert alive.finish(jobs[0].id, JobStatus.SUCCEEDED, result_for(jobs[0]), claim=taken_over)
    ids = [job.id for job in jobs]
    assert alive.renew("alive", lease_s, ids) == 2  # jobs[1] and jobs[2] still held
    assert silent.renew("silent", lease_s, ids) == 0
    logs = [entry.message for entry in alive.logs(jobs[1].id)]
    assert any("stopped answering" in message for message in logs)


def test_queue_depth_per_batch_key(store):
    before = time.time()
    small = submit(store, make_job("a", num_images=2), make_job("b", num_images=3))
    wide = submit(store, make_job("c", width=1024))
    assert store.queue_depth()[0][0] != store.queue_depth()[1][0]
    depth = {key: (jobs, images, oldest) for key, jobs, images, oldest in store.queue_depth()}
    assert depth[small[0].request.batch_key] == (2, 5, small[0].created_at)
    assert depth[wide[0].request.batch_key] == (1, 1, wide[0].created_at)
    assert all(oldest >= before - 1 for _, _, oldest in depth.values())
    store.claim_batch("w1", 8, 30)  # the head's key: both small jobs
    assert [(key, jobs) for key, jobs, _, _ in store.queue_depth()] == [(wide[0].request.batch_key, 1)]


def test_subscribers_hear_other_processes_changes(backend):
    """Both stores push every change and every claimable job: PostgreSQL with NOTIFY, SQLite through its
    wake-up bus (store/wakeups.py)."""
    listener, writer = backend.open(), backend.open()
    heard: dict[str, list[str]] = {"changes": [], "queued": []}
    got = threading.Event()

    def hear(channel: str):
        def callback(job_id: str) -> None:
            if job_id:
                heard[channel].append(job_id)
                got.set()

        return callback

    pushes = [listener.subscribe(channel, hear(channel)) for channel in ("changes", "queued")]
    assert pushes == [True, True]
    (job,) = submit(writer, make_job())
    assert got.wait(5)
    writer.claim_batch("w1", 1, 30)
    writer.add_log(job.id, "INFO", "step 1")
    wait_for(lambda: len(heard["changes"]) >= 3 and bool(heard["queued"]), 5, "three changes, a queued job")
    assert heard["changes"] == [job.id] * 3
    assert heard["queued"] == [job.id]  # a claim is no news for idle workers
    writer.release("w1", "its worker stopped")
    wait_for(lambda: len(heard["queued"]) >= 2, 5, "the released job heard as queued")
    assert heard["queued"] == [job.id] * 2  # claimable again


CREATE_IN_ANOTHER_PROCESS = """
import sys
from pathlib import Path
from glm_image_server.core.job import Job
from glm_image_server.store.sql import SqlJobStore
SqlJobStore(f"sqlite:///{sys.argv[1]}").create(Job.model_validate_json(sys.argv[2]))
"""


def test_sqlite_pushes_a_job_created_by_another_process_to_both_channels(tmp_path):
    """The SQLite store has no timer behind `subscribe`: hearing the job at all means it was pushed."""
    store = sqlite_store(tmp_path / "jobs.sqlite3")
    heard: dict[str, queue.Queue[str]] = {"changes": queue.Queue(), "queued": queue.Queue()}
    assert all(store.subscribe(channel, got.put) for channel, got in heard.items())
    job = make_job()
    command = [
        sys.executable,
        "-c",
        CREATE_IN_ANOTHER_PROCESS,
        str(store.dialect.path),
        job.model_dump_json(),
    ]
    subprocess.run(command, check=True, timeout=120)
    assert heard["queued"].get(timeout=5) == job.id
    assert heard["changes"].get(timeout=5) == job.id
    store.close()


def test_renew_extends_leases(store):
    a, b = submit(store, make_job("a"), make_job("b"))
    store.claim_batch("w1", 8, 5)
    assert store.renew("w1", 600, [a.id, b.id]) == 2
    assert store.renew("w2", 600, [a.id, b.id]) == 0
    outcome = store.expire_leases(time.time() + 60)  # past the first lease, within the renewed one
    assert (outcome.requeued, outcome.failed) == (0, 0)
    assert store.get(a.id).status == JobStatus.RUNNING
    assert store.get(b.id).status == JobStatus.RUNNING
    assert store.expire_leases(time.time() + 1200).requeued == 2
    assert store.renew("w1", 600, [a.id, b.id]) == 0  # no longer holds them


def test_renew_extends_only_the_claims_the_worker_knows_of(store):
    """A claim whose commit went through while its answer was lost (the store failed at that moment) is
    not in the worker's list: its lease is not renewed, so the job goes back instead of staying held."""
    known, lost = submit(store, make_job("known"), make_job("lost"))
    store.claim_batch("w1", 8, 5)
    assert store.renew("w1", 600, [known.id]) == 1
    assert store.renew("w1", 600, []) == 0
    assert store.expire_leases(time.time() + 60).requeued == 1
    assert store.get(lost.id).status == JobStatus.QUEUED
    assert store.get(known.id).status == JobStatus.RUNNING


def test_cancel_a_queued_job_cancels_it_now(store):
    (job,) = submit(store, make_job())
    assert store.request_cancel(job.id) == "cancelled"
    cancelled = store.get(job.id)
    assert cancelled.status == JobStatus.CANCELLED
    assert cancelled.error.kind == "cancelled"
    assert cancelled.finished_at is not None
    assert store.claim_batch("w1", 8, 30) == []
    assert store.request_cancel(job.id) == "finished"
    assert store.request_cancel("nope") == "missing"
    assert not store.cancel_requested("nope")


def test_cancel_a_running_job_flags_it(store):
    (job,) = submit(store, make_job())
    store.claim_batch("w1", 8, 30)
    assert not store.cancel_requested(job.id)
    assert store.request_cancel(job.id) == "requested"
    assert store.cancel_requested(job.id)
    flagged = store.get(job.id)
    assert flagged.status == JobStatus.RUNNING
    assert flagged.cancel_requested
    # The worker still holds it and may finish it as cancelled.
    error = JobError(kind="cancelled", message="cancelled")
    assert store.finish(job.id, JobStatus.CANCELLED, error=error, claim=Claim(worker_id="w1", attempt=1))
    assert store.get(job.id).status == JobStatus.CANCELLED


@pytest.mark.parametrize("how", ["release", "expire"])
def test_requeueing_a_cancel_requested_job_cancels_it(store, how):
    (job,) = submit(store, make_job())
    store.claim_batch("w1", 8, 30)
    store.request_cancel(job.id)
    if how == "release":
        store.release("w1", "stopped")
    else:
        expire_all(store)
    cancelled = store.get(job.id)
    assert cancelled.status == JobStatus.CANCELLED
    assert cancelled.error.kind == "cancelled"
    assert store.claim_batch("w1", 8, 30) == []


def test_delete_expired_honours_ttl_and_retention(store):
    with_ttl = make_job("ttl", output=OutputSpec(ttl_s=10))
    long_ttl = make_job("long ttl", output=OutputSpec(ttl_s=10_000))
    plain = make_job("plain")
    queued = make_job("queued")
    submit(store, with_ttl, long_ttl, plain, queued)
    for job in (with_ttl, long_ttl, plain):
        store.add_log(job.id, "INFO", "hello")
        assert store.finish(job.id, JobStatus.FAILED, error=JobError(kind="internal", message="x"))
    now = time.time()
    assert store.delete_expired(now, retention_s=100) == []
    deleted = store.delete_expired(now + 11, retention_s=100)
    assert [job.id for job in deleted] == [with_ttl.id]
    assert store.get(with_ttl.id) is None
    assert store.logs(with_ttl.id) == []
    deleted = store.delete_expired(now + 101, retention_s=100)
    assert [job.id for job in deleted] == [plain.id]  # a ttl replaces the retention, even a longer one
    assert store.get(long_ttl.id) is not None
    assert store.get(queued.id) is not None
    assert [job.id for job in store.delete_expired(now + 20_000, retention_s=100)] == [long_ttl.id]
    assert store.get(queued.id) is not None  # unfinished jobs are never deleted


def test_delete_expired_drops_deliveries(store):
    job = make_job(output=OutputSpec(webhook_url="http://example.com/hook"))
    submit(store, job)
    store.finish(job.id, JobStatus.FAILED, error=JobError(kind="internal", message="x"))
    assert len(store.claim_deliveries("s", time.time() + 1, 0.001)) == 1
    store.delete_expired(time.time() + 1000, retention_s=1)
    assert store.claim_deliveries("s", time.time() + 2000, 60) == []


def test_heartbeat_upserts_workers(store):
    now = time.time()
    info = WorkerInfo(id="w1", pid=1, device="cpu", state="starting", heartbeat_at=now, started_at=now)
    store.heartbeat(info)
    store.heartbeat(info.model_copy(update={"id": "w0", "pid": 2}))
    busy = info.model_copy(update={"state": "busy", "jobs": ("j1",), "heartbeat_at": now + 1})
    store.heartbeat(busy)
    assert store.workers() == [info.model_copy(update={"id": "w0", "pid": 2}), busy]


def test_changes_are_logged_for_every_job_change(store):
    start = store.changes_after(0).position
    (job,) = submit(store, make_job())
    changes = store.changes_after(start)
    assert changes.job_ids == (job.id,)
    assert changes.position > start
    assert store.changes_after(changes.position).job_ids == ()
    store.claim_batch("w1", 8, 30)
    assert store.changes_after(changes.position).job_ids == (job.id,)


# --- migration from schema version 1

V1_SCHEMA = """
CREATE TABLE jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    status TEXT NOT NULL,
    batch_key TEXT NOT NULL,
    finished_at REAL,
    expires_at REAL,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    body TEXT NOT NULL
);
CREATE INDEX jobs_by_status ON jobs (status, seq);
CREATE INDEX jobs_by_batch ON jobs (status, batch_key, seq);
CREATE INDEX jobs_by_expiry ON jobs (expires_at);
CREATE TABLE job_logs (
    job_id TEXT NOT NULL,
    timestamp REAL NOT NULL,
    level TEXT NOT NULL,
    message TEXT NOT NULL
);
CREATE INDEX job_logs_by_job ON job_logs (job_id);
CREATE TABLE webhooks (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id TEXT NOT NULL,
    url TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    parts_done INTEGER NOT NULL DEFAULT 0,
    next_at REAL,
    delivered_at REAL,
    last_error TEXT
);
CREATE INDEX webhooks_due ON webhooks (next_at);
"""


def v1_body(job_id: str, status: str, **extra) -> dict:
    spec = {
        "prompt": f"prompt of {job_id}",
        "width": 768,
        "height": 512,
        "num_inference_steps": 30,
        "guidance_scale": 2.5,
        "seed": 4242,
        "num_images": 2,
        "image_urls": ["https://example.com/ref.png"],
        "output_format": "png",
        "output_quality": 80,
        "safety_check": True,
        "expand_prompt": False,
    }
    return {
        "id": job_id,
        "api": "fal",
        "app": "fal-ai/glm-image/image-to-image",
        "spec": spec,
        "status": status,
        "created_at": 1000.0,
        "started_at": None,
        "finished_at": None,
        "attempts": 0,
        "cancel_requested": False,
        "file_prefix": "pfx",
        "base_url": "http://old/",
        "webhook_url": None,
        "upload_url": None,
        "ttl_s": None,
        "options": {"sync_mode": True},
        "result": None,
        "error": None,
        **extra,
    }


def make_v1_database(path: Path) -> None:
    db = sqlite3.connect(path)
    db.executescript(V1_SCHEMA)
    image = {"key": "pfx-0.png", "content_type": "image/png", "width": 768, "height": 512}
    result = {
        "images": [{**image, "file_size": 10, "seed": 4242}, {**image, "file_size": 11, "seed": 4243}],
        "seed": 4242,
        "prompt": "prompt of done",
        "has_nsfw_concepts": [False, False],
        "timings": {"inference": 1.5},
        "cost": 0.01,
    }
    rows = [
        ("queued", v1_body("queued", "queued", webhook_url="https://example.com/hook"), None),
        (
            "done",
            v1_body("done", "succeeded", result=result, finished_at=2000.0, ttl_s=3600.0, attempts=1),
            2000.0,
        ),
        ("running", v1_body("running", "running", attempts=1, started_at=1500.0), None),
    ]
    for job_id, body, finished_at in rows:
        db.execute(
            "INSERT INTO jobs (id, status, batch_key, finished_at, body) VALUES (?, ?, ?, ?, ?)",
            (job_id, body["status"], "768x512/30/2.5/1", finished_at, json.dumps(body)),
        )
    db.execute("INSERT INTO job_logs VALUES ('done', 1.0, 'INFO', 'old line')")
    db.execute("INSERT INTO webhooks (job_id, url, next_at) VALUES ('done', 'https://example.com/h', 0)")
    db.commit()
    db.close()


def test_a_version_1_database_is_migrated(tmp_path):
    path = tmp_path / "jobs.sqlite3"
    make_v1_database(path)
    store = sqlite_store(path, max_attempts=3)

    queued = store.get("queued")
    assert queued.status == JobStatus.QUEUED
    assert queued.request == GenerationRequest(
        prompt="prompt of queued",
        width=768,
        height=512,
        num_inference_steps=30,
        guidance_scale=2.5,
        seed=4242,
        num_images=2,
        references=("https://example.com/ref.png",),
    )
    assert queued.output == OutputSpec(
        format="png", quality=80, safety_check=True, webhook_url="https://example.com/hook"
    )
    assert queued.options == {"sync_mode": True}

    done = store.get("done")
    assert done.status == JobStatus.SUCCEEDED
    assert done.output.ttl_s == 3600.0
    assert done.result.seed == 4242
    assert [image.seed for image in done.result.images] == [4242, 4243]
    assert done.result.cost == 0.01
    assert [entry.message for entry in store.logs("done")] == ["old line"]

    # The old outbox row is claimable with the new lease columns.
    (delivery,) = store.claim_deliveries("sender", time.time(), 60)
    assert delivery.job_id == "done"

    # The migrated queue works: the old queued job is claimed under a lease, and the job that was running
    # when the old server stopped is requeued (its lease expired) and joins it, as version 1 recovered it.
    claimed = store.claim_batch("w1", 8, 30)
    assert [(job.id, job.attempts, job.worker_id) for job in claimed] == [
        ("queued", 1, "w1"),
        ("running", 2, "w1"),
    ]

    assert raw_rows(store, "SELECT version_num FROM alembic_version") == [{"version_num": HEAD}]
    # Opening it again does not migrate twice.
    again = sqlite_store(path)
    assert migrate(again.dialect) == HEAD
    assert again.get("queued") == store.get("queued")


def test_a_version_1_running_job_is_requeued_after_migration(tmp_path):
    """Version 1 requeued running jobs at startup (recover); after the migration they hold no lease, and
    the next lease check must take them back rather than leave them running forever."""
    path = tmp_path / "jobs.sqlite3"
    make_v1_database(path)
    store = sqlite_store(path, max_attempts=3)
    assert store.get("running").status == JobStatus.RUNNING
    outcome = store.expire_leases(time.time())
    assert outcome.requeued == 1
    requeued = store.get("running")
    assert requeued.status == JobStatus.QUEUED
    assert requeued.request.seed == 4242
    assert requeued.attempts == 1


def make_v3_database(path: Path, *jobs: Job) -> None:
    """A version-3 database (before priorities, start deadlines, finished images and sessions) holding
    `jobs`: release 0.1's (version 4, tests/data) emptied and taken back to what version 3 had."""
    shutil.copy(DATA / "release-0.1.sqlite3", path)
    with sqlite3.connect(path) as db:
        for table in ("jobs", "job_logs", "webhooks", "changes", "job_live", "workers"):
            db.execute(f"DELETE FROM {table}")
        for job in jobs:
            db.execute(
                "INSERT INTO jobs (id, status, batch_key, body) VALUES (?, 'queued', ?, ?)",
                (job.id, job.request.batch_key, job.model_dump_json()),
            )
        for index in ("jobs_in_order", "jobs_by_batch", "jobs_by_start"):
            db.execute(f"DROP INDEX {index}")
        db.execute("CREATE INDEX jobs_by_batch ON jobs (status, batch_key, seq)")
        for table, column in (("jobs", "priority"), ("jobs", "start_by"), ("job_live", "images")):
            db.execute(f"ALTER TABLE {table} DROP COLUMN {column}")
        db.execute("DROP TABLE session_jobs")
        db.execute("PRAGMA user_version = 3")


def test_a_version_3_database_is_migrated(tmp_path):
    path = tmp_path / "jobs.sqlite3"
    older, newer = make_job("older"), make_job("newer")
    make_v3_database(path, older, newer)
    store = sqlite_store(path)
    low = make_job("low").model_copy(update={"priority": "low"})
    submit(store, low)
    assert [store.queue_position(job.id) for job in (older, newer, low)] == [0, 1, 2]
    assert [job.id for job in store.claim_batch("w", 8, 30)] == [older.id, newer.id]
    assert store.live(older.id) is None
    store.add_session_job("s", older.id, None)
    assert [job.job_id for job in store.session_jobs("s")] == [older.id]
    assert raw_rows(store, "SELECT version_num FROM alembic_version") == [{"version_num": HEAD}]


# --- migrating once, and a PostgreSQL database at release 0.1's migration 2


@contextmanager
def fresh_database(kind: str, tmp_path: Path, legacy: bool) -> Iterator[str]:
    """A new database's URL, or (legacy) one holding release 0.1's tables (tests/data)."""
    if kind == "sqlite":
        if legacy:
            shutil.copy(DATA / "release-0.1.sqlite3", tmp_path / "jobs.sqlite3")
        yield f"sqlite:///{tmp_path / 'jobs.sqlite3'}"
        return
    with throwaway_database() as url:
        if legacy:
            load_postgres_dump(url, DATA / "release-0.1-postgres.sql")
        yield url


@pytest.mark.parametrize("legacy", [False, True], ids=["new", "release-0.1"])
@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_a_database_is_migrated_once_even_when_replicas_start_together(kind, legacy, tmp_path):
    """API replicas (or the API process and its workers) opening one database at once: one migrates."""
    with fresh_database(kind, tmp_path, legacy) as url:
        stores: list[SqlJobStore] = []
        errors: list[BaseException] = []
        start = threading.Barrier(3)

        def open_store() -> None:
            try:
                start.wait(10)
                stores.append(SqlJobStore(url, pool_size=1))
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=open_store) for _ in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        try:
            assert not errors and len(stores) == 3
            assert raw_rows(stores[0], "SELECT version_num FROM alembic_version") == [{"version_num": HEAD}]
            assert migrate(stores[0].dialect) == HEAD  # found up to date: nothing to do
            assert len(stores[0].recent(100)) == (7 if legacy else 0)  # adopted once: no job twice
            (job,) = submit(stores[1], make_job())
            assert stores[2].get(job.id) == job
        finally:
            for store in stores:
                store.close()


def make_postgres_v2_database(url: str, *jobs: Job) -> None:
    """A database at migration 2 (before priorities, start deadlines, finished images and sessions)
    holding `jobs`: release 0.1's (migration 3, tests/data) emptied and taken back to migration 2."""
    load_postgres_dump(url, DATA / "release-0.1-postgres.sql")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("TRUNCATE jobs, job_logs, deliveries, changes, job_live, workers")
        conn.execute("ALTER TABLE jobs DROP COLUMN priority, DROP COLUMN start_by")
        conn.execute("ALTER TABLE job_live DROP COLUMN images")
        conn.execute("DROP TABLE session_jobs")
        conn.execute("DELETE FROM schema_migrations WHERE version = 3")
        for job in jobs:
            conn.execute(
                "INSERT INTO jobs (id, status, batch_key, num_images, created_at, body)"
                " VALUES (%s, 'queued', %s, 1, %s, %s)",
                (job.id, job.request.batch_key, job.created_at, job.model_dump_json()),
            )


def test_postgres_version_2_database_is_migrated():
    """A database at migration 2 with a queued job: the job keeps its place and the new columns work."""
    with throwaway_database() as url:
        old = make_job("old")
        make_postgres_v2_database(url, old)
        store = SqlJobStore(url, pool_size=1)
        try:
            assert migrate(store.dialect) == HEAD
            low = make_job("low").model_copy(update={"priority": "low"})
            submit(store, low)
            assert store.queue_position(low.id) == 1
            assert [job.id for job in store.claim_batch("w", 8, 30)] == [old.id]
            store.add_session_job("s", old.id, "o")
            assert [job.owner for job in store.session_jobs("s")] == ["o"]
        finally:
            store.close()
