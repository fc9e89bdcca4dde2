"""The web client reconnects by itself: a dropped signaling socket, and an SFU that dies.

Both cases end the way they began: each browser decodes the other's camera again, with
nobody pressing anything.
"""

from __future__ import annotations

import asyncio
import os
import signal

from playwright.async_api import Browser, expect

from tests.e2e.browser import (
    Person,
    create_meeting,
    join,
    new_person,
    sfu_pid,
    sign_up,
    unique,
    wait_video_playing,
)
from tests.integration.replicas import Cluster

# Set before breaking something: notes when a person's camera tile loses its video (the
# tile goes away, or shows the avatar), so "playing again" cannot mean "never stopped".
WATCH_LOSS = """
(userId) => {
  window.__lost = window.__lost || {};
  window.__lost[userId] = false;
  const lost = () => {
    const tile = document.querySelector(
      `figure.tile[data-user-id="${userId}"][data-source="camera"]`);
    if (!tile || tile.classList.contains("video-off")) window.__lost[userId] = true;
  };
  new MutationObserver(lost).observe(document.body, {
    subtree: true, childList: true, attributes: true, attributeFilter: ["class"],
  });
}
"""


async def watch_loss(p: Person, other: Person) -> None:
    await p.page.evaluate(WATCH_LOSS, other.user_id)


async def wait_loss(p: Person, other: Person) -> None:
    await p.page.wait_for_function("(id) => window.__lost[id] === true", arg=other.user_id)


async def test_room_recovers_from_a_dropped_socket_and_a_crashed_sfu(
    web_cluster: Cluster, browser: Browser
) -> None:
    r1, r2 = web_cluster.replicas[:2]
    alice = await new_person(browser, r1.http, unique("alice"))
    bob = await new_person(browser, r2.http, unique("bob"))
    try:
        await asyncio.gather(sign_up(alice), sign_up(bob))
        meeting_id = await create_meeting(alice, "Reconnects")
        await asyncio.gather(join(alice, meeting_id), join(bob, meeting_id))
        await asyncio.gather(
            wait_video_playing(alice, bob.user_id), wait_video_playing(bob, alice.user_id)
        )

        # Bob's signaling socket drops: his client reconnects, joins again, renegotiates.
        await asyncio.gather(watch_loss(alice, bob), watch_loss(bob, alice))
        await bob.page.evaluate("window.__konferE2E.sockets.forEach((s) => s.close())")
        await expect(bob.page.locator(".conn-status")).to_contain_text("Reconnecting")
        await asyncio.gather(wait_loss(alice, bob), wait_loss(bob, alice))
        await asyncio.gather(
            wait_video_playing(alice, bob.user_id), wait_video_playing(bob, alice.user_id)
        )
        assert any("signaling reconnect" in line for line in bob.console), bob.console

        # The meeting's SFU dies: the api says media-reconnect, both rebuild their media.
        await asyncio.gather(watch_loss(alice, bob), watch_loss(bob, alice))
        old = sfu_pid(meeting_id)
        os.kill(old, signal.SIGKILL)
        await asyncio.gather(wait_loss(alice, bob), wait_loss(bob, alice))
        await asyncio.gather(
            wait_video_playing(alice, bob.user_id), wait_video_playing(bob, alice.user_id)
        )
        assert sfu_pid(meeting_id) != old
        for p in (alice, bob):
            assert any("media-reconnect" in line for line in p.console), p.console
    finally:
        await alice.close()
        await bob.close()
