"""Profiles, avatars, account deletion and the admin's user management."""

from __future__ import annotations

import asyncio
import io
import uuid
import warnings
from typing import Any, BinaryIO

from sqlalchemy import delete, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from konfer.api.db.models import OutboxEmail, PasswordReset, Role, User, UserStatus
from konfer.api.schemas.common import PageParams
from konfer.api.schemas.users import AdminUserUpdate, UserPublic, UserUpdate
from konfer.api.services.auth import commit_unique, ensure_unique, revoke_sessions
from konfer.api.services.passwords import PasswordHasher
from konfer.core.errors import (
    InsufficientPermissions,
    NotFound,
    PayloadTooLarge,
    UnsupportedMediaType,
    ValidationFailed,
)
from konfer.core.settings import Settings
from konfer.core.storage import Storage

AVATAR_FORMATS = {
    "PNG": ("png", "image/png"),
    "JPEG": ("jpg", "image/jpeg"),
    "GIF": ("png", "image/png"),
    "WEBP": ("webp", "image/webp"),
}
AVATAR_MAX_SIDE = 512
_MAX_PIXELS = 40_000_000


def public(user: User, *, trusted: bool = False) -> UserPublic:
    """The public view of a user; ``trusted`` skips validation of values read from the
    database (the hot /users/me path)."""
    fields: dict[str, Any] = {
        "user_id": user.id,
        "username": user.username,
        "email": user.email,
        "nickname": user.nickname,
        "bio": user.bio,
        "avatar_url": user.avatar_url,
        "role": user.role,
        "status": user.status,
        "created_at": user.created_at,
        "updated_at": user.updated_at,
        "last_login_at": user.last_login_at,
    }
    return UserPublic.model_construct(**fields) if trusted else UserPublic(**fields)


async def get_user(session: AsyncSession, user_id: uuid.UUID) -> User:
    user = await session.get(User, user_id)
    if user is None:
        raise NotFound(f"User with ID '{user_id}' not found")
    return user


async def update_profile(
    session: AsyncSession, storage: Storage, user: User, changes: UserUpdate
) -> User:
    data = changes.model_dump(exclude_unset=True)
    for required in ("username", "email"):
        if required in data and data[required] is None:
            raise ValidationFailed(details={required: "Cannot be empty"})
    await ensure_unique(session, data.get("username"), data.get("email"), exclude=user.id)
    old_key = user.avatar_key
    for field, value in data.items():
        if field == "email" and value is not None:
            value = str(value).lower()
        elif field == "avatar_url":
            value = None if value is None else str(value)
            if value != user.avatar_url:
                user.avatar_key = None  # an external picture (or none) replaces the stored one
        setattr(user, field, value)
    dropped_key = old_key if old_key and user.avatar_key is None else None
    await commit_unique(session)
    if dropped_key:
        await storage.delete(dropped_key)  # only once the row no longer points at it
    await session.refresh(user)
    return user


def _normalise_avatar(data: bytes) -> tuple[bytes, str, str]:
    """Decode, orient, shrink and re-encode: drops EXIF (location) and rejects non-images."""
    from PIL import Image, ImageOps  # loaded on the first avatar, not with the api

    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            opened = Image.open(io.BytesIO(data))
            fmt = opened.format or ""
            if fmt not in AVATAR_FORMATS:
                raise UnsupportedMediaType(
                    "Avatar must be a PNG, JPEG, GIF or WebP image",
                    details={"avatar": f"unsupported image type {fmt or 'unknown'}"},
                )
            if opened.width * opened.height > _MAX_PIXELS:
                raise ValidationFailed(details={"avatar": "image dimensions are too large"})
            opened.load()
        except (
            OSError,
            SyntaxError,
            Image.DecompressionBombWarning,
            Image.DecompressionBombError,
        ) as exc:
            raise UnsupportedMediaType(
                "Avatar must be a PNG, JPEG, GIF or WebP image",
                details={"avatar": "file is not a readable image"},
            ) from exc
    ext, content_type = AVATAR_FORMATS[fmt]
    img: Image.Image = ImageOps.exif_transpose(opened)
    img.thumbnail((AVATAR_MAX_SIDE, AVATAR_MAX_SIDE))
    if ext == "jpg" and img.mode not in ("RGB", "L"):
        img = img.convert("RGB")
    out = io.BytesIO()
    img.save(out, format={"jpg": "JPEG", "png": "PNG", "webp": "WEBP"}[ext])
    return out.getvalue(), ext, content_type


