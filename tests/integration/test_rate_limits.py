"""The documented rate-limit table, shared across replicas through Redis."""

from __future__ import annotations

from typing import Any

from konfer.core.settings import RateLimit
from tests.conftest import SettingsFactory, service_env

# Sustained rates stay slow (a token every 10 s or more) so that a loaded machine, where a
# handful of requests can take seconds, never earns a token back before a test's 429.
TIGHT = {
    "auth": RateLimit(per_minute=6, burst=3),
    "general": RateLimit(per_minute=6, burst=4),
    "upload": RateLimit(per_minute=5, burst=5),
    "ai": RateLimit(per_minute=20, burst=10),
    "websocket": RateLimit(per_minute=30, burst=10),
}


async def test_every_limited_response_carries_rate_limit_headers(
    make_settings: SettingsFactory, open_client: Any
) -> None:
    async with open_client(make_settings("sqlite", rate_limit_enabled=True)) as c:
        r = await c.get("/api/v1/users/me")
        assert r.status_code == 401
        assert r.headers["x-ratelimit-limit"] == "100"
        assert int(r.headers["x-ratelimit-remaining"]) == 49
        assert int(r.headers["x-ratelimit-reset"]) > 0
        r = await c.get("/api/v1/csrf-token")
        assert r.headers["x-ratelimit-limit"] == "100"


async def test_auth_limit_answers_429_with_retry_after(
    make_settings: SettingsFactory, open_client: Any
) -> None:
    async with open_client(
        make_settings("sqlite", rate_limit_enabled=True, rate_limits=TIGHT)
    ) as c:
        body = {"username": "nobody", "password": "password123"}
        codes = [(await c.post("/api/v1/auth/login", json=body)).status_code for _ in range(4)]
        assert codes == [401, 401, 401, 429]
        r = await c.post("/api/v1/auth/login", json=body)
        assert r.status_code == 429
        err = r.json()["error"]
        assert err["code"] == "RATE_LIMIT_EXCEEDED"
        assert int(r.headers["retry-after"]) >= 1
        assert err["retry_after"] == int(r.headers["retry-after"])
        assert r.headers["x-ratelimit-remaining"] == "0"
        # A different limit class is counted separately.
        assert (await c.get("/api/v1/csrf-token")).status_code == 200


async def test_two_replicas_share_one_limit_through_redis(
    make_settings: SettingsFactory, open_client: Any
) -> None:
    redis_url = service_env("KONFER_TEST_REDIS_URL")
    a = make_settings("sqlite", rate_limit_enabled=True, rate_limits=TIGHT, redis_url=redis_url)
    b = make_settings("sqlite", rate_limit_enabled=True, rate_limits=TIGHT, redis_url=redis_url)
    from redis.asyncio import Redis

    r = Redis.from_url(redis_url)
    await r.flushdb()
    await r.aclose()
    async with open_client(a) as one, open_client(b) as two:
        seen = []
        for i in range(4):
            c = one if i % 2 == 0 else two
            seen.append((await c.get("/api/v1/csrf-token")).status_code)
        assert seen == [200, 200, 200, 200]
        assert (await one.get("/api/v1/csrf-token")).status_code == 429
        assert (await two.get("/api/v1/csrf-token")).status_code == 429


async def test_limits_are_per_user_when_authenticated(
    make_settings: SettingsFactory, open_client: Any
) -> None:
    async with open_client(
        make_settings(
            "sqlite",
            rate_limit_enabled=True,
            rate_limits={**TIGHT, "auth": RateLimit(per_minute=600, burst=20)},
        )
    ) as c:
        alice = await c.signup()
        bob = await c.signup()
        for _ in range(4):
            assert (await c.get("/api/v1/users/me", headers=alice["headers"])).status_code == 200
        assert (await c.get("/api/v1/users/me", headers=alice["headers"])).status_code == 429
        assert (await c.get("/api/v1/users/me", headers=bob["headers"])).status_code == 200


async def test_health_and_metrics_are_never_limited(
    make_settings: SettingsFactory, open_client: Any
) -> None:
    async with open_client(
        make_settings("sqlite", rate_limit_enabled=True, rate_limits=TIGHT)
    ) as c:
        for _ in range(10):
            assert (await c.get("/health")).status_code == 200
            assert (await c.get("/metrics")).status_code == 200
