"""The outbox sender: a finished job's outgoing calls (webhook POSTs, upload PUTs), in order, each retried
by an explicit policy until it succeeds or gives up. Deliveries are store rows written with the job's final
state (a restart neither loses nor invents one) and claimed under a lease (several API processes never
send the same attempt twice); the dialect that accepted the job renders the calls at send time, and the
row counts how many went through."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import httpx

from ..core.job import Job
from ..media.fetch import BlockedUrl, UrlGuard
from ..slices import DeliverySettings
from ..store.contract import Delivery, JobStore, StoreUnavailable

log = logging.getLogger(__name__)

POLL_S = 0.25


@dataclass(frozen=True)
class Outgoing:
    """One call. With `sign`, the JSON body is serialized here and `sign(body)` gives headers made for
    exactly those bytes at the moment they are sent (a signature with a fresh timestamp per attempt)."""

    method: str
    url: str
    json: dict | None = None
    content: bytes | None = None
    content_type: str | None = None
    sign: Callable[[bytes], Mapping[str, str]] | None = None

    def request(self) -> dict:
        """httpx.request's keyword arguments for this call."""
        headers = {"content-type": self.content_type} if self.content_type else {}
        if self.sign is None:
            return {"json": self.json, "content": self.content, "headers": headers or None}
        body = self.content
        if body is None:
            body = json.dumps(self.json, separators=(",", ":")).encode()
        headers = {"content-type": self.content_type or "application/json", **self.sign(body)}
        return {"content": body, "headers": headers}


Renderer = Callable[[Job], list[Outgoing]]


@dataclass(frozen=True)
class RetryPolicy:
    """Retry after base, 2*base, 4*base, ... (at most max_s), up to max_attempts in all, a failure that may
    pass (no answer, HTTP 408, 425, 429 or 5xx); any other answer and a refused destination are final."""

    max_attempts: int = 10
    base_s: float = 5.0
    max_s: float = 1800.0

    @classmethod
    def from_settings(cls, settings: DeliverySettings) -> RetryPolicy:
        return cls(settings.webhook_max_attempts, settings.webhook_retry_base_s, settings.webhook_retry_max_s)

    def delay(self, attempts: int) -> float:
        """Delay after the attempts-th failure."""
        return min(self.max_s, self.base_s * 2 ** (attempts - 1))

    def retry_at(self, attempts: int, now: float) -> float | None:
        """When to try again after the attempts-th failure; None: give up."""
        return now + self.delay(attempts) if attempts < self.max_attempts else None


class DeliverySender:
    """On its own thread and event loop, a task per delivery (a hanging receiver holds only its own), one
    call at a time per host (in order, no flood), each call under one deadline (webhook_timeout_s)."""

    def __init__(
        self, store: JobStore, settings: DeliverySettings, renderers: Mapping[str, Renderer], guard: UrlGuard
    ) -> None:
        self.store, self.renderers, self.guard = store, renderers, guard
        self.policy = RetryPolicy.from_settings(settings)
        self.lease_s, self.timeout_s = settings.delivery_lease_s, settings.webhook_timeout_s
        self.concurrency = settings.delivery_concurrency
        self.owner = f"sender-{uuid.uuid4().hex[:8]}"
        self._stopping = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._thread = threading.Thread(
            target=lambda: asyncio.run(self._run()), name="deliveries", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self.wake()
        self._thread.join(5)

    def wake(self) -> None:
        loop, event = self._loop, self._wake
        if loop is not None and event is not None and not loop.is_closed():
            loop.call_soon_threadsafe(event.set)

    async def _run(self) -> None:
        self._loop, self._wake = asyncio.get_running_loop(), asyncio.Event()
        in_flight: dict[int, asyncio.Task] = {}
        destinations: dict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        async with httpx.AsyncClient(follow_redirects=False, timeout=None) as client:
            while not self._stopping.is_set():
                room = self.concurrency - len(in_flight)
                due = await self._claim(room) if room > 0 else []
                for delivery in due:
                    if delivery.id not in in_flight:
                        task = asyncio.create_task(self._deliver(delivery, client, destinations))
                        in_flight[delivery.id] = task
                        task.add_done_callback(lambda _t, key=delivery.id: in_flight.pop(key, None))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), POLL_S)
                self._wake.clear()
            for task in in_flight.values():  # unfinished ones are sent again after their lease
                task.cancel()

    async def _claim(self, room: int) -> list[Delivery]:
        try:
            return await asyncio.to_thread(
                self.store.claim_deliveries, self.owner, time.time(), self.lease_s, min(room, 20)
            )
        except StoreUnavailable:  # waited out: the worker and the API say so
            return []
        except Exception:
            log.exception("could not claim deliveries")
            return []

    async def _deliver(
        self, delivery: Delivery, client: httpx.AsyncClient, destinations: dict[str, asyncio.Lock]
    ) -> None:
        try:
            job = await asyncio.to_thread(self.store.get, delivery.job_id)
            if job is None:
                await asyncio.to_thread(self.store.delivery_failed, delivery.id, "job no longer exists", None)
                return
            calls = await asyncio.to_thread(self.renderers[job.api], job)
            attempts = delivery.attempts + 1
            for call in calls[delivery.parts_done :]:
                async with destinations[_destination(call.url)]:
                    failure = await self._send(client, call)
                if failure is not None:
                    reason, final = failure
                    retry_at = None if final else self.policy.retry_at(attempts, time.time())
                    await asyncio.to_thread(self.store.delivery_failed, delivery.id, reason, retry_at)
                    end = "" if retry_at else "; giving up"
                    tried = f"attempt {attempts}/{self.policy.max_attempts}{end}"
                    log.warning("%s %s for %s failed (%s), %s", call.method, call.url, job.id, reason, tried)
                    return
                await asyncio.to_thread(self.store.delivery_part_done, delivery.id)
                log.info("%s %s for %s delivered", call.method, call.url, job.id)
            await asyncio.to_thread(self.store.delivery_done, delivery.id)
        except Exception:
            log.exception("delivery %s failed", delivery.id)

    async def _send(self, client: httpx.AsyncClient, call: Outgoing) -> tuple[str, bool] | None:
        """None when the call went through; else why not, and whether that is final."""
        try:
            async with asyncio.timeout(self.timeout_s):
                await self.guard.acheck(call.url)
                response = await client.request(call.method, call.url, **call.request())
        except BlockedUrl as exc:
            return f"refused: {exc}", True
        except TimeoutError:
            return f"no answer within {self.timeout_s:g} s", False
        except httpx.HTTPError as exc:
            return f"{type(exc).__name__}: {exc}", False
        if response.is_success:
            return None
        status = response.status_code
        return f"HTTP {status}", not (status in (408, 425, 429) or status >= 500)


def _destination(url: str) -> str:
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL:
        return url
    return f"{parsed.scheme}://{parsed.host}:{parsed.port}"
