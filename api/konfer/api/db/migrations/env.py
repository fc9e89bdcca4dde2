"""Alembic environment: runs on the connection ``konfer.api.db.migrate`` hands in."""

from __future__ import annotations

from alembic import context

from konfer.api.db import models  # noqa: F401 - registers the tables on the metadata
from konfer.api.db.base import Base

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through konfer.api.db.migrate (konfer migrate)")

context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
