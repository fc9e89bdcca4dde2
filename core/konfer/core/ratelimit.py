"""Rate limits as GCRA buckets, in Redis (shared by every replica) or in process.

GCRA keeps one timestamp per key — the theoretical arrival time — so a check is one Redis
round trip running a short Lua script with Redis's own clock (replica clocks may drift).
A limit allows ``burst`` requests at once and ``per_minute`` sustained.

Slot limiters cap how many things one key has in flight at once (concurrent uploads per
user), with the same Redis-or-in-process split.
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass
from typing import Protocol

from redis.asyncio import Redis

from konfer.core.settings import RateLimit


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    limit: int
    remaining: int
    reset_at: int
    retry_after: int


def _decide(limit: RateLimit, now: float, stored_tat: float | None) -> tuple[Decision, float]:
    """Pure GCRA step shared by the in-process limiter; the Lua script mirrors it."""
    interval = 60.0 / limit.per_minute
    tolerance = interval * limit.burst
    tat = max(stored_tat or now, now)
    new_tat = tat + interval
    if new_tat - now > tolerance:
        retry = new_tat - tolerance - now
        return Decision(False, limit.per_minute, 0, math.ceil(tat), max(1, math.ceil(retry))), tat
    remaining = int((tolerance - (new_tat - now)) // interval)
    return Decision(True, limit.per_minute, remaining, math.ceil(new_tat), 0), new_tat


class RateLimiter(Protocol):
    async def hit(self, key: str, limit: RateLimit) -> Decision: ...


class MemoryRateLimiter:
    """For a single process (``konfer up``); state dies with the process."""

    def __init__(self, max_keys: int = 100_000) -> None:
        self._tats: dict[str, float] = {}
        self._max_keys = max_keys

    async def hit(self, key: str, limit: RateLimit) -> Decision:
        now = time.time()
        decision, tat = _decide(limit, now, self._tats.get(key))
        if len(self._tats) >= self._max_keys:
            self._tats = {k: v for k, v in self._tats.items() if v > now}
        self._tats[key] = tat
        return decision


_GCRA_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local new_tat = tat + interval
if new_tat - now > tolerance then
  return {0, tostring(now), tostring(tat)}
end
redis.call('SET', KEYS[1], tostring(new_tat), 'PX', math.ceil((new_tat - now) * 1000) + 1000)
return {1, tostring(now), tostring(new_tat)}
"""


class RedisRateLimiter:
    def __init__(self, redis: Redis, prefix: str = "konfer:rl:") -> None:
        self._redis = redis
        self._prefix = prefix
        self._script = redis.register_script(_GCRA_LUA)

    async def hit(self, key: str, limit: RateLimit) -> Decision:
        interval = 60.0 / limit.per_minute
        tolerance = interval * limit.burst
        allowed, now_s, tat_s = await self._script(
            keys=[self._prefix + key], args=[repr(interval), repr(tolerance)]
        )
        now, tat = float(now_s), float(tat_s)
        if not int(allowed):
            retry = tat + interval - tolerance - now
            return Decision(False, limit.per_minute, 0, math.ceil(tat), max(1, math.ceil(retry)))
        remaining = int((tolerance - (tat - now)) // interval)
        return Decision(True, limit.per_minute, remaining, math.ceil(tat), 0)


async def ping(redis: Redis, within: float = 2.0) -> bool:
    try:
        async with asyncio.timeout(within):
            return bool(await redis.ping())
    except (OSError, TimeoutError, ConnectionError):
        return False


class SlotLimiter(Protocol):
    """At most ``limit`` things in flight per key (uploads per user), across replicas."""

    async def acquire(self, key: str, token: str, limit: int) -> bool: ...
    async def refresh(self, key: str, token: str) -> None: ...
    async def release(self, key: str, token: str) -> None: ...


class MemorySlotLimiter:
    """In-process slots for a single replica (``konfer up``)."""

    def __init__(self) -> None:
        self._held: dict[str, set[str]] = {}

    async def acquire(self, key: str, token: str, limit: int) -> bool:
        held = self._held.setdefault(key, set())
        if len(held) >= limit:
            return False
        held.add(token)
        return True

    async def refresh(self, key: str, token: str) -> None:
        return None

    async def release(self, key: str, token: str) -> None:
        held = self._held.get(key)
        if held is not None:
            held.discard(token)
            if not held:
                del self._held[key]


_SLOT_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local stale = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - stale)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[3]) then
  return 0
end
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('EXPIRE', KEYS[1], math.ceil(stale) + 60)
return 1
"""


class RedisSlotLimiter:
    """Slots as members of a sorted set scored by their last refresh (Redis's clock).

    A replica that dies mid-upload cannot release its slot; the slot goes stale once
    nobody refreshes it for ``stale_after`` seconds, so holders refresh while they work.
    """

    def __init__(self, redis: Redis, stale_after: float = 120.0, prefix: str = "konfer:slots:"):
        self._redis = redis
        self._prefix = prefix
        self.stale_after = stale_after
        self._script = redis.register_script(_SLOT_LUA)

    async def acquire(self, key: str, token: str, limit: int) -> bool:
        allowed = await self._script(
            keys=[self._prefix + key], args=[token, repr(self.stale_after), str(limit)]
        )
        return bool(int(allowed))

    async def refresh(self, key: str, token: str) -> None:
        now_s, now_us = await self._redis.time()
        await self._redis.zadd(self._prefix + key, {token: now_s + now_us / 1e6}, xx=True)

    async def release(self, key: str, token: str) -> None:
        await self._redis.zrem(self._prefix + key, token)
