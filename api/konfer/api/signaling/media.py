"""Where signaling addressed to the SFU goes (``target_user_id`` absent or ``"sfu"``).

The SFU component fills this interface in; until a meeting has one, such messages are
answered with ``SFU_UNAVAILABLE`` so a client can fall back to mesh mode.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from konfer.api.signaling.presence import SessionInfo
from konfer.api.signaling.protocol import SignalingError
from konfer.core.tokens import MediaGrants


class MediaRouter(Protocol):
    async def join(
        self, session: SessionInfo, grants: MediaGrants, send: Callable[[dict[str, Any]], None]
    ) -> None:
        """The socket joined its meeting: become a peer of the SFU; ``send`` reaches it later."""
        ...

    async def handle(self, session: SessionInfo, message: dict[str, Any]) -> list[dict[str, Any]]:
        """Deliver one client message to the SFU; return messages for that client."""
        ...

    async def disconnect(self, session: SessionInfo) -> None: ...


class NoMediaRouter:
    async def join(
        self, session: SessionInfo, grants: MediaGrants, send: Callable[[dict[str, Any]], None]
    ) -> None:
        return None

    async def handle(self, session: SessionInfo, message: dict[str, Any]) -> list[dict[str, Any]]:
        raise SignalingError(
            "SFU_UNAVAILABLE",
            "This meeting has no SFU; address offers, answers and candidates to a "
            "target_user_id (mesh mode)",
        )

    async def disconnect(self, session: SessionInfo) -> None:
        return None
