"""The caller's own account: profile, password change, avatar, deletion and user lookup."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from PIL import Image
from sqlalchemy import select

from konfer.api.db.models import AuthSession, OutboxEmail
from konfer.core.keys import KeyRing, SigningKey, generate_key
from konfer.core.storage import LocalStorage, S3Storage
from konfer.core.tokens import TokenCodec
from tests.conftest import ApiClient, SettingsFactory
from tests.helpers import USER_PUBLIC_FIELDS, assert_error, same_error, user_row

USERS = "/api/v1/users"


# --- helpers ---------------------------------------------------------------------------


async def session_rows(client: ApiClient, user_id: str) -> list[tuple[Any, ...]]:
    async with client.app.state.konfer.sessionmaker() as s:
        rows = await s.execute(
            select(AuthSession.id, AuthSession.revoked_at, AuthSession.revoke_reason)
            .where(AuthSession.user_id == uuid.UUID(user_id))
            .order_by(AuthSession.created_at, AuthSession.id)
        )
        return [tuple(r) for r in rows]


async def stored_avatar_keys(client: ApiClient, user_id: str) -> set[str]:
    """Object keys under the user's avatar prefix, on local disk or in MinIO."""
    storage = client.app.state.konfer.storage
    prefix = f"avatars/{user_id}/"

    def listing() -> set[str]:
        if isinstance(storage, LocalStorage):
            folder = storage.root / "avatars" / user_id
            if not folder.is_dir():
                return set()
            return {
                prefix + p.name for p in folder.iterdir() if not p.name.endswith((".meta", ".part"))
            }
        assert isinstance(storage, S3Storage)
        objects = storage.client.list_objects(storage.bucket, prefix=prefix, recursive=True)
        return {str(o.object_name) for o in objects}

    return await asyncio.to_thread(listing)


async def login(client: ApiClient, username: str, password: str) -> httpx.Response:
    return await client.post(
        "/api/v1/auth/login", json={"username": username, "password": password}
    )


async def second_session(client: ApiClient, user: dict[str, Any]) -> dict[str, Any]:
    r = await login(client, user["username"], user["password"])
    assert r.status_code == 200, r.text
    tokens = r.json()
    return {"tokens": tokens, "headers": {"Authorization": f"Bearer {tokens['access_token']}"}}


def image_bytes(
    fmt: str, size: tuple[int, int] = (64, 48), mode: str = "RGB", **save: Any
) -> bytes:
    colours: dict[str, Any] = {"1": 1, "P": 1, "RGB": (30, 120, 200), "RGBA": (30, 120, 200, 128)}
    img = Image.new(mode, size, colours[mode])
    out = io.BytesIO()
    img.save(out, format=fmt, **save)
    return out.getvalue()


def avatar_file(
    data: bytes, name: str = "a.png", ctype: str = "image/png"
) -> tuple[str, bytes, str]:
    return (name, data, ctype)


async def upload(
    client: ApiClient,
    user: dict[str, Any],
    data: bytes,
    *,
    field: str = "avatar",
    name: str = "a.png",
    ctype: str = "image/png",
) -> httpx.Response:
    return await client.post(
        f"{USERS}/upload-avatar",
        files={field: avatar_file(data, name, ctype)},
        headers=user["headers"],
    )


async def served(client: ApiClient, avatar_url: str) -> httpx.Response:
    r = await client.get(avatar_url)
    assert r.status_code == 200, r.text
    return r


# --- tokens: every way a bearer token can be missing or wrong --------------------------


def _claims(user: dict[str, Any]) -> dict[str, Any]:
    claims: dict[str, Any] = jwt.decode(
        user["tokens"]["access_token"], options={"verify_signature": False}
    )
    return claims


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


BAD_TOKENS = [
    "missing",
    "empty-bearer",
    "basic-scheme",
    "garbage",
    "expired",
    "tampered-claims",
    "tampered-signature",
    "unknown-key",
    "other-key-same-kid",
    "wrong-issuer",
    "wrong-audience",
    "alg-none",
    "unknown-session",
]


async def bad_auth(
    client: ApiClient, user: dict[str, Any], kind: str, tmp_path: Path
) -> tuple[dict[str, str], str]:
    """Headers carrying a bad token of the given kind, and the error code they must get."""
    state = client.app.state.konfer
    claims = _claims(user)
    uid, sid = uuid.UUID(claims["sub"]), uuid.UUID(claims["sid"])
    good = user["tokens"]["access_token"]
    head, payload, signature = good.split(".")
    token: str
    if kind == "missing":
        return {}, "MISSING_TOKEN"
    if kind == "empty-bearer":
        return {"Authorization": "Bearer   "}, "MISSING_TOKEN"
    if kind == "basic-scheme":
        return {"Authorization": f"Basic {good}"}, "INVALID_TOKEN"
    if kind == "garbage":
        token = "not-a.jwt.at-all"
    elif kind == "expired":
        token = state.tokens.issue_access(uid, sid, claims["role"], -100)
    elif kind == "tampered-claims":
        forged = {**json.loads(_unb64(payload)), "role": "admin", "exp": claims["exp"] + 9999}
        token = f"{head}.{_b64(json.dumps(forged).encode())}.{signature}"
    elif kind == "tampered-signature":
        raw = bytearray(_unb64(signature))
        raw[10] ^= 0xFF
        token = f"{head}.{payload}.{_b64(bytes(raw))}"
    elif kind in ("unknown-key", "other-key-same-kid"):
        key = generate_key(tmp_path / "other-keys")
        if kind == "other-key-same-kid":
            key = SigningKey(
                kid=state.tokens.keys.active_kid,
                public_key=key.public_key,
                private_key=key.private_key,
            )
        codec = TokenCodec(KeyRing([key], key.kid), state.settings.token_issuer)
        token = codec.issue_access(uid, sid, claims["role"], 3600)
    elif kind == "wrong-issuer":
        token = TokenCodec(state.tokens.keys, "someone-else").issue_access(
            uid, sid, claims["role"], 3600
        )
    elif kind == "wrong-audience":
        token, _ = state.tokens.issue_csrf(str(uid), 3600)
    elif kind == "alg-none":
        unsigned = {**claims, "exp": claims["exp"] + 60}
        token = jwt.encode(
            unsigned, "", algorithm="none", headers={"kid": state.tokens.keys.active_kid}
        )
    elif kind == "unknown-session":
        token = state.tokens.issue_access(uid, uuid.uuid4(), claims["role"], 3600)
    else:  # pragma: no cover
        raise AssertionError(kind)
    return {"Authorization": f"Bearer {token}"}, "INVALID_TOKEN"


