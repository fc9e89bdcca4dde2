"""User management for administrators: listing, reading, editing, deleting, banning."""

from __future__ import annotations

import io
import math
import uuid
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from PIL import Image
from sqlalchemy import select

from konfer.api.db.models import AuthSession
from konfer.core.keys import KeyRing, generate_key
from konfer.core.tokens import TokenCodec
from tests.conftest import ApiClient
from tests.helpers import USER_PUBLIC_FIELDS, assert_error, user_row

ADMIN = "/api/v1/admin/users"


# --- helpers ---------------------------------------------------------------------------


async def open_sessions(client: ApiClient, user_id: str) -> int:
    async with client.app.state.konfer.sessionmaker() as s:
        rows = await s.execute(
            select(AuthSession.id).where(
                AuthSession.user_id == uuid.UUID(user_id), AuthSession.revoked_at.is_(None)
            )
        )
        return len(rows.all())


async def login(client: ApiClient, username: str, password: str) -> httpx.Response:
    return await client.post(
        "/api/v1/auth/login", json={"username": username, "password": password}
    )


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def listing(client: ApiClient, admin: dict[str, Any], **params: Any) -> dict[str, Any]:
    r = await client.get(ADMIN, params=params, headers=admin["headers"])
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def ids(body: dict[str, Any]) -> list[str]:
    return [u["user_id"] for u in body["users"]]


def png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (40, 40), (10, 200, 10)).save(out, format="PNG")
    return out.getvalue()


def target_routes(target: str) -> list[tuple[str, str, dict[str, Any]]]:
    """Every admin route, aimed at ``target`` where it takes an id."""
    return [
        ("GET", ADMIN, {}),
        ("GET", f"{ADMIN}/{target}", {}),
        ("PUT", f"{ADMIN}/{target}", {"json": {"nickname": "changed", "role": "admin"}}),
        ("DELETE", f"{ADMIN}/{target}", {}),
        ("POST", f"{ADMIN}/{target}/ban", {"json": {"reason": "because"}}),
        ("POST", f"{ADMIN}/{target}/unban", {}),
    ]


ROUTE_IDS = ["list", "get", "update", "delete", "ban", "unban"]


# --- who may call -----------------------------------------------------------------------


@pytest.mark.parametrize("route", range(6), ids=ROUTE_IDS)
async def test_non_admin_gets_403_on_every_admin_route_and_nothing_changes(
    client: ApiClient, route: int
) -> None:
    user = await client.signup()
    target = await client.signup(nickname="Target")
    before = await user_row(client, target["user_id"])
    for tid in (target["user_id"], user["user_id"], str(uuid.uuid4())):
        method, path, kw = target_routes(tid)[route]
        r = await client.request(method, path, headers=user["headers"], **kw)
        err = assert_error(r, 403, "INSUFFICIENT_PERMISSIONS")
        assert "details" not in err
        assert target["username"] not in r.text
    assert await user_row(client, target["user_id"]) == before
    assert (await user_row(client, user["user_id"]))["role"] == "user"
    assert (await client.get("/api/v1/users/me", headers=target["headers"])).status_code == 200


@pytest.mark.parametrize("kind", ["missing", "garbage", "expired", "other-key", "tampered"])
@pytest.mark.parametrize("route", range(6), ids=ROUTE_IDS)
async def test_admin_routes_refuse_bad_tokens_and_nothing_changes(
    client: ApiClient, tmp_path: Path, route: int, kind: str
) -> None:
    admin = await client.make_admin()
    target = await client.signup()
    before = await user_row(client, target["user_id"])
    state = client.app.state.konfer
    claims = jwt.decode(admin["tokens"]["access_token"], options={"verify_signature": False})
    uid, sid = uuid.UUID(claims["sub"]), uuid.UUID(claims["sid"])
    headers: dict[str, str]
    code = "INVALID_TOKEN"
    if kind == "missing":
        headers, code = {}, "MISSING_TOKEN"
    elif kind == "garbage":
        headers = bearer("garbage")
    elif kind == "expired":
        headers = bearer(state.tokens.issue_access(uid, sid, "admin", -100))
    elif kind == "other-key":
        key = generate_key(tmp_path / "keys")
        codec = TokenCodec(KeyRing([key], key.kid), state.settings.token_issuer)
        headers = bearer(codec.issue_access(uid, sid, "admin", 3600))
    else:
        head, payload, sig = admin["tokens"]["access_token"].split(".")
        headers = bearer(f"{head}.{payload}.{sig[:20]}{'A' if sig[20] != 'A' else 'B'}{sig[21:]}")
    method, path, kw = target_routes(target["user_id"])[route]
    r = await client.request(method, path, headers=headers, **kw)
    assert_error(r, 401, code)
    assert await user_row(client, target["user_id"]) == before


