"""Delete finished jobs, their logs and files once their ttl or the retention period is over, older uploads,
and half-written files a crash or a full disk left; and fail queued jobs past their start deadline."""

from __future__ import annotations

import logging
import threading
import time

from ..media.storage import Storage
from ..store.contract import JobStore, StoreUnavailable

log = logging.getLogger(__name__)
PARTIAL_AGE_S = 600.0  # no save takes this long: an older partial file is an orphan


class RetentionSweeper:
    def __init__(self, store: JobStore, storage: Storage, retention_s: float) -> None:
        self.store, self.storage, self.retention_s = store, storage, retention_s
        self.interval_s = min(60.0, retention_s / 4)
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="retention", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(5)

    def sweep(self) -> int:
        now = time.time()
        self.store.expire_start_deadlines(now)
        jobs = self.store.delete_expired(now, self.retention_s)
        for job in jobs:
            for image in job.result.images if job.result else ():
                self.storage.delete(image.key)
        self.storage.delete_uploads_before(now - self.retention_s)
        self.storage.delete_partials_before(now - PARTIAL_AGE_S)
        return len(jobs)

    def _loop(self) -> None:
        while not self._stopping.wait(self.interval_s):
            try:
                if count := self.sweep():
                    log.info("retention: deleted %d finished jobs and their files", count)
            except StoreUnavailable as exc:  # a line, not a traceback: not a bug
                log.warning("retention sweep skipped: %s", exc)
            except Exception:
                log.exception("retention sweep failed")
