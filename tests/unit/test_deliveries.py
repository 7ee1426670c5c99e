"""The outbox: the retry policy, delivery leases in the store, and the sender against a loopback receiver."""

from __future__ import annotations

import socket
import sqlite3
import threading
import time
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from helpers.jobs import make_job
from helpers.stores import raw_rows, sqlite_store
from helpers.waiting import holds, wait_for

from glm_image_server.config import Settings
from glm_image_server.core.job import Job, JobError, JobStatus
from glm_image_server.delivery.sender import DeliverySender, Outgoing, RetryPolicy
from glm_image_server.media.fetch import UrlGuard
from glm_image_server.slices import DeliverySettings
from glm_image_server.store.contract import JobStore


def finished_job(store: JobStore, webhook_url: str | None = "https://example.com/hook") -> Job:
    job = make_job(webhook=webhook_url)
    assert store.create(job)
    assert store.finish(job.id, JobStatus.FAILED, error=JobError(kind="internal", message="boom"))
    return store.get(job.id)


def outbox_row(store: JobStore, job_id: str) -> dict:
    (row,) = raw_rows(store, "SELECT * FROM deliveries WHERE job_id = ?", (job_id,))
    return row


@pytest.fixture
def store(backend) -> JobStore:
    return backend.open(max_attempts=3)


# --- the retry policy


def test_retry_delays_double_from_the_base_up_to_the_cap():
    policy = RetryPolicy(max_attempts=6, base_s=5.0, max_s=30.0)
    assert [policy.delay(n) for n in range(1, 7)] == [5.0, 10.0, 20.0, 30.0, 30.0, 30.0]


def test_retry_gives_up_after_max_attempts():
    policy = RetryPolicy(max_attempts=3, base_s=2.0, max_s=100.0)
    assert policy.retry_at(1, 1000.0) == 1002.0
    assert policy.retry_at(2, 1000.0) == 1004.0
    assert policy.retry_at(3, 1000.0) is None
    assert policy.retry_at(4, 1000.0) is None


def test_retry_policy_from_settings(tmp_path):
    settings = Settings(
        data_dir=tmp_path, webhook_max_attempts=4, webhook_retry_base_s=1.5, webhook_retry_max_s=9
    )
    assert RetryPolicy.from_settings(DeliverySettings.from_settings(settings)) == RetryPolicy(4, 1.5, 9.0)


def test_default_retry_policy_is_the_documented_one():
    policy = RetryPolicy()
    assert (policy.delay(1), policy.delay(2), policy.delay(20)) == (5.0, 10.0, 1800.0)
    assert policy.retry_at(9, 0.0) is not None
    assert policy.retry_at(10, 0.0) is None


# --- delivery leases in the store


def test_finishing_a_job_with_a_webhook_queues_one_delivery(store):
    job = finished_job(store)
    plain = finished_job(store, webhook_url=None)
    (delivery,) = store.claim_deliveries("s1", time.time() + 1, 60)
    assert (delivery.job_id, delivery.attempts, delivery.parts_done) == (job.id, 0, 0)
    assert plain.output.webhook_url is None


def test_concurrent_owners_never_claim_the_same_delivery(backend):
    store = backend.open()
    jobs = [finished_job(store) for _ in range(30)]
    claimed: dict[str, list[int]] = {}
    errors: list[BaseException] = []
    start = threading.Barrier(2)

    def claim(owner: str) -> None:
        own = backend.open()
        mine = claimed.setdefault(owner, [])
        try:
            start.wait(5)
            while batch := own.claim_deliveries(owner, time.time() + 1, 600, limit=3):
                mine.extend(delivery.id for delivery in batch)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=claim, args=(f"owner-{i}",)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)
    assert not errors
    everything = claimed["owner-0"] + claimed["owner-1"]
    assert len(everything) == len(jobs)
    assert len(set(everything)) == len(everything)


def test_an_expired_delivery_lease_lets_another_owner_claim_it(store):
    job = finished_job(store)
    now = time.time() + 1
    (first,) = store.claim_deliveries("s1", now, 10)
    assert store.claim_deliveries("s2", now + 5, 10) == []  # s1 still holds it
    (second,) = store.claim_deliveries("s2", now + 11, 10)
    assert (second.id, second.job_id, second.attempts) == (first.id, job.id, 0)


def test_looking_for_due_deliveries_takes_no_write_lock_when_none_is_due(tmp_path):
    """The change feed wakes the sender after every change a worker makes: with nothing due, its look must
    neither wait for nor hold up a worker's write (SQLite has one writer at a time)."""
    store = sqlite_store(tmp_path / "jobs.sqlite3")
    worker = sqlite3.connect(store.dialect.path, isolation_level=None)
    worker.execute("BEGIN IMMEDIATE")  # a worker's write in progress
    looked: list[list] = []
    looker = threading.Thread(target=lambda: looked.append(store.claim_deliveries("s1", time.time(), 60)))
    looker.start()
    looker.join(2)
    in_time = not looker.is_alive()
    worker.execute("ROLLBACK")
    looker.join(40)
    assert in_time
    assert looked == [[]]


