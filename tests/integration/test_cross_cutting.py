"""Behaviour every route shares: envelope, request ids, body caps, health, metrics, JWKS."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from konfer.core.keys import KeyRing
from tests.conftest import ApiClient, SettingsFactory


async def test_unknown_route_uses_error_envelope(client: ApiClient) -> None:
    r = await client.get("/api/v1/does-not-exist")
    assert r.status_code == 404
    err = r.json()["error"]
    assert err["code"] == "RESOURCE_NOT_FOUND"
    assert err["timestamp"].endswith("Z")
    assert err["request_id"] == r.headers["x-request-id"]
    assert "detail" not in r.json()


async def test_wrong_method_uses_error_envelope(client: ApiClient) -> None:
    r = await client.delete("/api/v1/auth/login")
    assert r.status_code == 405
    assert r.json()["error"]["code"] == "METHOD_NOT_ALLOWED"


async def test_request_id_is_accepted_and_returned(client: ApiClient) -> None:
    r = await client.get("/health", headers={"X-Request-ID": "trace-abc.123"})
    assert r.headers["x-request-id"] == "trace-abc.123"
    r = await client.get("/api/v1/nope", headers={"X-Request-ID": "bad id with spaces"})
    assert r.headers["x-request-id"] != "bad id with spaces"
    assert r.json()["error"]["request_id"] == r.headers["x-request-id"]


async def test_oversized_json_body_is_413_and_writes_nothing(client: ApiClient) -> None:
    big = "x" * (client.app.state.konfer.settings.max_json_body_bytes + 10)
    r = await client.post(
        "/api/v1/auth/register",
        json={
            "username": "big_body_user",
            "email": "big@example.com",
            "password": "password123",
            "nickname": big,
        },
    )
    assert r.status_code == 413
    assert r.json()["error"]["code"] == "PAYLOAD_TOO_LARGE"
    r = await client.post(
        "/api/v1/auth/login", json={"username": "big_body_user", "password": "password123"}
    )
    assert r.status_code == 401


async def test_oversized_chunked_body_without_length_is_413(client: ApiClient) -> None:
    limit = client.app.state.konfer.settings.max_json_body_bytes

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(limit // 65536 + 2):
            yield b" " * 65536

    r = await client.post(
        "/api/v1/auth/login", content=chunks(), headers={"content-type": "application/json"}
    )
    assert r.status_code == 413
    assert r.json()["error"]["code"] == "PAYLOAD_TOO_LARGE"


@pytest.mark.parametrize(
    "header",
    [
        {},
        {"Authorization": "Bearer"},
        {"Authorization": "Bearer   "},
    ],
)
async def test_missing_token_is_401_missing_token(
    client: ApiClient, header: dict[str, str]
) -> None:
    r = await client.get("/api/v1/users/me", headers=header)
    assert r.status_code == 401
    assert r.json()["error"]["code"] == "MISSING_TOKEN"
    assert r.headers["www-authenticate"].startswith("Bearer")


@pytest.mark.parametrize(
    "value",
    [
        "Bearer not.a.jwt",
        "Basic dXNlcjpwYXNz",
        "Bearer eyJhbGciOiJub25lIn0.e30.",
    ],
)
async def test_malformed_token_is_401_invalid_token(client: ApiClient, value: str) -> None:
    r = await client.get("/api/v1/users/me", headers={"Authorization": value})
    assert r.status_code == 401
    assert r.json()["error"]["code"] == "INVALID_TOKEN"


async def test_tampered_expired_and_foreign_tokens_are_refused(
    client: ApiClient, tmp_path: object
) -> None:
    import uuid
    from pathlib import Path

    from konfer.core.tokens import MediaGrants, TokenCodec

    user = await client.signup()
    token = user["tokens"]["access_token"]
    head, payload, sig = token.split(".")
    tampered = f"{head}.{payload[:-2]}AA.{sig}"
    codec: TokenCodec = client.app.state.konfer.tokens
    expired = codec.issue_access(uuid.UUID(user["user_id"]), uuid.uuid4(), "user", ttl=-100)
    foreign_ring = KeyRing.load(Path(str(tmp_path)), None, generate=True)
    foreign = TokenCodec(foreign_ring, codec.issuer).issue_access(
        uuid.UUID(user["user_id"]), uuid.uuid4(), "admin", ttl=600
    )
    media = codec.issue_media(uuid.UUID(user["user_id"]), "x", MediaGrants(room="r"), ttl=600)
    for bad in (tampered, expired, foreign, media):
        r = await client.get("/api/v1/users/me", headers={"Authorization": f"Bearer {bad}"})
        assert r.status_code == 401, bad
        assert r.json()["error"]["code"] == "INVALID_TOKEN"


async def test_health_endpoints(client: ApiClient) -> None:
    r = await client.get("/health")
    assert r.json()["status"] == "healthy"
    r = await client.get("/api/v1/users/health")
    assert r.json()["service"] == "user-service"
    assert r.json()["status"] == "ok"
    r = await client.get("/health/ready")
    assert r.status_code == 200
    assert r.json()["checks"]["database"] == "ok"


async def test_metrics_are_labelled_by_route_template(client: ApiClient) -> None:
    user = await client.signup()
    await client.get(f"/api/v1/users/{user['user_id']}", headers=user["headers"])
    text = (await client.get("/metrics")).text
    assert 'http_requests_total{endpoint="/api/v1/users/{user_id}",method="GET"' in text
    assert user["user_id"] not in text
    assert "http_request_duration_seconds_bucket" in text
    assert 'endpoint="unmatched"' in text or "/api/v1/does-not-exist" not in text


async def test_jwks_publishes_the_signing_key(client: ApiClient) -> None:
    doc = (await client.get("/.well-known/jwks.json")).json()
    ring = KeyRing.from_jwks(doc)
    codec = client.app.state.konfer.tokens
    assert ring.get(codec.keys.active_kid) is not None
    assert all(k["kty"] == "OKP" and k["crv"] == "Ed25519" and "d" not in k for k in doc["keys"])


async def test_openapi_describes_every_route(client: ApiClient) -> None:
    paths = (await client.get("/openapi.json")).json()["paths"]
    for path in (
        "/api/v1/auth/register",
        "/api/v1/auth/login",
        "/api/v1/users/profile",
        "/api/v1/admin/users/{user_id}/ban",
        "/.well-known/jwks.json",
    ):
        assert path in paths


@pytest.mark.parametrize("rate_limits", [False, True], ids=["limits-off", "limits-on"])
async def test_a_request_never_inherits_the_previous_callers_identity(
    make_settings: SettingsFactory, open_client: Any, rate_limits: bool
) -> None:
    """Per-request state (the claims the middleware verified for rate limiting, the caller
    the dependencies resolved) stays with its request, also where the server hands every
    request the same lifespan ``state`` (this test client's lifespan manager does)."""
    settings = make_settings("sqlite", rate_limit_enabled=rate_limits)
    async with open_client(settings) as client:
        first = await client.signup()
        second = await client.signup()
        r = await client.get("/api/v1/users/me", headers=first["headers"])
        assert r.json()["username"] == first["username"]
        r = await client.get("/api/v1/users/me")
        assert r.status_code == 401
        assert r.json()["error"]["code"] == "MISSING_TOKEN"
        r = await client.get("/api/v1/users/me", headers={"Authorization": "Bearer garbage"})
        assert r.status_code == 401
        assert r.json()["error"]["code"] == "INVALID_TOKEN"
        r = await client.get("/api/v1/users/me", headers=second["headers"])
        assert r.json()["username"] == second["username"]
