"""The job store contract on SQLite and PostgreSQL: ordering (priorities, start deadlines), one claimant
per job, cancel, recovery of a stopped worker's jobs, retention, queue depth, a running job's finished
images, connection sessions."""

from __future__ import annotations

import sqlite3
import threading
import time

import pytest
from helpers.jobs import make_job

from glm_image_server.core.job import Claim, JobStatus
from glm_image_server.core.results import FinishedImage, JobResult, StoredImage
from glm_image_server.media.storage import LocalStorage
from glm_image_server.serving.retention import RetentionSweeper
from glm_image_server.store.contract import Caps, JobStore, OverCap, Requeued, SessionJob, StoreUnavailable
from glm_image_server.store.faults import unavailable_as_such

LEASE_S = 60.0


def claim_one(store: JobStore, worker_id: str = "w"):
    """The next queued job, claimed alone (a batch of at most one image), or None."""
    jobs = store.claim_batch(worker_id, 1, LEASE_S)
    assert len(jobs) <= 1
    return jobs[0] if jobs else None


def test_fifo_positions_and_single_claimant(backend, tmp_path) -> None:
    store = backend.open()
    jobs = [make_job(str(n)) for n in range(30)]
    for job in jobs:
        store.create(job)
    assert [store.queue_position(job.id) for job in jobs[:3]] == [0, 1, 2]
    assert store.oldest_queued().id == jobs[0].id

    claimed: list[str] = []
    lock = threading.Lock()

    def worker(n: int) -> None:
        other = backend.open()  # its own connections, as another process would
        while batch := other.claim_batch(f"w{n}", 3, LEASE_S):
            with lock:
                claimed.extend(job.id for job in batch)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(claimed) == sorted(job.id for job in jobs)  # each exactly once
    first = store.get(jobs[0].id)
    assert (
        first.status == JobStatus.RUNNING
        and first.attempts == 1
        and first.worker_id in {"w0", "w1", "w2", "w3"}
    )
    assert store.oldest_queued() is None


def test_cancel_outcomes(backend, tmp_path) -> None:
    store = backend.open()
    queued, running = make_job(webhook="http://hook/"), make_job()
    store.create(running)
    store.create(queued)
    assert claim_one(store).id == running.id
    assert store.request_cancel(queued.id) == "cancelled"
    assert store.get(queued.id).status == JobStatus.CANCELLED
    due = store.claim_deliveries("sender", time.time(), lease_s=30)
    assert [d.job_id for d in due] == [queued.id]  # its webhook still goes out
    assert store.request_cancel(running.id) == "requested" and store.cancel_requested(running.id)
    assert store.get(running.id).status == JobStatus.RUNNING
    assert store.finish(running.id, JobStatus.CANCELLED, claim=Claim(worker_id="w", attempt=1))
    assert store.request_cancel(running.id) == "finished"
    assert store.request_cancel("nope") == "missing"
    assert not store.finish(running.id, JobStatus.SUCCEEDED)  # a final state is final


def test_release_requeues_then_gives_up(backend, tmp_path) -> None:
    store = backend.open(max_attempts=3)
    job = make_job()
    store.create(job)
    for attempt in (1, 2):
        claimed = claim_one(store)
        assert claimed.attempts == attempt and claimed.worker_id == "w"
        assert store.release("w", "the test stopped it") == Requeued(requeued=1, failed=0)
        again = store.get(job.id)
        assert again.status == JobStatus.QUEUED and again.worker_id is None
        assert again.request.seed == job.request.seed  # it runs again with its seed
    assert any("the test stopped it" in entry.message for entry in store.logs(job.id))
    assert store.release("w", "nothing held") == Requeued(0, 0)
    claim_one(store)
    assert store.release("w", "stopped again") == Requeued(requeued=0, failed=1)
    failed = store.get(job.id)
    assert failed.status == JobStatus.FAILED and failed.error.kind == "internal"
    assert "3 times" in failed.error.message


def test_only_the_current_claim_finishes_a_job(backend, tmp_path) -> None:
    store = backend.open()
    job = make_job()
    store.create(job)
    claim_one(store, "old")
    store.release("old", "stopped")
    claim_one(store, "new")
    assert not store.finish(job.id, JobStatus.SUCCEEDED, claim=Claim(worker_id="old", attempt=1))
    assert not store.finish(job.id, JobStatus.SUCCEEDED, claim=Claim(worker_id="new", attempt=1))
    assert store.get(job.id).status == JobStatus.RUNNING
    assert store.finish(job.id, JobStatus.FAILED, claim=Claim(worker_id="new", attempt=2))
    assert store.get(job.id).status == JobStatus.FAILED


