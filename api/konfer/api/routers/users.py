"""``/api/v1/users/*``: the caller's own account, and other users for admins."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, File, Response, UploadFile, status
from fastapi.responses import StreamingResponse

from konfer.api.db.models import User
from konfer.api.deps import (
    CurrentPrincipal,
    CurrentUser,
    SessionDep,
    SessionUser,
    StateDep,
    attach,
)
from konfer.api.schemas.auth import ChangePasswordRequest
from konfer.api.schemas.common import Message
from konfer.api.schemas.users import (
    AdminUserUpdate,
    AvatarUploaded,
    DeleteAccount,
    UserPublic,
    UserUpdate,
)
from konfer.api.services import auth, users
from konfer.core.errors import InsufficientPermissions, NotFound, ValidationFailed
from konfer.core.timeutil import isoformat, utcnow

router = APIRouter(prefix="/api/v1/users", tags=["users"])


def _public_response(user: User) -> Response:
    """Serialised once here; FastAPI does not validate a returned Response again."""
    return Response(
        users.public(user, trusted=True).model_dump_json(), media_type="application/json"
    )


@router.get("/health", include_in_schema=True, tags=["health"])
async def health() -> dict[str, str]:
    return {"service": "user-service", "status": "ok", "time": isoformat(utcnow())}


@router.get("/me", response_model=UserPublic)
async def me(user: CurrentUser) -> Response:
    # The hottest authenticated read: serialised once here, not re-validated by FastAPI.
    return _public_response(user)


@router.get("/profile", response_model=UserPublic)
async def get_profile(user: CurrentUser) -> Response:
    return _public_response(user)


@router.put("/profile", response_model=UserPublic)
async def update_profile(
    body: UserUpdate, user: SessionUser, session: SessionDep, state: StateDep
) -> UserPublic:
    return users.public(await users.update_profile(session, state.storage, user, body))


@router.post("/change-password", response_model=Message)
async def change_password(
    body: ChangePasswordRequest,
    principal: CurrentPrincipal,
    session: SessionDep,
    state: StateDep,
) -> Message:
    await auth.change_password(
        session,
        state.passwords,
        await attach(session, principal.user),
        principal.session_id,
        current_password=body.current_password,
        new_password=body.new_password,
    )
    return Message(message="Password changed; other sessions have been signed out")


@router.post("/upload-avatar", response_model=AvatarUploaded)
async def upload_avatar(
    user: SessionUser,
    session: SessionDep,
    state: StateDep,
    avatar: Annotated[UploadFile | None, File(description="PNG, JPEG, GIF or WebP")] = None,
    file: Annotated[UploadFile | None, File(description="alias of avatar")] = None,
) -> AvatarUploaded:
    upload = avatar or file
    if upload is None:
        raise ValidationFailed(details={"avatar": "Field required"})
    data = await users.read_limited(upload.file, state.settings.avatar_max_bytes)
    user, size, content_type = await users.set_avatar(
        session, state.storage, state.settings, user, data
    )
    assert user.avatar_url is not None
    return AvatarUploaded(avatar_url=user.avatar_url, size=size, content_type=content_type)


@router.delete("/account", status_code=status.HTTP_204_NO_CONTENT)
async def delete_account(
    body: DeleteAccount, user: SessionUser, session: SessionDep, state: StateDep
) -> Response:
    await users.delete_own_account(session, state.storage, state.passwords, user, body.password)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get(
    "/{user_id}/avatar",
    response_class=StreamingResponse,
    responses={200: {"content": {"image/png": {}, "image/jpeg": {}, "image/webp": {}}}},
)
async def get_avatar(user_id: uuid.UUID, session: SessionDep, state: StateDep) -> Response:
    """Public, so ``<img src>`` works without a token; the key is unguessable per upload."""
    user = await session.get(User, user_id)
    if user is None or user.avatar_key is None:
        raise NotFound("Avatar not found")
    info = await state.storage.stat(user.avatar_key)
    if info is None:
        raise NotFound("Avatar not found")
    return StreamingResponse(
        state.storage.read(user.avatar_key),
        media_type=info.content_type,
        headers={"Content-Length": str(info.size), "Cache-Control": "public, max-age=300"},
    )


def _self_or_admin(caller: CurrentUser, user_id: uuid.UUID) -> None:
    # Answer 403 for any other id, existing or not, so ids cannot be probed.
    if caller.id != user_id and caller.role != "admin":
        raise InsufficientPermissions()


@router.get("/{user_id}", response_model=UserPublic)
async def get_user(user_id: uuid.UUID, caller: CurrentUser, session: SessionDep) -> UserPublic:
    _self_or_admin(caller, user_id)
    return users.public(await users.get_user(session, user_id))


@router.put("/{user_id}", response_model=UserPublic)
async def update_user(
    user_id: uuid.UUID,
    body: UserUpdate,
    caller: CurrentUser,
    session: SessionDep,
    state: StateDep,
) -> UserPublic:
    _self_or_admin(caller, user_id)
    if caller.id == user_id:
        me = await attach(session, caller)
        return users.public(await users.update_profile(session, state.storage, me, body))
    target = await users.get_user(session, user_id)
    changes = AdminUserUpdate(**body.model_dump(exclude_unset=True))
    return users.public(await users.admin_update(session, state.storage, caller, target, changes))
