"""Whether the server takes new work now: the queue limits, the per-client submission rate and free disk.
Every submission passes `Admission.check` before its job is written and `Admission.caps` as the store
writes it (atomically); a refusal is a typed `Refused` each dialect renders in its own format (no HTTP here).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..media.storage import DiskSpace
from ..slices import Slice
from ..store.contract import Caps, OverCap


@dataclass(frozen=True)
class LimitsSettings(Slice):
    """What one client may make the server take on (api/gate.py, api/connections.py and `Admission`)."""

    api_keys: tuple[str, ...]
    max_body_bytes: int
    max_unauthenticated_body_bytes: int
    body_timeout_s: float
    auth_failures_per_minute: float
    header_timeout_s: float
    max_connections_per_client: int
    submit_rate_per_client: float
    max_queued_jobs: int
    max_jobs_per_key: int
    data_dir: Path
    min_free_disk_mb: float


class Refused(Exception):
    """New work is refused for now: `kind` says why (queue_full, rate_limited, low_disk, or unavailable: the
    store could not take the write), `retry_after_s` when it is worth trying again."""

    kind = "overloaded"

    def __init__(self, message: str, retry_after_s: float = 1.0, kind: str | None = None) -> None:
        super().__init__(message)
        self.message, self.retry_after_s, self.kind = message, retry_after_s, kind or self.kind


class LowDisk(Refused):
    kind = "low_disk"


@dataclass
class TokenBuckets:
    """A token bucket per client: `rate` per second, up to `burst` at once. Idle buckets are forgotten."""

    rate: float
    burst: float
    _buckets: dict[str, tuple[float, float]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def take(self, client: str) -> float:
        """0 when a token was taken; else the seconds until one is free."""
        now = time.monotonic()
        with self._lock:
            tokens, then = self._buckets.get(client, (self.burst, now))
            tokens = min(self.burst, tokens + (now - then) * self.rate)
            if tokens < 1:
                self._buckets[client] = (tokens, now)
                return (1 - tokens) / self.rate
            self._buckets[client] = (tokens - 1, now)
            if len(self._buckets) > 10_000:  # forget the buckets that have filled up again
                refill_s = self.burst / self.rate
                self._buckets = {k: v for k, v in self._buckets.items() if now - v[1] < refill_s}
            return 0.0


class Admission:
    def __init__(self, settings: LimitsSettings) -> None:
        self.settings = settings
        self.disk = DiskSpace(settings.data_dir, settings.min_free_disk_mb)
        burst = max(1.0, settings.submit_rate_per_client * 2)
        self.rate = TokenBuckets(settings.submit_rate_per_client, burst)

    def check(self, owner: str | None, client: str) -> None:
        """Raises a Refused when no job may be written now (free disk, the client's rate)."""
        if problem := self.disk.problem():
            raise LowDisk(f"the server is {problem}; try again later", 30.0)
        if wait := self.rate.take(owner or client):
            rate = self.settings.submit_rate_per_client
            message = f"too many submissions: at most {rate:g} per second per client"
            raise Refused(message, wait, "rate_limited")

    @property
    def caps(self) -> Caps:
        """The queue caps, which the store checks as it writes the job (atomically, store/contract.py)."""
        return Caps(self.settings.max_queued_jobs, self.settings.max_jobs_per_key)

    @staticmethod
    def refusal(over: OverCap) -> Refused:
        """The store refused a job over a cap: how a client hears it."""
        if over.cap == "queued":
            message = f"the queue is full ({over.limit} jobs waiting); try again later"
        else:
            message = (
                f"this API key already has {over.limit} unfinished jobs, the most it may have; wait for "
            )
            message += "some to finish"
        return Refused(message, 5.0, "queue_full")
