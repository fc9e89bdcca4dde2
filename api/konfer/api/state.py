"""Everything the api builds once at start and hands to requests through dependencies."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from konfer.api.authcache import AuthCache
from konfer.api.inference.service import InferenceService
from konfer.api.metrics import ApiMetrics
from konfer.api.runtime.base import SfuRuntime
from konfer.api.runtime.recorders import RecorderRuntime
from konfer.api.services.passwords import PasswordHasher
from konfer.api.signaling.hub import SignalingHub
from konfer.api.signaling.presence import Presence
from konfer.core.bus import Bus
from konfer.core.ratelimit import RateLimiter, SlotLimiter
from konfer.core.settings import Settings
from konfer.core.storage import Storage
from konfer.core.tokens import TokenCodec

if TYPE_CHECKING:  # services import the state; the writer imports services
    from konfer.api.signaling.chatstore import ChatWriter


@dataclass(slots=True)
class AppState:
    settings: Settings
    engine: AsyncEngine
    sessionmaker: async_sessionmaker[AsyncSession]
    tokens: TokenCodec
    storage: Storage
    rate_limiter: RateLimiter
    upload_slots: SlotLimiter
    redis: Redis | None
    passwords: PasswordHasher
    registry: CollectorRegistry
    metrics: ApiMetrics
    presence: Presence
    bus: Bus
    replica_id: str
    hub: SignalingHub
    chat: ChatWriter
    auth_cache: AuthCache
    sfu_runtime: SfuRuntime | None
    recorder_runtime: RecorderRuntime | None = None
    inference: InferenceService | None = None
