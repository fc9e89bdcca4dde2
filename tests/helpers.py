"""Assertions and small utilities shared by the test modules."""

from __future__ import annotations

import socket
import uuid
from typing import Any

import httpx

from konfer.api.db.models import User

ERROR_FIELDS = {"code", "message", "details", "request_id", "timestamp"}
USER_PUBLIC_FIELDS = {
    "user_id",
    "username",
    "email",
    "nickname",
    "bio",
    "avatar_url",
    "role",
    "status",
    "created_at",
    "updated_at",
    "last_login_at",
}


def assert_error(r: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """The documented envelope with the expected status and code; returns its body."""
    assert r.status_code == status, r.text
    err: dict[str, Any] = r.json()["error"]
    assert err["code"] == code
    assert set(err) <= ERROR_FIELDS
    assert err["message"]
    assert err["request_id"] == r.headers["x-request-id"]
    assert err["timestamp"].endswith("Z")
    return err


def same_error(a: httpx.Response, b: httpx.Response, *, id_segment: int | None = None) -> bool:
    """Two answers that tell a caller exactly the same thing.

    ``id_segment`` names a path segment (an id) that error messages may quote; it is
    masked so a missing and a forbidden resource compare equal.
    """

    def strip(r: httpx.Response) -> dict[str, Any]:
        err = dict(r.json()["error"])
        err.pop("request_id")
        err.pop("timestamp")
        if id_segment is not None:
            err["message"] = err["message"].replace(r.url.path.split("/")[id_segment], "<id>")
        return err

    return a.status_code == b.status_code and strip(a) == strip(b)


async def user_row(client: Any, user_id: str) -> dict[str, Any]:
    """Every column of the user's row, read straight from the database."""
    async with client.app.state.konfer.sessionmaker() as s:
        user = await s.get(User, uuid.UUID(user_id))
        assert user is not None
        return {c.name: getattr(user, c.name) for c in User.__table__.columns}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
