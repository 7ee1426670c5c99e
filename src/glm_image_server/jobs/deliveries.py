"""The outbox sender: for each finished job that asked for it, the dialect's outgoing calls (webhook
POSTs, upload PUTs), in order, each retried by an explicit policy until it succeeds or gives up.

Deliveries are rows in the store, written in the same transaction as the job's final state, so none is
lost or invented by a restart. A sender claims a row with a lease before sending, so several API
processes on one store never send the same attempt twice. The calls are rendered at send time by the
dialect that accepted the job (its final state never changes); the row remembers how many went through.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import httpx

from ..media.fetch import BlockedUrl, UrlGuard
from ..settings import Settings
from .records import Job
from .store import Delivery, JobStore

log = logging.getLogger(__name__)

POLL_S = 0.25


@dataclass(frozen=True)
class Outgoing:
    method: str
    url: str
    json: dict | None = None
    content: bytes | None = None
    content_type: str | None = None


Renderer = Callable[[Job], list[Outgoing]]


@dataclass(frozen=True)
class RetryPolicy:
    """Retry a failed call (network error or non-2xx) after base, 2*base, 4*base, ... capped at max_s,
    until max_attempts attempts in all; a refused destination (the URL guard) is never retried."""

    max_attempts: int = 10
    base_s: float = 5.0
    max_s: float = 1800.0

    @classmethod
    def from_settings(cls, settings: Settings) -> RetryPolicy:
        return cls(settings.webhook_max_attempts, settings.webhook_retry_base_s, settings.webhook_retry_max_s)

    def delay(self, attempts: int) -> float:
        """Delay after the attempts-th failure."""
        return min(self.max_s, self.base_s * 2 ** (attempts - 1))

    def retry_at(self, attempts: int, now: float) -> float | None:
        """When to try again after the attempts-th failure; None: give up."""
        return now + self.delay(attempts) if attempts < self.max_attempts else None


class DeliverySender:
    def __init__(
        self, store: JobStore, settings: Settings, renderers: Mapping[str, Renderer], guard: UrlGuard
    ) -> None:
        self.store, self.renderers, self.guard = store, renderers, guard
        self.policy = RetryPolicy.from_settings(settings)
        self.lease_s = settings.delivery_lease_s
        self.owner = f"sender-{uuid.uuid4().hex[:8]}"
        self.client = httpx.Client(timeout=settings.webhook_timeout_s, follow_redirects=False)
        self._stopping = threading.Event()
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="deliveries", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()
        self._thread.join(5)
        self.client.close()

    def wake(self) -> None:
        self._wake.set()

    def _loop(self) -> None:
        while not self._stopping.is_set():
            try:
                due = self.store.claim_deliveries(self.owner, time.time(), self.lease_s)
                for delivery in due:
                    self._deliver(delivery)
            except Exception:
                log.exception("delivery sender error")
                due = []
            if not due:
                self._wake.wait(POLL_S)
                self._wake.clear()

    def _deliver(self, delivery: Delivery) -> None:
        job = self.store.get(delivery.job_id)
        if job is None:
            self.store.delivery_failed(delivery.id, "job no longer exists", None)
            return
        attempts = delivery.attempts + 1
        for call in self.renderers[job.api](job)[delivery.parts_done :]:
            error = self._send(call)
            if error is not None and error.startswith("refused"):
                self.store.delivery_failed(delivery.id, error, None)
                log.warning("delivery for %s %s", job.id, error)
                return
            if error is not None:
                retry_at = self.policy.retry_at(attempts, time.time())
                self.store.delivery_failed(delivery.id, error, retry_at)
                log.warning(
                    "%s %s for %s failed (%s), attempt %d/%d%s",
                    call.method,
                    call.url,
                    job.id,
                    error,
                    attempts,
                    self.policy.max_attempts,
                    "" if retry_at else "; giving up",
                )
                return
            self.store.delivery_part_done(delivery.id)
            log.info("%s %s for %s delivered", call.method, call.url, job.id)
        self.store.delivery_done(delivery.id)

    def _send(self, call: Outgoing) -> str | None:
        """None when the call went through; else why not ('refused: ...' is final)."""
        try:
            self.guard.check(call.url)
        except BlockedUrl as exc:
            return f"refused: {exc}"
        headers = {"content-type": call.content_type} if call.content_type else None
        try:
            response = self.client.request(
                call.method, call.url, json=call.json, content=call.content, headers=headers
            )
        except httpx.HTTPError as exc:
            return f"{type(exc).__name__}: {exc}"
        return None if response.is_success else f"HTTP {response.status_code}"
