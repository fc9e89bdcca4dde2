"""Ed25519 key rings, rotation, JWKS, and the token kinds that must not be confused."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from konfer.core.errors import InvalidToken
from konfer.core.keys import KeyRing, KeyRingError, generate_key
from konfer.core.tokens import MediaGrants, TokenCodec


def test_first_local_run_generates_a_key_and_reuses_it(tmp_path: Path) -> None:
    ring = KeyRing.load(tmp_path, None, generate=True)
    again = KeyRing.load(tmp_path, None, generate=True)
    assert ring.active_kid == again.active_kid
    (key_file,) = tmp_path.glob("*.pem")
    assert key_file.stat().st_mode & 0o077 == 0


def test_production_without_keys_fails(tmp_path: Path) -> None:
    with pytest.raises(KeyRingError):
        KeyRing.load(tmp_path, None, generate=False)


def test_rotation_signs_with_new_key_and_still_accepts_old_tokens(tmp_path: Path) -> None:
    old = KeyRing.load(tmp_path, None, generate=True)
    uid, sid = uuid.uuid4(), uuid.uuid4()
    old_token = TokenCodec(old, "konfer").issue_access(uid, sid, "user", 60)
    new_key = generate_key(tmp_path)
    ring = KeyRing.load(tmp_path, new_key.kid, generate=False)
    codec = TokenCodec(ring, "konfer")
    assert codec.verify_access(old_token).user_id == uid
    assert len(ring.jwks()["keys"]) == 2
    fresh = codec.issue_access(uid, sid, "user", 60)
    assert codec.verify_access(fresh).session_id == sid
    assert ring.active_kid == new_key.kid


def test_unknown_active_key_id_is_refused(tmp_path: Path) -> None:
    KeyRing.load(tmp_path, None, generate=True)
    with pytest.raises(KeyRingError):
        KeyRing.load(tmp_path, "no-such-kid", generate=False)


def test_jwks_ring_verifies_but_cannot_sign(tmp_path: Path) -> None:
    ring = KeyRing.load(tmp_path, None, generate=True)
    codec = TokenCodec(ring, "konfer")
    verifier = TokenCodec(KeyRing.from_jwks(ring.jwks()), "konfer")
    grants = MediaGrants(room="m-1", can_publish=False, hidden=True, recorder=True)
    token = codec.issue_media(uuid.uuid4(), "Rec", grants, 60)
    subject, got = verifier.verify_media(token)
    assert subject
    assert got == grants
    with pytest.raises(KeyRingError):
        verifier.issue_access(uuid.uuid4(), uuid.uuid4(), "user", 60)


def test_token_kinds_are_not_interchangeable(tmp_path: Path) -> None:
    codec = TokenCodec(KeyRing.load(tmp_path, None, generate=True), "konfer")
    access = codec.issue_access(uuid.uuid4(), uuid.uuid4(), "user", 60)
    media = codec.issue_media(uuid.uuid4(), "x", MediaGrants(room="r"), 60)
    csrf, _ = codec.issue_csrf("127.0.0.1", 60)
    with pytest.raises(InvalidToken):
        codec.verify_media(access)
    with pytest.raises(InvalidToken):
        codec.verify_access(media)
    with pytest.raises(InvalidToken):
        codec.verify_access(csrf)


def test_other_issuer_and_expired_tokens_fail(tmp_path: Path) -> None:
    ring = KeyRing.load(tmp_path, None, generate=True)
    other = TokenCodec(ring, "someone-else").issue_access(uuid.uuid4(), uuid.uuid4(), "u", 60)
    expired = TokenCodec(ring, "konfer").issue_access(uuid.uuid4(), uuid.uuid4(), "u", -60)
    codec = TokenCodec(ring, "konfer")
    for token in (other, expired, "", "a.b.c"):
        with pytest.raises(InvalidToken):
            codec.verify_access(token)
