"""The job store: every statement of the contract (contract.py) written once, in SQLAlchemy Core, for SQLite
and PostgreSQL (what differs: dialects.py; how jobs move: core/transitions.py). A write collects the jobs it
changed for the change log (and NOTIFY or the wake bus) at its end."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Executable, and_, bindparam, delete, func, insert, or_, select, update

from ..core import transitions as move
from ..core.job import Claim, Job, JobError, JobStage, JobStatus, LiveState, LogEntry, LogLevel, WorkerInfo
from ..core.request import Stage
from ..core.results import FinishedImage, JobResult, PreviewImage
from .contract import CancelOutcome, Caps, Changes, Channel, Delivery, OverCap, Requeued, SessionJob
from .dialects import Dialect, Notice, PostgresDialect, Tx
from .faults import unavailable_as_such
from .migrations import migrate
from .schema import JOB_TABLES, changes, deliveries, job_live, job_logs, job_row, jobs, session_jobs, workers

CHANGE_LOG_KEEP_S, STOPPED_ANSWERING = 300.0, "its worker stopped answering"  # the log only wakes waiters
J, D, L, S, C, G = jobs.c, deliveries.c, job_live.c, session_jobs.c, changes.c, job_logs.c
QUEUED, RUNNING = J.status == JobStatus.QUEUED.value, J.status == JobStatus.RUNNING.value
JOB, NOW, IDS = bindparam("job"), bindparam("now"), bindparam("ids", expanding=True)
_q, _me = jobs.alias("q"), jobs.alias("me")
_AHEAD = or_(_q.c.priority < _me.c.priority, and_(_q.c.priority == _me.c.priority, _q.c.seq < _me.c.seq))

BODY = select(J.body)
GET = BODY.where(J.id == JOB)
GET_LOCKED = GET.with_for_update()
SAVE = update(jobs).where(J.id == JOB)  # SET: the keys of job_row (but id) and lease_until
QUEUE_POSITION = select(func.count()).where(_me.c.id == JOB, _q.c.status == JobStatus.QUEUED.value, _AHEAD)
OLDEST = BODY.where(QUEUED).order_by(J.priority, J.seq).limit(1)
QUEUED_COUNT = select(func.count()).where(QUEUED)
UNFINISHED = select(func.count()).where(J.status.in_(("queued", "running")), J.owner == bindparam("owner"))
DEPTH = select(J.batch_key, func.count(), func.sum(J.num_images), func.min(J.created_at)).where(QUEUED)
DEPTH = DEPTH.group_by(J.batch_key).order_by(J.batch_key)
RECENT = BODY.order_by(J.seq.desc()).limit(bindparam("limit"))
HEAD = select(J.batch_key, J.priority).where(QUEUED).order_by(J.priority, J.seq).limit(1)
HEAD = HEAD.with_for_update(skip_locked=True)
SAME_BATCH = BODY.where(QUEUED, J.batch_key == bindparam("key"), J.priority == bindparam("priority"))
SAME_BATCH = SAME_BATCH.order_by(J.seq).limit(bindparam("limit")).with_for_update(skip_locked=True)
WAITING_DECODE = and_(RUNNING, J.stage == "decode", J.worker_id.is_(None))  # handed off, not claimed
DECODE_HEAD = BODY.where(WAITING_DECODE).order_by(J.priority, J.seq).limit(1)
DECODE_HEAD = DECODE_HEAD.with_for_update(skip_locked=True)
DECODE_WAITING = select(func.count()).where(WAITING_DECODE)
BACKLOG = select(func.count()).where(or_(QUEUED, WAITING_DECODE))  # waiting for a worker of either stage
HANDOFF = select(J.handoff).where(J.id == JOB)
LATE = BODY.where(QUEUED, J.start_by < NOW).with_for_update(skip_locked=True)
LEASE_ENDED = BODY.where(RUNNING, J.lease_until < NOW).with_for_update(skip_locked=True)
HELD_BY = BODY.where(RUNNING, J.worker_id == bindparam("worker")).with_for_update(skip_locked=True)
RENEW = update(jobs).where(RUNNING, J.worker_id == bindparam("worker"), J.id.in_(IDS))
RENEW = RENEW.values(lease_until=bindparam("until"))
FLAG_CANCEL = update(jobs).where(J.id == JOB).values(cancel_requested=True, body=bindparam("new_body"))
CANCEL_FLAG = select(J.cancel_requested).where(J.id == JOB)
STATUS_SHARED = select(J.status).where(J.id == JOB).with_for_update(read=True)
EXPIRED = or_(J.expires_at < NOW, and_(J.expires_at.is_(None), J.finished_at < bindparam("cut")))
DELETE_EXPIRED = delete(jobs).where(EXPIRED).returning(J.id, J.body)
DELETE_FOR_JOBS = [delete(table).where(table.c.job_id.in_(IDS)) for table in JOB_TABLES]
ADD_LOG = insert(job_logs)
LOGS = select(G.timestamp, G.level, G.message).where(G.job_id == JOB).order_by(G.id)
LIVE = select(L.stage, L.done, L.total, L.preview, L.preview_meta, L.images).where(L.job_id == JOB)
LIVE_IMAGES = select(L.images).where(L.job_id == JOB).with_for_update()
DROP_LIVE = delete(job_live).where(L.job_id == JOB)
ADD_CHANGES = insert(changes)
CHANGES_AFTER = select(C.seq, C.job_id).where(C.seq > bindparam("position")).order_by(C.seq)
PRUNE_CHANGES = delete(changes).where(C.at < bindparam("cut"))
WORKERS = select(workers.c.body).order_by(workers.c.id)
SESSION_JOBS = select(S.job_id, S.owner, S.delivered).where(S.session_id == bindparam("session"))
SESSION_JOBS = SESSION_JOBS.order_by(S.seq)
SESSION_DELIVERED = update(session_jobs).where(S.job_id == JOB).values(delivered=True)
ADD_DELIVERY = insert(deliveries)
DUE = select(D.id, D.job_id, D.attempts, D.parts_done)
DUE = DUE.where(D.next_at <= NOW, or_(D.lease_until.is_(None), D.lease_until < NOW)).order_by(D.next_at, D.id)
DUE = DUE.limit(bindparam("limit")).with_for_update(skip_locked=True)
LEASE_DELIVERIES = update(deliveries).where(D.id.in_(IDS))  # SET: lease_owner, lease_until
DELIVERY = update(deliveries).where(D.id == bindparam("delivery"))
PART_DONE = DELIVERY.values(parts_done=D.parts_done + 1)
ATTEMPTED = DELIVERY.values(attempts=D.attempts + 1, lease_until=None)  # SET also: next_at, and more


class SqlJobStore:
    """`JobStore` and `SessionStore` (contract.py) on `sqlite:///<path>` or `postgresql://...`."""

    def __init__(self, url: str, max_attempts: int = 3, pool_size: int = 8) -> None:
        self.url, self.max_attempts = url, max_attempts
        self.dialect = (PostgresDialect if url.startswith("postgres") else Dialect)(url, pool_size)
        self.engine = self.dialect.engine
        migrate(self.dialect)
        new = self.dialect.insert
        self._create = new(jobs).on_conflict_do_nothing(index_elements=["id"]).returning(J.seq)
        self._add_session_job = new(session_jobs).on_conflict_do_nothing(index_elements=["job_id"])
        self._set_progress = _upsert(new, job_live, "job_id", "stage", "done", "total")
        self._set_preview = _upsert(new, job_live, "job_id", "preview", "preview_meta")
        self._set_images = _upsert(new, job_live, "job_id", "images")
        self._heartbeat = _upsert(new, workers, "id", "body")

    @contextmanager
    def _write(self, durable: bool = True, live: bool = False) -> Iterator[Tx]:
        """`durable=False`: no fsync; `live`: a running job's progress, whose wake-ups may wait a little."""
        notices: dict[Notice, None] = {}
        with unavailable_as_such(), self.dialect.write(durable, notices, live) as conn:
            yield Tx(conn, notices)
            now = time.time()
            if changed := [{"job_id": job, "at": now} for channel, job in notices if channel == "changes"]:
                conn.execute(ADD_CHANGES, changed)

    def _run(self, statement: Executable, *, durable: bool = True, **params: Any) -> None:
        with self._write(durable) as tx:
            tx.run(statement, params)

    def _live(self, statement: Executable, job_id: str, **values: Any) -> None:
        with self._write(durable=False, live=True) as tx:  # live state: not worth an fsync each
            tx.run(statement, {"job_id": job_id, **values})
            tx.changed(job_id)

    def _read(self, statement: Executable, **params: Any) -> list[Any]:
        with unavailable_as_such(), self.dialect.read() as conn:
            return conn.execute(statement, params).all()

    def _jobs(self, statement: Executable, **params: Any) -> list[Job]:
        return [Job.model_validate_json(body) for (body,) in self._read(statement, **params)]

    def _save(self, tx: Tx, job: Job, lease_until: float | None = None, **also: Any) -> None:
        row = job_row(job)  # `id` is named `job` in WHERE; `also`: other columns (the handoff)
        tx.run(SAVE, {"job": row.pop("id"), **row, "lease_until": lease_until, **also})
        tx.changed(job.id)

    def close(self) -> None:
        self.dialect.close()

    def create(self, job: Job, caps: Caps | None = None) -> bool:
        with self._write() as tx:
            if caps is not None:
                self.dialect.lock(tx.conn, "admission")
            if tx.run(self._create, job_row(job)).first() is None:
                return False  # the id exists
            if caps is not None:  # counted with the new job: an exception rolls it back
                _check_caps(tx, job.owner, caps)
            tx.changed(job.id)
            tx.changed(job.id, "queued")
            return True

    def get(self, job_id: str) -> Job | None:
        return next(iter(self._jobs(GET, job=job_id)), None)

    def queue_position(self, job_id: str) -> int:
        return self._read(QUEUE_POSITION, job=job_id)[0][0]

    def oldest_queued(self) -> Job | None:
        return next(iter(self._jobs(OLDEST)), None)

    def queued_count(self) -> int:
        return self._read(QUEUED_COUNT)[0][0]

    def unfinished_count(self, owner: str) -> int:
        return self._read(UNFINISHED, owner=owner)[0][0]

    def queue_depth(self) -> list[tuple[str, int, int, float]]:
        return [(key, count, int(images), oldest) for key, count, images, oldest in self._read(DEPTH)]

    def recent(self, limit: int) -> list[Job]:
        return self._jobs(RECENT, limit=limit)

    def claim_batch(
        self, worker_id: str, max_images: int, lease_s: float, stage: JobStage = "prior"
    ) -> list[Job]:
        # Not durable: a claim lost in a crash leaves its jobs where a lost worker's would go anyway.
        with self._write(durable=False) as tx:
            now = time.time()
            self._requeue(tx, LEASE_ENDED, {"now": now}, STOPPED_ANSWERING)
            self._expire_starts(tx, now)
            if stage == "decode":
                candidates = [Job.model_validate_json(body) for body in tx.run(DECODE_HEAD).scalars()]
            elif (head := tx.run(HEAD).first()) is None:
                return []
            else:
                same = {"key": head.batch_key, "priority": head.priority, "limit": max(max_images, 1)}
                candidates = [Job.model_validate_json(body) for body in tx.run(SAME_BATCH, same).scalars()]
            claimed = [move.running(job, worker_id, now) for job in move.batch(candidates, max_images)]
            for job in claimed:
                self._save(tx, job, lease_until=now + lease_s)
            return claimed

    def expire_start_deadlines(self, now: float) -> int:
        with self._write() as tx:
            return self._expire_starts(tx, now)

    def _expire_starts(self, tx: Tx, now: float) -> int:
        late = [Job.model_validate_json(body) for body in tx.run(LATE, {"now": now}).scalars()]
        for job in late:
            error = move.start_missed(job)
            self._finish(tx, job, JobStatus.FAILED, error)
            self._log(tx, job.id, "ERROR", error.message)
        return len(late)

    def renew(self, worker_id: str, lease_s: float, job_ids: Sequence[str]) -> int:
        with self._write(durable=False) as tx:
            return tx.run(
                RENEW, {"worker": worker_id, "ids": list(job_ids), "until": time.time() + lease_s}
            ).rowcount

    def release(self, worker_id: str, reason: str) -> Requeued:
        with self._write() as tx:
            return self._requeue(tx, HELD_BY, {"worker": worker_id}, reason)

    def expire_leases(self, now: float) -> Requeued:
        with self._write() as tx:
            return self._requeue(tx, LEASE_ENDED, {"now": now}, STOPPED_ANSWERING)

    def _requeue(self, tx: Tx, held: Executable, params: dict[str, Any], reason: str) -> Requeued:
        requeued = failed = 0
        for job in [Job.model_validate_json(body) for body in tx.run(held, params).scalars()]:
            if ending := move.interrupted(job, self.max_attempts, reason):
                self._finish(tx, job, *ending)
                failed += ending[0] == JobStatus.FAILED
                continue
            self._save(tx, move.requeued(job))
            tx.run(DROP_LIVE, {"job": job.id})
            self._log(tx, job.id, "WARN", move.requeued_line(job, reason))
            tx.changed(job.id, "queued")
            requeued += 1
        return Requeued(requeued, failed)

    def _finish(
        self, tx: Tx, job: Job, status: JobStatus, error: JobError | None, result: JobResult | None = None
    ) -> None:
        done = move.finished(job, status, result, error, time.time())
        self._save(tx, done, handoff=None)
        tx.run(DROP_LIVE, {"job": job.id})
        if status == JobStatus.CANCELLED:  # every cancelled job's log ends saying so, however it ended
            self._log(tx, job.id, "WARN", move.cancelled_line(error))
        if url := job.output.webhook_url or job.output.upload_url:
            tx.run(ADD_DELIVERY, {"job_id": job.id, "url": url, "next_at": done.finished_at})

    def finish(
        self,
        job_id: str,
        status: JobStatus,
        result: JobResult | None = None,
        error: JobError | None = None,
        claim: Claim | None = None,
    ) -> bool:
        with self._write() as tx:
            if (job := self._held(tx, job_id, claim)) is None:
                return False  # a claim that ended (the job went back to the queue) leaves it to the next
            self._finish(tx, job, status, error, result)
            return True

    def _held(self, tx: Tx, job_id: str, claim: Claim | None) -> Job | None:
        """The job, locked, while it is unfinished and `claim` holds it (any claim: None)."""
        body = tx.run(GET_LOCKED, {"job": job_id}).scalar()
        job = Job.model_validate_json(body) if body is not None else None
        return job if job is not None and not job.status.finished and move.held_by(job, claim) else None

    def hand_off(self, job_id: str, handoff: bytes, claim: Claim) -> bool:
        with self._write() as tx:
            if (job := self._held(tx, job_id, claim)) is None:
                return False
            if job.cancel_requested:  # flagged during the AR stage: it ends here, not in the decode wait
                self._finish(tx, job, JobStatus.CANCELLED, move.CANCELLED_DURING_AR)
                return True
            self._save(tx, move.handed_off(job), handoff=handoff)
            tx.changed(job.id, "queued")
            return True

    def handoff(self, job_id: str) -> bytes | None:
        return next((bytes(data) for (data,) in self._read(HANDOFF, job=job_id) if data is not None), None)

    def decode_waiting(self) -> int:
        return self._read(DECODE_WAITING)[0][0]

    def request_cancel(self, job_id: str) -> CancelOutcome:
        with self._write() as tx:
            if (body := tx.run(GET_LOCKED, {"job": job_id}).scalar()) is None:
                return "missing"
            job = Job.model_validate_json(body).model_copy(update={"cancel_requested": True})
            if job.status.finished:
                return "finished"
            if job.status == JobStatus.QUEUED or job.worker_id is None:  # unclaimed, before either stage
                self._finish(tx, job, JobStatus.CANCELLED, move.cancelled_unclaimed(job))
                return "cancelled"
            tx.run(FLAG_CANCEL, {"job": job.id, "new_body": job.model_dump_json()})
            tx.changed(job.id)
            return "requested"

    def cancel_requested(self, job_id: str) -> bool:
        found = self._read(CANCEL_FLAG, job=job_id)
        return bool(found and found[0][0])

    def _log(self, tx: Tx, job_id: str, level: LogLevel, message: str) -> None:
        tx.run(ADD_LOG, {"job_id": job_id, "timestamp": time.time(), "level": level, "message": message})
        tx.changed(job_id)

    def add_log(self, job_id: str, level: LogLevel, message: str) -> None:
        with self._write(durable=False, live=True) as tx:  # progress lines: not worth an fsync each
            self._log(tx, job_id, level, message)

    def logs(self, job_id: str) -> list[LogEntry]:
        rows = self._read(LOGS, job=job_id)
        return [LogEntry(timestamp=t, level=level, message=message) for t, level, message in rows]

    def set_progress(self, job_id: str, stage: Stage, done: int, total: int) -> None:
        self._live(self._set_progress, job_id, stage=stage, done=done, total=total)

    def set_preview(self, job_id: str, preview: PreviewImage) -> None:
        meta = json.dumps({k: v for k, v in vars(preview).items() if k != "data"})
        self._live(self._set_preview, job_id, preview=preview.data, preview_meta=meta)

    def add_image(self, job_id: str, image: FinishedImage) -> None:
        with self._write() as tx:  # durable: the image's URL may be handed out at once
            if tx.run(STATUS_SHARED, {"job": job_id}).scalar() != JobStatus.RUNNING.value:
                return  # finished (its result has the image) or taken back meanwhile
            images = move.with_image(_images(tx.run(LIVE_IMAGES, {"job": job_id}).scalar()), image)
            text = json.dumps([done.model_dump(mode="json") for done in images])
            tx.run(self._set_images, {"job_id": job_id, "images": text})
            tx.changed(job_id)

    def live(self, job_id: str) -> LiveState | None:
        if not (found := self._read(LIVE, job=job_id)):
            return None
        stage, done, total, data, meta, images = found[0]
        preview = PreviewImage(data=bytes(data), **json.loads(meta)) if data is not None else None
        return LiveState(stage, done, total, preview, tuple(_images(images)))

    def add_session_job(self, session_id: str, job_id: str, owner: str | None) -> None:
        self._run(self._add_session_job, job_id=job_id, session_id=session_id, owner=owner)

    def session_jobs(self, session_id: str) -> list[SessionJob]:
        rows = self._read(SESSION_JOBS, session=session_id)
        return [SessionJob(job_id, owner, bool(delivered)) for job_id, owner, delivered in rows]

    def session_delivered(self, job_id: str) -> None:
        self._run(SESSION_DELIVERED, durable=False, job=job_id)

    def heartbeat(self, worker: WorkerInfo) -> None:
        self._run(self._heartbeat, durable=False, id=worker.id, body=worker.model_dump_json())

    def workers(self) -> list[WorkerInfo]:
        return [WorkerInfo.model_validate_json(body) for (body,) in self._read(WORKERS)]

    def changes_after(self, position: int) -> Changes:  # PostgreSQL's feed is NOTIFY (`subscribe`)
        if not (rows := self._read(CHANGES_AFTER, position=position)):
            return Changes(position, ())
        return Changes(rows[-1][0], tuple(dict.fromkeys(job_id for _, job_id in rows)))

    def subscribe(self, channel: Channel, callback: Callable[[str], None]) -> bool:
        return self.dialect.subscribe(channel, callback)

    def delete_expired(self, now: float, retention_s: float) -> list[Job]:
        with self._write() as tx:
            rows = tx.run(DELETE_EXPIRED, {"now": now, "cut": now - retention_s}).all()
            ids = [job_id for job_id, _ in rows]
            for start in range(0, len(ids), 500):  # bounded IN lists
                for statement in DELETE_FOR_JOBS:
                    tx.run(statement, {"ids": ids[start : start + 500]})
            tx.run(PRUNE_CHANGES, {"cut": now - CHANGE_LOG_KEEP_S})
        return [Job.model_validate_json(body) for _, body in rows]

    def claim_deliveries(self, owner: str, now: float, lease_s: float, limit: int = 20) -> list[Delivery]:
        if not self._read(DUE, now=now, limit=1):
            return []  # nothing due: no write lock (the sender looks after every change a worker makes)
        with self._write() as tx:
            if due := [Delivery(*row) for row in tx.run(DUE, {"now": now, "limit": limit})]:
                lease = {"ids": [d.id for d in due], "lease_owner": owner, "lease_until": now + lease_s}
                tx.run(LEASE_DELIVERIES, lease)
        return due

    def delivery_part_done(self, delivery_id: int) -> None:
        self._run(PART_DONE, delivery=delivery_id)

    def delivery_done(self, delivery_id: int) -> None:
        self._run(ATTEMPTED, delivery=delivery_id, delivered_at=time.time(), next_at=None)

    def delivery_failed(self, delivery_id: int, error: str, retry_at: float | None) -> None:
        self._run(ATTEMPTED, delivery=delivery_id, last_error=error, next_at=retry_at)


def _check_caps(tx: Tx, owner: str | None, caps: Caps) -> None:
    if tx.run(BACKLOG).scalar_one() > caps.queued:
        raise OverCap("queued", caps.queued)
    if owner is not None and tx.run(UNFINISHED, {"owner": owner}).scalar_one() > caps.per_owner:
        raise OverCap("per_owner", caps.per_owner)


def _upsert(new: Callable[..., Any], table: Any, key: str, *columns: str) -> Executable:
    stmt = new(table)
    return stmt.on_conflict_do_update(index_elements=[key], set_={c: stmt.excluded[c] for c in columns})


def _images(text: str | None) -> list[FinishedImage]:
    return [FinishedImage.model_validate(item) for item in json.loads(text)] if text else []
