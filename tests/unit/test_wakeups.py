"""The wake-up bus across the processes of one machine (store/wakeups.py): real processes, real sockets —
what another process publishes arrives, a dead subscriber's socket is removed, a full receiver is owed a
wake-up ("") instead of blocking anyone, publications that may wait go out once, and a directory the bus
cannot trust means no bus (polling)."""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers.waiting import wait_for

from glm_image_server.store.wakeups import WakeBus, bus_directory


def child(code: str, *args: str) -> subprocess.Popen:
    """A Python process running `code`; its stdin and stdout are pipes."""
    command = [sys.executable, "-c", code, *args]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stdin=subprocess.PIPE, text=True)


PUBLISHER = """
import sys
from pathlib import Path
from glm_image_server.store.wakeups import WakeBus
bus = WakeBus(Path(sys.argv[1]), Path(sys.argv[2]))
bus.publish("queued", "job-from-child")
bus.publish("changes", "another-job")
"""

SUBSCRIBER = """
import sys
from pathlib import Path
from glm_image_server.store.wakeups import WakeBus
bus = WakeBus(Path(sys.argv[1]), Path(sys.argv[2]))
print(bus.subscribe("changes", lambda job_id: print("heard", job_id, flush=True)), flush=True)
sys.stdin.readline()  # until the test says stop
bus.close()
"""


@pytest.fixture
def key(tmp_path: Path) -> Path:
    return tmp_path / "jobs.sqlite3"


@pytest.fixture
def parent() -> Iterator[Path]:
    """A parent directory for the bus of our own, short enough for socket paths (pytest's tmp_path may
    not be)."""
    with tempfile.TemporaryDirectory(prefix="wake-") as path:
        yield Path(path)


def listen(bus: WakeBus, channel: str) -> queue.Queue[str]:
    heard: queue.Queue[str] = queue.Queue()
    assert bus.subscribe(channel, heard.put)
    return heard


def test_another_process_hears_what_this_one_publishes_and_the_other_way(key, parent):
    bus = WakeBus(key, parent)
    queued, changes = listen(bus, "queued"), listen(bus, "changes")
    publisher = child(PUBLISHER, str(key), str(parent))
    assert publisher.wait(60) == 0
    assert queued.get(timeout=5) == "job-from-child"
    assert changes.get(timeout=5) == "another-job"
    assert queued.empty()  # each channel hears its own

    subscriber = child(SUBSCRIBER, str(key), str(parent))
    try:
        assert subscriber.stdout.readline().strip() == "True"
        bus.publish("changes", "job-from-parent")
        assert subscriber.stdout.readline().strip() == "heard job-from-parent"
        assert changes.get(timeout=5) == "job-from-parent"  # and this process hears itself
    finally:
        subscriber.communicate("stop\n", timeout=30)
    bus.close()
    assert not bus.directory.exists()  # the last one out leaves nothing behind


def test_a_dead_subscribers_socket_is_removed_and_the_rest_still_hear(key, parent):
    subscriber = child(SUBSCRIBER, str(key), str(parent))
    assert subscriber.stdout.readline().strip() == "True"
    subscriber.kill()  # no chance to close
    subscriber.wait(30)
    (dead,) = os.listdir(bus_directory(key, parent))
    bus = WakeBus(key, parent)
    changes = listen(bus, "changes")

    bus.publish("changes", "job-1")
    assert changes.get(timeout=5) == "job-1"
    assert dead not in os.listdir(bus.directory)
    bus.close()


def test_a_full_receiver_never_blocks_a_publisher_and_is_owed_a_wake_up(key, parent):
    bus = WakeBus(key, parent)
    release, heard = threading.Event(), []

    def slow(job_id: str) -> None:
        release.wait(30)  # a stuck receiver: its queue fills up
        heard.append(job_id)

    assert bus.subscribe("changes", slow)
    start = time.monotonic()
    for number in range(2000):  # far more than a receive queue holds
        bus.publish("changes", f"job-{number}")
    assert time.monotonic() - start < 5  # never blocked on the full queue
    release.set()
    wait_for(lambda: heard and heard[-1] == "", 10, "the missed datagrams' wake-up")
    assert len(heard) < 2000  # some were dropped, and "" said so
    assert heard[0] == "job-0"
    bus.close()


