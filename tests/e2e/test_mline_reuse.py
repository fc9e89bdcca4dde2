"""Chromium receives a newcomer on the m-lines of someone who left (the SFU reuses them)."""

from __future__ import annotations

import asyncio

from playwright.async_api import Browser

from tests.e2e.browser import (
    create_meeting,
    join,
    new_person,
    remote_video,
    sfu_metrics,
    sign_up,
    unique,
    wait_video_playing,
)
from tests.integration.replicas import Cluster
from tests.integration.sfu_peers import metric

SUBSCRIBER_M_LINES = """
() => {
  const pc = window.__konferE2E.pcs.find(
    (p) => p.connectionState !== "closed" && p.remoteDescription
      && p.remoteDescription.type === "offer");
  return pc ? (pc.remoteDescription.sdp.match(/^m=/gm) || []).length : 0;
}
"""


async def test_a_newcomer_takes_over_the_m_lines_of_someone_who_left(
    web_cluster: Cluster, browser: Browser
) -> None:
    r1 = web_cluster.replicas[0]
    host = await new_person(browser, r1.http, unique("host"))
    people = []
    try:
        await sign_up(host)
        meeting_id = await create_meeting(host, "Comings and goings")
        await join(host, meeting_id)
        for n in range(2):
            guest = await new_person(browser, r1.http, unique(f"guest{n}"))
            people.append(guest)
            await sign_up(guest)
            await join(guest, meeting_id)
            await wait_video_playing(host, guest.user_id)
            # microphone and camera of the one guest present: two m-lines, reused
            assert await host.page.evaluate(SUBSCRIBER_M_LINES) == 2
            if n == 0:
                await guest.page.get_by_role("button", name="Leave").click()
                for _ in range(60):
                    if await remote_video(host, guest.user_id) is None:
                        break
                    await asyncio.sleep(0.25)
                assert await remote_video(host, guest.user_id) is None, "the tile stayed"
        assert not any("media rejoin" in line for line in host.console), host.console
        # the second guest's microphone and camera took over the first one's m-lines
        text = await sfu_metrics(meeting_id)
        assert metric(text, "konfer_sfu_mline_reuses_total") >= 2
    finally:
        for p in (host, *people):
            await p.close()