# (method, path with {me}, request kwargs; "AVATAR" stands for a fresh PNG upload)
AUTHED_ROUTES: list[tuple[str, str, dict[str, Any]]] = [
    ("GET", "/me", {}),
    ("GET", "/profile", {}),
    ("PUT", "/profile", {"json": {"nickname": "hacked"}}),
    (
        "POST",
        "/change-password",
        {"json": {"current_password": "password123", "new_password": "hacked-pass-1"}},
    ),
    ("POST", "/upload-avatar", {"files": "AVATAR"}),
    ("DELETE", "/account", {"json": {"password": "password123"}}),
    ("GET", "/{me}", {}),
    ("PUT", "/{me}", {"json": {"nickname": "hacked"}}),
]


@pytest.mark.parametrize("kind", BAD_TOKENS)
@pytest.mark.parametrize(
    ("method", "path", "kwargs"), AUTHED_ROUTES, ids=[f"{m} {p}" for m, p, _ in AUTHED_ROUTES]
)
async def test_authenticated_routes_refuse_bad_tokens_and_write_nothing(
    client: ApiClient,
    tmp_path: Path,
    kind: str,
    method: str,
    path: str,
    kwargs: dict[str, Any],
) -> None:
    user = await client.signup()
    headers, code = await bad_auth(client, user, kind, tmp_path)
    before = await user_row(client, user["user_id"])
    sessions = await session_rows(client, user["user_id"])
    request = dict(kwargs)
    if request.get("files") == "AVATAR":
        request["files"] = {"avatar": avatar_file(image_bytes("PNG"))}
    r = await client.request(
        method, USERS + path.format(me=user["user_id"]), headers=headers, **request
    )
    err = assert_error(r, 401, code)
    assert "details" not in err
    assert r.headers["www-authenticate"].startswith("Bearer")
    assert await user_row(client, user["user_id"]) == before
    assert await session_rows(client, user["user_id"]) == sessions
    assert await stored_avatar_keys(client, user["user_id"]) == set()
    # The real token still works, so the failure was the token's alone.
    assert (await client.get(f"{USERS}/me", headers=user["headers"])).status_code == 200


async def test_token_of_a_logged_out_session_is_refused(client: ApiClient) -> None:
    user = await client.signup()
    assert (await client.post("/api/v1/auth/logout", headers=user["headers"])).status_code == 200
    r = await client.put(f"{USERS}/profile", json={"nickname": "late"}, headers=user["headers"])
    assert_error(r, 401, "INVALID_TOKEN")
    assert (await user_row(client, user["user_id"]))["nickname"] is None


# --- health -----------------------------------------------------------------------------


async def test_health_is_public_and_reports_ok(client: ApiClient) -> None:
    r = await client.get(f"{USERS}/health")
    assert r.status_code == 200
    body = r.json()
    assert set(body) == {"service", "status", "time"}
    assert body["service"] == "user-service"
    assert body["status"] == "ok"
    assert body["time"].endswith("Z")


async def test_health_ignores_a_bad_token(client: ApiClient) -> None:
    r = await client.get(f"{USERS}/health", headers={"Authorization": "Bearer garbage"})
    assert r.status_code == 200


# --- me / profile -----------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/me", "/profile"])
async def test_me_and_profile_return_the_callers_public_record(
    client: ApiClient, path: str
) -> None:
    user = await client.signup(nickname="  Shown Name ")
    r = await client.get(USERS + path, headers=user["headers"])
    assert r.status_code == 200
    body = r.json()
    assert set(body) == USER_PUBLIC_FIELDS
    assert body["user_id"] == user["user_id"]
    assert body["username"] == user["username"]
    assert body["email"] == user["email"]
    assert body["nickname"] == "Shown Name"
    assert body["bio"] is None
    assert body["avatar_url"] is None
    assert body["role"] == "user"
    assert body["status"] == "active"
    for stamp in ("created_at", "updated_at", "last_login_at"):
        assert body[stamp].endswith("Z")
    assert "password" not in r.text
    assert "argon2" not in r.text


async def test_update_profile_changes_fields_and_persists(client: ApiClient) -> None:
    user = await client.signup()
    before = await user_row(client, user["user_id"])
    new_name = f"N{uuid.uuid4().hex[:10]}"
    changes = {
        "username": f"  {new_name} ",
        "email": f"{new_name.upper()}@Example.COM",
        "nickname": "  Ada  ",
        "bio": "Likes meetings.",
        "avatar_url": "https://cdn.example.com/pics/ada.png",
    }
    r = await client.put(f"{USERS}/profile", json=changes, headers=user["headers"])
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == USER_PUBLIC_FIELDS
    assert body["username"] == new_name
    assert body["email"] == f"{new_name.lower()}@example.com"
    assert body["nickname"] == "Ada"
    assert body["bio"] == "Likes meetings."
    assert body["avatar_url"] == "https://cdn.example.com/pics/ada.png"
    assert body["role"] == "user"

    r2 = await client.get(f"{USERS}/profile", headers=user["headers"])
    assert r2.json() == body
    row = await user_row(client, user["user_id"])
    assert row["username"] == new_name
    assert row["email"] == body["email"]
    assert row["updated_at"] > before["updated_at"]
    assert row["created_at"] == before["created_at"]
    assert row["password_hash"] == before["password_hash"]
    # The new names sign in; the old one no longer does.
    assert (await login(client, new_name, user["password"])).status_code == 200
    assert (await login(client, body["email"], user["password"])).status_code == 200
    assert (await login(client, user["username"], user["password"])).status_code == 401


