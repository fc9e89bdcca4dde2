"""The api's request pipeline, as one pure ASGI middleware.

Per request, in order: request id, body-size cap, rate limit (with ``X-RateLimit-*``
headers on the response), then the app; afterwards metrics by route template and one JSON
access-log line. It is pure ASGI rather than ``BaseHTTPMiddleware`` because it wraps every
request, including WebSocket upgrades, and must not add a task per request.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from collections.abc import Callable, MutableMapping
from typing import Any

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from konfer.api.errors import error_body
from konfer.api.state import AppState
from konfer.core.errors import InvalidToken, KonferError, PayloadTooLarge, RateLimitExceeded
from konfer.core.ratelimit import Decision

log = logging.getLogger("konfer.api.access")

_REQUEST_ID_OK = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
_UNLIMITED_PREFIXES = (
    "/health",
    "/metrics",
    "/.well-known/",
    "/docs",
    "/openapi.json",
    "/redoc",
    "/api/v1/internal/",  # platform processes (recorders), each holding a signed token
)


# The AI rate limit covers every inference route, not only /ai/*.
_AI_PREFIXES = ("/api/v1/ai/", "/api/v1/speech/", "/api/v1/audio/", "/api/v1/video/")
_MODEL_ADMIN_PREFIXES = (
    "/api/v1/models",
    "/api/v1/nodes",
    "/api/v1/load-balancer/",
    "/api/v1/monitoring/",
    "/api/v1/failover/",
    "/api/v1/discovery/",
)


def rate_limit_class(path: str) -> str | None:
    """Which row of the documented rate-limit table a path belongs to."""
    if path.startswith(_UNLIMITED_PREFIXES) or path.endswith("/health"):
        return None
    if path.startswith("/api/v1/auth"):
        return "auth"
    if path.startswith("/api/v1/media/upload"):
        return "upload"
    if path.startswith(_AI_PREFIXES):
        return "ai"
    if path.startswith(_MODEL_ADMIN_PREFIXES):
        return None  # the REST document: model management is not rate limited
    if path.startswith("/ws/"):
        return "websocket"
    if path.startswith("/api/"):
        return "general"
    return None


def _json_error(err: KonferError, request_id: str) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    body = json.dumps(error_body(err, request_id)).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    for k, v in err.headers.items():
        headers.append((k.lower().encode(), v.encode()))
    if isinstance(err, RateLimitExceeded):
        headers.append((b"retry-after", str(err.retry_after).encode()))
    return err.status_code, headers, body


class KonferMiddleware:
    def __init__(self, app: ASGIApp, state_getter: Callable[[], AppState]) -> None:
        self.app = app
        self._state = state_getter

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        st = self._state()
        started = time.perf_counter()
        headers = Headers(scope=scope)
        incoming = headers.get("x-request-id")
        if incoming and _REQUEST_ID_OK.match(incoming):
            request_id = incoming
        else:  # 128 random bits as 32 hex digits, as uuid4().hex gave, at a fifth of its CPU
            request_id = os.urandom(16).hex()
        # The request's own copy of the lifespan state, as the ASGI spec asks of servers:
        # not every server copies it, and what is stored here (verified claims) must not
        # outlive the request.
        scope_state: MutableMapping[str, Any] = dict(scope.get("state") or {})
        scope["state"] = scope_state
        scope_state["request_id"] = request_id
        path: str = scope["path"]
        status_holder = [500]
        extra_headers: list[tuple[bytes, bytes]] = [(b"x-request-id", request_id.encode())]

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                status_holder[0] = message["status"]
                message.setdefault("headers", [])
                message["headers"] = list(message["headers"]) + extra_headers
            elif message["type"] == "websocket.accept" or (
                message["type"] == "websocket.close" and status_holder[0] == 500
            ):
                status_holder[0] = 101
            await send(message)

        try:
            early = await self._preflight(st, scope, headers, path, request_id, extra_headers)
            if early is not None:
                status, hdrs, body = early
                await send_wrapper(
                    {"type": "http.response.start", "status": status, "headers": hdrs}
                )
                await send_wrapper({"type": "http.response.body", "body": body})
                return
            if scope["type"] == "http":
                receive = self._limit_body(receive, st, path)
            await self.app(scope, receive, send_wrapper)
        finally:
            self._observe(st, scope, path, status_holder[0], started, request_id)

    async def _preflight(
        self,
        st: AppState,
        scope: Scope,
        headers: Headers,
        path: str,
        request_id: str,
        extra_headers: list[tuple[bytes, bytes]],
    ) -> tuple[int, list[tuple[bytes, bytes]], bytes] | None:
        if scope["type"] == "http":
            length = headers.get("content-length")
            limit = body_limit(st, path)
            if length is not None and length.isdigit() and int(length) > limit:
                return _json_error(
                    PayloadTooLarge(
                        f"Request body of {length} bytes exceeds the limit of {limit} bytes"
                    ),
                    request_id,
                )
        limit_class = rate_limit_class(path)
        if limit_class is None or not st.settings.rate_limit_enabled:
            return None
        key = f"{limit_class}:{self._identity(st, scope, headers)}"
        decision: Decision = await st.rate_limiter.hit(key, st.settings.rate_limits[limit_class])
        extra_headers.extend(
            [
                (b"x-ratelimit-limit", str(decision.limit).encode()),
                (b"x-ratelimit-remaining", str(decision.remaining).encode()),
                (b"x-ratelimit-reset", str(decision.reset_at).encode()),
            ]
        )
        if decision.allowed:
            return None
        st.metrics.rate_limited.labels(limit_class).inc()
        if scope["type"] == "websocket":
            scope["state"]["rate_limited"] = True  # the endpoint refuses in its own protocol
            return None
        return _json_error(RateLimitExceeded(decision.retry_after), request_id)

    def _identity(self, st: AppState, scope: Scope, headers: Headers) -> str:
        """Key a limit by user when the request carries a valid token, else by address."""
        auth = headers.get("authorization", "")
        scheme, _, token = auth.partition(" ")
        if scheme.lower() == "bearer" and token:
            try:
                claims = st.tokens.verify_access(token.strip())
            except InvalidToken as exc:
                scope["state"]["access_error"] = exc
            else:
                scope["state"]["access_claims"] = claims
                return f"u:{claims.user_id}"
        client = scope.get("client")
        return f"ip:{client[0] if client else 'unknown'}"

    def _limit_body(self, receive: Receive, st: AppState, path: str) -> Receive:
        limit = body_limit(st, path)
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    # An HTTPException passes through FastAPI's body parsing untouched and
                    # reaches the envelope handler as 413.
                    raise StarletteHTTPException(
                        413, detail=f"Request body exceeds the limit of {limit} bytes"
                    )
            return message

        return limited

    def _observe(
        self,
        st: AppState,
        scope: Scope,
        path: str,
        status: int,
        started: float,
        request_id: str,
    ) -> None:
        elapsed = time.perf_counter() - started
        route = scope.get("route")
        endpoint = getattr(route, "path", None) or "unmatched"
        method = scope.get("method", "WS")
        st.metrics.observe_request(endpoint, method, status, elapsed)
        if log.isEnabledFor(logging.INFO):
            claims = scope.get("state", {}).get("access_claims")
            log.info(
                "request",
                extra={
                    "method": method,
                    "path": path,
                    "endpoint": endpoint,
                    "status": status,
                    "duration_ms": round(elapsed * 1000, 2),
                    "request_id": request_id,
                    "user_id": str(claims.user_id) if claims else None,
                },
            )


def body_limit(st: AppState, path: str) -> int:
    """Bodies are capped per route; upload routes raise their own cap in settings."""
    if path == "/api/v1/users/upload-avatar":
        return st.settings.avatar_max_bytes + 64 * 1024
    if path == "/api/v1/media/upload":
        # The largest per-type cap plus room for the other form fields; the upload path
        # enforces the cap of the type it sniffs while the file streams.
        return st.settings.media_max_upload_bytes + 64 * 1024
    if path == "/api/v1/video/enhancement":
        return st.settings.ai_max_video_mb * 1024 * 1024 + 64 * 1024
    if path.startswith(("/api/v1/speech/", "/api/v1/audio/", "/api/v1/ai/transcribe")):
        return st.settings.ai_max_audio_mb * 1024 * 1024 + 64 * 1024
    return st.settings.max_json_body_bytes