async def test_admin_role_is_read_from_the_database_not_the_token(client: ApiClient) -> None:
    admin = await client.make_admin()
    other_admin = await client.make_admin()
    token_role = jwt.decode(
        other_admin["tokens"]["access_token"], options={"verify_signature": False}
    )["role"]
    assert token_role == "user"  # signed in before the promotion …
    assert (await client.get(ADMIN, headers=other_admin["headers"])).status_code == 200  # … works

    r = await client.put(
        f"{ADMIN}/{other_admin['user_id']}", json={"role": "user"}, headers=admin["headers"]
    )
    assert r.status_code == 200, r.text
    assert r.json()["role"] == "user"
    r = await client.get(ADMIN, headers=other_admin["headers"])
    assert_error(r, 403, "INSUFFICIENT_PERMISSIONS")


# --- list -------------------------------------------------------------------------------


async def test_list_users_returns_documented_shape_and_defaults(client: ApiClient) -> None:
    admin = await client.make_admin()
    body = await listing(client, admin)
    assert set(body) == {"users", "pagination"}
    assert set(body["pagination"]) == {"page", "page_size", "total", "pages"}
    p = body["pagination"]
    assert (p["page"], p["page_size"]) == (1, 20)
    assert p["total"] >= 1
    assert p["pages"] == math.ceil(p["total"] / 20)
    assert 1 <= len(body["users"]) <= 20
    for u in body["users"]:
        assert set(u) == USER_PUBLIC_FIELDS
    assert "password" not in str(body)
    assert "argon2" not in str(body)


async def test_list_users_newest_first(client: ApiClient) -> None:
    admin = await client.make_admin()
    tag = f"ord{uuid.uuid4().hex[:8]}"
    made = [await client.signup(nickname=f"{tag} {i}") for i in range(3)]
    body = await listing(client, admin, search=tag)
    assert ids(body) == [u["user_id"] for u in reversed(made)]
    stamps = [u["created_at"] for u in body["users"]]
    assert stamps == sorted(stamps, reverse=True)


async def test_list_users_pagination_math(client: ApiClient) -> None:
    admin = await client.make_admin()
    tag = f"pg{uuid.uuid4().hex[:8]}"
    made = {(await client.signup(nickname=f"Page {tag} {i}"))["user_id"] for i in range(5)}

    seen: list[str] = []
    for page, expected in ((1, 2), (2, 2), (3, 1), (4, 0), (99, 0)):
        body = await listing(client, admin, search=tag, page=page, page_size=2)
        assert body["pagination"] == {"page": page, "page_size": 2, "total": 5, "pages": 3}
        assert len(body["users"]) == expected
        seen += ids(body)
    assert len(seen) == len(set(seen)) == 5
    assert set(seen) == made

    body = await listing(client, admin, search=tag, page_size=5)
    assert body["pagination"] == {"page": 1, "page_size": 5, "total": 5, "pages": 1}
    body = await listing(client, admin, search=tag, page_size=100)
    assert body["pagination"] == {"page": 1, "page_size": 100, "total": 5, "pages": 1}
    body = await listing(client, admin, search=tag, page_size=1, page=5)
    assert body["pagination"]["pages"] == 5
    assert len(body["users"]) == 1

    body = await listing(client, admin, search=f"nobody{uuid.uuid4().hex}")
    assert body == {"users": [], "pagination": {"page": 1, "page_size": 20, "total": 0, "pages": 0}}


