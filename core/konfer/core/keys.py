"""Ed25519 signing keys with key ids, and the JWKS document built from them.

The api signs with one active key and accepts every key it holds, so a platform team
rotates by adding a key to the Secret, switching ``KONFER_SIGNING_KEY_ID``, and removing
the old key once its tokens have expired. The SFU, recorders and model servers build a
verify-only ring from ``/.well-known/jwks.json`` and so can never mint tokens.
"""

from __future__ import annotations

import base64
import logging
import os
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

log = logging.getLogger(__name__)

PRIVATE_SUFFIX = ".pem"
PUBLIC_SUFFIX = ".pub.pem"


class KeyRingError(Exception):
    """The key folder cannot give a usable signing key."""


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True, slots=True)
class SigningKey:
    kid: str
    public_key: Ed25519PublicKey
    private_key: Ed25519PrivateKey | None = None

    def jwk(self) -> dict[str, str]:
        raw = self.public_key.public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        return {
            "kty": "OKP",
            "crv": "Ed25519",
            "x": _b64url(raw),
            "kid": self.kid,
            "use": "sig",
            "alg": "EdDSA",
        }


class KeyRing:
    """The keys a process trusts, and the one it signs with (if any)."""

    def __init__(self, keys: list[SigningKey], active_kid: str | None) -> None:
        self._keys = {k.kid: k for k in keys}
        if active_kid is not None and (
            active_kid not in self._keys or self._keys[active_kid].private_key is None
        ):
            raise KeyRingError(f"signing key {active_kid!r} has no private key in the key folder")
        self.active_kid = active_kid

    def get(self, kid: str) -> SigningKey | None:
        return self._keys.get(kid)

    @property
    def active(self) -> SigningKey:
        if self.active_kid is None:
            raise KeyRingError("this key ring can only verify")
        return self._keys[self.active_kid]

    def jwks(self) -> dict[str, list[dict[str, str]]]:
        return {"keys": [k.jwk() for k in sorted(self._keys.values(), key=lambda k: k.kid)]}

    @classmethod
    def from_jwks(cls, document: dict[str, Any]) -> KeyRing:
        keys = []
        for jwk in document.get("keys", []):
            if jwk.get("kty") != "OKP" or jwk.get("crv") != "Ed25519":
                continue
            public = Ed25519PublicKey.from_public_bytes(_b64url_decode(jwk["x"]))
            keys.append(SigningKey(kid=jwk["kid"], public_key=public))
        return cls(keys, active_kid=None)

    @classmethod
    def load(cls, folder: Path, active_kid: str | None, *, generate: bool) -> KeyRing:
        """Read ``<kid>.pem`` / ``<kid>.pub.pem`` files; create a first key when allowed."""
        keys: list[SigningKey] = []
        if folder.is_dir():
            for path in sorted(folder.iterdir()):
                if path.name.startswith(".") or not path.is_file():
                    continue  # Kubernetes Secret mounts carry ..data symlink folders
                keys.extend(_read_key_file(path))
        if not any(k.private_key for k in keys):
            if not generate:
                raise KeyRingError(f"no Ed25519 private key (<kid>.pem) in {folder}")
            keys.append(generate_key(folder))
        signers = sorted(k.kid for k in keys if k.private_key is not None)
        return cls(keys, active_kid or signers[-1])


def _read_key_file(path: Path) -> list[SigningKey]:
    data = path.read_bytes()
    if path.name.endswith(PUBLIC_SUFFIX):
        kid = path.name.removesuffix(PUBLIC_SUFFIX)
        public = serialization.load_pem_public_key(data)
        if not isinstance(public, Ed25519PublicKey):
            raise KeyRingError(f"{path} is not an Ed25519 public key")
        return [SigningKey(kid=kid, public_key=public)]
    if path.name.endswith(PRIVATE_SUFFIX):
        kid = path.name.removesuffix(PRIVATE_SUFFIX)
        private = serialization.load_pem_private_key(data, password=None)
        if not isinstance(private, Ed25519PrivateKey):
            raise KeyRingError(f"{path} is not an Ed25519 private key")
        return [SigningKey(kid=kid, public_key=private.public_key(), private_key=private)]
    return []


def generate_key(folder: Path) -> SigningKey:
    """Write a new private key named so that the newest sorts last."""
    folder.mkdir(parents=True, exist_ok=True)
    kid = f"{datetime.now(UTC):%Y%m%d%H%M%S}-{secrets.token_hex(4)}"
    private = Ed25519PrivateKey.generate()
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    path = folder / f"{kid}{PRIVATE_SUFFIX}"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)
    log.info("generated signing key", extra={"kid": kid, "path": str(path)})
    return SigningKey(kid=kid, public_key=private.public_key(), private_key=private)
