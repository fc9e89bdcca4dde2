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
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector
from redis.asyncio import Redis
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response
from starlette.routing import Match, Mount
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

from konfer.api.authcache import CHANNEL as AUTH_CHANNEL
from konfer.api.authcache import AuthCache
from konfer.api.db.engine import create_engine, create_sessionmaker
from konfer.api.db.migrate import upgrade
from konfer.api.errors import install_error_handlers
from konfer.api.inference.setup import attach_inference, detach_inference
from konfer.api.media.probe import close_idle as close_idle_probes
from konfer.api.metrics import ApiMetrics
from konfer.api.middleware import KonferMiddleware
from konfer.api.routers import (
    admin_users,
    auth,
    ffmpeg,
    media,
    meetings,
    my_meetings,
    recordings,
    sessions,
    streaming,
    system,
    users,
    webrtc,
)
from konfer.api.routers import ai as ai_routes
from konfer.api.routers import ai_models as ai_model_routes
from konfer.api.runtime.base import SfuRuntime
from konfer.api.runtime.local import LocalSfuRuntime, MemoryDirectory, RedisDirectory
from konfer.api.runtime.recorders import LocalRecorderRuntime
from konfer.api.schemas.common import ERROR_RESPONSES
from konfer.api.services import recordings as recordings_service
from konfer.api.services import streaming as streaming_service
from konfer.api.services.bootstrap import ensure_admin
from konfer.api.services.passwords import PasswordHasher
from konfer.api.signaling import endpoint as signaling_endpoint
from konfer.api.signaling.chatstore import ChatWriter
from konfer.api.signaling.hub import SignalingHub
from konfer.api.signaling.media import NoMediaRouter
from konfer.api.signaling.presence import (
    MemoryPresence,
    Presence,
    RedisPresence,
    room_user_count,
)
from konfer.api.signaling.sfu_router import SfuMediaRouter
from konfer.api.state import AppState
from konfer.api.tracing import install_tracing
from konfer.core.bus import Bus, MemoryBus, RedisBus
from konfer.core.keys import KeyRing
from konfer.core.process import freeze_startup_heap
from konfer.core.ratelimit import (
    MemoryRateLimiter,
    MemorySlotLimiter,
    RateLimiter,
    RedisRateLimiter,
    RedisSlotLimiter,
    SlotLimiter,
)
from konfer.core.settings import Settings
from konfer.core.storage import storage_from_settings
from konfer.core.timeutil import isoformat, utcnow
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
    slots: SlotLimiter
    presence: Presence
    bus: Bus
    if settings.redis_url:
        redis = Redis.from_url(settings.redis_url, decode_responses=True)
        limiter = RedisRateLimiter(redis)
        slots = RedisSlotLimiter(redis)
        presence = RedisPresence(redis, settings.presence_ttl_seconds)
        bus = RedisBus(redis)
    else:
        limiter = MemoryRateLimiter()
        slots = MemorySlotLimiter()
        presence = MemoryPresence(settings.presence_ttl_seconds)
        bus = MemoryBus()
    metrics = ApiMetrics(registry := CollectorRegistry(), settings.service_name)
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    auth_cache = AuthCache()
    auth_cache.bus = bus
    sessionmaker = create_sessionmaker(engine, on_auth_change=auth_cache.invalidate)
    return AppState(
        settings=settings,
        engine=engine,
        sessionmaker=sessionmaker,
        tokens=TokenCodec(keys, settings.token_issuer),
        storage=storage,
        rate_limiter=limiter,
        upload_slots=slots,
        redis=redis,
        passwords=passwords or PasswordHasher(),
        registry=registry,
        metrics=metrics,
        presence=presence,
        bus=bus,
        replica_id=f"{socket.gethostname()}-{uuid.uuid4().hex[:8]}",
        hub=SignalingHub(bus, presence, NoMediaRouter(), metrics, settings.presence_ttl_seconds),
        chat=ChatWriter(engine, sessionmaker),
        sfu_runtime=None,
        auth_cache=auth_cache,
    )


def attach_sfu(state: AppState) -> None:
    """SFU mode: each meeting's media goes through a ``konfer sfu`` process."""
    settings = state.settings
    directory = RedisDirectory(state.redis) if state.redis is not None else MemoryDirectory()

    async def on_crash(meeting_id: str) -> None:
        router.forget_meeting(meeting_id)
        await state.hub.publish(
            meeting_id,
            {
                "type": "media-reconnect",
                "room_id": meeting_id,
                "reason": "sfu-restarted",
                "timestamp": isoformat(utcnow()),
            },
        )

    runtime: SfuRuntime
    if settings.runtime == "kubernetes":
        # Meeting objects the operator runs; participants feed its idle timeout.
        from konfer.api.runtime.kubernetes import KubernetesSfuRuntime

        async def participants(meeting_id: str) -> int:
            return await room_user_count(state.presence, meeting_id)

        runtime = KubernetesSfuRuntime(settings, participants)
    else:
        runtime = LocalSfuRuntime(settings, directory, on_crash=on_crash)
    router = SfuMediaRouter(runtime, state.tokens, settings.media_token_ttl_seconds)
    state.sfu_runtime = runtime
    state.hub.media = router

    async def on_recorder_exit(recording_id: str, code: int) -> None:
        await recordings_service.recorder_exited(state, recording_id, code)

    async def on_streamer_exit(stream_id: str, code: int) -> None:
        await streaming_service.streamer_exited(state, stream_id, code)

    if settings.runtime == "kubernetes":
        # Recording objects the operator runs as Jobs; recorders report over HTTP.
        from konfer.api.runtime.kubernetes import KubernetesRecorderRuntime
        from konfer.api.runtime.streamer_watch import StreamerEnd, StreamerWatchCollector

        async def on_stream_end(stream_id: str, end: StreamerEnd) -> bool:
            return await streaming_service.streamer_job_ended(state, stream_id, end)

        # Streamer Jobs that end without a report are noticed until close_state.
        k8s_recorders = KubernetesRecorderRuntime(settings, on_stream_end=on_stream_end)
        k8s_recorders.watch_streamers()
        if k8s_recorders.streamer_watcher is not None:
            state.metrics.registry.register(StreamerWatchCollector(k8s_recorders.streamer_watcher))
        state.recorder_runtime = k8s_recorders
        return
    state.recorder_runtime = LocalRecorderRuntime(
        settings, on_exit=on_recorder_exit, on_stream_exit=on_streamer_exit
    )


