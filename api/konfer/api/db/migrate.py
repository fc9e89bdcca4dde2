"""Applies the Alembic migrations at start, the same on SQLite and PostgreSQL.

Several api replicas may start at once; on PostgreSQL an advisory lock makes them take
turns, so each migration runs exactly once.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, text
from sqlalchemy.ext.asyncio import AsyncEngine

MIGRATIONS = Path(__file__).parent / "migrations"
_LOCK_ID = 0x4B4F4E464552  # "KONFER"


def alembic_config(connection: Connection | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = connection
    return cfg


def _upgrade(connection: Connection) -> None:
    if connection.dialect.name == "postgresql":
        # Held until the migration transaction commits, so the next replica sees its tables.
        connection.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": _LOCK_ID})
    command.upgrade(alembic_config(connection), "head")


async def upgrade(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        await conn.run_sync(_upgrade)


def _is_current(connection: Connection) -> bool:
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    return MigrationContext.configure(connection).get_current_revision() == head


async def wait_until_current(
    engine: AsyncEngine, stop: asyncio.Event | None = None, interval: float = 1.0
) -> None:
    """Wait until the api has migrated the database (processes that never migrate, like
    ``konfer worker``, start before or beside the api)."""
    logged = False
    while stop is None or not stop.is_set():
        try:
            async with engine.connect() as conn:
                if await conn.run_sync(_is_current):
                    return
        except Exception:  # noqa: S110 - the database may not be up yet either
            pass
        if not logged:
            logging.getLogger(__name__).info("waiting for the database to be migrated")
            logged = True
        await asyncio.sleep(interval)
