"""The job store's two stages on SQLite and PostgreSQL: a prior claim hands off its tokens and the job
waits, running, for a decode worker; a decode claim that ends (released, lease expired) sends the job
back to the decode wait with its tokens, never to the AR queue; only the current claim of the current
stage may hand off or finish; each stage counts its own attempts; a cancel while the job waits for its
decode stage ends it at once, and one flagged during the AR stage ends at its handoff; the queued cap
counts jobs waiting for their decode stage; and the handoff's bytes round-trip exactly."""

from __future__ import annotations

import time

import numpy as np
import pytest
from helpers.jobs import make_job

from glm_image_server.core import transitions
from glm_image_server.core.handoff import Handoff
from glm_image_server.core.job import Job, JobStatus
from glm_image_server.core.results import JobResult
from glm_image_server.store.contract import Caps, JobStore, OverCap

TOKENS = Handoff("a 'CAFE' sign, expanded", np.arange(32).reshape(2, 16), timings={"ar": 1.25}, handed_at=5.0)


def handed_off(store: JobStore, worker: str = "w1") -> Job:
    """A job submitted, claimed for its prior stage by `worker` and handed off."""
    job = make_job(num_images=2)
    assert store.create(job)
    (claimed,) = store.claim_batch(worker, 8, 30)
    assert store.hand_off(job.id, TOKENS.to_bytes(), transitions.claim_of(claimed))
    return store.get(job.id)


def test_a_handoff_leaves_the_job_running_and_waiting_for_a_decode_worker(backend):
    store = backend.open(max_attempts=3)
    job = handed_off(store)
    assert (job.status, job.stage, job.worker_id, job.attempts) == (JobStatus.RUNNING, "decode", None, 0)
    assert store.decode_waiting() == 1 and store.queued_count() == 0
    assert store.claim_batch("w2", 8, 30) == []  # nothing for the AR stage
    started = job.started_at
    (claimed,) = store.claim_batch("w2", 8, 30, stage="decode")
    assert (claimed.id, claimed.stage, claimed.worker_id, claimed.attempts) == (job.id, "decode", "w2", 1)
    assert claimed.started_at == started  # the job started with its prior stage
    assert store.decode_waiting() == 0
    stored = Handoff.from_bytes(store.handoff(job.id))
    assert np.array_equal(stored.token_ids, TOKENS.token_ids) and stored.prompt == TOKENS.prompt
    assert (stored.timings, stored.handed_at) == (TOKENS.timings, TOKENS.handed_at)
    result = JobResult(images=(), prompt="p", has_nsfw_concepts=(), timings={})
    assert store.finish(job.id, JobStatus.SUCCEEDED, result, claim=transitions.claim_of(claimed))
    assert store.handoff(job.id) is None  # a finished job keeps no tokens


def test_a_dead_decode_worker_sends_the_job_back_to_decode_with_its_tokens(backend):
    store = backend.open(max_attempts=3)
    job = handed_off(store)
    store.claim_batch("w2", 8, 30, stage="decode")
    assert store.release("w2", "the worker process died").requeued == 1
    back = store.get(job.id)
    assert (back.status, back.stage, back.worker_id) == (JobStatus.RUNNING, "decode", None)
    assert "runs again from its stored prior tokens" in store.logs(job.id)[-1].message
    assert store.claim_batch("w3", 8, 30) == []  # never back to the AR queue
    (again,) = store.claim_batch("w3", 8, 30, stage="decode")
    assert again.attempts == 2
    assert store.expire_leases(time.time() + 3600).requeued == 1  # a lease that ran out: the same
    assert store.get(job.id).stage == "decode" and store.handoff(job.id) == TOKENS.to_bytes()


def test_each_stage_counts_its_own_attempts(backend):
    store = backend.open(max_attempts=2)
    job = make_job()
    store.create(job)
    store.claim_batch("w1", 8, 30)
    store.expire_leases(time.time() + 3600)  # the prior stage's first claim was lost
    (claimed,) = store.claim_batch("w1", 8, 30)
    assert claimed.attempts == 2
    assert store.hand_off(job.id, TOKENS.to_bytes(), transitions.claim_of(claimed))
    for attempt in (1, 2):  # two decode claims are allowed, whatever the prior stage took
        (decoding,) = store.claim_batch("w2", 8, 30, stage="decode")
        assert decoding.attempts == attempt
        store.expire_leases(time.time() + 3600)
    failed = store.get(job.id)
    assert failed.status == JobStatus.FAILED and "2 times" in failed.error.message


