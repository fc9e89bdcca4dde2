"""The api's application factory.

``create_app(settings)`` builds everything a replica needs at start — database (migrated),
signing keys, storage, rate limiter — and tears it down on shutdown. Tests build as many
apps as they like, each with its own settings.
"""

from __future__ import annotations

import logging
import socket
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector
from redis.asyncio import Redis

from konfer.api.db.engine import create_engine, create_sessionmaker
from konfer.api.db.migrate import upgrade
from konfer.api.errors import install_error_handlers
from konfer.api.metrics import ApiMetrics
from konfer.api.middleware import KonferMiddleware
from konfer.api.routers import (
    admin_users,
    auth,
    meetings,
    my_meetings,
    sessions,
    system,
    users,
)
from konfer.api.schemas.common import ERROR_RESPONSES
from konfer.api.services.bootstrap import ensure_admin
from konfer.api.services.passwords import PasswordHasher
from konfer.api.signaling import endpoint as signaling_endpoint
from konfer.api.signaling.hub import SignalingHub
from konfer.api.signaling.media import NoMediaRouter
from konfer.api.signaling.presence import MemoryPresence, Presence, RedisPresence
from konfer.api.state import AppState
from konfer.core.bus import Bus, MemoryBus, RedisBus
from konfer.core.keys import KeyRing
from konfer.core.ratelimit import MemoryRateLimiter, RateLimiter, RedisRateLimiter
from konfer.core.settings import Settings
from konfer.core.storage import storage_from_settings
from konfer.core.tokens import TokenCodec

log = logging.getLogger(__name__)


async def build_state(settings: Settings, passwords: PasswordHasher | None = None) -> AppState:
    engine = create_engine(settings)
    await upgrade(engine)
    keys = KeyRing.load(
        settings.resolved_keys_dir, settings.signing_key_id, generate=not settings.is_production
    )
    storage = storage_from_settings(settings)
    await storage.ensure_ready()
    redis: Redis | None = None
    limiter: RateLimiter
    presence: Presence
    bus: Bus
    if settings.redis_url:
        redis = Redis.from_url(settings.redis_url, decode_responses=True)
        limiter = RedisRateLimiter(redis)
        presence = RedisPresence(redis, settings.presence_ttl_seconds)
        bus = RedisBus(redis)
    else:
        limiter = MemoryRateLimiter()
        presence = MemoryPresence(settings.presence_ttl_seconds)
        bus = MemoryBus()
    metrics = ApiMetrics(registry := CollectorRegistry())
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    return AppState(
        settings=settings,
        engine=engine,
        sessionmaker=create_sessionmaker(engine),
        tokens=TokenCodec(keys, settings.token_issuer),
        storage=storage,
        rate_limiter=limiter,
        redis=redis,
        passwords=passwords or PasswordHasher(),
        registry=registry,
        metrics=metrics,
        presence=presence,
        bus=bus,
        replica_id=f"{socket.gethostname()}-{uuid.uuid4().hex[:8]}",
        hub=SignalingHub(bus, presence, NoMediaRouter(), metrics, settings.presence_ttl_seconds),
    )


async def close_state(state: AppState) -> None:
    await state.hub.stop()
    await state.bus.close()
    if state.redis is not None:
        await state.redis.aclose()
    await state.engine.dispose()


def _document_validation_as_400(app: FastAPI) -> None:
    """Invalid input answers 400 in the error envelope, so the schema must not promise 422."""
    from fastapi.openapi.utils import get_openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title, version=app.version, description=app.description, routes=app.routes
            )
            for path in schema.get("paths", {}).values():
                for operation in path.values():
                    operation.get("responses", {}).pop("422", None)
            for name in ("HTTPValidationError", "ValidationError"):
                schema.get("components", {}).get("schemas", {}).pop(name, None)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def create_app(
    settings: Settings | None = None, *, passwords: PasswordHasher | None = None
) -> FastAPI:
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state = await build_state(settings, passwords)
        app.state.konfer = state
        app.state.hub = state.hub
        await state.hub.start()
        await ensure_admin(state)
        log.info("api ready", extra={"url": settings.resolved_public_url})
        try:
            yield
        finally:
            await close_state(state)

    app = FastAPI(
        title="Konfer API",
        version="0.1.0",
        description="Self-hosted video meetings: identity, meetings, signaling, media and AI.",
        lifespan=lifespan,
    )
    install_error_handlers(app)
    app.add_middleware(KonferMiddleware, state_getter=lambda: app.state.konfer)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_credentials=False,
            allow_methods=["*"],
            allow_headers=["*"],
            expose_headers=[
                "X-Request-ID",
                "X-RateLimit-Limit",
                "X-RateLimit-Remaining",
                "X-RateLimit-Reset",
                "Retry-After",
            ],
        )
    _document_validation_as_400(app)
    app.include_router(system.router)
    app.include_router(signaling_endpoint.router)
    app.include_router(sessions.router, responses=ERROR_RESPONSES)
    for router in (
        auth.router,
        users.router,
        admin_users.router,
        meetings.router,
        my_meetings.router,
    ):
        app.include_router(router, responses=ERROR_RESPONSES)
    return app
