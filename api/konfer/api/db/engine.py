"""Async engine and session factory for SQLite (local) and PostgreSQL (psycopg 3)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

from sqlalchemy import event, exc
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import Session
from sqlalchemy.pool import ConnectionPoolEntry

from konfer.api.db.models import User
from konfer.core.settings import Settings


def create_engine(settings: Settings) -> AsyncEngine:
    url = settings.resolved_database_url
    kwargs: dict[str, Any] = {"echo": settings.database_echo}
    if url.startswith("sqlite"):
        if ":memory:" not in url and "///" in url:
            settings.data_dir.mkdir(parents=True, exist_ok=True)
        kwargs["connect_args"] = {"timeout": 30}
    else:
        kwargs.update(pool_size=settings.database_pool_size, max_overflow=10)
    engine = create_async_engine(url, **kwargs)
    if url.startswith("sqlite"):
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
    else:
        _ping_when_idle(engine, settings.database_ping_idle_seconds)
    return engine


_IDLE_SINCE = "konfer_idle_since"


def _ping_when_idle(engine: AsyncEngine, idle_seconds: float) -> None:
    """Check a pooled connection with a round trip only when it sat idle a while.

    SQLAlchemy's ``pool_pre_ping`` pays that round trip on every checkout, about a third
    of a trivial query's CPU. A connection handed back moments ago is almost surely
    alive; one that waited (a database restart, a proxy's idle timeout) is checked and,
    if dead, replaced before the request sees it. A connection that breaks in between
    still fails its statement, and SQLAlchemy then drops every older pooled connection.
    """
    dialect = engine.sync_engine.dialect
    pool = engine.sync_engine.pool

    @event.listens_for(pool, "checkin")
    def _checked_in(_dbapi_conn: DBAPIConnection | None, record: ConnectionPoolEntry) -> None:
        record.info[_IDLE_SINCE] = time.monotonic()

    @event.listens_for(pool, "checkout")
    def _checked_out(dbapi_conn: DBAPIConnection, record: ConnectionPoolEntry, _proxy: Any) -> None:
        since = record.info.pop(_IDLE_SINCE, None)
        if since is None or time.monotonic() - since < idle_seconds:
            return  # fresh from connect, or just handed back
        try:
            alive = dialect.do_ping(dbapi_conn)
        except Exception as error:
            raise exc.DisconnectionError(f"pooled connection is dead: {error}") from error
        if not alive:
            raise exc.DisconnectionError("pooled connection is dead")


def _sqlite_pragmas(dbapi_conn: DBAPIConnection, _record: ConnectionPoolEntry) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()


AUTH_CHANGED = "konfer_auth_changed"


def mark_auth_changed(session: Session | AsyncSession, user_id: uuid.UUID) -> None:
    """Note that this transaction changes what a user may do (sessions, status, role)."""
    session.info.setdefault(AUTH_CHANGED, set()).add(user_id)


def create_sessionmaker(
    engine: AsyncEngine, on_auth_change: Callable[[set[uuid.UUID]], None] | None = None
) -> async_sessionmaker[AsyncSession]:
    """Sessions that report, on commit, every user whose row or sessions changed."""

    class KonferSession(Session):
        pass

    @event.listens_for(KonferSession, "before_flush")
    def _collect(session: Session, _ctx: object, _instances: object) -> None:
        for obj in (*session.dirty, *session.deleted):
            if isinstance(obj, User):
                mark_auth_changed(session, obj.id)

    @event.listens_for(KonferSession, "after_commit")
    def _report(session: Session) -> None:
        changed = session.info.pop(AUTH_CHANGED, None)
        if changed and on_auth_change is not None:
            on_auth_change(changed)

    @event.listens_for(KonferSession, "after_rollback")
    def _discard(session: Session) -> None:
        session.info.pop(AUTH_CHANGED, None)

    return async_sessionmaker(engine, expire_on_commit=False, sync_session_class=KonferSession)
