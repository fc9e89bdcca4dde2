"""The web client restarts ICE by itself when the path to the SFU really breaks.

The SFU (with ``KONFER_SFU_FAULT_INJECTION``) blackholes one of Bob's connections: from
then on every datagram between that connection and the SFU is dropped, both ways, as on
a broken network. Chromium notices (ICE goes disconnected, then failed), and the web
client restarts ICE on that connection without being told: the publisher offers again
with new ICE credentials, the subscriber asks the SFU for a new offer. Media flows again
on the same page, the same connections and the same session: nobody rejoins. When the
path stays broken (a sticky fault cuts every replacement too), the client gives up after
three restarts and joins again, which recovers.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
from playwright.async_api import Browser

from konfer.core.keys import KeyRing
from konfer.core.tokens import MediaGrants, TokenCodec
from tests.e2e.browser import (
    Person,
    create_meeting,
    join,
    new_person,
    sfu_url,
    sign_up,
    unique,
    wait_video_playing,
)
from tests.e2e.test_reconnect import watch_loss
from tests.integration.replicas import Cluster
from tests.integration.sfu_peers import metric

SERVICE_USER = "00000000-0000-0000-0000-00000000e2e0"

# Marks every connection the page has now, so "the same connections" can be checked.
MARK_PCS = """
() => window.__konferE2E.pcs.filter((p) => p.connectionState !== "closed")
  .map((p, i) => (p.__mark = `pc${i}`))
"""
LIVE_PCS = """
() => window.__konferE2E.pcs.filter((p) => p.connectionState !== "closed")
  .map((p) => p.__mark || null)
"""
OPEN_SOCKETS = "window.__konferE2E.sockets.filter((s) => s.readyState === 1).length"
RESEND = """
(frame) => window.__konferE2E.sockets.find((s) => s.readyState === 1).send(frame)
"""


def _service_token(cluster: Cluster, meeting_id: str) -> str:
    """A hidden room-admin media token, signed with the replicas' own keys."""

    ring = KeyRing.load(Path(cluster.env["KONFER_SIGNING_KEYS_DIR"]), None, generate=False)
    grants = MediaGrants(
        room=meeting_id, can_publish=False, can_publish_sources=[], room_admin=True, hidden=True
    )
    return TokenCodec(ring, "konfer").issue_media(uuid.UUID(SERVICE_USER), "e2e", grants, 600)


async def _wait_console(p: Person, text: str, within: float = 40.0) -> str:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        for line in p.console:
            if text in line:
                return line
        await asyncio.sleep(0.2)
    raise AssertionError(f"{p.name}: no {text!r} in the console:\n" + "\n".join(p.console[-30:]))


def _subscriber_answers(p: Person) -> list[dict[str, Any]]:
    answers = []
    for frame in p.sent:
        try:
            msg = json.loads(frame)
        except ValueError:
            continue
        if msg.get("type") == "answer" and msg.get("pc") == "subscriber":
            answers.append(msg)
    return answers


def _report(pc: str, cut: float, noticed: float) -> None:
    now = time.monotonic()
    print(f"{pc}: restart {noticed - cut:.1f} s after the cut, video again after {now - cut:.1f} s")


async def _meeting(web_cluster: Cluster, alice: Person, bob: Person, title: str) -> str:
    """Both signed up and in a meeting, each decoding the other's camera."""
    await asyncio.gather(sign_up(alice), sign_up(bob))
    meeting_id = await create_meeting(alice, title)
    await asyncio.gather(join(alice, meeting_id), join(bob, meeting_id))
    await asyncio.gather(
        wait_video_playing(alice, bob.user_id), wait_video_playing(bob, alice.user_id)
    )
    return meeting_id


def _sfu(web_cluster: Cluster, meeting_id: str) -> httpx.AsyncClient:
    token = _service_token(web_cluster, meeting_id)
    return httpx.AsyncClient(
        base_url=sfu_url(meeting_id), headers={"Authorization": f"Bearer {token}"}
    )


async def _peer_of(sfu: httpx.AsyncClient, user_id: str) -> dict[str, Any]:
    peers = (await sfu.get("/v1/peers")).json()["peers"]
    (peer,) = [p for p in peers if p["user_id"] == user_id]
    return dict(peer)


