"""Databases written by release 0.1's stores (tests/data: SQLite user_version 4, PostgreSQL migration 3)
upgrade in place when today's store opens them: every job, log, pending delivery, session record, worker
and the queue order survive, and the upgraded store runs jobs; a database of the last release (revision
0001) gains the stage columns."""

from __future__ import annotations

import shutil
import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import psycopg
import pytest
from alembic.config import Config
from alembic.script import ScriptDirectory
from helpers.jobs import make_job
from helpers.stores import load_postgres_dump, raw_rows, throwaway_database
from sqlalchemy import inspect

from glm_image_server.core import transitions
from glm_image_server.core.handoff import Handoff
from glm_image_server.core.job import Claim, Job, JobStatus
from glm_image_server.core.results import JobResult
from glm_image_server.store import schema
from glm_image_server.store.contract import Requeued, SessionJob
from glm_image_server.store.migrations import HEAD, SCRIPTS, migrate
from glm_image_server.store.sql import SqlJobStore

DATA = Path(__file__).parent.parent / "data"
SESSION = "5f0c4a52-3a0e-4f55-9a55-8f6b7d1e2c3a"


def job_id(name: str) -> str:
    """The id the release-0.1 writer gave the job named `name` (written_by_0f27245.py.txt)."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, name)).replace("-5", "-4", 1)


@pytest.fixture(params=["sqlite", "postgres"])
def legacy(request, tmp_path: Path) -> Iterator[tuple[str, list[Job]]]:
    """A release-0.1 database (a copy) and the jobs it holds, read before any upgrade."""
    if request.param == "sqlite":
        path = tmp_path / "jobs.sqlite3"
        shutil.copy(DATA / "release-0.1.sqlite3", path)
        with sqlite3.connect(path) as db:
            bodies = [body for (body,) in db.execute("SELECT body FROM jobs ORDER BY seq")]
        yield f"sqlite:///{path}", [Job.model_validate_json(body) for body in bodies]
        return
    with throwaway_database() as url:
        load_postgres_dump(url, DATA / "release-0.1-postgres.sql")
        with psycopg.connect(url) as conn:
            bodies = [body for (body,) in conn.execute("SELECT body FROM jobs ORDER BY seq")]
        yield url, [Job.model_validate_json(body) for body in bodies]


def test_the_head_revision_is_alembics():
    config = Config()
    config.set_main_option("script_location", str(SCRIPTS))
    assert ScriptDirectory.from_config(config).get_current_head() == HEAD


def test_a_release_0_1_database_keeps_every_job(legacy):
    url, before = legacy
    store = SqlJobStore(url)
    try:
        assert [store.get(job.id) for job in before] == before
        assert [job.status for job in before] == [
            JobStatus.SUCCEEDED,
            JobStatus.FAILED,
            JobStatus.RUNNING,
            JobStatus.CANCELLED,
            *[JobStatus.QUEUED] * 3,
        ]
        done = store.get(job_id("succeeded"))
        assert done.output.format == "png" and done.output.ttl_s == 3600.0
        assert [image.key for image in done.result.images] == ["pfx-succeeded-0.png", "pfx-succeeded-1.png"]
        assert done.result.has_nsfw_concepts == (False, True) and done.result.cost == 0.0123
        (span,) = done.result.text_checks[0].spans
        assert (span.text, span.found, done.result.text_checks[1].detected_text) == (
            "succeeded",
            False,
            "succ",
        )
        failed = store.get(job_id("failed"))
        assert (failed.error.kind, failed.error.field) == ("input", "references[0]")
        assert store.get(job_id("edit")).request.references == ("https://example.com/ref.png",)
        assert store.get(job_id("low")).priority == "low"
        assert [entry.message for entry in store.logs(job_id("succeeded"))] == ["Generating 2 image(s)"]
        assert store.logs(job_id("cancelled"))[-1].message == "Cancelled: cancelled before it started"
        assert store.session_jobs(SESSION) == [SessionJob(job_id("cancelled"), "owner-a", True)]
        assert [(worker.id, worker.jobs) for worker in store.workers()] == [("w1", (job_id("running"),))]
        assert store.unfinished_count("owner-a") == 4
        tables = {*schema.metadata.tables, "alembic_version"}
        assert set(inspect(store.engine).get_table_names()) == tables  # the old ones are gone
    finally:
        store.close()


def test_a_release_0_1_database_runs_on(legacy):
    url, before = legacy
    store = SqlJobStore(url)
    try:
        running, queued, low, edit = (job_id(name) for name in ("running", "queued", "low", "edit"))
        live = store.live(running)
        assert (live.stage, live.done, live.total, live.preview.step) == ("dit", 3, 12, 3)
        assert [image.image.key for image in live.images] == ["pfx-running-0.png"]
        (lease,) = raw_rows(store, "SELECT lease_until FROM jobs WHERE id = ?", (running,))
        assert lease["lease_until"] > before[2].started_at + 3000  # it kept its lease (3600 s)
        assert [store.queue_position(job) for job in (queued, edit, low)] == [0, 1, 2]
        (delivery,) = store.claim_deliveries("sender", 2e9, 60)
        assert (delivery.job_id, delivery.attempts, delivery.parts_done) == (job_id("succeeded"), 0, 0)

        assert store.release("w1", "the old release stopped") == Requeued(requeued=1, failed=0)
        assert [(job.id, job.attempts) for job in store.claim_batch("w2", 8, 30)] == [
            (running, 2),
            (queued, 1),
        ]
        assert [job.id for job in store.claim_batch("w2", 8, 30)] == [edit]
        assert [job.id for job in store.claim_batch("w2", 8, 30)] == [low]
        result = JobResult(images=(), prompt="p", has_nsfw_concepts=(), timings={})
        store.add_image(edit, live.images[0])
        assert store.finish(edit, JobStatus.SUCCEEDED, result, claim=Claim(worker_id="w2", attempt=1))
        assert store.get(edit).status == JobStatus.SUCCEEDED and store.live(edit) is None
        assert migrate(store.dialect) == HEAD  # opened again: nothing to do
    finally:
        store.close()


def test_a_database_of_the_last_release_gains_the_stage_columns(backend):
    """A database at revision 0001 (the last release: no `stage`, no `handoff`) upgrades to HEAD in place:
    its jobs read back the same (at their prior stage) and a running one goes on through both stages."""
    store = backend.open(max_attempts=3)
    queued, running = make_job("queued"), make_job("running", width=128)
    for job in (queued, running):
        assert store.create(job)
    (claimed,) = store.claim_batch("w1", 8, 30)  # the older one, "queued"; the other stays queued
    with store.engine.begin() as conn:  # back to what release 0001 wrote
        for column in ("stage", "handoff"):
            conn.exec_driver_sql(f"ALTER TABLE jobs DROP COLUMN {column}")
        conn.exec_driver_sql("UPDATE alembic_version SET version_num = '0001'")
        old_key = "UPDATE jobs SET batch_key = '128x64/10/1.5/0' WHERE status = 'queued'"  # 0001's key
        conn.exec_driver_sql(old_key)
    store.close()
    store = backend.open(max_attempts=3)
    try:
        assert {"stage", "handoff"} <= {c["name"] for c in inspect(store.engine).get_columns("jobs")}
        assert raw_rows(store, "SELECT version_num FROM alembic_version") == [{"version_num": HEAD}]
        assert store.get(claimed.id) == claimed and claimed.stage == "prior"
        (other,) = [job for job in (queued, running) if job.id != claimed.id]
        assert store.get(other.id) == other
        assert [key for key, *_ in store.queue_depth()] == ["128x64/0"]  # the AR stage's key now
        tokens = Handoff("p", np.zeros((1, 16), dtype=np.int64))
        assert store.hand_off(claimed.id, tokens.to_bytes(), transitions.claim_of(claimed))
        (decoding,) = store.claim_batch("w2", 8, 30, stage="decode")
        assert decoding.id == claimed.id and store.handoff(claimed.id) == tokens.to_bytes()
    finally:
        store.close()