async def test_list_users_search_matches_username_email_and_nickname(client: ApiClient) -> None:
    admin = await client.make_admin()
    tag, mail_tag = uuid.uuid4().hex[:10], uuid.uuid4().hex[:10]
    by_nick = await client.signup(nickname=f"Zed {tag.upper()} Smith")
    plain = await client.signup()

    # Username, case-insensitively.
    assert ids(await listing(client, admin, search=plain["username"].upper())) == [plain["user_id"]]
    # E-mail, by a part that is in neither username nor nickname.
    r = await client.put(
        f"{ADMIN}/{plain['user_id']}",
        json={"email": f"mail{mail_tag}box@example.com"},
        headers=admin["headers"],
    )
    assert r.status_code == 200, r.text
    assert ids(await listing(client, admin, search=f"MAIL{mail_tag}BOX@")) == [plain["user_id"]]
    assert ids(await listing(client, admin, search=plain["email"])) == []
    # Nickname, case-insensitively, by a substring.
    assert ids(await listing(client, admin, search=f"zed {tag}")) == [by_nick["user_id"]]
    assert ids(await listing(client, admin, search=tag)) == [by_nick["user_id"]]


async def test_list_users_search_treats_wildcards_literally(client: ApiClient) -> None:
    admin = await client.make_admin()
    tag = uuid.uuid4().hex[:8]
    underscore = await client.signup(nickname=f"wc_{tag}")
    await client.signup(nickname=f"wcX{tag}")
    percent = await client.signup(nickname=f"wc%{tag}")
    backslash = await client.signup(nickname=f"wc\\{tag}")
    assert ids(await listing(client, admin, search=f"wc_{tag}")) == [underscore["user_id"]]
    assert ids(await listing(client, admin, search=f"wc%{tag}")) == [percent["user_id"]]
    assert ids(await listing(client, admin, search=f"wc\\{tag}")) == [backslash["user_id"]]
    assert (await listing(client, admin, search="%%%"))["pagination"]["total"] == 0
    assert (await listing(client, admin, search="___"))["pagination"]["total"] == 0


async def test_list_users_filters_by_role_and_status(client: ApiClient) -> None:
    admin = await client.make_admin()
    tag = f"flt{uuid.uuid4().hex[:8]}"
    plain = await client.signup(nickname=f"{tag} plain")
    banned = await client.signup(nickname=f"{tag} banned")
    boss = await client.make_admin()
    gone = await client.signup(nickname=f"{tag} gone")
    r = await client.put(
        f"{ADMIN}/{boss['user_id']}", json={"nickname": f"{tag} boss"}, headers=admin["headers"]
    )
    assert r.status_code == 200
    assert (
        await client.post(f"{ADMIN}/{banned['user_id']}/ban", headers=admin["headers"])
    ).status_code == 200
    # A deleted account has no nickname left, so it is found by status alone.
    assert (
        await client.delete(f"{ADMIN}/{gone['user_id']}", headers=admin["headers"])
    ).status_code == 204

    assert set(ids(await listing(client, admin, search=tag))) == {
        plain["user_id"],
        banned["user_id"],
        boss["user_id"],
    }
    assert ids(await listing(client, admin, search=tag, role="admin")) == [boss["user_id"]]
    assert set(ids(await listing(client, admin, search=tag, role="user"))) == {
        plain["user_id"],
        banned["user_id"],
    }
    assert ids(await listing(client, admin, search=tag, status="banned")) == [banned["user_id"]]
    assert set(ids(await listing(client, admin, search=tag, status="active"))) == {
        plain["user_id"],
        boss["user_id"],
    }
    assert ids(await listing(client, admin, search=tag, role="user", status="active")) == [
        plain["user_id"]
    ]
    assert ids(await listing(client, admin, search=tag, role="admin", status="banned")) == []

    everyone_admin = await listing(client, admin, role="admin", page_size=100)
    assert all(u["role"] == "admin" for u in everyone_admin["users"])
    assert admin["user_id"] in ids(everyone_admin)
    deleted = await listing(client, admin, status="deleted", page_size=100)
    assert all(u["status"] == "deleted" and u["email"] is None for u in deleted["users"])
    total_deleted = deleted["pagination"]["total"]
    pages = math.ceil(total_deleted / 100)
    found = []
    for page in range(1, pages + 1):
        found += ids(await listing(client, admin, status="deleted", page_size=100, page=page))
    assert gone["user_id"] in found


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"page": 0}, "page"),
        ({"page": -1}, "page"),
        ({"page": "abc"}, "page"),
        ({"page": "1.5"}, "page"),
        ({"page": 1_000_001}, "page"),
        ({"page_size": 0}, "page_size"),
        ({"page_size": 101}, "page_size"),
        ({"page_size": "ten"}, "page_size"),
        ({"search": "s" * 101}, "search"),
        ({"role": "superuser"}, "role"),
        ({"role": "ADMIN"}, "role"),
        ({"status": "suspended"}, "status"),
    ],
)
async def test_list_users_rejects_bad_query_parameters(
    client: ApiClient, params: dict[str, Any], field: str
) -> None:
    admin = await client.make_admin()
    r = await client.get(ADMIN, params=params, headers=admin["headers"])
    err = assert_error(r, 400, "VALIDATION_ERROR")
    assert field in err["details"]


