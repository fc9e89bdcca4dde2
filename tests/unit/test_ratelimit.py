"""GCRA: ``burst`` requests at once, ``per_minute`` sustained."""

from __future__ import annotations

from konfer.core.ratelimit import MemoryRateLimiter, _decide
from konfer.core.settings import RateLimit

AUTH = RateLimit(per_minute=10, burst=5)


def test_burst_then_refusal_with_retry_after() -> None:
    tat = None
    now = 1000.0
    remaining = []
    for _ in range(5):
        d, tat = _decide(AUTH, now, tat)
        assert d.allowed
        remaining.append(d.remaining)
    assert remaining == [4, 3, 2, 1, 0]
    d, tat2 = _decide(AUTH, now, tat)
    assert not d.allowed
    assert d.retry_after == 6  # one request per 6 s at 10/min
    assert tat2 == tat  # a refused request costs nothing


def test_sustained_rate_is_per_minute() -> None:
    tat = None
    allowed = 0
    for i in range(600):  # one attempt per 100 ms for a minute
        d, tat = _decide(AUTH, 1000.0 + i * 0.1, tat)
        allowed += d.allowed
    assert allowed == 5 + 10 - 1 or allowed == 5 + 10


async def test_memory_limiter_keys_are_independent() -> None:
    lim = MemoryRateLimiter()
    for _ in range(5):
        assert (await lim.hit("a", AUTH)).allowed
    assert not (await lim.hit("a", AUTH)).allowed
    assert (await lim.hit("b", AUTH)).allowed