def test_a_failed_attempt_is_retried_at_retry_at(store):
    finished_job(store)
    now = time.time() + 1
    (delivery,) = store.claim_deliveries("s1", now, 600)
    store.delivery_failed(delivery.id, "HTTP 500", now + 50)
    assert store.claim_deliveries("s2", now + 10, 600) == []  # released, but not due yet
    (again,) = store.claim_deliveries("s2", now + 51, 600)
    assert (again.id, again.attempts) == (delivery.id, 1)


def test_delivery_failed_without_retry_at_stops_it(store):
    finished_job(store)
    now = time.time() + 1
    (delivery,) = store.claim_deliveries("s1", now, 1)
    store.delivery_failed(delivery.id, "refused: loopback", None)
    assert store.claim_deliveries("s2", now + 1e6, 1) == []


def test_a_done_delivery_is_never_claimed_again(store):
    finished_job(store)
    now = time.time() + 1
    (delivery,) = store.claim_deliveries("s1", now, 1)
    store.delivery_part_done(delivery.id)
    store.delivery_done(delivery.id)
    assert store.claim_deliveries("s2", now + 1e6, 1) == []


def test_parts_done_are_remembered(store):
    finished_job(store)
    now = time.time() + 1
    (delivery,) = store.claim_deliveries("s1", now, 600)
    store.delivery_part_done(delivery.id)
    store.delivery_failed(delivery.id, "HTTP 502", now)
    (again,) = store.claim_deliveries("s1", now + 1, 600)
    assert (again.attempts, again.parts_done) == (1, 1)


# --- the sender, against a loopback receiver