async def test_update_profile_is_partial_and_null_clears_optional_fields(
    client: ApiClient,
) -> None:
    user = await client.signup(nickname="Nick")
    r = await client.put(f"{USERS}/profile", json={"bio": "hello"}, headers=user["headers"])
    assert r.status_code == 200
    assert r.json()["nickname"] == "Nick"
    assert r.json()["bio"] == "hello"

    r = await client.put(f"{USERS}/profile", json={}, headers=user["headers"])
    assert r.status_code == 200
    assert r.json()["bio"] == "hello"

    r = await client.put(
        f"{USERS}/profile", json={"nickname": None, "bio": None}, headers=user["headers"]
    )
    assert r.status_code == 200
    assert r.json()["nickname"] is None
    assert r.json()["bio"] is None
    row = await user_row(client, user["user_id"])
    assert row["nickname"] is None
    assert row["bio"] is None
    assert row["username"] == user["username"]


async def test_update_profile_accepts_own_username_in_another_case(client: ApiClient) -> None:
    user = await client.signup()
    r = await client.put(
        f"{USERS}/profile",
        json={"username": user["username"].upper(), "email": user["email"].upper()},
        headers=user["headers"],
    )
    assert r.status_code == 200, r.text
    assert r.json()["username"] == user["username"].upper()
    assert r.json()["email"] == user["email"]


BAD_PROFILE_BODIES: list[tuple[dict[str, Any], str]] = [
    ({"role": "admin"}, "role"),
    ({"status": "active"}, "status"),
    ({"password": "new-password-1"}, "password"),
    ({"user_id": str(uuid.uuid4())}, "user_id"),
    ({"avatar_key": "avatars/x/y.png"}, "avatar_key"),
    ({"nickname": "ok", "is_admin": True}, "is_admin"),
    ({"username": "ab"}, "username"),
    ({"username": "has space"}, "username"),
    ({"username": "x" * 33}, "username"),
    ({"username": "bad/slash"}, "username"),
    ({"username": 12345}, "username"),
    ({"username": None}, "username"),
    ({"email": "not-an-email"}, "email"),
    ({"email": 42}, "email"),
    ({"email": None}, "email"),
    ({"nickname": "   "}, "nickname"),
    ({"nickname": "n" * 101}, "nickname"),
    ({"nickname": 7}, "nickname"),
    ({"nickname": ["a"]}, "nickname"),
    ({"bio": "b" * 501}, "bio"),
    ({"bio": {"text": "x"}}, "bio"),
    ({"avatar_url": "not a url"}, "avatar_url"),
    ({"avatar_url": "ftp://example.com/a.png"}, "avatar_url"),
    ({"avatar_url": "javascript:alert(1)"}, "avatar_url"),
    ({"avatar_url": 5}, "avatar_url"),
]


@pytest.mark.parametrize("path", ["/profile", "/{me}"])
@pytest.mark.parametrize(("body", "field"), BAD_PROFILE_BODIES)
async def test_update_profile_rejects_bad_input_and_writes_nothing(
    client: ApiClient, path: str, body: dict[str, Any], field: str
) -> None:
    user = await client.signup(nickname="Before")
    before = await user_row(client, user["user_id"])
    r = await client.put(
        USERS + path.format(me=user["user_id"]), json=body, headers=user["headers"]
    )
    err = assert_error(r, 400, "VALIDATION_ERROR")
    assert field in err["details"]
    assert await user_row(client, user["user_id"]) == before


@pytest.mark.parametrize(
    "content",
    [b"{not json", b"", b"[]", b'"nickname"', b"null", b"42", b'{"nickname": "a",}'],
    ids=["malformed", "empty", "list", "string", "null", "number", "trailing-comma"],
)
async def test_update_profile_rejects_non_object_bodies(client: ApiClient, content: bytes) -> None:
    user = await client.signup()
    before = await user_row(client, user["user_id"])
    r = await client.put(
        f"{USERS}/profile",
        content=content,
        headers={**user["headers"], "content-type": "application/json"},
    )
    err = assert_error(r, 400, "VALIDATION_ERROR")
    assert err["details"]
    assert await user_row(client, user["user_id"]) == before


