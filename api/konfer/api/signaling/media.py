"""Where signaling addressed to the SFU goes (``target_user_id`` absent or ``"sfu"``).

The SFU component fills this interface in; until a meeting has one, such messages are
answered with ``SFU_UNAVAILABLE`` so a client can fall back to mesh mode.
"""

from __future__ import annotations

from typing import Any, Protocol

from konfer.api.signaling.presence import SessionInfo
from konfer.api.signaling.protocol import SignalingError


class MediaRouter(Protocol):
    async def handle(self, session: SessionInfo, message: dict[str, Any]) -> list[dict[str, Any]]:
        """Deliver one client message to the SFU; return messages for that client."""
        ...

    async def disconnect(self, session: SessionInfo) -> None: ...


class NoMediaRouter:
    async def handle(self, session: SessionInfo, message: dict[str, Any]) -> list[dict[str, Any]]:
        raise SignalingError(
            "SFU_UNAVAILABLE",
            "This meeting has no SFU; address offers, answers and candidates to a "
            "target_user_id (mesh mode)",
        )

    async def disconnect(self, session: SessionInfo) -> None:
        return None
