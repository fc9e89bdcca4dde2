"""Fixtures shared by every test tier.

Integration tests run against the real servers ``scripts/with-services.sh`` starts and
finds through ``KONFER_TEST_*`` variables; under ``make test`` a missing server is a
failure, when pytest is run by hand it is a skip.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI

from konfer.api.app import create_app
from konfer.api.services.passwords import PasswordHasher
from konfer.core.settings import Settings

# Argon2 at its cheapest: tests exercise the same code path without paying 50 ms a hash.
FAST_PASSWORDS = PasswordHasher(time_cost=1, memory_kib=1024, parallelism=1)


def service_env(name: str) -> str:
    value = os.environ.get(name)
    if value:
        return value
    message = f"{name} is not set: run the suite through `make test`"
    if os.environ.get("KONFER_TEST_REQUIRE_SERVICES"):
        pytest.fail(message)
    pytest.skip(message)


def fresh_postgres_url() -> str:
    """A new empty database on the test server, so every app starts from migration zero."""
    admin = service_env("KONFER_TEST_PG_ADMIN_URL")
    base = service_env("KONFER_TEST_DATABASE_URL")
    name = f"konfer_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return base.rsplit("/", 1)[0] + f"/{name}"


SettingsFactory = Callable[..., Settings]


@pytest.fixture(scope="session")
def make_settings(tmp_path_factory: pytest.TempPathFactory) -> SettingsFactory:
    def make(backend: str = "sqlite", **overrides: Any) -> Settings:
        data_dir: Path = tmp_path_factory.mktemp(f"konfer-{backend}")
        values: dict[str, Any] = {
            "data_dir": data_dir,
            "json_logs": False,
            "rate_limit_enabled": False,
            "public_url": "http://testserver",
        }
        if backend == "postgres":
            values["database_url"] = fresh_postgres_url()
            values["redis_url"] = service_env("KONFER_TEST_REDIS_URL")
            values["s3_endpoint"] = service_env("KONFER_TEST_S3_ENDPOINT")
            values["s3_access_key"] = service_env("KONFER_TEST_S3_ACCESS_KEY")
            values["s3_secret_key"] = service_env("KONFER_TEST_S3_SECRET_KEY")
            values["s3_bucket"] = f"konfer-{uuid.uuid4().hex[:8]}"
        values.update(overrides)
        return Settings(_env_file=None, **values)  # type: ignore[call-arg]

    return make


class ApiClient(httpx.AsyncClient):
    """An httpx client bound to one app, with the app at hand for direct inspection."""

    app: FastAPI

    async def signup(self, *, password: str = "password123", **extra: Any) -> dict[str, Any]:
        """Register and log in a fresh user; returns ids, credentials and auth headers."""
        name = f"u{uuid.uuid4().hex[:10]}"
        body = {"username": name, "email": f"{name}@example.com", "password": password, **extra}
        r = await self.post("/api/v1/auth/register", json=body)
        assert r.status_code == 201, r.text
        user = r.json()
        r = await self.post(
            "/api/v1/auth/login", json={"username": body["username"], "password": password}
        )
        assert r.status_code == 200, r.text
        tokens = r.json()
        return {
            **user,
            "password": password,
            "tokens": tokens,
            "headers": {"Authorization": f"Bearer {tokens['access_token']}"},
        }

    async def make_admin(self) -> dict[str, Any]:
        """A fresh user promoted through the same code path as `konfer admin create`."""
        from konfer.api.services.bootstrap import create_admin

        user = await self.signup()
        state = self.app.state.konfer
        async with state.sessionmaker() as session:
            await create_admin(session, state.passwords, user["username"], user["email"], "x")
        return user


async def _client_for(app: FastAPI) -> AsyncIterator[ApiClient]:
    async with LifespanManager(app, startup_timeout=60, shutdown_timeout=30) as manager:
        transport = httpx.ASGITransport(app=manager.app, client=("127.0.0.1", 50000))
        async with ApiClient(transport=transport, base_url="http://testserver") as client:
            client.app = app
            yield client


@pytest.fixture
def open_client() -> Callable[[Settings], Any]:
    """Start an extra app (own settings) for a test; it stops with the test."""
    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def opener(settings: Settings) -> AsyncIterator[ApiClient]:
        async for client in _client_for(create_app(settings, passwords=FAST_PASSWORDS)):
            yield client

    return opener


@pytest.fixture(scope="session", params=["sqlite", "postgres"])
async def client(
    request: pytest.FixtureRequest, make_settings: SettingsFactory
) -> AsyncIterator[ApiClient]:
    """The api on SQLite + local disk, and on PostgreSQL + Redis + MinIO."""
    settings = make_settings(request.param)
    async for c in _client_for(create_app(settings, passwords=FAST_PASSWORDS)):
        yield c


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark each test with its tier from its folder, so ``-m unit`` selects fast tests."""
    for item in items:
        path = str(item.path)
        if "/unit/" in path:
            item.add_marker(pytest.mark.unit)
        elif "/integration/" in path:
            item.add_marker(pytest.mark.integration)