async def test_update_profile_oversized_body_is_413_and_writes_nothing(
    client: ApiClient,
) -> None:
    user = await client.signup()
    before = await user_row(client, user["user_id"])
    limit = client.app.state.konfer.settings.max_json_body_bytes
    r = await client.put(
        f"{USERS}/profile", json={"bio": "x" * (limit + 10)}, headers=user["headers"]
    )
    assert_error(r, 413, "PAYLOAD_TOO_LARGE")

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted as it arrives
        yield b'{"bio": "'
        for _ in range(limit // 65536 + 2):
            yield b"y" * 65536
        yield b'"}'

    r = await client.put(
        f"{USERS}/profile",
        content=chunks(),
        headers={**user["headers"], "content-type": "application/json"},
    )
    assert_error(r, 413, "PAYLOAD_TOO_LARGE")
    assert await user_row(client, user["user_id"]) == before


@pytest.mark.parametrize("field", ["username", "email"])
async def test_update_profile_to_a_taken_name_is_409_and_writes_nothing(
    client: ApiClient, field: str
) -> None:
    taken = await client.signup()
    user = await client.signup()
    before = await user_row(client, user["user_id"])
    r = await client.put(
        f"{USERS}/profile", json={field: taken[field].upper()}, headers=user["headers"]
    )
    err = assert_error(r, 409, "RESOURCE_CONFLICT")
    assert err["details"] == {field: "already taken"}
    assert await user_row(client, user["user_id"]) == before


async def test_user_cannot_make_themselves_admin_through_the_profile(client: ApiClient) -> None:
    user = await client.signup()
    for path in ("/profile", f"/{user['user_id']}"):
        r = await client.put(
            USERS + path, json={"nickname": "x", "role": "admin"}, headers=user["headers"]
        )
        assert_error(r, 400, "VALIDATION_ERROR")
    assert (await user_row(client, user["user_id"]))["role"] == "user"
    r = await client.get("/api/v1/admin/users", headers=user["headers"])
    assert_error(r, 403, "INSUFFICIENT_PERMISSIONS")


# --- /users/{user_id} -------------------------------------------------------------------


async def test_get_user_by_id_returns_own_record(client: ApiClient) -> None:
    user = await client.signup()
    r = await client.get(f"{USERS}/{user['user_id']}", headers=user["headers"])
    assert r.status_code == 200
    me = await client.get(f"{USERS}/me", headers=user["headers"])
    assert r.json() == me.json()
    assert set(r.json()) == USER_PUBLIC_FIELDS


async def test_put_user_by_id_updates_own_record(client: ApiClient) -> None:
    user = await client.signup()
    r = await client.put(
        f"{USERS}/{user['user_id']}", json={"bio": "mine"}, headers=user["headers"]
    )
    assert r.status_code == 200, r.text
    assert set(r.json()) == USER_PUBLIC_FIELDS
    assert r.json()["bio"] == "mine"
    assert (await user_row(client, user["user_id"]))["bio"] == "mine"


async def test_other_users_record_is_403_whether_or_not_it_exists(client: ApiClient) -> None:
    user = await client.signup()
    other = await client.signup(nickname="Other")
    other_before = await user_row(client, other["user_id"])
    missing = str(uuid.uuid4())

    r_other = await client.get(f"{USERS}/{other['user_id']}", headers=user["headers"])
    r_missing = await client.get(f"{USERS}/{missing}", headers=user["headers"])
    assert_error(r_other, 403, "INSUFFICIENT_PERMISSIONS")
    assert same_error(r_other, r_missing)
    assert other["username"] not in r_other.text

    r_other = await client.put(
        f"{USERS}/{other['user_id']}", json={"nickname": "pwned"}, headers=user["headers"]
    )
    r_missing = await client.put(
        f"{USERS}/{missing}", json={"nickname": "pwned"}, headers=user["headers"]
    )
    assert_error(r_other, 403, "INSUFFICIENT_PERMISSIONS")
    assert same_error(r_other, r_missing)
    assert await user_row(client, other["user_id"]) == other_before


async def test_admin_can_read_and_update_any_user_through_user_routes(client: ApiClient) -> None:
    admin = await client.make_admin()
    user = await client.signup()
    r = await client.get(f"{USERS}/{user['user_id']}", headers=admin["headers"])
    assert r.status_code == 200
    assert r.json()["username"] == user["username"]
    assert set(r.json()) == USER_PUBLIC_FIELDS

    r = await client.put(
        f"{USERS}/{user['user_id']}",
        json={"nickname": "Set By Admin", "avatar_url": "https://example.com/p.png"},
        headers=admin["headers"],
    )
    assert r.status_code == 200, r.text
    assert r.json()["nickname"] == "Set By Admin"
    assert r.json()["avatar_url"] == "https://example.com/p.png"
    row = await user_row(client, user["user_id"])
    assert row["nickname"] == "Set By Admin"
    assert (await user_row(client, admin["user_id"]))["nickname"] is None

    # The role is the admin routes' business; this body has no such field.
    r = await client.put(
        f"{USERS}/{user['user_id']}", json={"role": "admin"}, headers=admin["headers"]
    )
    assert_error(r, 400, "VALIDATION_ERROR")
    assert (await user_row(client, user["user_id"]))["role"] == "user"


async def test_admin_asking_for_an_unknown_user_gets_404(client: ApiClient) -> None:
    admin = await client.make_admin()
    missing = uuid.uuid4()
    r = await client.get(f"{USERS}/{missing}", headers=admin["headers"])
    assert_error(r, 404, "RESOURCE_NOT_FOUND")
    r = await client.put(f"{USERS}/{missing}", json={"bio": "x"}, headers=admin["headers"])
    assert_error(r, 404, "RESOURCE_NOT_FOUND")


@pytest.mark.parametrize("bad_id", ["not-a-uuid", "12345", "0" * 33, "me2"])
async def test_malformed_user_id_in_path_is_400(client: ApiClient, bad_id: str) -> None:
    user = await client.signup()
    for r in (
        await client.get(f"{USERS}/{bad_id}", headers=user["headers"]),
        await client.put(f"{USERS}/{bad_id}", json={"bio": "x"}, headers=user["headers"]),
        await client.get(f"{USERS}/{bad_id}/avatar"),
    ):
        err = assert_error(r, 400, "VALIDATION_ERROR")
        assert "user_id" in err["details"]


# --- change password --------------------------------------------------------------------


async def test_change_password_keeps_current_session_and_revokes_the_others(
    client: ApiClient,
) -> None:
    user = await client.signup()
    other = await second_session(client, user)
    r = await client.post(
        f"{USERS}/change-password",
        json={"current_password": user["password"], "new_password": "brand-new-pass-1"},
        headers=user["headers"],
    )
    assert r.status_code == 200, r.text
    assert set(r.json()) == {"message"}

    assert (await client.get(f"{USERS}/me", headers=user["headers"])).status_code == 200
    r = await client.get(f"{USERS}/me", headers=other["headers"])
    assert_error(r, 401, "INVALID_TOKEN")
    r = await client.post(
        "/api/v1/auth/refresh", json={"refresh_token": other["tokens"]["refresh_token"]}
    )
    assert_error(r, 401, "INVALID_TOKEN")
    r = await client.post(
        "/api/v1/auth/refresh", json={"refresh_token": user["tokens"]["refresh_token"]}
    )
    assert r.status_code == 200

    sessions = await session_rows(client, user["user_id"])
    assert [reason for _, _, reason in sessions] == [None, "password_changed"]
    assert_error(
        await login(client, user["username"], user["password"]), 401, "INVALID_CREDENTIALS"
    )
    assert (await login(client, user["username"], "brand-new-pass-1")).status_code == 200


async def test_change_password_with_wrong_current_password_changes_nothing(
    client: ApiClient,
) -> None:
    user = await client.signup()
    other = await second_session(client, user)
    before = await user_row(client, user["user_id"])
    sessions = await session_rows(client, user["user_id"])
    r = await client.post(
        f"{USERS}/change-password",
        json={"current_password": "not-my-password", "new_password": "brand-new-pass-1"},
        headers=user["headers"],
    )
    err = assert_error(r, 400, "VALIDATION_ERROR")
    assert set(err["details"]) == {"current_password"}
    assert await user_row(client, user["user_id"]) == before
    assert await session_rows(client, user["user_id"]) == sessions
    assert (await client.get(f"{USERS}/me", headers=other["headers"])).status_code == 200
    assert (await login(client, user["username"], user["password"])).status_code == 200


async def test_change_password_to_the_same_password_is_refused(client: ApiClient) -> None:
    user = await client.signup()
    other = await second_session(client, user)
    before = await user_row(client, user["user_id"])
    r = await client.post(
        f"{USERS}/change-password",
        json={"current_password": user["password"], "new_password": user["password"]},
        headers=user["headers"],
    )
    err = assert_error(r, 400, "VALIDATION_ERROR")
    assert set(err["details"]) == {"new_password"}
    assert await user_row(client, user["user_id"]) == before
    assert (await client.get(f"{USERS}/me", headers=other["headers"])).status_code == 200


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"new_password": "brand-new-pass-1"}, "current_password"),
        ({"current_password": "password123"}, "new_password"),
        ({"current_password": "", "new_password": "brand-new-pass-1"}, "current_password"),
        ({"current_password": "password123", "new_password": "short"}, "new_password"),
        ({"current_password": "password123", "new_password": "n" * 129}, "new_password"),
        ({"current_password": "password123", "new_password": 12345678}, "new_password"),
        ({"current_password": ["password123"], "new_password": "x" * 10}, "current_password"),
        (
            {"current_password": "password123", "new_password": "x" * 10, "user_id": "x"},
            "user_id",
        ),
    ],
)
async def test_change_password_rejects_bad_input_and_writes_nothing(
    client: ApiClient, body: dict[str, Any], field: str
) -> None:
    user = await client.signup()
    before = await user_row(client, user["user_id"])
    r = await client.post(f"{USERS}/change-password", json=body, headers=user["headers"])
    err = assert_error(r, 400, "VALIDATION_ERROR")
    assert field in err["details"]
    assert await user_row(client, user["user_id"]) == before


