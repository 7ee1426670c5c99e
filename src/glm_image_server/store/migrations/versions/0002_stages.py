"""jobs run in two stages: a stage column and the prior stage's handoff

Revision 0002: each job is claimed once for its prior (AR) stage and once for its decode stage; the jobs
table gets `stage` (a job written before this revision is at "prior", or running its only claim) and
`handoff` (the prior tokens a decode worker continues from). A database that 0001 made with today's
schema.py has both already. Queued jobs get the new batch key (size and references: the AR stage's), so
they share AR batches with jobs submitted after the upgrade."""

from __future__ import annotations

from alembic import op
from sqlalchemy import Column, inspect, select, update
from sqlalchemy.types import LargeBinary, Text

from glm_image_server.core.job import Job
from glm_image_server.store.schema import jobs

revision = "0002"
down_revision = "0001"


def upgrade() -> None:
    present = {column["name"] for column in inspect(op.get_bind()).get_columns("jobs")}
    added = [Column("stage", Text, nullable=False, server_default="prior"), Column("handoff", LargeBinary)]
    for column in added:
        if column.name not in present:
            op.add_column("jobs", column)
    conn = op.get_bind()
    for job_id, body in conn.execute(select(jobs.c.id, jobs.c.body).where(jobs.c.status == "queued")).all():
        key = Job.model_validate_json(body).request.batch_key
        conn.execute(update(jobs).where(jobs.c.id == job_id).values(batch_key=key))
