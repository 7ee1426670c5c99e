"""Alembic revisions of the job store, oldest first (a package so that they ship with it)."""
