"""Wake-ups across the processes of one machine that share a SQLite job store: the push PostgreSQL's NOTIFY
gives a fleet, for one box. Without it an idle worker finds a new job only at its next poll (`idle_poll_s`)
and the API learns that a job ended only at its next read of the change log (`change_poll_s`): most of a
small request's server overhead.

Each process that subscribes to a channel binds one Unix datagram socket, `<channel>.<pid>.<token>`, in a
directory private to the database (in the temp directory, named by a hash of the database's resolved path;
mode 0700 and ours, or no bus); one thread reads it and calls the subscribers. Publishing sends the job id
to each of the channel's sockets there without blocking; a publication that may wait a little (a running
job's progress) goes out once with the others that wait. A receiver whose queue is full misses that one and
is owed "" (anything may have changed), retried until it gets through; a dead process's socket is removed.
Processes that do not share the directory do not hear each other and keep polling, as everywhere. A forked
child starts with no subscriptions and never removes the parent's sockets.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import logging
import os
import re
import secrets
import socket
import stat
import tempfile
import threading
import time
import weakref
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)

CHANNEL_NAME = re.compile(r"[a-z]+")
RECEIVE_BYTES = 4096
REPAIR_S = 0.05  # how often "" is retried to a receiver that missed a datagram
TOUCH_S = 3600.0  # a receiver refreshes its socket file's times, so temp cleaners leave it alone


def bus_directory(key: Path, parent: Path | None = None) -> Path:
    """Where the sockets of the processes sharing `key` (a database file) live: in `parent`, by default
    $TMPDIR or /tmp (the same for a service and a login shell, where $XDG_RUNTIME_DIR often is not)."""
    base = parent or Path(tempfile.gettempdir())
    digest = hashlib.sha256(str(key.resolve()).encode()).hexdigest()[:16]
    return base / f"glm-image-{digest}"


def _private(directory: Path) -> bool:
    """A real directory (no symlink), ours, closed to everyone else."""
    try:
        info = directory.lstat()
    except OSError:
        return False
    return stat.S_ISDIR(info.st_mode) and info.st_uid == os.getuid() and not info.st_mode & 0o077


class _Receiver:
    """One bound socket of this process for one channel, and the thread that reads it."""

    def __init__(self, directory: Path, channel: str, deliver: Callable[[str, str], None]) -> None:
        with contextlib.suppress(FileExistsError):
            directory.mkdir(mode=0o700)
        if not _private(directory):
            raise PermissionError(f"{directory} is not a directory of this user's alone")
        self.path = str(directory / f"{channel}.{os.getpid()}.{secrets.token_hex(4)}")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            self.sock.bind(self.path)
        except OSError:
            self.sock.close()
            raise
        self.closing = False
        self.thread = threading.Thread(
            target=self._read, args=(channel, deliver), name=f"wakeups-{channel}", daemon=True
        )
        self.thread.start()

    def _read(self, channel: str, deliver: Callable[[str, str], None]) -> None:
        self.sock.settimeout(TOUCH_S)
        while not self.closing:
            try:
                message = self.sock.recv(RECEIVE_BYTES)
            except TimeoutError:
                with contextlib.suppress(OSError):
                    os.utime(self.path)
                continue
            except OSError:
                return
            if not self.closing:
                deliver(channel, message.decode(errors="replace"))

    def close(self, waker: socket.socket) -> None:
        self.closing = True
        with contextlib.suppress(OSError):  # a full queue wakes it anyway
            waker.sendto(b"", self.path)
        if self.thread is not threading.current_thread():
            self.thread.join(1)
        self.sock.close()
        with contextlib.suppress(OSError):
            os.unlink(self.path)


class WakeBus:
    """Publish job ids on named channels to every process of this machine on the same database."""

    def __init__(self, key: Path, parent: Path | None = None) -> None:
        self.directory = bus_directory(key, parent)
        self._reset()
        _OPEN.add(self)

    def _reset(self) -> None:
        """A new bus, or one in a forked child (`_forked`): none of the parent's threads, sockets or debts."""
        self._lock = threading.Lock()
        self._callbacks: dict[str, list[Callable[[str], None]]] = {}
        self._receivers: dict[str, _Receiver] = {}
        self._sender = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sender.setblocking(False)
        self._owed: set[str] = set()  # receivers that missed a datagram: "" is retried until it lands
        self._repairing = False
        self._later: dict[tuple[str, str], None] = {}  # publications that may wait, in order
        self._later_due: float | None = None
        self._later_ready = threading.Condition(self._lock)
        self._flusher: threading.Thread | None = None

    def publish(self, channel: str, job_id: str, within_s: float = 0.0) -> None:
        """Tell the channel's subscribers in every process (this one too). Never raises, never blocks.
        `within_s` > 0: it may wait that long, to go out once with the others that wait (a running job's
        many progress writes); a publication that does not wait sends those first."""
        try:
            if within_s > 0:
                self._publish_later(channel, job_id, within_s)
                return
            with self._lock:
                self._later.pop((channel, job_id), None)
            self._publish_waiting()
            self._publish_now(channel, job_id)
        except Exception:
            log.debug("a wake-up on %s was not sent", channel, exc_info=True)

    def subscribe(self, channel: str, callback: Callable[[str], None]) -> bool:
        """Call `callback(job_id)` from a thread of this bus on each publication on `channel` from any
        process ("": anything may have changed). False when no bus can be set up here: poll instead."""
        if not CHANNEL_NAME.fullmatch(channel):
            raise ValueError(f"a channel name is lowercase letters, not {channel!r}")
        with self._lock:
            if channel not in self._receivers:
                receiver = self._bind(channel)
                if receiver is None:
                    return False
                self._receivers[channel] = receiver
            self._callbacks.setdefault(channel, []).append(callback)
        return True

    def close(self) -> None:
        """Stop hearing (and remove this process's sockets); publishing still works."""
        self._publish_waiting()
        with self._lock:  # not held while the threads end: a subscriber may be publishing
            receivers, self._receivers, self._callbacks = list(self._receivers.values()), {}, {}
        for receiver in receivers:
            receiver.close(self._sender)
        if receivers:
            with contextlib.suppress(OSError):  # the last one out removes the directory
                self.directory.rmdir()

    # --- inside

    def _publish_now(self, channel: str, job_id: str) -> None:
        if not _private(self.directory):
            return  # no subscriber yet (or not a directory to trust)
        try:
            names = os.listdir(self.directory)
        except OSError:  # its last subscriber just left
            return
        paths = [str(self.directory / name) for name in names if name.startswith(f"{channel}.")]
        if paths:
            with self._lock:
                for path in paths:
                    self._send(path, job_id.encode())

    def _publish_later(self, channel: str, job_id: str, within_s: float) -> None:
        with self._lock:
            self._later[channel, job_id] = None
            if self._later_due is None:
                self._later_due = time.monotonic() + within_s
                self._later_ready.notify()
            if self._flusher is None:  # one thread for the process's life: starting one costs a switch
                self._flusher = threading.Thread(target=self._flush_later, name="wakeups-later", daemon=True)
                self._flusher.start()

    def _flush_later(self) -> None:
        while True:
            with self._lock:
                while (due := self._later_due) is None or due > time.monotonic():
                    self._later_ready.wait(None if due is None else due - time.monotonic())
            self._publish_waiting()

    def _publish_waiting(self) -> None:
        with self._lock:
            waiting, self._later, self._later_due = self._later, {}, None
        for channel, job_id in waiting:
            self._publish_now(channel, job_id)

    def _bind(self, channel: str) -> _Receiver | None:
        for _ in range(3):  # another process may remove the (empty) directory meanwhile
            try:
                return _Receiver(self.directory, channel, self._deliver)
            except FileNotFoundError:
                continue
            except OSError as exc:
                log.info("no wake-ups across processes (%s); polling instead", exc)
                return None
        return None

    def _deliver(self, channel: str, job_id: str) -> None:
        for callback in tuple(self._callbacks.get(channel, ())):
            try:
                callback(job_id)
            except Exception:
                log.exception("a wake-up subscriber failed")

    def _send(self, path: str, message: bytes) -> bool:
        """Under the lock. True when it was delivered, or needs no retry (its receiver is gone)."""
        try:
            self._sender.sendto(message, path)
        except BlockingIOError:  # the receiver's queue is full: it hears "" once there is room
            self._owed.add(path)
            if not self._repairing:
                self._repairing = True
                threading.Thread(target=self._repair, name="wakeups-repair", daemon=True).start()
            return False
        except ConnectionRefusedError:  # its process died without closing
            self._owed.discard(path)
            with contextlib.suppress(OSError):
                os.unlink(path)
        except FileNotFoundError:
            self._owed.discard(path)
        except OSError as exc:  # not a socket we can send to: nothing to retry
            log.debug("no wake-up sent to %s: %s", path, exc)
        return True

    def _repair(self) -> None:
        """Send "" to each receiver that missed a datagram, until each has it."""
        while True:
            time.sleep(REPAIR_S)
            with self._lock:
                for path in list(self._owed):
                    if self._send(path, b""):
                        self._owed.discard(path)
                if not self._owed:
                    self._repairing = False
                    return


_OPEN: weakref.WeakSet[WakeBus] = weakref.WeakSet()


@atexit.register
def _close_all() -> None:
    """No socket files left behind at a normal exit (a killed process's go at the next publication)."""
    for bus in list(_OPEN):
        bus.close()


def _forked() -> None:
    for bus in list(_OPEN):
        bus._reset()


os.register_at_fork(after_in_child=_forked)
