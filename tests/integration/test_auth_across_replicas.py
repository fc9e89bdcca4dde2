"""Revocation reaches every replica at once, though each caches who is signed in."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import fresh_postgres_url, service_env
from tests.integration.replicas import KONFER, Cluster, cluster


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with cluster(
        tmp_path_factory.mktemp("auth-replicas"),
        fresh_postgres_url(),
        service_env("KONFER_TEST_REDIS_URL"),
    ) as c:
        c.start()
        c.start()
        yield c


async def login(c: httpx.AsyncClient, name: str) -> dict[str, str]:
    r = await c.post("/api/v1/auth/login", json={"username": name, "password": "password123"})
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


async def register(c: httpx.AsyncClient) -> str:
    name = f"r{uuid.uuid4().hex[:10]}"
    r = await c.post(
        "/api/v1/auth/register",
        json={"username": name, "email": f"{name}@example.com", "password": "password123"},
    )
    assert r.status_code == 201
    return name


async def test_ban_on_one_replica_stops_cached_token_on_the_other(
    pair: Cluster, tmp_path: Path
) -> None:
    one, two = (httpx.AsyncClient(base_url=r.http) for r in pair.replicas)
    async with one, two:
        admin_name = await register(one)
        proc = await asyncio.create_subprocess_exec(
            KONFER,
            "admin",
            "create",
            "--username",
            admin_name,
            "--email",
            f"{admin_name}@example.com",
            "--password",
            "unused-pw",
            env={**pair.env, "KONFER_DATA_DIR": str(tmp_path)},
            stdout=asyncio.subprocess.DEVNULL,
        )
        assert await proc.wait() == 0
        admin = await login(one, admin_name)
        victim_name = await register(one)
        victim = await login(one, victim_name)
        me = await two.get("/api/v1/users/me", headers=victim)
        assert me.status_code == 200  # now cached on replica two
        victim_id = me.json()["user_id"]
        r = await one.post(f"/api/v1/admin/users/{victim_id}/ban", headers=admin)
        assert r.status_code == 200
        await asyncio.sleep(0.05)  # one Redis pub/sub hop
        r = await two.get("/api/v1/users/me", headers=victim)
        assert r.status_code == 401


async def test_logout_on_one_replica_ends_the_session_on_the_other(pair: Cluster) -> None:
    one, two = (httpx.AsyncClient(base_url=r.http) for r in pair.replicas)
    async with one, two:
        name = await register(one)
        headers = await login(one, name)
        assert (await two.get("/api/v1/users/me", headers=headers)).status_code == 200
        assert (await one.post("/api/v1/auth/logout", headers=headers)).status_code == 200
        await asyncio.sleep(0.05)
        assert (await two.get("/api/v1/users/me", headers=headers)).status_code == 401


async def test_profile_change_is_visible_on_the_other_replica(pair: Cluster) -> None:
    one, two = (httpx.AsyncClient(base_url=r.http) for r in pair.replicas)
    async with one, two:
        name = await register(one)
        headers = await login(one, name)
        assert (await two.get("/api/v1/users/me", headers=headers)).json()["nickname"] is None
        r = await one.put("/api/v1/users/profile", json={"nickname": "Renamed"}, headers=headers)
        assert r.status_code == 200
        await asyncio.sleep(0.05)
        assert (await two.get("/api/v1/users/me", headers=headers)).json()["nickname"] == "Renamed"