async def read_limited(upload: BinaryIO, limit: int) -> bytes:
    data = await asyncio.to_thread(upload.read, limit + 1)
    if len(data) > limit:
        raise PayloadTooLarge(f"Avatar exceeds the limit of {limit} bytes")
    if not data:
        raise ValidationFailed(details={"avatar": "file is empty"})
    return data


async def set_avatar(
    session: AsyncSession, storage: Storage, settings: Settings, user: User, data: bytes
) -> tuple[User, int, str]:
    encoded, ext, content_type = await asyncio.to_thread(_normalise_avatar, data)
    version = uuid.uuid4().hex[:12]
    key = f"avatars/{user.id}/{version}.{ext}"
    await storage.put(key, io.BytesIO(encoded), len(encoded), content_type)
    old_key = user.avatar_key
    user.avatar_key = key
    user.avatar_url = f"{settings.resolved_public_url}/api/v1/users/{user.id}/avatar?v={version}"
    try:
        await session.commit()
    except BaseException:
        await storage.delete(key)  # the row still points at the old picture
        raise
    if old_key:
        await storage.delete(old_key)
    await session.refresh(user)
    return user, len(encoded), content_type


async def erase_personal_data(session: AsyncSession, storage: Storage, user: User) -> None:
    """Delete an account: keep only an anonymous row so history that names it stays valid."""
    avatar_key, email = user.avatar_key, user.email
    if email:
        await session.execute(delete(OutboxEmail).where(OutboxEmail.to_address == email))
    # ":" is outside the username grammar, so no account can squat the anonymous name.
    user.username = f"deleted:{user.id.hex}"
    user.email = None
    user.password_hash = None
    user.nickname = None
    user.bio = None
    user.avatar_url = None
    user.avatar_key = None
    user.ban_reason = None
    user.status = UserStatus.deleted.value
    await revoke_sessions(session, user.id, reason="account_deleted")
    await session.execute(delete(PasswordReset).where(PasswordReset.user_id == user.id))
    await session.commit()
    if avatar_key:
        await storage.delete(avatar_key)


async def delete_own_account(
    session: AsyncSession,
    storage: Storage,
    passwords: PasswordHasher,
    user: User,
    password: str,
) -> None:
    valid, _ = await passwords.verify(password, user.password_hash)
    if not valid:
        raise ValidationFailed(details={"password": "Password is incorrect"})
    await erase_personal_data(session, storage, user)


async def list_users(
    session: AsyncSession,
    page: PageParams,
    search: str | None,
    role: str | None,
    status: str | None,
) -> tuple[list[User], int]:
    query = select(User)
    if search:
        # Match the text literally: "_" (allowed in usernames) and "%" are LIKE wildcards.
        literal = search.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        pattern = f"%{literal}%"
        query = query.where(
            or_(
                func.lower(User.username).like(pattern, escape="\\"),
                func.lower(User.email).like(pattern, escape="\\"),
                func.lower(User.nickname).like(pattern, escape="\\"),
            )
        )
    if role:
        query = query.where(User.role == role)
    if status:
        query = query.where(User.status == status)
    total = (await session.execute(select(func.count()).select_from(query.subquery()))).scalar_one()
    users = (
        (
            await session.execute(
                query.order_by(User.created_at.desc(), User.id)
                .offset(page.offset)
                .limit(page.page_size)
            )
        )
        .scalars()
        .all()
    )
    return list(users), int(total)


def ensure_not_self(admin: User, target: User, action: str) -> None:
    if admin.id == target.id:
        raise InsufficientPermissions(f"Administrators cannot {action} their own account")


async def admin_update(
    session: AsyncSession, storage: Storage, admin: User, target: User, changes: AdminUserUpdate
) -> User:
    if target.status == UserStatus.deleted.value:
        raise NotFound(f"User with ID '{target.id}' not found")
    if changes.role is not None and changes.role != Role.admin.value:
        ensure_not_self(admin, target, "demote")
    return await update_profile(session, storage, target, changes)


async def ban(session: AsyncSession, admin: User, target: User, reason: str | None) -> User:
    ensure_not_self(admin, target, "ban")
    if target.status == UserStatus.deleted.value:
        raise NotFound(f"User with ID '{target.id}' not found")
    target.status = UserStatus.banned.value
    target.ban_reason = reason
    await revoke_sessions(session, target.id, reason="banned")
    await session.commit()
    await session.refresh(target)
    return target


async def unban(session: AsyncSession, target: User) -> User:
    if target.status == UserStatus.deleted.value:
        raise NotFound(f"User with ID '{target.id}' not found")
    target.status = UserStatus.active.value
    target.ban_reason = None
    await session.commit()
    await session.refresh(target)
    return target