# --- get --------------------------------------------------------------------------------


async def test_get_user_returns_the_public_record(client: ApiClient) -> None:
    admin = await client.make_admin()
    user = await client.signup(nickname="Seen")
    r = await client.get(f"{ADMIN}/{user['user_id']}", headers=admin["headers"])
    assert r.status_code == 200
    body = r.json()
    assert set(body) == USER_PUBLIC_FIELDS
    assert body["user_id"] == user["user_id"]
    assert body["username"] == user["username"]
    assert body["email"] == user["email"]
    assert body["nickname"] == "Seen"
    assert (body["role"], body["status"]) == ("user", "active")
    me = await client.get("/api/v1/users/me", headers=user["headers"])
    assert body == me.json()


async def test_get_unknown_user_is_404(client: ApiClient) -> None:
    admin = await client.make_admin()
    missing = uuid.uuid4()
    r = await client.get(f"{ADMIN}/{missing}", headers=admin["headers"])
    err = assert_error(r, 404, "RESOURCE_NOT_FOUND")
    assert str(missing) in err["message"]


@pytest.mark.parametrize("bad_id", ["not-a-uuid", "123", "g" * 32, "00000000-0000-0000-0000"])
@pytest.mark.parametrize("route", range(1, 6), ids=ROUTE_IDS[1:])
async def test_malformed_uuid_in_path_is_400(client: ApiClient, route: int, bad_id: str) -> None:
    admin = await client.make_admin()
    method, path, kw = target_routes(bad_id)[route]
    r = await client.request(method, path, headers=admin["headers"], **kw)
    err = assert_error(r, 400, "VALIDATION_ERROR")
    assert "user_id" in err["details"]


# --- update -----------------------------------------------------------------------------


