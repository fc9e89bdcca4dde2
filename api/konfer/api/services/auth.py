"""Registration, sign-in, token rotation, logout and password recovery.

Refresh tokens are opaque random strings stored as SHA-256 hashes. Each sign-in is a
session (a token family); using a refresh token marks it used and issues the next one in
the same family. A second use of a used token means it was stolen, so the whole family is
revoked — the OAuth 2.0 Security BCP's reuse detection.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from datetime import timedelta

from sqlalchemy import func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from konfer.api.db.engine import mark_auth_changed
from konfer.api.db.models import AuthSession, PasswordReset, RefreshToken, Role, User, UserStatus
from konfer.api.schemas.auth import TokenPair
from konfer.api.services import mail
from konfer.api.services.passwords import PasswordHasher
from konfer.core.errors import (
    AccountBanned,
    Conflict,
    InvalidCredentials,
    InvalidToken,
    ValidationFailed,
)
from konfer.core.settings import Settings
from konfer.core.timeutil import utcnow
from konfer.core.tokens import TokenCodec


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


async def ensure_unique(
    session: AsyncSession,
    username: str | None,
    email: str | None,
    exclude: uuid.UUID | None = None,
) -> None:
    """Raise 409 naming the taken field; the unique indexes still guard races."""
    for field, value in (("username", username), ("email", email)):
        if value is None:
            continue
        column = User.username if field == "username" else User.email
        query = select(User.id).where(func.lower(column) == value.lower())
        if exclude is not None:
            query = query.where(User.id != exclude)
        if (await session.execute(query.limit(1))).first() is not None:
            raise Conflict(
                f"User with {field} '{value}' already exists", details={field: "already taken"}
            )


async def commit_unique(session: AsyncSession) -> None:
    try:
        await session.commit()
    except IntegrityError as exc:
        await session.rollback()
        raise Conflict("User with this username or email already exists") from exc


async def register(
    session: AsyncSession,
    passwords: PasswordHasher,
    *,
    username: str,
    email: str,
    password: str,
    nickname: str | None,
    role: Role = Role.user,
) -> User:
    await ensure_unique(session, username, email)
    user = User(
        username=username,
        email=email.lower(),
        password_hash=await passwords.hash(password),
        nickname=nickname,
        role=role.value,
        status=UserStatus.active.value,
    )
    session.add(user)
    await commit_unique(session)
    return user


async def _issue(
    session: AsyncSession,
    settings: Settings,
    tokens: TokenCodec,
    user: User,
    session_id: uuid.UUID,
) -> TokenPair:
    refresh = secrets.token_urlsafe(32)
    session.add(
        RefreshToken(
            session_id=session_id,
            token_hash=token_hash(refresh),
            expires_at=utcnow() + timedelta(seconds=settings.refresh_token_ttl_seconds),
        )
    )
    access = tokens.issue_access(user.id, session_id, user.role, settings.access_token_ttl_seconds)
    return TokenPair(
        access_token=access, refresh_token=refresh, expires_in=settings.access_token_ttl_seconds
    )


async def login(
    session: AsyncSession,
    settings: Settings,
    tokens: TokenCodec,
    passwords: PasswordHasher,
    *,
    identifier: str,
    password: str,
    user_agent: str | None,
    ip: str | None,
) -> TokenPair:
    key = identifier.lower()
    user = (
        await session.execute(
            select(User)
            .where(or_(func.lower(User.username) == key, func.lower(User.email) == key))
            .where(User.status != UserStatus.deleted.value)
            .limit(1)
        )
    ).scalar_one_or_none()
    valid, new_hash = await passwords.verify(password, user.password_hash if user else None)
    if user is None or not valid:
        raise InvalidCredentials()
    if user.status == UserStatus.banned.value:
        raise AccountBanned()
    if new_hash:
        user.password_hash = new_hash
    user.last_login_at = utcnow()
    auth_session = AuthSession(user_id=user.id, user_agent=(user_agent or "")[:512] or None, ip=ip)
    session.add(auth_session)
    await session.flush()
    pair = await _issue(session, settings, tokens, user, auth_session.id)
    await session.commit()
    return pair


async def refresh(
    session: AsyncSession, settings: Settings, tokens: TokenCodec, refresh_token: str
) -> TokenPair:
    now = utcnow()
    row = (
        await session.execute(
            select(RefreshToken, AuthSession, User)
            .join(AuthSession, AuthSession.id == RefreshToken.session_id)
            .join(User, User.id == AuthSession.user_id)
            .where(RefreshToken.token_hash == token_hash(refresh_token))
        )
    ).first()
    if row is None:
        raise InvalidToken("Unknown refresh token")
    stored, auth_session, user = row
    if auth_session.revoked_at is not None or user.status != UserStatus.active.value:
        raise InvalidToken("Session has been revoked")
    if stored.expires_at <= now:
        raise InvalidToken("Refresh token has expired")
    # Marking used is a compare-and-set, so two concurrent refreshes cannot both win.
    claimed = await session.execute(
        update(RefreshToken)
        .where(RefreshToken.id == stored.id, RefreshToken.used_at.is_(None))
        .values(used_at=now)
    )
    if claimed.rowcount != 1:  # type: ignore[attr-defined]
        await revoke_sessions(session, user.id, reason="refresh_reuse", only=auth_session.id)
        await session.commit()
        raise InvalidToken("Refresh token was already used; the session has been revoked")
    pair = await _issue(session, settings, tokens, user, auth_session.id)
    await session.commit()
    return pair


async def revoke_sessions(
    session: AsyncSession,
    user_id: uuid.UUID,
    *,
    reason: str,
    only: uuid.UUID | None = None,
    keep: uuid.UUID | None = None,
) -> None:
    mark_auth_changed(session, user_id)
    query = update(AuthSession).where(
        AuthSession.user_id == user_id, AuthSession.revoked_at.is_(None)
    )
    if only is not None:
        query = query.where(AuthSession.id == only)
    if keep is not None:
        query = query.where(AuthSession.id != keep)
    await session.execute(query.values(revoked_at=utcnow(), revoke_reason=reason))


async def change_password(
    session: AsyncSession,
    passwords: PasswordHasher,
    user: User,
    current_session: uuid.UUID,
    *,
    current_password: str,
    new_password: str,
) -> None:
    valid, _ = await passwords.verify(current_password, user.password_hash)
    if not valid:
        raise ValidationFailed(details={"current_password": "Current password is incorrect"})
    if current_password == new_password:
        raise ValidationFailed(
            details={"new_password": "New password must differ from the current one"}
        )
    user.password_hash = await passwords.hash(new_password)
    await revoke_sessions(session, user.id, reason="password_changed", keep=current_session)
    await session.commit()


async def forgot_password(
    session: AsyncSession, settings: Settings, email: str
) -> uuid.UUID | None:
    """Store a reset mail for an active account; the caller never learns whether one exists."""
    user = (
        await session.execute(
            select(User).where(
                func.lower(User.email) == email.lower(), User.status == UserStatus.active.value
            )
        )
    ).scalar_one_or_none()
    if user is None or user.email is None:
        return None
    token = secrets.token_urlsafe(32)
    session.add(
        PasswordReset(
            user_id=user.id,
            token_hash=token_hash(token),
            expires_at=utcnow() + timedelta(seconds=settings.password_reset_ttl_seconds),
        )
    )
    minutes = settings.password_reset_ttl_seconds // 60
    link = f"{settings.resolved_public_url}/reset-password?token={token}"
    outbox = mail.enqueue(
        session,
        user.email,
        "Reset your Konfer password",
        f"Hello {user.nickname or user.username},\n\nUse this link within {minutes} minutes "
        f"to choose a new password:\n{link}\n\nReset token: {token}\n\n"
        "If you did not ask for this, ignore this message.\n",
        kind="password_reset",
    )
    await session.commit()
    return outbox.id


async def reset_password(
    session: AsyncSession, passwords: PasswordHasher, token: str, new_password: str
) -> None:
    now = utcnow()
    reset = (
        await session.execute(
            select(PasswordReset).where(PasswordReset.token_hash == token_hash(token))
        )
    ).scalar_one_or_none()
    invalid = ValidationFailed(
        "Invalid or expired reset token", details={"token": "Invalid or expired reset token"}
    )
    if reset is None or reset.used_at is not None or reset.expires_at <= now:
        raise invalid
    user = await session.get(User, reset.user_id)
    if user is None or user.status != UserStatus.active.value:
        raise invalid
    claimed = await session.execute(
        update(PasswordReset)
        .where(PasswordReset.id == reset.id, PasswordReset.used_at.is_(None))
        .values(used_at=now)
    )
    if claimed.rowcount != 1:  # type: ignore[attr-defined]
        raise invalid
    user.password_hash = await passwords.hash(new_password)
    await revoke_sessions(session, user.id, reason="password_reset")
    await session.commit()