async def test_change_password_malformed_or_oversized_body(client: ApiClient) -> None:
    user = await client.signup()
    before = await user_row(client, user["user_id"])
    r = await client.post(
        f"{USERS}/change-password",
        content=b'{"current_password": ',
        headers={**user["headers"], "content-type": "application/json"},
    )
    assert_error(r, 400, "VALIDATION_ERROR")
    limit = client.app.state.konfer.settings.max_json_body_bytes
    r = await client.post(
        f"{USERS}/change-password",
        json={"current_password": user["password"], "new_password": "z" * limit},
        headers=user["headers"],
    )
    assert_error(r, 413, "PAYLOAD_TOO_LARGE")
    assert await user_row(client, user["user_id"]) == before


# --- avatar -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "mode", "content_type", "served_format"),
    [
        ("PNG", "RGBA", "image/png", "PNG"),
        ("JPEG", "RGB", "image/jpeg", "JPEG"),
        ("WEBP", "RGB", "image/webp", "WEBP"),
        ("GIF", "P", "image/png", "PNG"),
    ],
)
async def test_upload_avatar_accepts_images_and_serves_them_back(
    client: ApiClient, fmt: str, mode: str, content_type: str, served_format: str
) -> None:
    user = await client.signup()
    data = image_bytes(fmt, (80, 60), mode)
    r = await upload(client, user, data, name=f"a.{fmt.lower()}", ctype=f"image/{fmt.lower()}")
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"avatar_url", "size", "content_type"}
    assert body["content_type"] == content_type
    assert body["avatar_url"].startswith(f"http://testserver{USERS}/{user['user_id']}/avatar?v=")

    me = (await client.get(f"{USERS}/me", headers=user["headers"])).json()
    assert me["avatar_url"] == body["avatar_url"]
    row = await user_row(client, user["user_id"])
    assert await stored_avatar_keys(client, user["user_id"]) == {row["avatar_key"]}
    info = await client.app.state.konfer.storage.stat(row["avatar_key"])
    assert info is not None
    assert info.size == body["size"]
    assert info.content_type == content_type

    got = await served(client, body["avatar_url"])  # public: no token
    assert got.headers["content-type"] == content_type
    assert int(got.headers["content-length"]) == body["size"] == len(got.content)
    assert "max-age" in got.headers["cache-control"]
    img = Image.open(io.BytesIO(got.content))
    assert img.format == served_format
    assert img.size == (80, 60)