async def test_update_user_changes_profile_fields(client: ApiClient) -> None:
    admin = await client.make_admin()
    user = await client.signup()
    before = await user_row(client, user["user_id"])
    new_name = f"N{uuid.uuid4().hex[:10]}"
    r = await client.put(
        f"{ADMIN}/{user['user_id']}",
        json={
            "username": new_name,
            "email": f"{new_name.upper()}@EXAMPLE.com",
            "nickname": " Renamed ",
            "bio": "set by admin",
        },
        headers=admin["headers"],
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == USER_PUBLIC_FIELDS
    assert body["username"] == new_name
    assert body["email"] == f"{new_name.lower()}@example.com"
    assert body["nickname"] == "Renamed"
    assert body["bio"] == "set by admin"
    assert body["role"] == "user"
    row = await user_row(client, user["user_id"])
    assert row["username"] == new_name
    assert row["updated_at"] > before["updated_at"]
    assert row["password_hash"] == before["password_hash"]
    assert (await user_row(client, admin["user_id"]))["username"] == admin["username"]
    # The user's own session survives an admin edit and sees the change.
    me = await client.get("/api/v1/users/me", headers=user["headers"])
    assert me.json()["username"] == new_name


async def test_admin_can_promote_a_user_who_can_then_use_admin_routes(client: ApiClient) -> None:
    admin = await client.make_admin()
    user = await client.signup()
    assert_error(await client.get(ADMIN, headers=user["headers"]), 403, "INSUFFICIENT_PERMISSIONS")

    r = await client.put(
        f"{ADMIN}/{user['user_id']}", json={"role": "admin"}, headers=admin["headers"]
    )
    assert r.status_code == 200, r.text
    assert r.json()["role"] == "admin"
    assert (await user_row(client, user["user_id"]))["role"] == "admin"

    # Their existing token now opens the admin routes, and a fresh login does too.
    assert (await client.get(ADMIN, headers=user["headers"])).status_code == 200
    victim = await client.signup()
    r = await client.post(f"{ADMIN}/{victim['user_id']}/ban", headers=user["headers"])
    assert r.status_code == 200
    assert r.json()["status"] == "banned"
    fresh = await login(client, user["username"], user["password"])
    r = await client.get(
        f"{ADMIN}/{admin['user_id']}", headers=bearer(fresh.json()["access_token"])
    )
    assert r.status_code == 200


async def test_admin_cannot_demote_themselves(client: ApiClient) -> None:
    admin = await client.make_admin()
    before = await user_row(client, admin["user_id"])
    r = await client.put(
        f"{ADMIN}/{admin['user_id']}",
        json={"role": "user", "nickname": "x"},
        headers=admin["headers"],
    )
    assert_error(r, 403, "INSUFFICIENT_PERMISSIONS")
    assert await user_row(client, admin["user_id"]) == before
    assert (await client.get(ADMIN, headers=admin["headers"])).status_code == 200

    # Keeping their own role, or editing other fields, is fine.
    r = await client.put(
        f"{ADMIN}/{admin['user_id']}",
        json={"role": "admin", "bio": "still in charge"},
        headers=admin["headers"],
    )
    assert r.status_code == 200, r.text
    assert (r.json()["role"], r.json()["bio"]) == ("admin", "still in charge")


async def test_admin_can_demote_another_admin(client: ApiClient) -> None:
    admin = await client.make_admin()
    other = await client.make_admin()
    r = await client.put(
        f"{ADMIN}/{other['user_id']}", json={"role": "user"}, headers=admin["headers"]
    )
    assert r.status_code == 200
    assert r.json()["role"] == "user"
    assert_error(await client.get(ADMIN, headers=other["headers"]), 403, "INSUFFICIENT_PERMISSIONS")


@pytest.mark.parametrize("field", ["email", "username"])
async def test_update_user_to_a_taken_name_is_409_and_writes_nothing(
    client: ApiClient, field: str
) -> None:
    admin = await client.make_admin()
    taken = await client.signup()
    user = await client.signup()
    before = await user_row(client, user["user_id"])
    r = await client.put(
        f"{ADMIN}/{user['user_id']}",
        json={field: taken[field].upper(), "nickname": "should not stick"},
        headers=admin["headers"],
    )
    err = assert_error(r, 409, "RESOURCE_CONFLICT")
    assert err["details"] == {field: "already taken"}
    assert await user_row(client, user["user_id"]) == before


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"status": "banned"}, "status"),
        ({"password": "new-password-1"}, "password"),
        ({"password_hash": "x"}, "password_hash"),
        ({"ban_reason": "x"}, "ban_reason"),
        ({"user_id": str(uuid.uuid4())}, "user_id"),
        ({"role": "superuser"}, "role"),
        ({"role": "ADMIN"}, "role"),
        ({"role": 1}, "role"),
        ({"email": "nope"}, "email"),
        ({"email": None}, "email"),
        ({"username": "x"}, "username"),
        ({"username": None}, "username"),
        ({"username": ["abc"]}, "username"),
        ({"nickname": "n" * 101}, "nickname"),
        ({"bio": "b" * 501}, "bio"),
        ({"avatar_url": "file:///etc/passwd"}, "avatar_url"),
    ],
)
async def test_update_user_rejects_bad_input_and_writes_nothing(
    client: ApiClient, body: dict[str, Any], field: str
) -> None:
    admin = await client.make_admin()
    user = await client.signup()
    before = await user_row(client, user["user_id"])
    r = await client.put(f"{ADMIN}/{user['user_id']}", json=body, headers=admin["headers"])
    err = assert_error(r, 400, "VALIDATION_ERROR")
    assert field in err["details"]
    assert await user_row(client, user["user_id"]) == before


