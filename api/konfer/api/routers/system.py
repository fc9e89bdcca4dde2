"""Health probes, Prometheus metrics and the JWKS document."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text

from konfer.api.deps import StateDep
from konfer.core.ratelimit import ping
from konfer.core.timeutil import isoformat, utcnow

router = APIRouter(tags=["health"])


@router.get("/health")
async def health() -> dict[str, str]:
    """Liveness: the process serves requests."""
    return {"status": "healthy", "timestamp": isoformat(utcnow())}


@router.get("/health/ready")
async def ready(state: StateDep) -> JSONResponse:
    """Readiness: the database (and Redis, when configured) answer."""
    checks: dict[str, Any] = {}
    try:
        async with state.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as exc:
        checks["database"] = f"error: {type(exc).__name__}"
    if state.redis is not None:
        checks["redis"] = "ok" if await ping(state.redis) else "error"
    healthy = all(v == "ok" for v in checks.values())
    return JSONResponse(
        {
            "status": "ready" if healthy else "not_ready",
            "checks": checks,
            "timestamp": isoformat(utcnow()),
        },
        status_code=200 if healthy else 503,
    )


@router.get("/metrics", include_in_schema=False)
async def metrics(state: StateDep) -> Response:
    return Response(generate_latest(state.registry), media_type=CONTENT_TYPE_LATEST)


@router.get("/.well-known/jwks.json", tags=["auth"])
async def jwks(state: StateDep) -> JSONResponse:
    return JSONResponse(state.tokens.keys.jwks(), headers={"Cache-Control": "public, max-age=300"})
