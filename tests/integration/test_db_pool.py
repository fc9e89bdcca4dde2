"""The api's PostgreSQL pool: idle connections are checked before use, busy ones are not.

Against the real test server: the server ends every session of the database (as a
restart or a proxy's idle timeout does) while the connection sits in the pool.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import psycopg
import pytest
from sqlalchemy import URL, exc, text
from sqlalchemy.ext.asyncio import AsyncEngine

from konfer.api.db.engine import create_engine
from tests.conftest import SettingsFactory, service_env


def end_sessions(url: URL) -> int:
    """Terminate every server session of the database and wait until they are gone; how
    many there were."""
    name = url.database
    others = "FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()"
    with psycopg.connect(service_env("KONFER_TEST_PG_ADMIN_URL"), autocommit=True) as admin:
        ended = len(admin.execute(f"SELECT pg_terminate_backend(pid) {others}", (name,)).fetchall())
        deadline = time.monotonic() + 10
        while admin.execute(f"SELECT count(*) {others}", (name,)).fetchone() != (0,):
            assert time.monotonic() < deadline, "the sessions did not end"
            time.sleep(0.02)
    return ended


async def backend_pid(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        return int((await conn.execute(text("SELECT pg_backend_pid()"))).scalar_one())


@contextlib.asynccontextmanager
async def pool(make_settings: SettingsFactory, idle_seconds: float) -> AsyncIterator[AsyncEngine]:
    """The api's engine on a fresh database, one pooled connection, already used once."""
    settings = make_settings(
        "postgres", database_ping_idle_seconds=idle_seconds, database_pool_size=1
    )
    engine = create_engine(settings)
    try:
        await backend_pid(engine)
        yield engine
    finally:
        await engine.dispose()


async def test_a_connection_idle_past_the_threshold_is_replaced_before_use(
    make_settings: SettingsFactory,
) -> None:
    async with pool(make_settings, idle_seconds=0.05) as engine:
        first = await backend_pid(engine)
        assert end_sessions(engine.url) == 1
        await asyncio.sleep(0.1)
        # The request never sees the dead connection: the ping finds it, the pool
        # connects again.
        second = await backend_pid(engine)
        assert second != first
        assert await backend_pid(engine) == second  # and keeps the new one


async def test_a_connection_back_moments_ago_is_used_without_a_ping(
    make_settings: SettingsFactory,
) -> None:
    async with pool(make_settings, idle_seconds=3600) as engine:
        assert end_sessions(engine.url) == 1
        # No round trip before use, so the statement itself meets the dead connection...
        with pytest.raises(exc.DBAPIError) as raised:
            await backend_pid(engine)
        assert raised.value.connection_invalidated
        # ...and SQLAlchemy has dropped it: the next use connects again.
        assert await backend_pid(engine) > 0