@pytest.mark.parametrize(
    "content", [b"{oops", b"[]", b'"admin"', b""], ids=["malformed", "list", "string", "empty"]
)
async def test_update_user_rejects_non_object_bodies(client: ApiClient, content: bytes) -> None:
    admin = await client.make_admin()
    user = await client.signup()
    before = await user_row(client, user["user_id"])
    r = await client.put(
        f"{ADMIN}/{user['user_id']}",
        content=content,
        headers={**admin["headers"], "content-type": "application/json"},
    )
    assert_error(r, 400, "VALIDATION_ERROR")
    assert await user_row(client, user["user_id"]) == before


async def test_update_user_oversized_body_is_413(client: ApiClient) -> None:
    admin = await client.make_admin()
    user = await client.signup()
    before = await user_row(client, user["user_id"])
    limit = client.app.state.konfer.settings.max_json_body_bytes
    r = await client.put(
        f"{ADMIN}/{user['user_id']}", json={"bio": "x" * limit}, headers=admin["headers"]
    )
    assert_error(r, 413, "PAYLOAD_TOO_LARGE")
    assert await user_row(client, user["user_id"]) == before


async def test_update_unknown_or_deleted_user_is_404(client: ApiClient) -> None:
    admin = await client.make_admin()
    r = await client.put(f"{ADMIN}/{uuid.uuid4()}", json={"bio": "x"}, headers=admin["headers"])
    assert_error(r, 404, "RESOURCE_NOT_FOUND")

    gone = await client.signup()
    assert (
        await client.delete(f"{ADMIN}/{gone['user_id']}", headers=admin["headers"])
    ).status_code == 204
    before = await user_row(client, gone["user_id"])
    r = await client.put(
        f"{ADMIN}/{gone['user_id']}",
        json={"email": "revived@example.com", "role": "admin"},
        headers=admin["headers"],
    )
    assert_error(r, 404, "RESOURCE_NOT_FOUND")
    assert await user_row(client, gone["user_id"]) == before


# --- delete -----------------------------------------------------------------------------


async def test_delete_user_anonymises_the_row_and_ends_every_session(client: ApiClient) -> None:
    admin = await client.make_admin()
    user = await client.signup(nickname="To Go")
    r = await client.post(
        "/api/v1/users/upload-avatar",
        files={"avatar": ("a.png", png(), "image/png")},
        headers=user["headers"],
    )
    assert r.status_code == 200
    avatar_url = r.json()["avatar_url"]
    avatar_key = (await user_row(client, user["user_id"]))["avatar_key"]

    r = await client.delete(f"{ADMIN}/{user['user_id']}", headers=admin["headers"])
    assert r.status_code == 204
    assert r.content == b""

    assert_error(
        await client.get("/api/v1/users/me", headers=user["headers"]), 401, "INVALID_TOKEN"
    )
    r = await client.post(
        "/api/v1/auth/refresh", json={"refresh_token": user["tokens"]["refresh_token"]}
    )
    assert_error(r, 401, "INVALID_TOKEN")
    assert_error(
        await login(client, user["username"], user["password"]), 401, "INVALID_CREDENTIALS"
    )
    assert await open_sessions(client, user["user_id"]) == 0

    r = await client.get(f"{ADMIN}/{user['user_id']}", headers=admin["headers"])
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "deleted"
    assert body["email"] is None
    assert body["nickname"] is None
    assert body["bio"] is None
    assert body["avatar_url"] is None
    assert body["username"] != user["username"]
    assert (await user_row(client, user["user_id"]))["password_hash"] is None
    assert await client.app.state.konfer.storage.stat(avatar_key) is None
    assert_error(await client.get(avatar_url), 404, "RESOURCE_NOT_FOUND")

    r = await client.post(
        "/api/v1/auth/register",
        json={"username": user["username"], "email": user["email"], "password": "password123"},
    )
    assert r.status_code == 201, r.text


async def test_admin_cannot_delete_themselves(client: ApiClient) -> None:
    admin = await client.make_admin()
    before = await user_row(client, admin["user_id"])
    r = await client.delete(f"{ADMIN}/{admin['user_id']}", headers=admin["headers"])
    assert_error(r, 403, "INSUFFICIENT_PERMISSIONS")
    assert await user_row(client, admin["user_id"]) == before
    assert (await client.get(ADMIN, headers=admin["headers"])).status_code == 200