def test_only_the_current_claim_of_the_current_stage_hands_off_or_finishes(backend):
    store = backend.open(max_attempts=3)
    job = make_job()
    store.create(job)
    (first,) = store.claim_batch("w1", 8, 30)
    store.expire_leases(time.time() + 3600)
    (second,) = store.claim_batch("w2", 8, 30)
    assert not store.hand_off(job.id, TOKENS.to_bytes(), transitions.claim_of(first))  # taken over
    assert store.hand_off(job.id, TOKENS.to_bytes(), transitions.claim_of(second))
    assert not store.hand_off(job.id, TOKENS.to_bytes(), transitions.claim_of(second))  # once
    assert not store.finish(job.id, JobStatus.SUCCEEDED, claim=transitions.claim_of(second))
    (decoding,) = store.claim_batch("w2", 8, 30, stage="decode")
    assert transitions.claim_of(decoding) != transitions.claim_of(second)  # same worker, attempt 1
    assert not store.finish(job.id, JobStatus.FAILED, claim=transitions.claim_of(second))
    assert store.finish(job.id, JobStatus.FAILED, claim=transitions.claim_of(decoding))


def test_a_cancel_while_waiting_for_the_decode_stage_ends_the_job_at_once(backend):
    store = backend.open(max_attempts=3)
    job = handed_off(store)
    assert store.request_cancel(job.id) == "cancelled"
    cancelled = store.get(job.id)
    assert cancelled.status == JobStatus.CANCELLED and "decode stage" in cancelled.error.message
    assert store.decode_waiting() == 0 and store.handoff(job.id) is None


def test_a_cancel_during_the_decode_stage_is_flagged_for_its_worker(backend):
    store = backend.open(max_attempts=3)
    job = handed_off(store)
    store.claim_batch("w2", 8, 30, stage="decode")
    assert store.request_cancel(job.id) == "requested" and store.cancel_requested(job.id)


def test_handoff_bytes_round_trip_an_edit_exactly():
    rng = np.random.default_rng(3)
    handoff = Handoff(
        "prompt",
        rng.integers(0, 16384, (3, 4096)),
        rng.integers(0, 16384, (3, 2 * 1024)),
        np.tile(np.array([[1, 32, 32], [1, 32, 32]]), (3, 1, 1)),
        {"queue": 0.5, "ar": 12.0},
        123.5,
    )
    back = Handoff.from_bytes(handoff.to_bytes())
    for name in ("token_ids", "image_token_ids", "image_grids"):
        assert np.array_equal(getattr(back, name), getattr(handoff, name))
    assert len(handoff.to_bytes()) < 3 * 4096 * 4  # compact: under the raw int32 bytes of the tokens


def test_a_cancel_flagged_during_the_ar_stage_ends_the_job_at_its_handoff(backend):
    store = backend.open(max_attempts=3)
    job = make_job()
    store.create(job)
    (claimed,) = store.claim_batch("w1", 8, 30)
    assert store.request_cancel(job.id) == "requested"
    assert store.hand_off(job.id, TOKENS.to_bytes(), transitions.claim_of(claimed))
    cancelled = store.get(job.id)
    assert cancelled.status == JobStatus.CANCELLED and "AR stage" in cancelled.error.message
    assert store.decode_waiting() == 0 and store.handoff(job.id) is None


def test_the_queued_cap_counts_jobs_waiting_for_their_decode_stage(backend):
    """Prior workers must not drain the capped queue into an uncapped decode wait."""
    store = backend.open(max_attempts=3)
    handed_off(store)
    with pytest.raises(OverCap):
        store.create(make_job(), Caps(queued=1, per_owner=100))
    assert store.create(make_job(), Caps(queued=2, per_owner=100))


def test_the_executor_refuses_a_batch_that_mixes_the_two_stages():
    """The scheduler claims one stage at a time; a mixed batch is a bug, said plainly, not half run."""
    from glm_image_server.worker.executor import LocalExecutor, _Prepared

    handoff = Handoff("p", np.zeros((1, 4), np.int32), None, None, {}, 0.0)
    prior, decode = make_job(), make_job()
    batch = [_Prepared(prior, prior.request, (), {}), _Prepared(decode, decode.request, (), {}, handoff)]
    ran: list[object] = []
    with pytest.raises(ValueError, match="both stages"):
        LocalExecutor(None, None, None).run(batch, ran.append, lambda _: False, lambda: False)
    assert ran == []