async def test_upload_avatar_accepts_the_file_field_alias(client: ApiClient) -> None:
    user = await client.signup()
    r = await upload(client, user, image_bytes("PNG"), field="file")
    assert r.status_code == 200, r.text
    assert r.json()["content_type"] == "image/png"
    assert (await served(client, r.json()["avatar_url"])).content


async def test_upload_avatar_trusts_the_bytes_not_the_declared_type(client: ApiClient) -> None:
    user = await client.signup()
    r = await upload(client, user, image_bytes("PNG"), name="a.jpg", ctype="image/jpeg")
    assert r.status_code == 200, r.text
    assert r.json()["content_type"] == "image/png"
    got = await served(client, r.json()["avatar_url"])
    assert got.headers["content-type"] == "image/png"


async def test_upload_avatar_shrinks_large_images_to_512_px(client: ApiClient) -> None:
    user = await client.signup()
    r = await upload(client, user, image_bytes("PNG", (1200, 800)))
    assert r.status_code == 200, r.text
    img = Image.open(io.BytesIO((await served(client, r.json()["avatar_url"])).content))
    assert max(img.size) == 512
    assert img.size == (512, 341)

    r = await upload(client, user, image_bytes("JPEG", (300, 2000)), ctype="image/jpeg")
    img = Image.open(io.BytesIO((await served(client, r.json()["avatar_url"])).content))
    assert img.height == 512
    assert img.width <= 512

    r = await upload(client, user, image_bytes("PNG", (40, 30)))
    img = Image.open(io.BytesIO((await served(client, r.json()["avatar_url"])).content))
    assert img.size == (40, 30)  # small pictures are not blown up


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
async def test_upload_avatar_strips_exif_and_applies_its_orientation(
    client: ApiClient, fmt: str
) -> None:
    user = await client.signup()
    exif = Image.Exif()
    exif[0x010F] = "SecretCameraMaker"  # Make
    exif[0x0131] = "SecretSoftware"  # Software
    exif[0x0112] = 6  # Orientation: rotate 90° clockwise to display
    data = image_bytes(fmt, (64, 32), exif=exif.tobytes())
    assert b"SecretCameraMaker" in data
    assert Image.open(io.BytesIO(data)).getexif()

    r = await upload(client, user, data, ctype=f"image/{fmt.lower()}")
    assert r.status_code == 200, r.text
    got = (await served(client, r.json()["avatar_url"])).content
    assert b"SecretCameraMaker" not in got
    assert b"SecretSoftware" not in got
    assert b"Exif\x00\x00" not in got
    img = Image.open(io.BytesIO(got))
    assert dict(img.getexif()) == {}
    assert "exif" not in img.info
    assert img.size == (32, 64)  # turned upright before the metadata was dropped


async def test_second_avatar_upload_deletes_the_first_object(client: ApiClient) -> None:
    user = await client.signup()
    storage = client.app.state.konfer.storage
    first = await upload(client, user, image_bytes("PNG"))
    assert first.status_code == 200
    first_key = (await user_row(client, user["user_id"]))["avatar_key"]
    assert await storage.stat(first_key) is not None

    second = await upload(client, user, image_bytes("JPEG"), ctype="image/jpeg")
    assert second.status_code == 200
    second_key = (await user_row(client, user["user_id"]))["avatar_key"]
    assert second_key != first_key
    assert second.json()["avatar_url"] != first.json()["avatar_url"]
    assert await storage.stat(first_key) is None
    assert await storage.stat(second_key) is not None
    assert await stored_avatar_keys(client, user["user_id"]) == {second_key}
    got = await served(client, second.json()["avatar_url"])
    assert got.headers["content-type"] == "image/jpeg"


