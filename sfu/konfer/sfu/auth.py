"""Media-token checks for the SFU's control API: verified offline against the api's keys.

The SFU holds only public keys (a JWKS document from a file or URL, or the public half of
a key folder), so it can check tokens but never mint them. A token must be a media token
whose ``grants.room`` is this SFU's meeting.
"""

from __future__ import annotations

import json
import logging
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

from konfer.core.errors import InsufficientPermissions, InvalidToken, MissingToken
from konfer.core.keys import KeyRing
from konfer.core.tokens import MediaGrants, TokenCodec

log = logging.getLogger(__name__)

JWKS_REFRESH_SECONDS = 30.0


def ring_from_file(path: Path) -> KeyRing:
    return KeyRing.from_jwks(json.loads(path.read_text()))


def ring_from_url(url: str) -> KeyRing:
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"--jwks-url must be http(s): {url}")
    with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 (scheme checked)
        return KeyRing.from_jwks(json.loads(response.read()))


def ring_from_keys_dir(folder: Path) -> KeyRing:
    """Public keys only, even when the folder also holds the private ones."""
    return KeyRing.from_jwks(KeyRing.load(folder, None, generate=False).jwks())


class MediaAuth:
    """Checks ``Authorization: Bearer <media token>`` for one meeting."""

    def __init__(
        self,
        ring: KeyRing,
        issuer: str,
        meeting_id: str,
        reload: Callable[[], KeyRing] | None = None,
    ) -> None:
        self.codec = TokenCodec(ring, issuer)
        self.meeting_id = meeting_id
        self._reload = reload
        self._reloaded_at = 0.0

    def verify(self, authorization: str | None) -> tuple[str, MediaGrants]:
        """(user id, grants) of a media token for this meeting, or the error to answer."""
        if not authorization:
            raise MissingToken("A media token is required: Authorization: Bearer <token>")
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise InvalidToken("Authorization must be 'Bearer <media token>'")
        try:
            user_id, grants = self.codec.verify_media(token.strip())
        except InvalidToken as exc:
            if not self._maybe_reload(exc):
                raise
            user_id, grants = self.codec.verify_media(token.strip())
        if grants.room != self.meeting_id:
            raise InsufficientPermissions(
                f"This media token is for meeting {grants.room}, not {self.meeting_id}",
                details={"token_room": grants.room, "meeting_id": self.meeting_id},
            )
        return user_id, grants

    def _maybe_reload(self, exc: InvalidToken) -> bool:
        """Fetch the keys again when a token names a key we lack (the api rotated)."""
        if self._reload is None or "unknown key" not in exc.message:
            return False
        now = time.monotonic()
        if now - self._reloaded_at < JWKS_REFRESH_SECONDS:
            return False
        self._reloaded_at = now
        try:
            self.codec = TokenCodec(self._reload(), self.codec.issuer)
        except Exception:
            log.exception("reloading the JWKS failed")
            return False
        return True
