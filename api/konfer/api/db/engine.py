"""Async engine and session factory for SQLite (local) and PostgreSQL (psycopg 3)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from sqlalchemy import event
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
        kwargs.update(pool_size=settings.database_pool_size, max_overflow=10, pool_pre_ping=True)
    engine = create_async_engine(url, **kwargs)
    if url.startswith("sqlite"):
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
    return engine


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
