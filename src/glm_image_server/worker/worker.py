"""A worker: one model, one scheduler loop, and a heartbeat that renews its claims and tells the store
(and so `/ready`) what it is doing. `glm-image worker` runs one as a process; `serve` starts one per GPU
through the supervisor; tests may run one on a thread beside an in-process app.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time

from ..core.job import Job, WorkerInfo, WorkerState
from ..slices import WorkerSettings
from ..store.contract import JobStore, StoreUnavailable
from .executor import Executor
from .scheduler import Scheduler

log = logging.getLogger(__name__)


class Worker:
    """Named `worker_id` (default: host-pid); its device is the configured one until the model says."""

    def __init__(self, settings: WorkerSettings, store: JobStore) -> None:
        self.settings, self.store = settings, store
        self.id, self.device = settings.worker_id or f"{socket.gethostname()}-{os.getpid()}", settings.device
        self.started_at = time.time()
        self.state: WorkerState = "starting"
        self.jobs: tuple[str, ...] = ()
        self.scheduler: Scheduler | None = None
        self._stopping = threading.Event()
        self._heart = threading.Thread(target=self._beat, name=f"heartbeat-{self.id}", daemon=True)
        self._loop: threading.Thread | None = None

    def _info(self) -> WorkerInfo:
        return WorkerInfo(
            id=self.id,
            pid=os.getpid(),
            device=self.device,
            state=self.state,
            role=self.settings.role,
            jobs=self.jobs,
            heartbeat_at=time.time(),
            started_at=self.started_at,
            restarts=int(os.environ.get("GLM_IMAGE_WORKER_RESTARTS", "0")),
        )

    def set_state(self, state: WorkerState) -> None:
        self.state = state
        self.store.heartbeat(self._info())

    def _on_batch(self, jobs: list[Job]) -> None:
        self.jobs = tuple(job.id for job in jobs)
        self.set_state("busy" if jobs else "ready")

    def _beat(self) -> None:
        parent = os.getppid()
        while not self._stopping.wait(self.settings.heartbeat_s):
            try:
                if held := self.scheduler.held() if self.scheduler is not None else ():
                    self.store.renew(self.id, self.settings.lease_s, held)  # an idle worker writes no lease
                self.store.heartbeat(self._info())
            except StoreUnavailable as exc:
                if self.scheduler is not None:
                    self.scheduler.store_state(exc)
            except Exception:
                log.exception("heartbeat failed; retrying")
            if os.environ.get("GLM_IMAGE_SUPERVISED") and os.getppid() != parent:
                log.error("the serving process is gone; worker %s exits", self.id)
                os._exit(1)

    def start_heartbeat(self) -> None:
        """Before the model loads, so /ready shows the worker loading."""
        self.set_state("loading")
        self._heart.start()

    def serve(self, executor: Executor) -> None:
        """Run batches until stopped (blocking)."""
        self.scheduler = Scheduler(self.store, executor, self.settings, self.id, self._on_batch)
        if self.store.subscribe("queued", lambda _job_id: self.wake()):
            # New and requeued jobs wake this worker; the timer only finds expired leases.
            self.scheduler.idle_s = max(self.settings.idle_poll_s, self.settings.lease_s / 4)
        if self._stopping.is_set():
            return
        self.set_state("ready")
        log.info("worker %s ready on %s", self.id, self.device)
        self.scheduler.run()
        self.set_state("stopped")

    def start_thread(self, executor: Executor) -> None:
        self._loop = threading.Thread(
            target=self.serve, args=(executor,), name=f"worker-{self.id}", daemon=True
        )
        self._loop.start()

    def wake(self) -> None:
        if self.scheduler is not None:
            self.scheduler.wake()

    def stop(self, timeout: float = 30.0) -> None:
        self._stopping.set()
        if self.scheduler is not None:
            self.scheduler.stop()
        if self._loop is not None:
            self._loop.join(timeout)
