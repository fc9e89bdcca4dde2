"""Migrations build the same schema the models declare, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import warnings

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Connection, inspect

from konfer.api.db.base import Base
from konfer.api.db.engine import create_engine
from konfer.api.db.migrate import upgrade
from tests.conftest import SettingsFactory


def _diff(conn: Connection) -> list[object]:
    ctx = MigrationContext.configure(conn, opts={"compare_type": True})
    with warnings.catch_warnings():
        # SQLite cannot reflect the lower() unique indexes; PostgreSQL compares them too.
        warnings.filterwarnings("ignore", message=".*expression-based index.*")
        return list(compare_metadata(ctx, Base.metadata))


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
async def test_migrations_match_models_and_rerun_cleanly(
    make_settings: SettingsFactory, backend: str
) -> None:
    engine = create_engine(make_settings(backend))
    try:
        await upgrade(engine)
        await upgrade(engine)  # a restarted replica finds nothing to do
        async with engine.connect() as conn:
            assert await conn.run_sync(_diff) == []
            tables = await conn.run_sync(lambda c: set(inspect(c).get_table_names()))
        assert {
            "users",
            "auth_sessions",
            "refresh_tokens",
            "password_resets",
            "outbox_emails",
            "alembic_version",
        } <= tables
    finally:
        await engine.dispose()


async def test_concurrent_replicas_migrate_once_on_postgres(make_settings: SettingsFactory) -> None:
    settings = make_settings("postgres")
    engines = [create_engine(settings) for _ in range(3)]
    try:
        await asyncio.gather(*(upgrade(e) for e in engines))
        async with engines[0].connect() as conn:
            assert await conn.run_sync(_diff) == []
    finally:
        for e in engines:
            await e.dispose()