async def test_delete_unknown_or_already_deleted_user_is_404(client: ApiClient) -> None:
    admin = await client.make_admin()
    assert_error(
        await client.delete(f"{ADMIN}/{uuid.uuid4()}", headers=admin["headers"]),
        404,
        "RESOURCE_NOT_FOUND",
    )
    user = await client.signup()
    assert (
        await client.delete(f"{ADMIN}/{user['user_id']}", headers=admin["headers"])
    ).status_code == 204
    assert_error(
        await client.delete(f"{ADMIN}/{user['user_id']}", headers=admin["headers"]),
        404,
        "RESOURCE_NOT_FOUND",
    )


async def test_admin_can_delete_another_admin(client: ApiClient) -> None:
    admin = await client.make_admin()
    other = await client.make_admin()
    r = await client.delete(f"{ADMIN}/{other['user_id']}", headers=admin["headers"])
    assert r.status_code == 204
    assert_error(await client.get(ADMIN, headers=other["headers"]), 401, "INVALID_TOKEN")


# --- ban / unban ------------------------------------------------------------------------


async def test_ban_ends_sessions_at_once_and_blocks_login(client: ApiClient) -> None:
    admin = await client.make_admin()
    user = await client.signup()
    assert (await client.get("/api/v1/users/me", headers=user["headers"])).status_code == 200

    r = await client.post(
        f"{ADMIN}/{user['user_id']}/ban",
        json={"reason": "  spamming rooms  "},
        headers=admin["headers"],
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == USER_PUBLIC_FIELDS
    assert body["status"] == "banned"
    assert body["user_id"] == user["user_id"]
    row = await user_row(client, user["user_id"])
    assert row["status"] == "banned"
    assert row["ban_reason"] == "spamming rooms"
    assert await open_sessions(client, user["user_id"]) == 0

    # The very next request with the old access token fails.
    assert_error(
        await client.get("/api/v1/users/me", headers=user["headers"]), 401, "INVALID_TOKEN"
    )
    r = await client.put(
        "/api/v1/users/profile", json={"nickname": "still here"}, headers=user["headers"]
    )
    assert_error(r, 401, "INVALID_TOKEN")
    assert (await user_row(client, user["user_id"]))["nickname"] is None
    r = await client.post(
        "/api/v1/auth/refresh", json={"refresh_token": user["tokens"]["refresh_token"]}
    )
    assert_error(r, 401, "INVALID_TOKEN")
    for ident in (user["username"], user["email"]):
        assert_error(await login(client, ident, user["password"]), 403, "ACCOUNT_BANNED")
    # A wrong password still says only "wrong credentials".
    assert_error(await login(client, user["username"], "nope-nope"), 401, "INVALID_CREDENTIALS")


async def test_ban_without_a_body_or_with_null_reason(client: ApiClient) -> None:
    admin = await client.make_admin()
    bodies: list[dict[str, Any]] = [{}, {"json": {}}, {"json": {"reason": None}}]
    for kw in bodies:
        user = await client.signup()
        r = await client.post(f"{ADMIN}/{user['user_id']}/ban", headers=admin["headers"], **kw)
        assert r.status_code == 200, r.text
        assert r.json()["status"] == "banned"
        assert (await user_row(client, user["user_id"]))["ban_reason"] is None


async def test_banned_admin_loses_admin_access(client: ApiClient) -> None:
    admin = await client.make_admin()
    other = await client.make_admin()
    r = await client.post(f"{ADMIN}/{other['user_id']}/ban", headers=admin["headers"])
    assert r.status_code == 200
    assert_error(await client.get(ADMIN, headers=other["headers"]), 401, "INVALID_TOKEN")


async def test_admin_cannot_ban_themselves(client: ApiClient) -> None:
    admin = await client.make_admin()
    before = await user_row(client, admin["user_id"])
    r = await client.post(
        f"{ADMIN}/{admin['user_id']}/ban", json={"reason": "oops"}, headers=admin["headers"]
    )
    assert_error(r, 403, "INSUFFICIENT_PERMISSIONS")
    assert await user_row(client, admin["user_id"]) == before
    assert (await client.get(ADMIN, headers=admin["headers"])).status_code == 200


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"reason": "r" * 501}, "reason"),
        ({"reason": 42}, "reason"),
        ({"reason": ["a"]}, "reason"),
        ({"reason": "ok", "days": 3}, "days"),
        ({"status": "active"}, "status"),
        (["reason"], "body"),
    ],
)
async def test_ban_rejects_bad_bodies_and_leaves_the_user_active(
    client: ApiClient, body: Any, field: str
) -> None:
    admin = await client.make_admin()
    user = await client.signup()
    before = await user_row(client, user["user_id"])
    r = await client.post(f"{ADMIN}/{user['user_id']}/ban", json=body, headers=admin["headers"])
    err = assert_error(r, 400, "VALIDATION_ERROR")
    assert field in err["details"]
    assert await user_row(client, user["user_id"]) == before
    assert (await client.get("/api/v1/users/me", headers=user["headers"])).status_code == 200


