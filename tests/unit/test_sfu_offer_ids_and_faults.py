"""Offer ids in the signaling protocol, and the SFU's blackhole fault on real ICE."""

from __future__ import annotations

import asyncio
import json

import aioice
import pytest

from konfer.api.signaling import protocol as p
from konfer.sfu import aiortc_hooks as hooks

pytestmark = pytest.mark.unit

SDP = {"type": "answer", "sdp": "v=0\r\n"}


def test_offers_and_answers_carry_an_optional_offer_id() -> None:
    answer = p.parse(json.dumps({"type": "answer", "pc": "subscriber", "offer_id": 7, "sdp": SDP}))
    assert isinstance(answer, p.Answer)
    assert answer.offer_id == 7
    offer = p.parse(json.dumps({"type": "offer", "offer_id": 3, "sdp": {**SDP, "type": "offer"}}))
    assert isinstance(offer, p.Offer)
    assert offer.offer_id == 3
    older = p.parse(json.dumps({"type": "answer", "pc": "subscriber", "sdp": SDP}))
    assert isinstance(older, p.Answer)
    assert older.offer_id is None
    for bad in (-1, "seven", 2**60):
        with pytest.raises(p.SignalingError, match="offer_id"):
            p.parse(json.dumps({"type": "answer", "offer_id": bad, "sdp": SDP}))


async def _connected_pair() -> tuple[aioice.Connection, aioice.Connection]:
    hooks.set_ice_hosts(["127.0.0.1"])
    a = aioice.Connection(ice_controlling=True)
    b = aioice.Connection(ice_controlling=False)
    await asyncio.gather(a.gather_candidates(), b.gather_candidates())
    for one, other in ((a, b), (b, a)):
        for candidate in other.local_candidates:
            await one.add_remote_candidate(candidate)
        await one.add_remote_candidate(None)
        one.remote_username = other.local_username
        one.remote_password = other.local_password
    await asyncio.wait_for(asyncio.gather(a.connect(), b.connect()), 10)
    return a, b


async def _arrives(connection: aioice.Connection, within: float) -> bytes | None:
    try:
        return await asyncio.wait_for(connection.recv(), within)
    except TimeoutError:
        return None


async def test_a_blackholed_ice_connection_neither_sends_nor_receives() -> None:
    a, b = await _connected_pair()
    try:
        await a.send(b"before")
        assert await _arrives(b, 5) == b"before"
        hooks.blackhole_connection(a)
        hooks.blackhole_connection(a)  # idempotent
        await a.send(b"out")
        await b.send(b"in")
        assert await _arrives(b, 0.5) is None
        assert await _arrives(a, 0.5) is None
    finally:
        await a.close()
        await b.close()
        hooks.set_ice_hosts(None)