def test_publications_that_may_wait_go_out_once_and_before_one_that_does_not(key, parent):
    bus, publisher = WakeBus(key, parent), WakeBus(key, parent)
    heard = listen(bus, "changes")
    for _ in range(5):
        publisher.publish("changes", "progress", within_s=60)
    publisher.publish("changes", "finished")
    assert heard.get(timeout=5) == "progress"  # once, and first
    assert heard.get(timeout=5) == "finished"
    publisher.publish("changes", "late", within_s=0.05)
    assert heard.get(timeout=5) == "late"  # on its own once its time is up
    publisher.publish("changes", "at exit", within_s=60)
    publisher.close()  # sends what waits
    assert heard.get(timeout=5) == "at exit"
    assert heard.empty()
    bus.close()


def test_a_directory_another_user_owns_means_no_bus(key, parent):
    if os.getuid() != 0:
        pytest.skip("making a directory another user owns needs root")
    directory = bus_directory(key, parent)
    directory.mkdir(mode=0o700)
    trap = WakeBus(key, parent)
    assert trap.subscribe("changes", lambda _job_id: None)  # a socket there, before the owner changes
    os.chown(directory, 4242, 4242)
    bus = WakeBus(key, parent)
    heard = []
    trap.subscribe("changes", heard.append)

    assert not bus.subscribe("changes", heard.append)
    bus.publish("changes", "secret-job")  # nothing is sent into a directory we do not own
    bus.close()
    os.chown(directory, 0, 0)
    trap.publish("changes", "mine")
    wait_for(lambda: heard, 5, "the trap's own wake-up")
    assert heard == ["mine"]
    trap.close()


@pytest.mark.parametrize("problem", ["open to others", "a symlink", "no parent directory", "too long"])
def test_a_place_the_bus_cannot_use_means_no_bus(key, parent, tmp_path, problem):
    if problem == "open to others":
        bus_directory(key, parent).mkdir(mode=0o755)
        bus_directory(key, parent).chmod(0o755)
    elif problem == "a symlink":
        (tmp_path / "elsewhere").mkdir(mode=0o700)
        bus_directory(key, parent).symlink_to(tmp_path / "elsewhere")
    elif problem == "no parent directory":
        parent = tmp_path / "missing"
    else:
        parent = parent / ("d" * 100)
        parent.mkdir()
    bus = WakeBus(key, parent)
    assert not bus.subscribe("queued", lambda _job_id: None)
    bus.publish("queued", "job-1")  # and publishing does not raise
    bus.close()


def test_a_forked_child_starts_afresh_and_leaves_the_parents_socket(key, parent):
    bus = WakeBus(key, parent)
    heard = listen(bus, "queued")
    (mine,) = os.listdir(bus.directory)
    pid = os.fork()
    if pid == 0:  # the child: publish, subscribe and close on its own
        status = 1
        try:
            bus.publish("queued", "from-the-child")
            status = 0 if bus.subscribe("queued", lambda _job_id: None) else 2
            bus.close()
        finally:
            os._exit(status)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert heard.get(timeout=5) == "from-the-child"
    assert os.listdir(bus.directory) == [mine]  # the child closed its own socket only
    bus.publish("queued", "still-heard")
    assert heard.get(timeout=5) == "still-heard"
    bus.close()


def test_the_socket_directory_is_private_and_named_by_the_database(key, parent, tmp_path):
    bus = WakeBus(key, parent)
    listen(bus, "changes")
    assert oct(bus.directory.stat().st_mode & 0o777) == "0o700"
    assert bus.directory == bus_directory(tmp_path / "." / "jobs.sqlite3", parent)  # the same file
    assert bus.directory != bus_directory(tmp_path / "other.sqlite3", parent)
    (name,) = os.listdir(bus.directory)
    assert name.startswith(f"changes.{os.getpid()}.")
    bus.close()
