"""The webhook outbox sender: POSTs each finished job's payload, retrying with exponential backoff.

Deliveries are rows in the store, written in the same transaction as the job's final state, so a
webhook is neither lost nor invented by a restart. The payload is rendered at send time by the dialect
that accepted the job (its final state never changes).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping

import httpx

from ..media.fetch import BlockedUrl, UrlGuard
from ..settings import Settings
from .records import Job
from .store import Delivery, JobStore

log = logging.getLogger(__name__)

Renderer = Callable[[Job], dict]
POLL_S = 0.25


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
        try:
            self.guard.check(delivery.url)
            response = self.client.post(delivery.url, json=self.renderers[job.api](job))
            if response.is_success:
                self.store.webhook_delivered(delivery.id)
                log.info("webhook for %s delivered to %s", job.id, delivery.url)
                return
            error = f"HTTP {response.status_code}"
        except BlockedUrl as exc:
            self.store.webhook_failed(delivery.id, f"refused: {exc}", None)
            log.warning("webhook for %s refused: %s", job.id, exc)
            return
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}"
        retry_at = time.time() + self.retry_delay(attempts) if attempts < self.max_attempts else None
        self.store.webhook_failed(delivery.id, error, retry_at)
        log.warning(
            "webhook for %s to %s failed (%s), attempt %d/%d%s",
            job.id,
            delivery.url,
            error,
            attempts,
            self.max_attempts,
            "" if retry_at else "; giving up",
        )