async def test_ban_malformed_or_oversized_body_leaves_the_user_active(client: ApiClient) -> None:
    admin = await client.make_admin()
    user = await client.signup()
    before = await user_row(client, user["user_id"])
    r = await client.post(
        f"{ADMIN}/{user['user_id']}/ban",
        content=b'{"reason": "x"',
        headers={**admin["headers"], "content-type": "application/json"},
    )
    assert_error(r, 400, "VALIDATION_ERROR")
    limit = client.app.state.konfer.settings.max_json_body_bytes
    r = await client.post(
        f"{ADMIN}/{user['user_id']}/ban", json={"reason": "x" * limit}, headers=admin["headers"]
    )
    assert_error(r, 413, "PAYLOAD_TOO_LARGE")
    assert await user_row(client, user["user_id"]) == before
    assert (await client.get("/api/v1/users/me", headers=user["headers"])).status_code == 200


async def test_ban_or_unban_unknown_or_deleted_user_is_404(client: ApiClient) -> None:
    admin = await client.make_admin()
    for action in ("ban", "unban"):
        r = await client.post(f"{ADMIN}/{uuid.uuid4()}/{action}", headers=admin["headers"])
        assert_error(r, 404, "RESOURCE_NOT_FOUND")
    gone = await client.signup()
    assert (
        await client.delete(f"{ADMIN}/{gone['user_id']}", headers=admin["headers"])
    ).status_code == 204
    before = await user_row(client, gone["user_id"])
    for action in ("ban", "unban"):
        r = await client.post(f"{ADMIN}/{gone['user_id']}/{action}", headers=admin["headers"])
        assert_error(r, 404, "RESOURCE_NOT_FOUND")
    assert await user_row(client, gone["user_id"]) == before
    assert before["status"] == "deleted"


async def test_unban_restores_login_but_not_old_sessions(client: ApiClient) -> None:
    admin = await client.make_admin()
    user = await client.signup()
    r = await client.post(
        f"{ADMIN}/{user['user_id']}/ban", json={"reason": "cool off"}, headers=admin["headers"]
    )
    assert r.status_code == 200

    r = await client.post(f"{ADMIN}/{user['user_id']}/unban", headers=admin["headers"])
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == USER_PUBLIC_FIELDS
    assert body["status"] == "active"
    row = await user_row(client, user["user_id"])
    assert row["status"] == "active"
    assert row["ban_reason"] is None

    # Sessions the ban ended stay ended; signing in again works.
    assert_error(
        await client.get("/api/v1/users/me", headers=user["headers"]), 401, "INVALID_TOKEN"
    )
    r = await login(client, user["username"], user["password"])
    assert r.status_code == 200
    me = await client.get("/api/v1/users/me", headers=bearer(r.json()["access_token"]))
    assert me.status_code == 200
    assert me.json()["status"] == "active"


async def test_unban_of_an_active_user_is_harmless(client: ApiClient) -> None:
    admin = await client.make_admin()
    user = await client.signup()
    r = await client.post(f"{ADMIN}/{user['user_id']}/unban", headers=admin["headers"])
    assert r.status_code == 200
    assert r.json()["status"] == "active"
    assert (await client.get("/api/v1/users/me", headers=user["headers"])).status_code == 200