async def start_state(state: AppState) -> None:
    """Route the bus: auth invalidations to the cache, room channels to the hub."""
    if state.settings.sfu_enabled:
        attach_sfu(state)

    def dispatch(channel: str, data: str) -> None:
        if channel == AUTH_CHANNEL:
            state.auth_cache.on_bus(data)
        else:
            state.hub.deliver(channel, data)

    await state.bus.start(dispatch)
    await state.bus.subscribe(AUTH_CHANNEL)
    await state.hub.start()
    await attach_inference(state)


async def close_state(state: AppState) -> None:
    await state.hub.stop()
    await state.chat.close()
    await detach_inference(state)
    if state.recorder_runtime is not None:
        await state.recorder_runtime.close()
    if state.sfu_runtime is not None:
        await state.sfu_runtime.close()
    await state.bus.close()
    if state.redis is not None:
        await state.redis.aclose()
    await state.engine.dispose()
    await close_idle_probes()


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
    settings: Settings | None = None,
    *,
    passwords: PasswordHasher | None = None,
    freeze_heap: bool = False,
) -> FastAPI:
    """The api application. ``freeze_heap`` is for the server process (``konfer api``):
    after start-up the heap is frozen out of the cyclic collector's full passes
    (``konfer.core.process.freeze_startup_heap``); tests that start many apps in one
    process leave it off."""
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state = await build_state(settings, passwords)
        if tracing is not None:
            tracing.instrument_engine(state.engine)
        app.state.konfer = state
        app.state.hub = state.hub
        await start_state(state)
        await ensure_admin(state)
        if freeze_heap:
            freeze_startup_heap()
        log.info("api ready", extra={"url": settings.resolved_public_url})
        try:
            yield
        finally:
            await close_state(state)
            if tracing is not None:
                tracing.shutdown()

    app = FastAPI(
        title="Konfer API",
        version="0.1.0",
        description="Self-hosted video meetings: identity, meetings, signaling, media and AI.",
        lifespan=lifespan,
        # Traces come from ``konfer.api.tracing`` (KONFER_OTLP_ENDPOINT) and metrics from
        # prometheus-client; FastAPI's own OpenTelemetry would duplicate both wherever a
        # global provider is set, and checks the global providers on every request.
        telemetry={"tracing": False, "metrics": False, "logs": False, "auto_configure": False},
    )
    tracing = install_tracing(app, settings)  # KONFER_OTLP_ENDPOINT; None when unset
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
    # Routes are matched in order: the busiest routers come first.
    app.include_router(users.router, responses=ERROR_RESPONSES)
    app.include_router(meetings.router, responses=ERROR_RESPONSES)
    app.include_router(system.router)
    app.include_router(signaling_endpoint.router)
    for router in (
        auth.router,
        my_meetings.router,
        sessions.router,
        webrtc.router,
        admin_users.router,
        media.router,
        ffmpeg.router,
        recordings.router,
        recordings.meeting_router,
        recordings.internal_router,
        streaming.router,
        streaming.internal_router,
        ai_routes.router,
        ai_model_routes.router,
    ):
        app.include_router(router, responses=ERROR_RESPONSES)
    mount_web_client(app)  # keep last: it answers only what no api route does
    return app


# --- the browser client (web/) at / -----------------------------------------------------

WEB_DIR = Path(__file__).resolve().parents[3] / "web"
# Paths that belong to the api: the web client never answers them, so an unknown api path
# keeps its JSON 404 envelope and a wrong method on an api route keeps its 405.
_API_PREFIXES = ("/api/", "/ws/", "/admin/", "/health", "/metrics", "/docs", "/redoc")
_API_PATHS = ("/openapi.json", "/.well-known/jwks.json")
_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self' data: blob: https:; media-src 'self' blob: mediastream:; "
    "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
)


class _WebClient(StaticFiles):
    """Files of ``web/``; ``index.html`` for client-side routes such as a ``join_url``."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        try:
            response = await super().get_response(path, scope)
        except StarletteHTTPException as exc:
            last = path.rsplit("/", 1)[-1]
            if exc.status_code != 404 or "." in last:  # a missing file stays a 404
                raise
            response = await super().get_response("index.html", scope)
        response.headers["Cache-Control"] = "no-cache"  # plain ES modules: revalidate
        response.headers["X-Content-Type-Options"] = "nosniff"
        if response.media_type == "text/html":
            response.headers["Content-Security-Policy"] = _CSP
        return response


class _WebMount(Mount):
    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        path: str = scope.get("path", "")
        if scope["type"] != "http" or path.startswith(_API_PREFIXES) or path in _API_PATHS:
            return Match.NONE, {}
        return super().matches(scope)


def mount_web_client(app: FastAPI, directory: Path = WEB_DIR) -> None:
    """Serve the web client at ``/`` after every api route (absent directory: no client)."""
    if (directory / "index.html").is_file():
        app.router.routes.append(
            _WebMount("/", app=_WebClient(directory=directory, html=True), name="web")
        )
