"""Chromium restarts ICE on both connections to the SFU, and media goes on without a rejoin.

The SFU replaces its side of the connection (aiortc cannot restart ICE on a live one), so
this checks what matters for a browser: its existing connections take the new ICE
credentials and DTLS fingerprint, the tracks keep their ids, and nobody's tile goes away.
The web client itself recovers by rejoining; the page drives the restarts here.
"""

from __future__ import annotations

import asyncio

from playwright.async_api import Browser

from tests.e2e.browser import (
    create_meeting,
    join,
    new_person,
    sfu_metrics,
    sign_up,
    unique,
    wait_video_playing,
)
from tests.e2e.test_reconnect import watch_loss
from tests.integration.replicas import Cluster
from tests.integration.sfu_peers import metric

_HELPERS = """
window.__ufrag = (d) => d.sdp.match(/a=ice-ufrag:(\\S+)/)[1];
window.__socket = () => window.__konferE2E.sockets.find((s) => s.readyState === 1);
window.__live = () => window.__konferE2E.pcs.filter((p) => p.connectionState !== "closed");
"""

PUBLISHER_RESTART = (
    "async () => {"
    + _HELPERS
    + """
  const pc = window.__live().find(
    (p) => p.localDescription && p.localDescription.type === "offer");
  const socket = window.__socket();
  const before = window.__ufrag(pc.remoteDescription);
  await pc.setLocalDescription(await pc.createOffer({ iceRestart: true }));
  const answered = new Promise((resolve) => {
    const on = (e) => {
      const m = JSON.parse(e.data);
      if (m.type === "answer" && (m.pc || "publisher") === "publisher") {
        socket.removeEventListener("message", on);
        resolve(m);
      }
    };
    socket.addEventListener("message", on);
  });
  socket.send(JSON.stringify({
    type: "offer", pc: "publisher", target_user_id: "sfu",
    sdp: { type: "offer", sdp: pc.localDescription.sdp },
  }));
  const answer = await answered;
  await pc.setRemoteDescription({ type: "answer", sdp: answer.sdp.sdp || answer.sdp });
  for (let i = 0; i < 100 && pc.connectionState !== "connected"; i++) {
    await new Promise((r) => setTimeout(r, 100));
  }
  return { before, after: window.__ufrag(pc.remoteDescription), state: pc.connectionState };
}
"""
)

SUBSCRIBER_RESTART = (
    "async () => {"
    + _HELPERS
    + """
  const pc = window.__live().find(
    (p) => p.remoteDescription && p.remoteDescription.type === "offer");
  const before = window.__ufrag(pc.remoteDescription);
  window.__socket().send(
    JSON.stringify({ type: "ice-restart", pc: "subscriber", target_user_id: "sfu" }));
  let after = before;
  for (let i = 0; i < 150; i++) {
    await new Promise((r) => setTimeout(r, 100));
    after = window.__ufrag(pc.remoteDescription);
    const settled = pc.signalingState === "stable" && pc.connectionState === "connected";
    if (after !== before && settled) break;
  }
  return { before, after, state: pc.connectionState };
}
"""
)

PCS = "window.__konferE2E.pcs.filter((p) => p.connectionState !== 'closed').length"


async def test_browser_ice_restarts_keep_the_connections_and_the_tracks(
    web_cluster: Cluster, browser: Browser
) -> None:
    r1 = web_cluster.replicas[0]
    alice = await new_person(browser, r1.http, unique("alice"))
    bob = await new_person(browser, r1.http, unique("bob"))
    try:
        await asyncio.gather(sign_up(alice), sign_up(bob))
        meeting_id = await create_meeting(alice, "ICE restarts")
        await asyncio.gather(join(alice, meeting_id), join(bob, meeting_id))
        await asyncio.gather(
            wait_video_playing(alice, bob.user_id), wait_video_playing(bob, alice.user_id)
        )
        await asyncio.gather(watch_loss(alice, bob), watch_loss(bob, alice))
        pcs = await bob.page.evaluate(PCS)

        # Bob's publisher connection: an offer with new ICE credentials.
        result = await bob.page.evaluate(PUBLISHER_RESTART)
        assert result["after"] != result["before"], result
        assert result["state"] == "connected", result
        await wait_video_playing(alice, bob.user_id)

        # Bob's subscriber connection: he asks, the SFU offers on a new connection.
        result = await bob.page.evaluate(SUBSCRIBER_RESTART)
        assert result["after"] != result["before"], result
        assert result["state"] == "connected", result
        await wait_video_playing(bob, alice.user_id)

        # Same connections, same tracks: no tile went away, no rejoin.
        assert await bob.page.evaluate(PCS) == pcs
        assert await alice.page.evaluate("(id) => window.__lost[id]", bob.user_id) is False
        assert await bob.page.evaluate("(id) => window.__lost[id]", alice.user_id) is False
        assert not any("media rejoin" in line for line in bob.console), bob.console
        # the SFU counted one restart of each connection
        text = await sfu_metrics(meeting_id)
        assert metric(text, "konfer_sfu_ice_restarts_total", pc="publisher") == 1
        assert metric(text, "konfer_sfu_ice_restarts_total", pc="subscriber") == 1
    finally:
        await alice.close()
        await bob.close()
