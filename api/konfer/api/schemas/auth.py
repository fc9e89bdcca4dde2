"""Bodies and answers of the authentication routes."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal, Self

from pydantic import BaseModel, EmailStr, Field, model_validator

from konfer.api.schemas.common import Strict
from konfer.api.schemas.users import Nickname, Password, Username


class RegisterRequest(Strict):
    username: Username
    email: EmailStr
    password: Password
    nickname: Nickname | None = None


class LoginRequest(Strict):
    """``username`` may hold the username or the e-mail address."""

    username: Annotated[str, Field(min_length=1, max_length=320)] | None = None
    email: Annotated[str, Field(min_length=1, max_length=320)] | None = None
    password: Annotated[str, Field(min_length=1, max_length=128)]

    @model_validator(mode="after")
    def _one_identifier(self) -> Self:
        if not (self.username or self.email):
            raise ValueError("username or email is required")
        return self

    @property
    def identifier(self) -> str:
        return (self.username or self.email or "").strip()


class TokenPair(BaseModel):
    access_token: str
    refresh_token: str
    expires_in: int
    token_type: Literal["Bearer"] = "Bearer"


class RefreshRequest(Strict):
    refresh_token: Annotated[str, Field(min_length=1, max_length=512)]


class ForgotPasswordRequest(Strict):
    email: EmailStr


class ResetPasswordRequest(Strict):
    token: Annotated[str, Field(min_length=1, max_length=512)]
    new_password: Password


class ChangePasswordRequest(Strict):
    current_password: Annotated[str, Field(min_length=1, max_length=128)]
    new_password: Password


class CsrfToken(BaseModel):
    token: str
    expires_at: datetime