@pytest.mark.parametrize(
    ("data", "name", "ctype"),
    [
        (b"hello, I am plain text\n", "a.txt", "text/plain"),
        (b"hello, I am plain text pretending\n", "a.png", "image/png"),
        (bytes(range(256)) * 8, "a.png", "image/png"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 64, "a.png", "image/png"),
        (image_bytes("PNG", (200, 200))[:120], "a.png", "image/png"),
        (image_bytes("JPEG", (200, 200))[:300], "a.jpg", "image/jpeg"),
        (image_bytes("BMP"), "a.bmp", "image/bmp"),
        (image_bytes("TIFF"), "a.tiff", "image/tiff"),
        (b"<svg xmlns='http://www.w3.org/2000/svg'/>", "a.svg", "image/svg+xml"),
        (b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n", "a.pdf", "application/pdf"),
    ],
    ids=[
        "text",
        "text-as-png",
        "garbage",
        "png-magic-only",
        "truncated-png",
        "truncated-jpeg",
        "bmp",
        "tiff",
        "svg",
        "pdf",
    ],
)
async def test_upload_avatar_rejects_non_images_with_415_and_stores_nothing(
    client: ApiClient, data: bytes, name: str, ctype: str
) -> None:
    user = await client.signup()
    before = await user_row(client, user["user_id"])
    r = await upload(client, user, data, name=name, ctype=ctype)
    err = assert_error(r, 415, "UNSUPPORTED_MEDIA_TYPE")
    assert "avatar" in err["details"]
    assert await user_row(client, user["user_id"]) == before
    assert await stored_avatar_keys(client, user["user_id"]) == set()


async def test_failed_upload_keeps_the_previous_avatar(client: ApiClient) -> None:
    user = await client.signup()
    ok = await upload(client, user, image_bytes("PNG"))
    assert ok.status_code == 200
    before = await user_row(client, user["user_id"])
    r = await upload(client, user, b"not an image at all")
    assert_error(r, 415, "UNSUPPORTED_MEDIA_TYPE")
    assert await user_row(client, user["user_id"]) == before
    assert await stored_avatar_keys(client, user["user_id"]) == {before["avatar_key"]}
    assert (await served(client, ok.json()["avatar_url"])).headers["content-type"] == "image/png"


async def test_upload_avatar_rejects_an_empty_file(client: ApiClient) -> None:
    user = await client.signup()
    before = await user_row(client, user["user_id"])
    r = await upload(client, user, b"")
    err = assert_error(r, 400, "VALIDATION_ERROR")
    assert "avatar" in err["details"]
    assert await user_row(client, user["user_id"]) == before
    assert await stored_avatar_keys(client, user["user_id"]) == set()


async def test_upload_avatar_rejects_missing_or_non_file_fields(client: ApiClient) -> None:
    user = await client.signup()
    before = await user_row(client, user["user_id"])
    attempts = [
        await client.post(f"{USERS}/upload-avatar", headers=user["headers"]),
        await client.post(
            f"{USERS}/upload-avatar",
            files={"picture": avatar_file(image_bytes("PNG"))},
            headers=user["headers"],
        ),
        await client.post(
            f"{USERS}/upload-avatar", data={"avatar": "not-a-file"}, headers=user["headers"]
        ),
        await client.post(
            f"{USERS}/upload-avatar", json={"avatar": "aGVsbG8="}, headers=user["headers"]
        ),
    ]
    for r in attempts:
        err = assert_error(r, 400, "VALIDATION_ERROR")
        assert "avatar" in err["details"]
    assert await user_row(client, user["user_id"]) == before
    assert await stored_avatar_keys(client, user["user_id"]) == set()


async def test_upload_avatar_rejects_huge_dimensions(client: ApiClient) -> None:
    user = await client.signup()
    data = image_bytes("PNG", (7000, 7000), "1")  # 49 Mpx, a few KiB compressed
    r = await upload(client, user, data)
    err = assert_error(r, 400, "VALIDATION_ERROR")
    assert "avatar" in err["details"]
    assert await stored_avatar_keys(client, user["user_id"]) == set()


async def test_upload_avatar_enforces_the_size_limit(
    open_client: Callable[[Any], Any], make_settings: SettingsFactory
) -> None:
    limit = 4000
    async with open_client(make_settings("sqlite", avatar_max_bytes=limit)) as small:
        user = await small.signup()
        png = image_bytes("PNG", (32, 32))
        exact = png + b"\x00" * (limit - len(png))  # trailing bytes after IEND are ignored
        r = await upload(small, user, exact)
        assert r.status_code == 200, r.text
        before = await user_row(small, user["user_id"])

        # One byte over: read by the route, refused before decoding.
        r = await upload(small, user, exact + b"\x00")
        err = assert_error(r, 413, "PAYLOAD_TOO_LARGE")
        assert str(limit) in err["message"]
        # Far over: refused from Content-Length before the body is read.
        r = await upload(small, user, png + b"\x00" * (limit + 100_000))
        assert_error(r, 413, "PAYLOAD_TOO_LARGE")

        assert await user_row(small, user["user_id"]) == before
        assert await stored_avatar_keys(small, user["user_id"]) == {before["avatar_key"]}


async def test_avatar_of_a_user_without_one_or_an_unknown_user_is_404(client: ApiClient) -> None:
    user = await client.signup()
    r_none = await client.get(f"{USERS}/{user['user_id']}/avatar")
    r_unknown = await client.get(f"{USERS}/{uuid.uuid4()}/avatar")
    assert_error(r_none, 404, "RESOURCE_NOT_FOUND")
    assert same_error(r_none, r_unknown)


async def test_avatar_is_404_when_its_object_is_gone(client: ApiClient) -> None:
    user = await client.signup()
    r = await upload(client, user, image_bytes("PNG"))
    key = (await user_row(client, user["user_id"]))["avatar_key"]
    await client.app.state.konfer.storage.delete(key)
    assert_error(await client.get(r.json()["avatar_url"]), 404, "RESOURCE_NOT_FOUND")


async def test_external_avatar_url_or_null_stops_serving_and_deletes_the_stored_picture(
    client: ApiClient,
) -> None:
    user = await client.signup()
    storage = client.app.state.konfer.storage
    for replacement in ("https://example.com/me.png", None):
        r = await upload(client, user, image_bytes("PNG"))
        assert r.status_code == 200
        stored_key = (await user_row(client, user["user_id"]))["avatar_key"]
        r = await client.put(
            f"{USERS}/profile", json={"avatar_url": replacement}, headers=user["headers"]
        )
        assert r.status_code == 200, r.text
        assert r.json()["avatar_url"] == replacement
        assert (await user_row(client, user["user_id"]))["avatar_key"] is None
        assert await storage.stat(stored_key) is None
        assert await stored_avatar_keys(client, user["user_id"]) == set()
        assert_error(
            await client.get(f"{USERS}/{user['user_id']}/avatar"), 404, "RESOURCE_NOT_FOUND"
        )


async def test_sending_back_the_current_avatar_url_keeps_the_picture(client: ApiClient) -> None:
    user = await client.signup()
    url = (await upload(client, user, image_bytes("PNG"))).json()["avatar_url"]
    r = await client.put(
        f"{USERS}/profile", json={"avatar_url": url, "bio": "edited"}, headers=user["headers"]
    )
    assert r.status_code == 200, r.text
    assert r.json()["avatar_url"] == url
    assert (await user_row(client, user["user_id"]))["avatar_key"] is not None
    assert (await served(client, url)).headers["content-type"] == "image/png"


# --- account deletion -------------------------------------------------------------------


async def delete_account(
    client: ApiClient, user: dict[str, Any], body: Any, **kw: Any
) -> httpx.Response:
    return await client.request(
        "DELETE", f"{USERS}/account", json=body, headers=user["headers"], **kw
    )


async def test_delete_account_with_wrong_password_changes_nothing(client: ApiClient) -> None:
    user = await client.signup()
    await upload(client, user, image_bytes("PNG"))
    before = await user_row(client, user["user_id"])
    sessions = await session_rows(client, user["user_id"])
    r = await delete_account(client, user, {"password": "not-my-password"})
    err = assert_error(r, 400, "VALIDATION_ERROR")
    assert set(err["details"]) == {"password"}
    assert await user_row(client, user["user_id"]) == before
    assert await session_rows(client, user["user_id"]) == sessions
    assert await stored_avatar_keys(client, user["user_id"]) == {before["avatar_key"]}
    assert (await client.get(f"{USERS}/me", headers=user["headers"])).status_code == 200
    assert (await login(client, user["username"], user["password"])).status_code == 200


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "password"),
        ({"password": ""}, "password"),
        ({"password": 123}, "password"),
        ({"password": "p" * 129}, "password"),
        ({"password": "password123", "confirm": True}, "confirm"),
        (None, "body"),
        (["password123"], "body"),
    ],
)
async def test_delete_account_rejects_bad_input_and_changes_nothing(
    client: ApiClient, body: Any, field: str
) -> None:
    user = await client.signup()
    before = await user_row(client, user["user_id"])
    r = await delete_account(client, user, body)
    err = assert_error(r, 400, "VALIDATION_ERROR")
    assert field in err["details"]
    assert await user_row(client, user["user_id"]) == before


