"""Creates the first administrator, from settings at start or from ``konfer admin create``."""

from __future__ import annotations

import logging

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from konfer.api.db.models import Role, User
from konfer.api.services import auth
from konfer.api.services.passwords import PasswordHasher
from konfer.api.state import AppState
from konfer.core.errors import Conflict

log = logging.getLogger(__name__)


async def create_admin(
    session: AsyncSession, passwords: PasswordHasher, username: str, email: str, password: str
) -> User:
    """Create an admin, or promote the existing account with that username or email."""
    existing = (
        await session.execute(
            select(User).where(
                (func.lower(User.username) == username.lower())
                | (func.lower(User.email) == email.lower())
            )
        )
    ).scalar_one_or_none()
    if existing is not None:
        existing.role = Role.admin.value
        await session.commit()
        return existing
    try:
        return await auth.register(
            session,
            passwords,
            username=username,
            email=email,
            password=password,
            nickname=None,
            role=Role.admin,
        )
    except Conflict:  # another replica created it a moment ago
        return await create_admin(session, passwords, username, email, password)


async def ensure_admin(state: AppState) -> None:
    s = state.settings
    if not (s.admin_username and s.admin_email and s.admin_password):
        return
    async with state.sessionmaker() as session:
        user = await create_admin(
            session,
            state.passwords,
            s.admin_username,
            s.admin_email,
            s.admin_password.get_secret_value(),
        )
        log.info("admin account ensured", extra={"username": user.username})
