"""Registration, login, refresh rotation, logout and password recovery."""

from __future__ import annotations

import time

import jwt
import pytest
from sqlalchemy import func, select

from konfer.api.db.models import OutboxEmail, User
from tests.conftest import ApiClient


async def count_users(client: ApiClient) -> int:
    async with client.app.state.konfer.sessionmaker() as s:
        return int((await s.execute(select(func.count()).select_from(User))).scalar_one())


async def test_register_returns_documented_shape(client: ApiClient) -> None:
    r = await client.post(
        "/api/v1/auth/register",
        json={
            "username": "Shape_User1",
            "email": "Shape@Example.com",
            "password": "SecurePass123!",
        },
    )
    assert r.status_code == 201
    body = r.json()
    assert set(body) == {"user_id", "username", "email", "created_at"}
    assert body["email"] == "shape@example.com"
    assert body["created_at"].endswith("Z")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"email": "x@example.com", "password": "password123"}, "username"),
        ({"username": "abc", "password": "password123"}, "email"),
        ({"username": "abc", "email": "x@example.com"}, "password"),
        ({"username": "abc", "email": "not-an-email", "password": "password123"}, "email"),
        ({"username": "abc", "email": "x@example.com", "password": "short"}, "password"),
        ({"username": "a b", "email": "x@example.com", "password": "password123"}, "username"),
        ({"username": 123, "email": "x@example.com", "password": "password123"}, "username"),
        (
            {
                "username": "abc",
                "email": "x@example.com",
                "password": "password123",
                "role": "admin",
            },
            "role",
        ),
    ],
)
async def test_register_rejects_bad_input_with_field_details(
    client: ApiClient, body: dict[str, object], field: str
) -> None:
    before = await count_users(client)
    r = await client.post("/api/v1/auth/register", json=body)
    assert r.status_code == 400
    err = r.json()["error"]
    assert err["code"] == "VALIDATION_ERROR"
    assert field in err["details"]
    assert err["request_id"] == r.headers["x-request-id"]
    assert await count_users(client) == before


