"""The outbox sender: for each finished job that asked for it, the dialect's outgoing calls (webhook
POSTs, upload PUTs), in order, each retried with exponential backoff until it succeeds.

Deliveries are rows in the store, written in the same transaction as the job's final state, so none is
lost or invented by a restart. The calls are rendered at send time by the dialect that accepted the job
(its final state never changes); the row remembers how many went through.
"""

from __future__ import annotations

import logging
import threading
import time
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


class WebhookSender:
    def __init__(
        self, store: JobStore, settings: Settings, renderers: Mapping[str, Renderer], guard: UrlGuard
    ) -> None:
        self.store, self.renderers, self.guard = store, renderers, guard
        self.max_attempts = settings.webhook_max_attempts
        self.base_s, self.max_s = settings.webhook_retry_base_s, settings.webhook_retry_max_s
        self.client = httpx.Client(timeout=15.0, follow_redirects=False)
        self._stopping = threading.Event()
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="webhooks", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()
        self._thread.join(5)
        self.client.close()

    def wake(self) -> None:
        self._wake.set()

    def retry_delay(self, attempts: int) -> float:
        """Delay after the attempts-th failure: base, 2*base, 4*base, ... capped."""
        return min(self.max_s, self.base_s * 2 ** (attempts - 1))

    def _loop(self) -> None:
        while not self._stopping.is_set():
            try:
                due = self.store.due_webhooks(time.time())
                for delivery in due:
                    self._deliver(delivery)
            except Exception:
                log.exception("webhook sender error")
                due = []
            if not due:
                self._wake.wait(POLL_S)
                self._wake.clear()

    def _deliver(self, delivery: Delivery) -> None:
        job = self.store.get(delivery.job_id)
        if job is None:
            self.store.webhook_failed(delivery.id, "job no longer exists", None)
            return
        attempts = delivery.attempts + 1
        calls = self.renderers[job.api](job)
        for call in calls[delivery.parts_done :]:
            try:
                self.guard.check(call.url)
                headers = {"content-type": call.content_type} if call.content_type else None
                response = self.client.request(
                    call.method, call.url, json=call.json, content=call.content, headers=headers
                )
                error = None if response.is_success else f"HTTP {response.status_code}"
            except BlockedUrl as exc:
                self.store.webhook_failed(delivery.id, f"refused: {exc}", None)
                log.warning("delivery for %s refused: %s", job.id, exc)
                return
            except httpx.HTTPError as exc:
                error = f"{type(exc).__name__}: {exc}"
            if error:
                retry_at = time.time() + self.retry_delay(attempts) if attempts < self.max_attempts else None
                self.store.webhook_failed(delivery.id, error, retry_at)
                log.warning(
                    "%s %s for %s failed (%s), attempt %d/%d%s",
                    call.method,
                    call.url,
                    job.id,
                    error,
                    attempts,
                    self.max_attempts,
                    "" if retry_at else "; giving up",
                )
                return
            self.store.webhook_part_done(delivery.id)
            log.info("%s %s for %s delivered", call.method, call.url, job.id)
        self.store.webhook_delivered(delivery.id)
