"""One data directory, one server: `serve` holds an exclusive lock on it for life, taken before anything
else touches it, so a second server on the same jobs exits naming the first instead of running them twice.
Workers share their server's directory and take no lock; nor does a fleet API (`needed=False`), whose
PostgreSQL store and S3 keep claims apart with leases."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

LOCK_NAME = "serve.lock"


class DataDirBusy(RuntimeError):
    pass


class DataDirLock:
    def __init__(self, data_dir: Path, needed: bool = True) -> None:
        data_dir.mkdir(parents=True, exist_ok=True)
        self.path, self.needed = data_dir / LOCK_NAME, needed
        self._fd: int | None = None

    def acquire(self) -> None:
        """Raises DataDirBusy when another process holds it. Released when this process exits."""
        if not self.needed:
            return
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 64).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise DataDirBusy(
                f"another glm-image serve (pid {holder}) is using the data directory {self.path.parent}; "
                "stop it, or give this one its own --data-dir"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
