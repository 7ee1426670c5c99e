"""Schema migrations of the job store: Alembic, for SQLite and PostgreSQL alike. `migrate` runs when a store
opens: a database at `HEAD` costs one SELECT; else Alembic upgrades it under the dialect's schema lock. 0001
creates the tables as schema.py has them now, so a later revision adds only what a database lacks, and
moves HEAD.
"""

from __future__ import annotations

import logging
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from ..dialects import Dialect

HEAD = "0002"  # the newest revision (a test checks it is Alembic's head)
SCRIPTS = Path(__file__).parent  # Alembic's script_location: env.py, versions/
VERSION = text("SELECT version_num FROM alembic_version")


def migrate(dialect: Dialect) -> str | None:
    """Bring the database to HEAD; returns the revision found (None: new, or from before Alembic)."""
    try:
        with dialect.read() as conn:
            found = conn.execute(VERSION).scalar()
    except DBAPIError:  # no version table yet
        found = None
    if found == HEAD:
        return found
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)  # a line per plugin on import
    from alembic import command  # imported only when there is something to do
    from alembic.config import Config
    from alembic.runtime.migration import MigrationContext

    with dialect.write() as conn:
        dialect.lock(conn, "schema")
        found = MigrationContext.configure(conn).get_current_revision()  # another process may have won
        if found != HEAD:
            config = Config(attributes={"connection": conn})
            config.set_main_option("script_location", str(SCRIPTS))
            command.upgrade(config, "head")
    return found
