"""`serve`'s worker processes: starts one `glm-image worker` per entry of its plan (worker/plan.py: a
role, a GPU it is pinned to with CUDA_VISIBLE_DEVICES, quantization and offload; one on the CPU without a
GPU), restarts any that dies, and hands its claimed jobs back to the queue at once (they run again with
their seeds; the store's claims make sure none completes twice). The API process itself never imports
torch.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass

from ..config import Settings
from ..core.job import Role, WorkerInfo
from ..slices import WorkerSettings
from ..store.contract import JobStore
from .plan import Plan, PlanEntry

log = logging.getLogger(__name__)

POLL_S = 0.25
GRACE_S = 10.0  # from SIGTERM to SIGKILL when the workers stop


def settings_env(settings: Settings) -> dict[str, str]:
    """The settings as GLM_IMAGE_* variables, so a child process builds the same Settings."""
    env = {}
    for name, value in settings.model_dump(mode="json").items():
        if value is None:
            continue
        if isinstance(value, list):
            value = ",".join(value)
        elif isinstance(value, bool):
            value = "true" if value else "false"
        env[f"GLM_IMAGE_{name.upper()}"] = str(value)
    return env


def _die_with_parent() -> None:
    """In the child before exec (Linux): SIGKILL it when the serving process dies."""
    with contextlib.suppress(OSError):  # elsewhere the worker's heartbeat notices a new parent instead
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


@dataclass
class _Child:
    worker_id: str
    role: Role
    device: str
    env: dict[str, str]
    process: subprocess.Popen | None = None
    restarts: int = 0
    started: float = 0.0
    next_start: float = 0.0
    backoff_s: float = 1.0


def _child(entry: PlanEntry, base: Mapping[str, str], device: str) -> _Child:
    """A plan entry's worker; its environment is `base` (the settings and the supervisor's variables) with
    the entry's id, role, quantization and offload, and its GPU alone visible (`device`: the setting)."""
    env = dict(
        base,
        GLM_IMAGE_WORKER_ID=entry.worker_id,
        GLM_IMAGE_ROLE=entry.role,
        GLM_IMAGE_QUANTIZE=entry.quantize,
        GLM_IMAGE_OFFLOAD=entry.offload,
    )
    if entry.gpu is None:
        return _Child(entry.worker_id, entry.role, device, env)
    env["CUDA_VISIBLE_DEVICES"] = entry.gpu.device
    env["GLM_IMAGE_DEVICE"] = "cuda" if device == "auto" else device
    return _Child(entry.worker_id, entry.role, f"cuda:{entry.gpu.device}", env)


class Supervisor:
    """`env`: the settings as the workers' environment (`settings_env`), which each process reads."""

    def __init__(self, settings: WorkerSettings, env: Mapping[str, str], store: JobStore, plan: Plan) -> None:
        self.settings, self.store = settings, store
        threads = settings.torch_threads or max(1, (os.cpu_count() or 1) // max(len(plan.entries), 1))
        base = {**os.environ, **env, "GLM_IMAGE_SUPERVISED": "1", "GLM_IMAGE_TORCH_THREADS": str(threads)}
        self.children = [_child(entry, base, settings.device) for entry in plan.entries]
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="supervisor", daemon=True)

    def start(self) -> None:
        for child in self.children:  # jobs a previous run of these workers held: run them again now
            released = self.store.release(child.worker_id, f"worker {child.worker_id} was restarted")
            if released.requeued or released.failed:
                log.info(
                    "worker %s: %d job(s) queued again from the last run", child.worker_id, released.requeued
                )
        self._thread.start()  # spawns the workers

    def _spawn(self, child: _Child) -> None:
        env = dict(child.env, GLM_IMAGE_WORKER_RESTARTS=str(child.restarts))
        command = [sys.executable, "-m", "glm_image_server.cli", "worker"]
        # A session of its own: a Ctrl-C (or a SIGTERM to the process group) reaches `serve`, which drains
        # its waiting requests while the workers finish their jobs, and stops them after.
        child.process = subprocess.Popen(
            command, env=env, preexec_fn=_die_with_parent, start_new_session=True
        )
        child.started, pid = time.monotonic(), child.process.pid
        log.info("started worker %s (pid %d, role %s) on %s", child.worker_id, pid, child.role, child.device)

    def _loop(self) -> None:
        """Every worker is spawned, watched and stopped from this one thread: PR_SET_PDEATHSIG fires when
        the thread that spawned a child ends, so no other (short-lived) thread may spawn one."""
        while True:
            for child in self.children:
                try:
                    self._watch(child)
                except Exception:
                    log.exception("supervising worker %s failed; retrying", child.worker_id)
            if self._stopping.wait(POLL_S):
                break
        self._terminate()

    def _watch(self, child: _Child) -> None:
        if child.process is None:
            if time.monotonic() >= child.next_start and not self._stopping.is_set():
                self._spawn(child)
            return
        code = child.process.poll()
        if code is None:
            return
        reason = f"worker {child.worker_id} (pid {child.process.pid}) exited with {code}"
        released = self.store.release(child.worker_id, reason)
        log.error("%s; %d job(s) queued again, restarting it", reason, released.requeued)
        now = time.time()
        self.store.heartbeat(
            WorkerInfo(
                id=child.worker_id,
                pid=child.process.pid,
                device=child.device,
                state="dead",
                role=child.role,
                heartbeat_at=now,
                started_at=now,
                restarts=child.restarts,
                detail=reason,
            )
        )
        quick = time.monotonic() - child.started < 60
        child.backoff_s = min(self.settings.worker_restart_max_s, child.backoff_s * 2) if quick else 1.0
        child.next_start = time.monotonic() + (child.backoff_s if quick else 0.0)
        child.restarts += 1
        child.process = None

    def stop(self) -> None:
        """SIGTERM every worker (their running jobs go back to the queue), SIGKILL after GRACE_S."""
        self._stopping.set()
        self._thread.join(GRACE_S + 10)

    def _terminate(self) -> None:
        running = [c.process for c in self.children if c.process and c.process.poll() is None]
        for process in running:
            process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + GRACE_S
        for process in running:
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)
