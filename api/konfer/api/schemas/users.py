"""The user resource: request bodies and the public representation."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Literal

from pydantic import AnyHttpUrl, BaseModel, ConfigDict, EmailStr, Field, StringConstraints

from konfer.api.schemas.common import Pagination, Strict

Username = Annotated[
    str,
    StringConstraints(
        strip_whitespace=True, min_length=3, max_length=32, pattern=r"^[A-Za-z0-9_.\-]+$"
    ),
]
Password = Annotated[str, Field(min_length=8, max_length=128)]
Nickname = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]
Bio = Annotated[str, StringConstraints(max_length=500)]


class UserPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    user_id: uuid.UUID
    username: str
    email: str | None
    nickname: str | None
    bio: str | None
    avatar_url: str | None
    role: str
    status: str
    created_at: datetime
    updated_at: datetime
    last_login_at: datetime | None


class UserCreated(BaseModel):
    user_id: uuid.UUID
    username: str
    email: str
    created_at: datetime


class UserUpdate(Strict):
    username: Username | None = None
    email: EmailStr | None = None
    nickname: Nickname | None = None
    bio: Bio | None = None
    avatar_url: AnyHttpUrl | None = None


class AdminUserUpdate(UserUpdate):
    role: Literal["admin", "user"] | None = None


class BanRequest(Strict):
    reason: Annotated[str, StringConstraints(max_length=500)] | None = None


class UserList(BaseModel):
    users: list[UserPublic]
    pagination: Pagination


class AvatarUploaded(BaseModel):
    avatar_url: str
    size: int
    content_type: str


class DeleteAccount(Strict):
    password: Annotated[str, Field(min_length=1, max_length=128)]