async def test_delete_account_without_a_body_or_with_malformed_json_is_400(
    client: ApiClient,
) -> None:
    user = await client.signup()
    before = await user_row(client, user["user_id"])
    r = await client.delete(f"{USERS}/account", headers=user["headers"])
    assert_error(r, 400, "VALIDATION_ERROR")
    r = await client.request(
        "DELETE",
        f"{USERS}/account",
        content=b'{"password": "password123"',
        headers={**user["headers"], "content-type": "application/json"},
    )
    assert_error(r, 400, "VALIDATION_ERROR")
    assert await user_row(client, user["user_id"]) == before


async def test_delete_account_erases_personal_data_and_frees_the_names(
    client: ApiClient,
) -> None:
    admin = await client.make_admin()
    user = await client.signup(nickname="Gone Soon")
    other = await second_session(client, user)
    up = await upload(client, user, image_bytes("PNG"))
    avatar_key = (await user_row(client, user["user_id"]))["avatar_key"]
    r = await client.post("/api/v1/auth/forgot-password", json={"email": user["email"]})
    assert r.status_code == 200

    r = await delete_account(client, user, {"password": user["password"]})
    assert r.status_code == 204
    assert r.content == b""

    # Every token of every session stops working at once.
    for headers in (user["headers"], other["headers"]):
        assert_error(await client.get(f"{USERS}/me", headers=headers), 401, "INVALID_TOKEN")
    r = await client.post(
        "/api/v1/auth/refresh", json={"refresh_token": user["tokens"]["refresh_token"]}
    )
    assert_error(r, 401, "INVALID_TOKEN")
    for ident in (user["username"], user["email"]):
        assert_error(await login(client, ident, user["password"]), 401, "INVALID_CREDENTIALS")

    # The row stays, anonymised; the admin sees it as deleted.
    r = await client.get(f"/api/v1/admin/users/{user['user_id']}", headers=admin["headers"])
    assert r.status_code == 200
    shown = r.json()
    assert shown["status"] == "deleted"
    assert shown["email"] is None
    assert shown["nickname"] is None
    assert shown["avatar_url"] is None
    assert shown["username"] != user["username"]
    row = await user_row(client, user["user_id"])
    assert row["password_hash"] is None
    assert row["avatar_key"] is None
    assert all(revoked is not None for _, revoked, _ in await session_rows(client, user["user_id"]))

    # Avatar and queued mail went with it.
    assert await client.app.state.konfer.storage.stat(avatar_key) is None
    assert_error(await client.get(up.json()["avatar_url"]), 404, "RESOURCE_NOT_FOUND")
    async with client.app.state.konfer.sessionmaker() as s:
        mails = await s.execute(select(OutboxEmail).where(OutboxEmail.to_address == user["email"]))
        assert mails.first() is None

    # Username and e-mail can be registered again.
    r = await client.post(
        "/api/v1/auth/register",
        json={"username": user["username"], "email": user["email"], "password": "password456"},
    )
    assert r.status_code == 201, r.text
    assert r.json()["user_id"] != user["user_id"]
    assert (await login(client, user["username"], "password456")).status_code == 200


async def test_account_deletion_cannot_be_blocked_by_a_lookalike_username(
    client: ApiClient,
) -> None:
    # User ids are public (they are in avatar URLs), so anyone can predict such a name.
    victim = await client.signup()
    r = await client.post(
        "/api/v1/auth/register",
        json={
            "username": f"deleted-{uuid.UUID(victim['user_id']).hex[:16]}",
            "email": f"{uuid.uuid4().hex[:8]}@example.com",
            "password": "password123",
        },
    )
    assert r.status_code == 201, r.text
    r = await delete_account(client, victim, {"password": victim["password"]})
    assert r.status_code == 204, r.text
    assert (await user_row(client, victim["user_id"]))["status"] == "deleted"
