"""``/api/v1/admin/users``: user management for the ``admin`` role."""

from __future__ import annotations

import uuid
from typing import Annotated, Literal

from fastapi import APIRouter, Body, Query, Response, status

from konfer.api.deps import AdminUser, SessionDep, StateDep
from konfer.api.schemas.common import PageParams, Pagination
from konfer.api.schemas.users import AdminUserUpdate, BanRequest, UserList, UserPublic
from konfer.api.services import users
from konfer.core.errors import NotFound

router = APIRouter(prefix="/api/v1/admin/users", tags=["admin"])


@router.get("", response_model=UserList)
async def list_users(
    _: AdminUser,
    session: SessionDep,
    page: Annotated[int, Query(ge=1, le=1_000_000)] = 1,
    page_size: Annotated[int, Query(ge=1, le=100)] = 20,
    search: Annotated[str | None, Query(max_length=100)] = None,
    role: Literal["admin", "user"] | None = None,
    status: Literal["active", "banned", "deleted"] | None = None,
) -> UserList:
    params = PageParams(page=page, page_size=page_size)
    found, total = await users.list_users(session, params, search, role, status)
    return UserList(
        users=[users.public(u) for u in found], pagination=Pagination.of(page, page_size, total)
    )


@router.get("/{user_id}", response_model=UserPublic)
async def get_user(user_id: uuid.UUID, _: AdminUser, session: SessionDep) -> UserPublic:
    return users.public(await users.get_user(session, user_id))


@router.put("/{user_id}", response_model=UserPublic)
async def update_user(
    user_id: uuid.UUID,
    body: AdminUserUpdate,
    admin: AdminUser,
    session: SessionDep,
    state: StateDep,
) -> UserPublic:
    target = await users.get_user(session, user_id)
    return users.public(await users.admin_update(session, state.storage, admin, target, body))


@router.delete("/{user_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_user(
    user_id: uuid.UUID, admin: AdminUser, session: SessionDep, state: StateDep
) -> Response:
    target = await users.get_user(session, user_id)
    if target.status == "deleted":
        raise NotFound(f"User with ID '{user_id}' not found")
    users.ensure_not_self(admin, target, "delete")
    await users.erase_personal_data(session, state.storage, target)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/{user_id}/ban", response_model=UserPublic)
async def ban_user(
    user_id: uuid.UUID,
    admin: AdminUser,
    session: SessionDep,
    body: Annotated[BanRequest | None, Body()] = None,
) -> UserPublic:
    target = await users.get_user(session, user_id)
    return users.public(await users.ban(session, admin, target, body.reason if body else None))


@router.post("/{user_id}/unban", response_model=UserPublic)
async def unban_user(user_id: uuid.UUID, _: AdminUser, session: SessionDep) -> UserPublic:
    target = await users.get_user(session, user_id)
    return users.public(await users.unban(session, target))
