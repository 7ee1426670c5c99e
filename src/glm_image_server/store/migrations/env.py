"""Alembic's environment: migrations run in `migrate`'s transaction, under its lock (SQLite: batch mode)."""

from alembic import context

from glm_image_server.store.schema import metadata

conn = context.config.attributes["connection"]
context.configure(connection=conn, target_metadata=metadata, render_as_batch=conn.dialect.name == "sqlite")
with context.begin_transaction():
    context.run_migrations()