def test_expired_leases_go_back_to_the_queue(backend, tmp_path) -> None:
    store = backend.open()
    held, renewed = make_job(), make_job()
    for job in (held, renewed):
        store.create(job)
    assert claim_one(store, "silent").id == held.id
    assert claim_one(store, "alive").id == renewed.id
    assert store.expire_leases(time.time()) == Requeued(0, 0)  # both leases still run
    assert store.renew("alive", LEASE_S * 3, [held.id, renewed.id]) == 1
    assert store.expire_leases(time.time() + LEASE_S * 2) == Requeued(requeued=1, failed=0)
    assert store.get(held.id).status == JobStatus.QUEUED
    assert store.get(renewed.id).status == JobStatus.RUNNING


def test_retention_deletes_rows_logs_and_files(backend, tmp_path) -> None:
    store = backend.open()
    storage = LocalStorage(tmp_path / "files")
    old, fresh = make_job(), make_job()
    for job in (old, fresh):
        store.create(job)
        claim_one(store)
        store.add_log(job.id, "INFO", "hello")
        key = f"{job.file_prefix}-0.png"
        storage.save(key, b"png")
        image = StoredImage(key=key, content_type="image/png", width=1, height=1, file_size=3, seed=1)
        result = JobResult(images=(image,), prompt="p", has_nsfw_concepts=(False,), timings={})
        assert store.finish(job.id, JobStatus.SUCCEEDED, result=result)
        assert store.get(job.id).result.seed == 1
    sweeper = RetentionSweeper(store, storage, retention_s=60)
    assert sweeper.sweep() == 0
    sweeper.retention_s = 0.0  # everything finished is now past retention
    time.sleep(0.01)
    assert sweeper.sweep() == 2
    assert store.get(old.id) is None and store.logs(old.id) == []
    assert storage.path(f"{old.file_prefix}-0.png") is None
    assert list((tmp_path / "files").iterdir()) == []


def test_ttl_overrides_retention(backend, tmp_path) -> None:
    store = backend.open()
    short, default = make_job(ttl_s=0.0), make_job()
    for job in (short, default):
        store.create(job)
        claim_one(store)
        store.finish(job.id, JobStatus.FAILED)
    time.sleep(0.01)
    assert [job.id for job in store.delete_expired(time.time(), retention_s=3600)] == [short.id]
    assert store.get(default.id) is not None
    assert not store.create(default)  # an existing id is refused, not overwritten


def test_a_job_round_trips_through_the_store(backend, tmp_path) -> None:
    store = backend.open()
    job = make_job(webhook="http://hook/", ttl_s=5.0)
    store.create(job)
    assert store.get(job.id) == job
    assert backend.open().get(job.id) == job  # read by another process


def test_low_priority_jobs_wait_while_normal_ones_queue(backend, tmp_path) -> None:
    """FIFO within a priority; a low job never joins a normal job's batch, nor jumps ahead of one."""
    store = backend.open()
    low1, normal1, low2, normal2 = (
        make_job(name).model_copy(update={"priority": priority})
        for name, priority in (("l1", "low"), ("n1", "normal"), ("l2", "low"), ("n2", "normal"))
    )
    for job in (low1, normal1, low2, normal2):
        store.create(job)
    positions = [store.queue_position(job.id) for job in (normal1, normal2, low1, low2)]
    assert positions == [0, 1, 2, 3]
    assert store.oldest_queued().id == normal1.id
    assert [job.id for job in store.claim_batch("w", 8, LEASE_S)] == [normal1.id, normal2.id]
    assert store.queue_position(low2.id) == 1
    assert [job.id for job in store.claim_batch("w", 8, LEASE_S)] == [low1.id, low2.id]
    assert backend.open().get(low1.id).priority == "low"


def test_a_job_past_its_start_deadline_fails_instead_of_starting(backend, tmp_path) -> None:
    store = backend.open()
    now = time.time()
    late = make_job("late").model_copy(update={"start_by": now - 0.5, "created_at": now - 2.5})
    timely, patient = make_job("timely").model_copy(update={"start_by": now + 60}), make_job("patient")
    for job in (late, timely, patient):
        store.create(job)
    assert store.expire_start_deadlines(now - 1) == 0  # nothing was late then
    assert [job.id for job in store.claim_batch("w", 8, LEASE_S)] == [timely.id, patient.id]
    failed = store.get(late.id)
    assert failed.status == JobStatus.FAILED and failed.error.kind == "timeout"
    assert "did not start within its 2 s start timeout" in failed.error.message
    assert store.logs(late.id)[-1].message == failed.error.message
    queued = make_job("queued").model_copy(update={"start_by": now + 0.05})
    store.create(queued)
    time.sleep(0.1)
    assert store.expire_start_deadlines(time.time()) == 1  # without a claim: the sweeper's path
    assert store.get(queued.id).error.kind == "timeout"
    assert store.expire_start_deadlines(time.time()) == 0


