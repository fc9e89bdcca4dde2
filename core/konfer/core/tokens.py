"""Signed tokens: user access tokens, CSRF tokens and meeting-scoped media tokens.

One codec for every kind, told apart by audience, so a media token can never be replayed
as an access token and vice versa. Verification needs only public keys (see ``keys``).
"""

from __future__ import annotations

import secrets
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import jwt

from konfer.core.errors import InvalidToken
from konfer.core.keys import KeyRing

ACCESS_AUDIENCE = "konfer-api"
CSRF_AUDIENCE = "konfer-csrf"
MEDIA_AUDIENCE = "konfer-media"
_ALGORITHMS = ["EdDSA"]
_LEEWAY_SECONDS = 5


@dataclass(frozen=True, slots=True)
class AccessClaims:
    user_id: uuid.UUID
    session_id: uuid.UUID
    role: str
    issued_at: int
    expires_at: int


@dataclass(frozen=True, slots=True)
class MediaGrants:
    """What a media token allows in one room, after LiveKit's VideoGrants."""

    room: str
    can_publish: bool = True
    can_subscribe: bool = True
    can_publish_sources: list[str] = field(
        default_factory=lambda: ["camera", "microphone", "screen_share"]
    )
    room_admin: bool = False
    hidden: bool = False
    recorder: bool = False


_VERIFIED_CACHE_SIZE = 20_000


class TokenCodec:
    def __init__(self, keys: KeyRing, issuer: str) -> None:
        self.keys = keys
        self.issuer = issuer
        # Access tokens are presented on every request for an hour; checking one signature
        # costs ~0.4 ms of CPU, remembering the result a dictionary lookup. Revocation is
        # not this cache's business: the caller still checks the session.
        self._verified: dict[str, AccessClaims] = {}

    def _encode(self, claims: dict[str, Any]) -> str:
        key = self.keys.active
        assert key.private_key is not None
        return jwt.encode(claims, key.private_key, algorithm="EdDSA", headers={"kid": key.kid})

    def _decode(self, token: str, audience: str) -> dict[str, Any]:
        try:
            kid = jwt.get_unverified_header(token).get("kid")
        except jwt.PyJWTError as exc:
            raise InvalidToken("Malformed token") from exc
        key = self.keys.get(kid) if isinstance(kid, str) else None
        if key is None:
            raise InvalidToken("Token was signed by an unknown key")
        try:
            return jwt.decode(
                token,
                key.public_key,
                algorithms=_ALGORITHMS,
                audience=audience,
                issuer=self.issuer,
                leeway=_LEEWAY_SECONDS,
                options={"require": ["exp", "iat", "sub", "aud", "iss"]},
            )
        except jwt.ExpiredSignatureError as exc:
            raise InvalidToken("Token has expired") from exc
        except jwt.PyJWTError as exc:
            raise InvalidToken() from exc

    def issue_access(self, user_id: uuid.UUID, session_id: uuid.UUID, role: str, ttl: int) -> str:
        now = int(time.time())
        return self._encode(
            {
                "iss": self.issuer,
                "aud": ACCESS_AUDIENCE,
                "sub": str(user_id),
                "sid": str(session_id),
                "role": role,
                "iat": now,
                "exp": now + ttl,
            }
        )

    def verify_access(self, token: str) -> AccessClaims:
        known = self._verified.get(token)
        if known is not None:
            if known.expires_at + _LEEWAY_SECONDS > time.time():
                return known
            del self._verified[token]
            raise InvalidToken("Token has expired")
        claims = self._verify_access(token)
        if len(self._verified) >= _VERIFIED_CACHE_SIZE:
            self._verified.clear()
        self._verified[token] = claims
        return claims

    def _verify_access(self, token: str) -> AccessClaims:
        c = self._decode(token, ACCESS_AUDIENCE)
        try:
            return AccessClaims(
                user_id=uuid.UUID(c["sub"]),
                session_id=uuid.UUID(c["sid"]),
                role=str(c["role"]),
                issued_at=int(c["iat"]),
                expires_at=int(c["exp"]),
            )
        except (KeyError, ValueError, TypeError) as exc:
            raise InvalidToken() from exc

    def issue_csrf(self, subject: str, ttl: int) -> tuple[str, int]:
        now = int(time.time())
        exp = now + ttl
        token = self._encode(
            {
                "iss": self.issuer,
                "aud": CSRF_AUDIENCE,
                "sub": subject,
                "iat": now,
                "exp": exp,
                "nonce": secrets.token_urlsafe(12),
            }
        )
        return token, exp

    def verify_csrf(self, token: str) -> str:
        return str(self._decode(token, CSRF_AUDIENCE)["sub"])

    def issue_media(self, user_id: uuid.UUID, name: str, grants: MediaGrants, ttl: int) -> str:
        now = int(time.time())
        return self._encode(
            {
                "iss": self.issuer,
                "aud": MEDIA_AUDIENCE,
                "sub": str(user_id),
                "name": name,
                "iat": now,
                "exp": now + ttl,
                "jti": secrets.token_hex(8),
                "video": {
                    "room": grants.room,
                    "canPublish": grants.can_publish,
                    "canSubscribe": grants.can_subscribe,
                    "canPublishSources": list(grants.can_publish_sources),
                    "roomAdmin": grants.room_admin,
                    "hidden": grants.hidden,
                    "recorder": grants.recorder,
                },
            }
        )

    def verify_media(self, token: str) -> tuple[str, MediaGrants]:
        c = self._decode(token, MEDIA_AUDIENCE)
        try:
            v = c["video"]
            grants = MediaGrants(
                room=str(v["room"]),
                can_publish=bool(v["canPublish"]),
                can_subscribe=bool(v["canSubscribe"]),
                can_publish_sources=[str(s) for s in v["canPublishSources"]],
                room_admin=bool(v["roomAdmin"]),
                hidden=bool(v["hidden"]),
                recorder=bool(v["recorder"]),
            )
        except (KeyError, TypeError) as exc:
            raise InvalidToken() from exc
        return str(c["sub"]), grants