class Receiver:
    """A local HTTP server that answers `failure_status` (500) to the first `failures` requests, then 200."""

    def __init__(self, failures: int, failure_status: int = 500) -> None:
        self.requests: list[tuple[str, str, bytes]] = []
        self.failures = failures
        lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def _handle(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                with lock:
                    receiver.requests.append((self.command, self.path, body))
                    fail = len(receiver.requests) <= receiver.failures
                self.send_response(failure_status if fail else 200)
                self.send_header("content-length", "0")
                self.end_headers()

            do_POST = do_PUT = _handle

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Receiver:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


def sender_settings(tmp_path: Path) -> DeliverySettings:
    settings = Settings(
        data_dir=tmp_path,
        webhook_retry_base_s=0.05,
        webhook_retry_max_s=0.1,
        webhook_max_attempts=5,
        webhook_timeout_s=5,
        delivery_lease_s=30,
    )
    return DeliverySettings.from_settings(settings)


def run_sender(store, settings, renderer, guard) -> DeliverySender:
    sender = DeliverySender(store, settings, {"fal": renderer}, guard)
    sender.start()
    return sender


def test_the_sender_retries_until_the_receiver_accepts(tmp_path, store):
    with Receiver(failures=2) as receiver:
        job = finished_job(store, webhook_url=receiver.url + "/hook")
        rendered: list[str] = []

        def renderer(job: Job) -> list[Outgoing]:
            rendered.append(job.id)
            return [Outgoing("POST", job.output.webhook_url, json={"request_id": job.id, "status": "ERROR"})]

        sender = run_sender(store, sender_settings(tmp_path), renderer, UrlGuard(allow_loopback=True))
        try:
            wait_for(lambda: outbox_row(store, job.id)["delivered_at"] is not None, 10, "the delivery")
            # Nothing more is sent once it went through (0.3 s: three retry delays and more).
            holds(lambda: len(receiver.requests) == 3, 0.3, "three requests, the last one accepted")
        finally:
            sender.stop()
    assert len(receiver.requests) == 3
    assert all(method == "POST" and path == "/hook" for method, path, _ in receiver.requests)
    assert job.id.encode() in receiver.requests[-1][2]
    assert rendered == [job.id] * 3
    row = outbox_row(store, job.id)
    assert (row["attempts"], row["parts_done"], row["next_at"]) == (1 + 2, 1, None)
    assert row["last_error"] == "HTTP 500"


def test_a_delivered_part_is_not_sent_again(tmp_path, store):
    """A webhook POST then an upload PUT; the PUT's first attempt fails (nothing listens): the retry
    sends only the PUT."""
    closed = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    closed_url = f"http://127.0.0.1:{closed.server_address[1]}/upload"
    closed.server_close()
    with Receiver(failures=0) as receiver:
        job = finished_job(store, webhook_url=receiver.url + "/hook")
        rounds = 0

        def renderer(job: Job) -> list[Outgoing]:
            nonlocal rounds
            rounds += 1
            put_url = closed_url if rounds == 1 else receiver.url + "/upload"
            return [
                Outgoing("POST", receiver.url + "/hook", json={"round": rounds}),
                Outgoing("PUT", put_url, content=b"bytes", content_type="image/png"),
            ]

        sender = run_sender(store, sender_settings(tmp_path), renderer, UrlGuard(allow_loopback=True))
        try:
            wait_for(lambda: outbox_row(store, job.id)["delivered_at"] is not None, 10, "the delivery")
        finally:
            sender.stop()
    assert [(method, path) for method, path, _ in receiver.requests] == [
        ("POST", "/hook"),
        ("PUT", "/upload"),
    ]
    assert receiver.requests[1][2] == b"bytes"
    assert rounds == 2
    row = outbox_row(store, job.id)
    assert (row["attempts"], row["parts_done"]) == (2, 2)


def test_a_url_refused_by_the_guard_is_not_retried(tmp_path, store):
    with Receiver(failures=0) as receiver:
        job = finished_job(store, webhook_url=receiver.url + "/hook")

        def renderer(job: Job) -> list[Outgoing]:
            return [Outgoing("POST", job.output.webhook_url, json={})]

        sender = run_sender(store, sender_settings(tmp_path), renderer, UrlGuard(allow_loopback=False))
        try:
            wait_for(lambda: outbox_row(store, job.id)["attempts"] == 1, 10, "the refused attempt")
            holds(lambda: outbox_row(store, job.id)["attempts"] == 1, 0.3, "one attempt: not retried")
        finally:
            sender.stop()
    assert receiver.requests == []
    row = outbox_row(store, job.id)
    assert row["attempts"] == 1
    assert row["next_at"] is None
    assert row["delivered_at"] is None
    assert row["last_error"].startswith("refused")
    assert "loopback" in row["last_error"]


def test_a_delivery_for_a_deleted_job_is_dropped(tmp_path, store):
    job = finished_job(store)
    raw_rows(store, "DELETE FROM jobs WHERE id = ?", (job.id,))
    sender = run_sender(store, sender_settings(tmp_path), lambda job: [], UrlGuard())
    try:
        wait_for(lambda: outbox_row(store, job.id)["attempts"] == 1, 10, "the attempt")
    finally:
        sender.stop()
    row = outbox_row(store, job.id)
    assert (row["next_at"], row["last_error"]) == (None, "job no longer exists")


@pytest.mark.parametrize(("status", "sent"), [(404, 1), (400, 1), (429, 2), (503, 2)])
def test_only_answers_that_may_pass_are_retried(tmp_path, store, status, sent):
    """A 4xx is the receiver refusing this call: final. 429 and 5xx may pass: retried."""
    with Receiver(failures=1, failure_status=status) as receiver:
        job = finished_job(store, webhook_url=receiver.url + "/hook")

        def renderer(job: Job) -> list[Outgoing]:
            return [Outgoing("POST", job.output.webhook_url, json={})]

        sender = run_sender(store, sender_settings(tmp_path), renderer, UrlGuard(allow_loopback=True))
        try:
            wait_for(
                lambda: len(receiver.requests) == sent and outbox_row(store, job.id)["next_at"] is None,
                10,
                f"{sent} requests, then no retry planned",
            )
            holds(lambda: len(receiver.requests) == sent, 0.3, f"{sent} requests: no more")
        finally:
            sender.stop()
    assert len(receiver.requests) == sent
    row = outbox_row(store, job.id)
    assert (row["delivered_at"] is not None) == (sent == 2)


def test_a_hanging_receiver_delays_no_other_destination(tmp_path, store):
    """One receiver accepts the connection and never answers; another job's webhook to a healthy
    receiver still arrives at once, and the hanging call is cut at its deadline and retried."""
    hanging = socket.create_server(("127.0.0.1", 0))  # listens, never reads, never answers
    stuck_url = f"http://127.0.0.1:{hanging.getsockname()[1]}/hook"
    settings = replace(sender_settings(tmp_path), webhook_timeout_s=1.0)
    with hanging, Receiver(failures=0) as healthy:
        stuck = finished_job(store, webhook_url=stuck_url)

        def renderer(job: Job) -> list[Outgoing]:
            return [Outgoing("POST", job.output.webhook_url, json={"id": job.id})]

        sender = run_sender(store, settings, renderer, UrlGuard(allow_loopback=True))
        hanging.settimeout(10)
        try:
            wait_for(lambda: outbox_row(store, stuck.id)["lease_owner"] is not None, 10, "the stuck lease")
            call, _ = hanging.accept()  # the stuck call is in flight: connected...
            with call:
                call.settimeout(10)
                assert call.recv(1)  # ...and its request on the way; it is never answered
                fine = finished_job(store, webhook_url=healthy.url + "/hook")
                sender.wake()
                submitted = time.monotonic()
                wait_for(lambda: outbox_row(store, fine.id)["delivered_at"] is not None, 5, "the fine one")
                assert time.monotonic() - submitted < 1.0
                wait_for(lambda: outbox_row(store, stuck.id)["attempts"] >= 1, 5, "the stuck call's deadline")
        finally:
            sender.stop()
    row = outbox_row(store, stuck.id)
    assert row["delivered_at"] is None
    assert row["last_error"] == "no answer within 1 s"
    assert row["next_at"] is not None  # a timeout may pass: retried