def test_a_job_that_started_in_time_and_was_requeued_is_not_late(backend, tmp_path) -> None:
    store = backend.open()
    job = make_job().model_copy(update={"start_by": time.time() + 1.0})  # room for a loaded machine
    store.create(job)
    assert claim_one(store).id == job.id  # it started in time...
    time.sleep(max(0.0, job.start_by - time.time()) + 0.05)
    assert store.release("w", "its worker stopped") == Requeued(requeued=1, failed=0)
    assert store.expire_start_deadlines(time.time()) == 0  # ...so, requeued after its deadline, it waits
    assert claim_one(store).id == job.id


def test_a_running_jobs_finished_images_are_live_until_it_ends(backend, tmp_path) -> None:
    store = backend.open()
    job = make_job(num_images=2)
    store.create(job)

    def image(index: int) -> FinishedImage:
        stored = StoredImage(
            key=f"k{index}", content_type="image/png", width=1, height=1, file_size=3, seed=index
        )
        return FinishedImage(index=index, image=stored, nsfw=False, cost=0.5)

    store.add_image(job.id, image(0))  # queued: nothing to record
    assert store.live(job.id) is None
    claim_one(store)
    store.set_progress(job.id, "dit", 3, 10)
    store.add_image(job.id, image(1))
    store.add_image(job.id, image(0))
    store.add_image(job.id, image(1))  # again (a retried event): still once
    live = backend.open().live(job.id)
    assert [done.index for done in live.images] == [0, 1] and live.images[0] == image(0)
    assert (live.stage, live.done) == ("dit", 3)
    store.finish(job.id, JobStatus.FAILED)
    assert store.live(job.id) is None


def test_session_jobs_last_as_long_as_their_jobs(backend, tmp_path) -> None:
    store = backend.open()
    first, second = make_job(), make_job()
    for job in (first, second):
        store.create(job)
        store.add_session_job("session-a", job.id, "owner-a")
    store.add_session_job("session-b", first.id, "owner-b")  # a job stays with its first session
    store.session_delivered(first.id)
    other = backend.open()
    assert other.session_jobs("session-a") == [
        SessionJob(first.id, "owner-a", True),
        SessionJob(second.id, "owner-a", False),
    ]
    assert other.session_jobs("session-b") == []
    for job in (first, second):
        claim_one(store)
        store.finish(job.id, JobStatus.FAILED)
    time.sleep(0.01)
    assert len(store.delete_expired(time.time(), retention_s=0.0)) == 2
    assert store.session_jobs("session-a") == []


def test_queue_caps_hold_under_concurrent_creates_from_two_processes(backend) -> None:
    """40 creates at once through two store objects (two API processes on one database), ten per owner,
    against caps of 5 per owner and 8 queued: exactly 8 are written, at most 5 of any owner, and each
    refused create wrote nothing. The count and the insert are one locked transaction."""
    stores, caps = [backend.open(), backend.open()], Caps(queued=8, per_owner=5)
    owners = [f"owner-{index % 4}" for index in range(40)]
    start, outcomes = threading.Barrier(40), [None] * 40

    def create(index: int) -> None:
        start.wait()
        try:
            outcomes[index] = stores[index % 2].create(make_job(owner=owners[index]), caps)
        except OverCap as over:
            outcomes[index] = over.cap

    threads = [threading.Thread(target=create, args=(index,)) for index in range(40)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert outcomes.count(True) == 8 and set(outcomes) <= {True, "queued", "per_owner"}
    assert stores[0].queued_count() == 8
    assert all(stores[0].unfinished_count(owner) <= 5 for owner in set(owners))

    one_owner = [stores[0].create(make_job(owner="owner-9"), Caps(queued=100, per_owner=5)) for _ in range(5)]
    assert one_owner == [True] * 5
    with pytest.raises(OverCap) as refused:
        stores[1].create(make_job(owner="owner-9"), Caps(queued=100, per_owner=5))
    assert (refused.value.cap, stores[0].unfinished_count("owner-9")) == ("per_owner", 5)
    existing = make_job(owner="owner-9")
    assert stores[0].create(existing) and stores[0].create(existing, caps) is False  # a known id: not refused


def test_a_locked_sqlite_file_is_unavailable_and_a_missing_table_a_bug(tmp_path) -> None:
    """SQLite reports both as OperationalError: the store tells them apart by their error codes."""
    path = tmp_path / "jobs.sqlite3"
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("CREATE TABLE t (x)")
    holder.execute("BEGIN IMMEDIATE")  # the write lock, held
    waiter = sqlite3.connect(path, isolation_level=None, timeout=0.05)
    with pytest.raises(StoreUnavailable, match="database is locked"), unavailable_as_such():
        waiter.execute("BEGIN IMMEDIATE")
    with pytest.raises(sqlite3.OperationalError, match="no such table"), unavailable_as_such():
        waiter.execute("SELECT * FROM missing")
    holder.close()
    waiter.close()
