"""Argon2id password hashing, off the event loop.

Hashing costs about 0.2 s of CPU by design (see docs/benchmarks.md); it runs in a worker
thread so one login never stalls every other request on the replica.
"""

from __future__ import annotations

import asyncio

from pwdlib import PasswordHash
from pwdlib.hashers.argon2 import Argon2Hasher

# argon2-cffi's RFC 9106 "low memory" profile: 64 MiB, 3 passes, 4 lanes.
ARGON2_TIME_COST = 3
ARGON2_MEMORY_KIB = 65536
ARGON2_PARALLELISM = 4


class PasswordHasher:
    def __init__(
        self,
        time_cost: int = ARGON2_TIME_COST,
        memory_kib: int = ARGON2_MEMORY_KIB,
        parallelism: int = ARGON2_PARALLELISM,
    ) -> None:
        self._hash = PasswordHash(
            (Argon2Hasher(time_cost=time_cost, memory_cost=memory_kib, parallelism=parallelism),)
        )
        # Verified against when the user does not exist, so timing does not reveal it.
        self._dummy = self._hash.hash("konfer-timing-equaliser")

    async def hash(self, password: str) -> str:
        return await asyncio.to_thread(self._hash.hash, password)

    async def verify(self, password: str, hashed: str | None) -> tuple[bool, str | None]:
        """Return (valid, new hash if the stored one uses outdated parameters)."""
        target = hashed or self._dummy
        valid, updated = await asyncio.to_thread(self._hash.verify_and_update, password, target)
        if hashed is None:
            return False, None
        return bool(valid), updated
