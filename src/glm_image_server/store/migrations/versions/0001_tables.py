"""the tables of schema.py, made anew or adopted from release 0.1

Revision 0001 (its first paragraph is what Alembic logs): on a new database or adopting one of release 0.1 or
older (SQLite `user_version` 1 to 4, PostgreSQL `schema_migrations` 1 to 3), one path for all: the old tables
renamed aside, the new ones created, the rows copied (jobs through the core model, a version-1 body converted
first; logs, deliveries, live state, sessions and workers as they are; not the change log), the old tables
dropped."""

from __future__ import annotations

import json
from typing import Any

from alembic import op
from sqlalchemy import Connection, MetaData, Table, insert, inspect, select

from glm_image_server.core.job import Job, JobStatus
from glm_image_server.store import schema

revision = "0001"
down_revision = None
COPIED = {"job_logs": "job_logs", "deliveries": "deliveries", "webhooks": "deliveries"}  # old: new name
COPIED |= {"job_live": "job_live", "session_jobs": "session_jobs", "workers": "workers"}
V1_OUTPUT = {  # OutputSpec field: (version 1's spec field, its default)
    "format": ("output_format", "jpeg"),
    "quality": ("output_quality", 95),
    "safety_check": ("safety_check", False),
    "expand_prompt": ("expand_prompt", False),
}
LEGACY = ("jobs", "changes", "schema_migrations", *COPIED)


def upgrade() -> None:
    conn = op.get_bind()
    present = set(inspect(conn).get_table_names())
    aside = {name: f"legacy_{name}" for name in LEGACY if name in present}
    for name, legacy in aside.items():
        op.rename_table(name, legacy)
    schema.metadata.create_all(conn)
    old = {name: Table(legacy, MetaData(), autoload_with=conn) for name, legacy in aside.items()}
    if "jobs" in old:
        _copy_jobs(conn, old["jobs"])
    for name in set(COPIED) & set(old):
        _copy_rows(conn, old[name], schema.metadata.tables[COPIED[name]])
    for legacy in aside.values():
        op.drop_table(legacy)


def _copy_jobs(conn: Connection, legacy: Table, chunk: int = 500) -> None:
    """In queue order (`seq`), a chunk at a time."""
    rows = conn.execute(legacy.select().order_by(legacy.c.seq).execution_options(yield_per=chunk))
    for page in rows.mappings().partitions():
        conn.execute(insert(schema.jobs), [_job(row) for row in page])


def _job(row: Any) -> dict[str, Any]:
    body = json.loads(row["body"])
    job = Job.model_validate_json(json.dumps(_from_v1(body)) if "spec" in body else row["body"])
    lease = row.get("lease_until")
    if job.status == JobStatus.RUNNING and lease is None:
        lease = 0.0  # version 1 held no leases: expired, so the next lease check requeues it
    return {**schema.job_row(job), "lease_until": lease}


def _copy_rows(conn: Connection, legacy: Table, table: Table) -> None:
    """INSERT ... SELECT of the columns both have (but the new serial key), in the legacy table's order."""
    names = [c.name for c in table.c if c.name in legacy.c and c is not table.autoincrement_column]
    order = [legacy.c[key] for key in ("seq", "id", "created_at") if key in legacy.c]
    rows = select(*(legacy.c[name] for name in names)).order_by(*order)  # none: SQLite's rowid order
    conn.execute(insert(table).from_select(names, rows))


def _from_v1(job: dict) -> dict:
    """A version-1 job (`spec` + loose delivery fields) in today's shape (`request` + `output`)."""
    spec = job.pop("spec")
    request = {key: spec[key] for key in ("prompt", "width", "height", "num_inference_steps", "seed")}
    request["guidance_scale"] = max(1.0, spec["guidance_scale"])  # version 1 allowed less
    request["num_images"], request["references"] = spec.get("num_images", 1), spec.get("image_urls", [])
    output = {key: spec.get(name, default) for key, (name, default) in V1_OUTPUT.items()}
    output |= {key: job.pop(key, None) for key in ("webhook_url", "upload_url", "ttl_s")}
    job["request"], job["output"] = request, output
    if job.get("result"):
        job["result"].pop("seed", None)
    return job