async def test_browser_restarts_ice_by_itself_when_the_path_to_the_sfu_breaks(
    web_cluster: Cluster, browser: Browser
) -> None:
    r1 = web_cluster.replicas[0]
    alice = await new_person(browser, r1.http, unique("alice"))
    bob = await new_person(browser, r1.http, unique("bob"))
    try:
        meeting_id = await _meeting(web_cluster, alice, bob, "Broken paths")
        await asyncio.gather(watch_loss(alice, bob), watch_loss(bob, alice))
        marks = await bob.page.evaluate(MARK_PCS)
        assert len(marks) == 2, marks  # publisher and subscriber

        async with _sfu(web_cluster, meeting_id) as sfu:

            async def bobs_peer() -> dict[str, Any]:
                return await _peer_of(sfu, bob.user_id)

            async def count(name: str, **labels: str) -> float:
                return metric((await sfu.get("/metrics")).text, name, **labels)

            session = (await bobs_peer())["peer_id"]

            # Bob's publisher connection: the SFU stops hearing him and answering him.
            cut = time.monotonic()
            r = await sfu.post(f"/v1/peers/{session}/fault", json={"pc": "publisher"})
            assert r.status_code == 200, r.text
            assert r.json()["ice_connections"] == 1
            line = await _wait_console(bob, "ICE restart #1 of the publisher connection")
            assert "disconnected" in line or "failed" in line, line
            noticed = time.monotonic()
            # frames of Bob decoded at Alice's again (they had stopped with the fault)
            await wait_video_playing(alice, bob.user_id)
            _report("publisher", cut, noticed)
            await _wait_console(bob, "ICE restart of the publisher connection worked")
            assert await count("konfer_sfu_ice_restarts_total", pc="publisher") == 1

            # Bob's subscriber connection: nothing reaches him from the SFU any more.
            cut = time.monotonic()
            r = await sfu.post(f"/v1/peers/{session}/fault", json={"pc": "subscriber"})
            assert r.status_code == 200, r.text
            line = await _wait_console(bob, "ICE restart #1 of the subscriber connection")
            assert "disconnected" in line or "failed" in line, line
            noticed = time.monotonic()
            await wait_video_playing(bob, alice.user_id)
            _report("subscriber", cut, noticed)
            await _wait_console(bob, "ICE restart of the subscriber connection worked")
            assert await count("konfer_sfu_ice_restarts_total", pc="subscriber") == 1

            # Same page, same connections, same session: nobody rejoined.
            assert await bob.page.evaluate(LIVE_PCS) == marks
            assert await bob.page.evaluate(OPEN_SOCKETS) == 1
            peer = await bobs_peer()
            assert peer["peer_id"] == session
            assert peer["status"] == "connected", peer
            for p in (alice, bob):
                assert not any("media rejoin" in ln for ln in p.console), p.console
                assert not any("signaling reconnect" in ln for ln in p.console), p.console
            assert await alice.page.evaluate("(id) => window.__lost[id]", bob.user_id) is False
            assert await bob.page.evaluate("(id) => window.__lost[id]", alice.user_id) is False

            # Every subscriber answer echoed its offer's id through the api; the first
            # one, sent again now, answers an offer long superseded: the SFU ignores it.
            answers = _subscriber_answers(bob)
            assert len(answers) >= 2
            assert all(isinstance(a.get("offer_id"), int) for a in answers)
            assert await count("konfer_sfu_stale_answers_ignored_total") == 0
            await bob.page.evaluate(RESEND, json.dumps(answers[0]))
            for _ in range(50):
                if await count("konfer_sfu_stale_answers_ignored_total") == 1:
                    break
                await asyncio.sleep(0.1)
            assert await count("konfer_sfu_stale_answers_ignored_total") == 1
            await wait_video_playing(bob, alice.user_id)
    finally:
        await alice.close()
        await bob.close()


async def test_browser_joins_again_when_ice_restarts_do_not_help(
    web_cluster: Cluster, browser: Browser
) -> None:
    r1 = web_cluster.replicas[0]
    alice = await new_person(browser, r1.http, unique("alice"))
    bob = await new_person(browser, r1.http, unique("bob"))
    try:
        meeting_id = await _meeting(web_cluster, alice, bob, "Paths that stay broken")
        async with _sfu(web_cluster, meeting_id) as sfu:
            session = (await _peer_of(sfu, bob.user_id))["peer_id"]
            # every connection replacing Bob's publisher connection is cut as well
            r = await sfu.post(
                f"/v1/peers/{session}/fault", json={"pc": "publisher", "sticky": True}
            )
            assert r.status_code == 200, r.text
            await _wait_console(bob, "ICE restart #3 of the publisher connection", within=60)
            line = await _wait_console(bob, "media rejoin #1", within=30)
            assert "3 ICE restarts did not help" in line, line
            # the rejoin (a new peer at the SFU, on the same socket) brings Bob back
            await wait_video_playing(alice, bob.user_id, within=40)
            text = (await sfu.get("/metrics")).text
            assert metric(text, "konfer_sfu_ice_restarts_total", pc="publisher") == 3
            assert (await _peer_of(sfu, bob.user_id))["peer_id"] == session
            assert await bob.page.evaluate(OPEN_SOCKETS) == 1
            assert not any("signaling reconnect" in ln for ln in bob.console), bob.console
    finally:
        await alice.close()
        await bob.close()
