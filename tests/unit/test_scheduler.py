"""The worker's scheduler with a fake executor: batching order, events folded into the store, stale
claims, cancel polling and interruption; an idle worker woken by the store's push."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from pathlib import Path

import pytest
from helpers.jobs import make_job
from helpers.stores import sqlite_store
from helpers.waiting import wait_for

from glm_image_server.config import Settings
from glm_image_server.core import transitions
from glm_image_server.core.events import JobEvent, JobFailed, JobLog, JobProgress, JobSucceeded
from glm_image_server.core.job import Claim, Job, JobError, JobStatus
from glm_image_server.core.results import JobResult, StoredImage
from glm_image_server.slices import WorkerSettings
from glm_image_server.store.contract import StoreUnavailable
from glm_image_server.store.sql import SqlJobStore
from glm_image_server.worker.executor import Interrupted
from glm_image_server.worker.scheduler import Scheduler, _CancelFlags, progress_line
from glm_image_server.worker.worker import Worker

WORKER = "worker-1"
Script = Callable[
    [Sequence[Job], Callable[[JobEvent], None], Callable[[str], bool], Callable[[], bool]], None
]


def result_for(job: Job) -> JobResult:
    images = tuple(
        StoredImage(
            key=f"{job.id}-{i}.jpg", content_type="image/jpeg", width=512, height=512, file_size=1, seed=s
        )
        for i, s in enumerate(job.request.seeds)
    )
    return JobResult(
        images=images, prompt=job.request.prompt, has_nsfw_concepts=(False,) * len(images), timings={}
    )


def succeed_all(jobs, emit, cancelled, stopping) -> None:
    for job in jobs:
        emit(JobSucceeded(job.id, result_for(job)))


class FakeExecutor:
    """Records each batch it is handed and runs `script` on it (default: every job succeeds)."""

    def __init__(self, script: Script = succeed_all) -> None:
        self.script = script
        self.batches: list[list[str]] = []
        self.started = threading.Event()

    def prepare(self, job, emit, handoff=None) -> Future:
        ready = Future()
        ready.set_result(job)
        return ready

    def run(self, jobs, emit, cancelled, stopping) -> None:
        self.batches.append([job.id for job in jobs])
        self.started.set()
        self.script(jobs, emit, cancelled, stopping)


def settings_for(tmp_path: Path, **overrides) -> WorkerSettings:
    values = {
        "data_dir": tmp_path,
        "batch_window_s": 0,
        "idle_poll_s": 0.05,
        "cancel_poll_s": 0.05,
        "lease_s": 30,
        "max_batch_size": 4,
        **overrides,
    }
    return WorkerSettings.from_settings(Settings(**values))


@pytest.fixture
def store(tmp_path: Path) -> SqlJobStore:
    return sqlite_store(tmp_path / "jobs.sqlite3", max_attempts=3)


class Running:
    """scheduler.run() on a thread, stopped and joined on exit."""

    def __init__(self, scheduler: Scheduler) -> None:
        self.scheduler = scheduler
        self.errors: list[BaseException] = []
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            self.scheduler.run()
        except BaseException as exc:
            self.errors.append(exc)
            raise

    def __enter__(self) -> Running:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.scheduler.stop()
        self.thread.join(5)
        assert not self.thread.is_alive()


def finished(store: SqlJobStore, *jobs: Job) -> Callable[[], bool]:
    return lambda: all(store.get(job.id).status.finished for job in jobs)


def claim(store: SqlJobStore, worker: str = WORKER) -> list[Job]:
    return store.claim_batch(worker, 4, 30)


# --- progress lines


def test_progress_lines_only_at_quarters():
    lines = [progress_line(JobProgress("j", "dit", done, 20)) for done in range(1, 21)]
    assert [line for line in lines if line] == [
        "DiT: 5/20 steps",
        "DiT: 10/20 steps",
        "DiT: 15/20 steps",
        "DiT: 20/20 steps",
    ]
    assert progress_line(JobProgress("j", "ar", 256, 1024)) == "AR: 256/1024 tokens"
    assert progress_line(JobProgress("j", "ar", 257, 1024)) is None
    assert progress_line(JobProgress("j", "vae", 2, 2)) == "VAE: 2/2 images decoded"


def test_the_last_step_is_always_logged():
    assert progress_line(JobProgress("j", "dit", 30, 30)) == "DiT: 30/30 steps"
    assert progress_line(JobProgress("j", "dit", 29, 30)) is None


# --- batching


def test_batches_are_claimed_in_order_of_arrival(tmp_path, store):
    a, b, c, d = (
        make_job("a", width=64),
        make_job("b", width=96),
        make_job("c", width=64, steps=20),  # steps are the decode stage's: c shares a's AR batch
        make_job("d", width=96),
    )
    for job in (a, b, c, d):
        store.create(job)
    executor = FakeExecutor()
    batches_seen: list[list[str]] = []
    scheduler = Scheduler(
        store,
        executor,
        settings_for(tmp_path),
        WORKER,
        lambda jobs: batches_seen.append([j.id for j in jobs]),
    )
    with Running(scheduler):
        wait_for(finished(store, a, b, c, d), 5, "the four jobs")
    assert executor.batches == [[a.id, c.id], [b.id, d.id]]
    assert batches_seen == [[a.id, c.id], [], [b.id, d.id], []]  # the heartbeat's view: busy, idle
    for job in (a, b, c, d):
        done = store.get(job.id)
        assert done.status == JobStatus.SUCCEEDED
        assert done.result == result_for(job)
        assert (done.worker_id, done.attempts) == (WORKER, 1)


def test_a_batch_holds_at_most_max_batch_size_images(tmp_path, store):
    jobs = [make_job(f"job {i}", num_images=2) for i in range(3)]
    for job in jobs:
        store.create(job)
    executor = FakeExecutor()
    with Running(Scheduler(store, executor, settings_for(tmp_path, max_batch_size=4), WORKER)):
        wait_for(finished(store, *jobs), 5, "the jobs")
    assert executor.batches == [[jobs[0].id, jobs[1].id], [jobs[2].id]]


def test_an_idle_worker_picks_up_a_new_job(tmp_path, store, monkeypatch):
    executor = FakeExecutor()
    found_nothing = threading.Event()
    oldest_queued = store.oldest_queued

    def watched(*args):
        head = oldest_queued(*args)
        if head is None:
            found_nothing.set()
        return head

    monkeypatch.setattr(store, "oldest_queued", watched)
    with Running(Scheduler(store, executor, settings_for(tmp_path), WORKER)):
        assert found_nothing.wait(5)  # the worker looked at the empty queue: it is idle now
        job = make_job()
        store.create(job)
        wait_for(finished(store, job), 2, "the job")
    assert executor.batches == [[job.id]]


def test_an_idle_worker_on_sqlite_starts_a_new_job_without_waiting_for_its_poll(tmp_path, store):
    """The store pushes "queued" (store/wakeups.py): a job that another store creates wakes the worker."""
    worker = Worker(settings_for(tmp_path, idle_poll_s=60, worker_id=WORKER, device="cpu"), store)
    executor = FakeExecutor()
    worker.start_thread(executor)
    try:
        # it looked once and found nothing (the first empty look schedules its check of expired leases)
        wait_for(lambda: worker.scheduler and worker.scheduler._next_expiry > 0, 10, "its first empty look")
        assert worker.scheduler.idle_s >= 60
        job = make_job()
        sqlite_store(store.dialect.path).create(job)  # another process's view of the file
        wait_for(finished(store, job), 5, "the job, pushed to the idle worker")
    finally:
        worker.stop()
    assert executor.batches == [[job.id]]


def test_a_new_job_waits_the_batch_window_for_company(tmp_path, store):
    executor = FakeExecutor()
    with Running(Scheduler(store, executor, settings_for(tmp_path, batch_window_s=0.4), WORKER)):
        first = make_job("first")
        store.create(first)
        time.sleep(0.1)
        second = make_job("second")
        store.create(second)
        wait_for(finished(store, first, second), 5, "both jobs")
    assert executor.batches == [[first.id, second.id]]


# --- events into the store


def test_events_land_in_the_store(tmp_path, store):
    ok, bad, stopped = make_job("ok"), make_job("bad"), make_job("stopped")
    for job in (ok, bad, stopped):
        store.create(job)

    def script(jobs, emit, cancelled, stopping):
        for job in jobs:
            emit(JobLog(job.id, f"Generating {job.request.prompt}"))
        for done in range(1, 9):
            for job in jobs:
                emit(JobProgress(job.id, "dit", done, 8))
        emit(JobLog(bad.id, "Invalid input: references[0]", "ERROR"))
        emit(JobSucceeded(ok.id, result_for(ok)))
        emit(JobFailed(bad.id, JobError(kind="input", message="could not fetch", field="references[0]")))
        emit(JobFailed(stopped.id, JobError(kind="cancelled", message="cancelled")))

    scheduler = Scheduler(store, FakeExecutor(script), settings_for(tmp_path), WORKER)
    scheduler.run_batch(claim(store))

    assert [(e.level, e.message) for e in store.logs(ok.id)] == [
        ("INFO", "Generating ok"),
        ("INFO", "DiT: 2/8 steps"),
        ("INFO", "DiT: 4/8 steps"),
        ("INFO", "DiT: 6/8 steps"),
        ("INFO", "DiT: 8/8 steps"),
    ]
    assert store.logs(bad.id)[-1].level == "ERROR"
    assert store.get(ok.id).status == JobStatus.SUCCEEDED
    failed = store.get(bad.id)
    assert failed.status == JobStatus.FAILED
    assert failed.error == JobError(kind="input", message="could not fetch", field="references[0]")
    assert failed.result is None
    cancelled = store.get(stopped.id)
    assert cancelled.status == JobStatus.CANCELLED
    assert cancelled.error.kind == "cancelled"


def test_a_result_for_a_job_taken_over_is_dropped(tmp_path, store):
    job = make_job()
    store.create(job)
    other = SqlJobStore(store.url)

    def script(jobs, emit, cancelled, stopping):
        # This worker stalled: its lease ran out and another worker took the job over.
        other.expire_leases(time.time() + 3600)
        assert [j.id for j in other.claim_batch("worker-2", 4, 30)] == [job.id]
        emit(JobLog(job.id, "late line"))
        emit(JobSucceeded(job.id, result_for(job)))

    scheduler = Scheduler(store, FakeExecutor(script), settings_for(tmp_path), WORKER)
    scheduler.run_batch(claim(store))
    taken = store.get(job.id)
    assert taken.status == JobStatus.RUNNING
    assert (taken.worker_id, taken.attempts) == ("worker-2", 2)
    assert taken.result is None
    # worker-2's claim still finishes it.
    assert [e.message for e in store.logs(job.id)][-1] == "late line"  # logs are kept: they harm nothing
    assert other.finish(
        job.id, JobStatus.SUCCEEDED, result=result_for(job), claim=Claim(worker_id="worker-2", attempt=2)
    )
    assert store.get(job.id).status == JobStatus.SUCCEEDED


def test_a_failure_for_a_job_taken_over_is_dropped(tmp_path, store):
    job = make_job()
    store.create(job)

    def script(jobs, emit, cancelled, stopping):
        store.release(WORKER, "lost")  # back in the queue under nobody
        emit(JobFailed(job.id, JobError(kind="internal", message="boom")))

    Scheduler(store, FakeExecutor(script), settings_for(tmp_path), WORKER).run_batch(claim(store))
    assert store.get(job.id).status == JobStatus.QUEUED


# --- cancels


class CountingStore:
    """A store stand-in that counts cancel_requested reads."""

    def __init__(self, cancelled: set[str] = frozenset()) -> None:
        self.cancelled, self.reads = set(cancelled), 0

    def cancel_requested(self, job_id: str) -> bool:
        self.reads += 1
        return job_id in self.cancelled


def test_cancel_flags_ask_the_store_at_most_every_poll_interval():
    store = CountingStore()
    flags = _CancelFlags(store, poll_s=0.2, on_fault=lambda exc: pytest.fail(f"store fault: {exc}"))
    assert not any(flags("a") for _ in range(100))
    assert store.reads == 1
    assert not flags("b")  # each job has its own interval
    assert store.reads == 2
    store.cancelled.add("a")
    assert not flags("a")  # not asked again yet
    assert store.reads == 2
    time.sleep(0.25)
    assert flags("a")
    assert store.reads == 3
    store.cancelled.clear()
    time.sleep(0.25)
    assert all(flags("a") for _ in range(10))  # sticky once true: never asked again
    assert store.reads == 3


def test_a_cancel_reaches_a_running_job(tmp_path, store):
    job, other_job = make_job("cancel me"), make_job("keep me")
    store.create(job)
    store.create(other_job)
    reads = []

    class Counting(SqlJobStore):
        def cancel_requested(self, job_id: str) -> bool:
            reads.append(job_id)
            return super().cancel_requested(job_id)

    counting = Counting(store.url)

    def script(jobs, emit, cancelled, stopping):
        assert not cancelled(job.id)  # read once: the next read is a poll interval away
        assert store.request_cancel(job.id) == "requested"
        deadline = time.monotonic() + 3
        polls = 0
        while not cancelled(job.id) and time.monotonic() < deadline:
            polls += 1
            time.sleep(0.001)
        assert polls > 5  # polled many times, read from the store far fewer
        emit(JobFailed(job.id, JobError(kind="cancelled", message="cancelled")))
        assert not cancelled(other_job.id)
        emit(JobSucceeded(other_job.id, result_for(other_job)))

    scheduler = Scheduler(counting, FakeExecutor(script), settings_for(tmp_path, cancel_poll_s=0.1), WORKER)
    start = time.monotonic()
    scheduler.run_batch(claim(store))
    elapsed = time.monotonic() - start
    assert store.get(job.id).status == JobStatus.CANCELLED
    assert store.get(other_job.id).status == JobStatus.SUCCEEDED
    assert elapsed < 1
    assert reads.count(job.id) <= elapsed / 0.1 + 2


# --- interruption


def test_interrupted_releases_the_jobs_back_to_the_queue(tmp_path, store):
    a, b = make_job("a"), make_job("b")
    store.create(a)
    store.create(b)

    def script(jobs, emit, cancelled, stopping):
        emit(JobLog(jobs[0].id, "started"))
        wait_for(stopping, 5, "the stop")
        raise Interrupted

    executor = FakeExecutor(script)
    scheduler = Scheduler(store, executor, settings_for(tmp_path), WORKER)
    with Running(scheduler) as running:
        assert executor.started.wait(5)
        scheduler.stop()
        running.thread.join(5)
        assert not running.thread.is_alive()
        assert not running.errors
    assert executor.batches == [[a.id, b.id]]
    for job in (a, b):
        queued = store.get(job.id)
        assert queued.status == JobStatus.QUEUED
        assert (queued.attempts, queued.worker_id) == (1, None)
        assert queued.request == job.request
        assert any("the worker was stopped" in entry.message for entry in store.logs(job.id))
    # Another worker runs them again.
    again = claim(store, "worker-2")
    assert [(job.id, job.attempts) for job in again] == [(a.id, 2), (b.id, 2)]


def test_a_stopped_scheduler_claims_nothing_more(tmp_path, store):
    executor = FakeExecutor()
    scheduler = Scheduler(store, executor, settings_for(tmp_path), WORKER)
    with Running(scheduler) as running:
        scheduler.stop()
        running.thread.join(5)
        assert not running.thread.is_alive()  # the only thread that claims has ended
        job = make_job()
        store.create(job)
    assert executor.batches == []
    assert store.get(job.id).status == JobStatus.QUEUED


def test_an_executor_that_breaks_does_not_kill_the_worker_or_strand_its_jobs(tmp_path, store):
    """The executor contract says every job ends in one event; one that raises instead must neither stop
    the scheduler loop nor leave its jobs running (the heartbeat would renew their leases forever)."""
    broken, later = make_job("broken", width=64), make_job("later", width=96)
    store.create(broken)
    calls = 0

    def script(jobs, emit, cancelled, stopping):
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("executor bug")
        succeed_all(jobs, emit, cancelled, stopping)

    executor = FakeExecutor(script)
    with Running(Scheduler(store, executor, settings_for(tmp_path), WORKER)) as running:
        wait_for(lambda: calls >= 1, 5, "the first run")
        store.create(later)
        wait_for(finished(store, broken, later), 5, "both jobs")
        assert running.thread.is_alive()
    assert store.get(later.id).status == JobStatus.SUCCEEDED
    retried = store.get(broken.id)
    assert (retried.status, retried.attempts) == (JobStatus.SUCCEEDED, 2)  # run again, with its seed
    assert any("the executor failed" in entry.message for entry in store.logs(broken.id))


def test_a_decode_stage_whose_tokens_cannot_be_read_fails_instead_of_staying_claimed(tmp_path, store):
    """A handoff that does not parse is a bug, never a fault: the job fails saying why; it is not left
    claimed by a live worker whose heartbeat would renew it forever."""
    job = make_job()
    store.create(job)
    (claimed,) = claim(store)
    assert store.hand_off(job.id, b"not an npz", transitions.claim_of(claimed))
    executor = FakeExecutor()
    with Running(Scheduler(store, executor, settings_for(tmp_path, role="decode"), WORKER)):
        wait_for(finished(store, job), 5, "the job to end")
    failed = store.get(job.id)
    assert failed.status == JobStatus.FAILED and "prior tokens could not be read" in failed.error.message
    assert executor.batches == []


class LostClaimAnswer:
    """The store, but its first claim commits and then fails as if the connection dropped at the commit:
    the jobs are claimed for the worker in the database while the worker never hears of them."""

    def __init__(self, store: SqlJobStore) -> None:
        self.store = store
        self.lost: list[Job] = []

    def __getattr__(self, name: str):
        return getattr(self.store, name)

    def claim_batch(self, *args, **kwargs) -> list[Job]:
        claimed = self.store.claim_batch(*args, **kwargs)
        if claimed and not self.lost:
            self.lost = claimed
            raise StoreUnavailable("the job store is unavailable: the connection was lost at the commit")
        return claimed


def test_a_claim_whose_answer_was_lost_is_not_renewed_and_its_job_runs_again(tmp_path, store):
    """The heartbeat renews only the claims the worker knows of: a claim lost on its way back runs out
    of lease, its job goes back to the queue and runs (before, the heartbeat kept it held forever)."""
    job = make_job("lost on the way back")
    store.create(job)
    lossy = LostClaimAnswer(store)
    worker = Worker(settings_for(tmp_path, lease_s=1.0, heartbeat_s=0.1), lossy)
    worker.start_heartbeat()
    worker.start_thread(FakeExecutor())
    try:
        wait_for(lambda: lossy.lost, 5, "the claim whose answer is lost")
        wait_for(finished(store, job), 15, "the job to run after its lost claim's lease ran out")
    finally:
        worker.stop()
    done = store.get(job.id)
    assert (done.status, done.attempts) == (JobStatus.SUCCEEDED, 2)
