"""The snapshot cache and the change feed that wakes waiters when a job changes in any process (pushed:
SQLite's wake-up bus, PostgreSQL's NOTIFY; polled: the change log it tails where the store cannot push)."""

from __future__ import annotations

import asyncio
import tempfile
import threading
import time
from pathlib import Path

import pytest
from helpers.jobs import make_job
from helpers.stores import sqlite_store

from glm_image_server.serving.changes import ChangeFeed, SnapshotCache
from glm_image_server.store.contract import JobStore

POLL_S = 0.02


# --- SnapshotCache


def test_a_snapshot_is_served_until_invalidated():
    cache = SnapshotCache(ttl_s=60)
    version = cache.version("a")
    cache.put(("a", False, False), "snapshot a", version)
    cache.put(("a", True, False), "snapshot a with logs", version)
    cache.put(("b", False, False), "snapshot b", cache.version("b"))
    assert cache.get(("a", False, False)) == "snapshot a"
    assert cache.get(("a", True, False)) == "snapshot a with logs"

    cache.invalidate("a")
    assert cache.version("a") == version + 1
    assert cache.get(("a", False, False)) is None
    assert cache.get(("a", True, False)) is None
    assert cache.get(("b", False, False)) == "snapshot b"


def test_a_read_that_raced_with_a_change_is_not_cached():
    cache = SnapshotCache(ttl_s=60)
    version = cache.version("a")  # the read starts...
    cache.invalidate("a")  # ...the job changes while it runs...
    cache.put(("a", False, False), "stale", version)  # ...so what it read may be stale
    assert cache.get(("a", False, False)) is None
    cache.put(("a", False, False), "fresh", cache.version("a"))
    assert cache.get(("a", False, False)) == "fresh"


def test_a_snapshot_expires_after_its_ttl():
    cache = SnapshotCache(ttl_s=0.05)
    cache.put(("a", False, False), "snapshot", cache.version("a"))
    assert cache.get(("a", False, False)) == "snapshot"
    time.sleep(0.1)
    assert cache.get(("a", False, False)) is None


def test_unknown_snapshots_are_misses():
    cache = SnapshotCache()
    assert cache.get(("nope", False)) is None
    assert cache.version("nope") == 0


# --- ChangeFeed


@pytest.fixture
def polled(tmp_path, monkeypatch) -> None:
    """SQLite stores opened from here on cannot push: their wake-up bus has no temp directory to go in."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "missing"))


def run_feed(store: JobStore | Path, scenario, listeners=()) -> tuple[ChangeFeed, SnapshotCache]:
    """Run `scenario(feed)` (a coroutine function) on a new event loop with a started feed on `store` (a
    path: a SQLite store of its own)."""
    snapshots = SnapshotCache(ttl_s=60)
    if isinstance(store, Path):
        store = sqlite_store(store)

    async def main():
        feed = ChangeFeed(store, asyncio.get_running_loop(), snapshots, POLL_S, listeners)
        feed.start()
        try:
            await asyncio.wait_for(scenario(feed), 10)
        finally:
            feed.stop()
        return feed

    return asyncio.run(main()), snapshots


def later(delay: float, action) -> threading.Timer:
    timer = threading.Timer(delay, action)
    timer.daemon = True
    timer.start()
    return timer


def test_a_waiter_wakes_when_another_store_changes_its_job(backend):
    other = backend.open()  # another process's view of the same store
    job = make_job()
    assert other.create(job)
    woken: list[int] = []
    elapsed: list[float] = []

    async def scenario(feed: ChangeFeed) -> None:
        later(0.1, lambda: other.claim_batch("w1", 8, 30))
        start = time.monotonic()
        await feed.wait(job.id, timeout=5)
        elapsed.append(time.monotonic() - start)
        assert feed._waiters == {}  # the waiter is gone once it returned

    _, snapshots = run_feed(backend.open(), scenario, listeners=(lambda: woken.append(1),))
    assert 0.05 <= elapsed[0] < 0.6
    assert snapshots.version(job.id) >= 1  # the change invalidated the job's snapshots
    assert woken  # and told the other listeners (the delivery sender)


def test_every_waiter_on_the_job_wakes(backend):
    other = backend.open()  # another process's view of the same store
    job = make_job()
    other.create(job)

    async def scenario(feed: ChangeFeed) -> None:
        later(0.1, lambda: other.add_log(job.id, "INFO", "hello"))
        start = time.monotonic()
        await asyncio.gather(*(feed.wait(job.id, timeout=5) for _ in range(3)))
        assert time.monotonic() - start < 0.6

    run_feed(backend.open(), scenario)


def test_a_waiter_times_out_when_nothing_changes(backend):
    other = backend.open()  # another process's view of the same store
    job, unrelated = make_job(), make_job()
    other.create(job)

    async def scenario(feed: ChangeFeed) -> None:
        later(0.05, lambda: other.create(unrelated))  # another job's change does not wake this one
        start = time.monotonic()
        await feed.wait(job.id, timeout=0.3)
        assert 0.28 <= time.monotonic() - start < 2

    run_feed(backend.open(), scenario)


def test_the_feed_starts_at_the_end_of_the_change_log(tmp_path, polled):
    path = tmp_path / "jobs.sqlite3"
    store = sqlite_store(path)
    job = make_job()
    store.create(job)
    store.add_log(job.id, "INFO", "old news")
    start = store.changes_after(0)
    assert start.position == store.changes_after(start.position - 1).position > 0  # the end of the log
    assert store.changes_after(start.position) == type(start)(start.position, ())
    assert store.changes_after(start.position - 1).job_ids == (job.id,)

    async def scenario(feed: ChangeFeed) -> None:
        assert feed._position == start.position
        began = time.monotonic()
        await feed.wait(job.id, timeout=0.3)  # the old changes do not wake it
        assert time.monotonic() - began >= 0.28

    run_feed(path, scenario)


def test_notify_wakes_a_waiter_in_this_process(tmp_path):
    path = tmp_path / "jobs.sqlite3"
    sqlite_store(path)

    async def scenario(feed: ChangeFeed) -> None:
        later(0.05, lambda: feed.notify("job-x"))
        start = time.monotonic()
        await feed.wait("job-x", timeout=5)
        assert time.monotonic() - start < 0.5

    _, snapshots = run_feed(path, scenario)
    assert snapshots.version("job-x") == 1


def test_a_feed_on_an_empty_store_sees_the_first_change(tmp_path, polled):
    path = tmp_path / "jobs.sqlite3"
    other = sqlite_store(path)
    job = make_job()

    async def scenario(feed: ChangeFeed) -> None:
        assert feed._position == 0
        later(0.1, lambda: other.create(job))
        start = time.monotonic()
        await feed.wait(job.id, timeout=5)
        assert time.monotonic() - start < 0.6

    run_feed(path, scenario)