async def test_register_malformed_json_is_400(client: ApiClient) -> None:
    r = await client.post(
        "/api/v1/auth/register", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "VALIDATION_ERROR"


async def test_register_conflicts_on_username_or_email_case_insensitively(
    client: ApiClient,
) -> None:
    user = await client.signup()
    before = await count_users(client)
    for body in (
        {"username": user["username"].upper(), "email": "other1@example.com"},
        {"username": "someone_else_x", "email": user["email"].upper()},
    ):
        r = await client.post("/api/v1/auth/register", json={**body, "password": "password123"})
        assert r.status_code == 409
        assert r.json()["error"]["code"] == "RESOURCE_CONFLICT"
    assert await count_users(client) == before


async def test_login_by_username_or_email(client: ApiClient) -> None:
    user = await client.signup()
    for ident in (user["username"], user["email"], user["email"].upper()):
        r = await client.post(
            "/api/v1/auth/login", json={"username": ident, "password": user["password"]}
        )
        assert r.status_code == 200
        body = r.json()
        assert body["expires_in"] == 3600
        assert body["token_type"] == "Bearer"
        header = jwt.get_unverified_header(body["access_token"])
        assert header["alg"] == "EdDSA"
        assert header["kid"]
    r = await client.post(
        "/api/v1/auth/login", json={"email": user["email"], "password": user["password"]}
    )
    assert r.status_code == 200


@pytest.mark.parametrize("password", ["wrong-password", "PASSWORD123"])
async def test_login_with_wrong_password_is_401(client: ApiClient, password: str) -> None:
    user = await client.signup()
    r = await client.post(
        "/api/v1/auth/login", json={"username": user["username"], "password": password}
    )
    assert r.status_code == 401
    assert r.json()["error"]["code"] == "INVALID_CREDENTIALS"


async def test_login_unknown_user_looks_like_wrong_password(client: ApiClient) -> None:
    r = await client.post(
        "/api/v1/auth/login", json={"username": "nobody-here", "password": "password123"}
    )
    assert r.status_code == 401
    assert r.json()["error"]["code"] == "INVALID_CREDENTIALS"


async def test_login_requires_an_identifier(client: ApiClient) -> None:
    r = await client.post("/api/v1/auth/login", json={"password": "password123"})
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "VALIDATION_ERROR"


async def test_refresh_rotates_and_old_token_reuse_revokes_family(client: ApiClient) -> None:
    user = await client.signup()
    first = user["tokens"]["refresh_token"]
    r = await client.post("/api/v1/auth/refresh", json={"refresh_token": first})
    assert r.status_code == 200
    second = r.json()
    assert second["refresh_token"] != first
    assert second["expires_in"] == 3600
    new_headers = {"Authorization": f"Bearer {second['access_token']}"}
    assert (await client.get("/api/v1/users/me", headers=new_headers)).status_code == 200

    # Replaying the used token is theft: the whole family dies, new tokens included.
    r = await client.post("/api/v1/auth/refresh", json={"refresh_token": first})
    assert r.status_code == 401
    assert r.json()["error"]["code"] == "INVALID_TOKEN"
    r = await client.post("/api/v1/auth/refresh", json={"refresh_token": second["refresh_token"]})
    assert r.status_code == 401
    assert (await client.get("/api/v1/users/me", headers=new_headers)).status_code == 401
    # Other sessions of the same user are untouched.
    r = await client.post(
        "/api/v1/auth/login", json={"username": user["username"], "password": user["password"]}
    )
    assert r.status_code == 200


@pytest.mark.parametrize("token", ["", "garbage", "x" * 600])
async def test_refresh_rejects_unknown_or_malformed_tokens(client: ApiClient, token: str) -> None:
    r = await client.post("/api/v1/auth/refresh", json={"refresh_token": token})
    assert r.status_code in (400, 401)
    code = r.json()["error"]["code"]
    assert code == ("VALIDATION_ERROR" if r.status_code == 400 else "INVALID_TOKEN")


async def test_logout_revokes_refresh_and_access_tokens(client: ApiClient) -> None:
    user = await client.signup()
    r = await client.post("/api/v1/auth/logout", headers=user["headers"])
    assert r.status_code == 200
    assert r.json() == {"message": "Logged out successfully"}
    assert (await client.get("/api/v1/users/me", headers=user["headers"])).status_code == 401
    r = await client.post(
        "/api/v1/auth/refresh", json={"refresh_token": user["tokens"]["refresh_token"]}
    )
    assert r.status_code == 401


async def test_logout_without_token_is_missing_token(client: ApiClient) -> None:
    r = await client.post("/api/v1/auth/logout")
    assert r.status_code == 401
    assert r.json()["error"]["code"] == "MISSING_TOKEN"


async def _reset_token(client: ApiClient, email: str) -> str:
    async with client.app.state.konfer.sessionmaker() as s:
        mail = (
            (
                await s.execute(
                    select(OutboxEmail)
                    .where(OutboxEmail.to_address == email)
                    .order_by(OutboxEmail.created_at.desc())
                )
            )
            .scalars()
            .first()
        )
    assert mail is not None
    assert mail.kind == "password_reset"
    return mail.body.split("Reset token: ")[1].split()[0]


async def test_forgot_and_reset_password_is_single_use_and_revokes_sessions(
    client: ApiClient,
) -> None:
    user = await client.signup()
    r = await client.post("/api/v1/auth/forgot-password", json={"email": user["email"]})
    assert r.status_code == 200
    token = await _reset_token(client, user["email"])

    r = await client.post(
        "/api/v1/auth/reset-password", json={"token": token, "new_password": "brand-new-pass"}
    )
    assert r.status_code == 200
    assert (await client.get("/api/v1/users/me", headers=user["headers"])).status_code == 401
    r = await client.post(
        "/api/v1/auth/login", json={"username": user["username"], "password": "brand-new-pass"}
    )
    assert r.status_code == 200
    r = await client.post(
        "/api/v1/auth/reset-password", json={"token": token, "new_password": "another-pass-1"}
    )
    assert r.status_code == 400
    assert "token" in r.json()["error"]["details"]


async def test_forgot_password_does_not_reveal_whether_an_account_exists(
    client: ApiClient,
) -> None:
    r1 = await client.post("/api/v1/auth/forgot-password", json={"email": "nobody@example.com"})
    user = await client.signup()
    r2 = await client.post("/api/v1/auth/forgot-password", json={"email": user["email"]})
    assert r1.status_code == r2.status_code == 200
    assert r1.json() == r2.json()


async def test_expired_reset_token_is_refused(client: ApiClient) -> None:
    from datetime import timedelta

    from konfer.api.db.models import PasswordReset
    from konfer.core.timeutil import utcnow

    user = await client.signup()
    await client.post("/api/v1/auth/forgot-password", json={"email": user["email"]})
    token = await _reset_token(client, user["email"])
    async with client.app.state.konfer.sessionmaker() as s:
        for reset in (await s.execute(select(PasswordReset))).scalars():
            if reset.user_id.hex == user["user_id"].replace("-", ""):
                reset.expires_at = utcnow() - timedelta(seconds=1)
        await s.commit()
    r = await client.post(
        "/api/v1/auth/reset-password", json={"token": token, "new_password": "brand-new-pass"}
    )
    assert r.status_code == 400


@pytest.mark.parametrize(
    "body",
    [
        {"token": "unknown", "new_password": "long-enough-1"},
        {"token": "unknown", "new_password": "short"},
        {"new_password": "long-enough-1"},
    ],
)
async def test_reset_password_bad_input(client: ApiClient, body: dict[str, str]) -> None:
    r = await client.post("/api/v1/auth/reset-password", json=body)
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "VALIDATION_ERROR"


async def test_csrf_token_is_signed_and_expires_in_future(client: ApiClient) -> None:
    r = await client.get("/api/v1/csrf-token")
    assert r.status_code == 200
    body = r.json()
    state = client.app.state.konfer
    assert state.tokens.verify_csrf(body["token"]) == "127.0.0.1"
    exp = jwt.decode(body["token"], options={"verify_signature": False})["exp"]
    assert exp > time.time()
    assert body["expires_at"].endswith("Z")
