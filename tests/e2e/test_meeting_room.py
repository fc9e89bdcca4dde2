"""A meeting in real browsers: sign up, create, join, see and hear each other through the SFU.

Two Chromium contexts on replica 1 and a third on replica 2 (so signaling crosses Redis
and media crosses one SFU), each with a fake camera and microphone. Screenshots of the
room land in ``test-artifacts/e2e/``.
"""

from __future__ import annotations

import asyncio

from playwright.async_api import Browser, expect

from tests.e2e.browser import (
    Person,
    create_meeting,
    join,
    new_person,
    non_loopback_candidates,
    screenshot,
    sign_up,
    unique,
    wait_video_playing,
)
from tests.integration.replicas import Cluster


async def send_chat(p: Person, text: str) -> None:
    page = p.page
    if await page.locator("#chat-input").is_hidden():
        await page.get_by_role("button", name="Chat").click()
    await page.get_by_label("Message", exact=True).fill(text)
    await page.keyboard.press("Enter")


async def wait_chat(p: Person, text: str) -> None:
    await expect(p.page.locator(".chat-log .chat-text", has_text=text)).to_have_count(1)


async def recording_is_listed(p: Person, meeting_id: str) -> None:
    """The meeting's page (a second tab) lists a completed recording that downloads."""
    page = await p.context.new_page()
    try:
        await page.goto(p.url(f"/meetings/{meeting_id}"))
        item = page.locator(".recording-item")
        await expect(item).to_have_count(1)
        await expect(item).to_contain_text("completed")
        download = item.get_by_role("button", name="Download")
        await expect(download).to_be_enabled()
        async with page.expect_download() as info:
            await download.focus()
            await page.keyboard.press("Enter")
        saved = await (await info.value).path()
        assert saved is not None
        assert saved.stat().st_size > 1000
        await screenshot(Person(p.name, p.base_url, p.context, page), "meeting-recordings")
    finally:
        await page.close()


async def test_two_browsers_meet_and_a_third_joins_through_another_replica(
    web_cluster: Cluster, browser: Browser
) -> None:
    r1, r2 = web_cluster.replicas[:2]
    host = await new_person(browser, r1.http, unique("host"))
    guest = await new_person(browser, r1.http, unique("guest"))
    third: Person | None = None
    people = [host, guest]
    try:
        await asyncio.gather(sign_up(host), sign_up(guest))
        meeting_id = await create_meeting(host, "E2E design review")

        # Both join; each sees the other's camera decoding frames.
        await asyncio.gather(join(host, meeting_id), join(guest, meeting_id))
        await asyncio.gather(
            wait_video_playing(host, guest.user_id), wait_video_playing(guest, host.user_id)
        )

        # Chat crosses both ways.
        await send_chat(host, "hello from the host")
        await expect(guest.page.get_by_role("button", name="Chat (1)")).to_be_visible()
        await send_chat(guest, "hi host, guest here")
        await asyncio.gather(
            wait_chat(guest, "hello from the host"), wait_chat(host, "hi host, guest here")
        )

        # The host shares the screen; it appears at the guest as its own tile.
        await host.page.get_by_role("button", name="Share screen").click()
        await expect(host.page.get_by_role("button", name="Stop sharing")).to_be_visible()
        screen = await wait_video_playing(guest, host.user_id, "screen_share")
        assert screen["width"] > 0

        # The host mutes the guest from the participants list; the guest's UI says so.
        await host.page.get_by_role("button", name="People (2)").click()
        row = host.page.locator(f'.person[data-user-id="{guest.user_id}"]')
        await row.get_by_role("button", name="Mute").click()
        guest_mic = guest.page.locator('.controls [data-control="mic"]')
        await expect(guest_mic).to_have_attribute("data-state", "off")
        await expect(guest_mic).to_have_text("Unmute")
        host_tile = host.page.locator(f'figure.tile[data-user-id="{guest.user_id}"] .mic-off')
        await expect(host_tile).to_be_visible()

        # The host records (only hosts have the button); everyone sees the indicator; the
        # stored file is listed on the meeting's page with a working Download.
        await expect(guest.page.get_by_role("button", name="Record", exact=True)).to_have_count(0)
        record = host.page.get_by_role("button", name="Record", exact=True)
        await record.focus()
        await host.page.keyboard.press("Enter")
        await expect(host.page.get_by_role("button", name="Stop recording")).to_be_visible()
        # The recorder has joined and writes frames: every participant is told.
        for p in (host, guest):
            await expect(p.page.locator(".rec-indicator")).to_have_text(
                "● Recording", timeout=30_000
            )
        await host.page.wait_for_timeout(3000)
        await host.page.get_by_role("button", name="Stop recording").click()
        await expect(record).to_be_visible(timeout=30_000)
        # The button turns back at once; the stop itself answers once the file is stored,
        # and only then is the host told it is saved.
        await expect(host.page.locator(".toast", has_text="Recording saved")).to_be_visible(
            timeout=30_000
        )
        await expect(guest.page.locator(".rec-indicator")).to_be_hidden(timeout=15_000)
        await recording_is_listed(host, meeting_id)

        await screenshot(host, "room-host")
        await screenshot(guest, "room-guest")

        # A third person signs up and joins through the second replica.
        third = await new_person(browser, r2.http, unique("third"))
        people.append(third)
        await sign_up(third)
        await join(third, meeting_id)
        await asyncio.gather(
            wait_video_playing(third, host.user_id),
            wait_video_playing(third, guest.user_id),
            wait_video_playing(third, host.user_id, "screen_share"),
            wait_video_playing(host, third.user_id),
            wait_video_playing(guest, third.user_id),
        )
        await send_chat(third, "third one, via replica two")
        await asyncio.gather(
            wait_chat(host, "third one, via replica two"),
            wait_chat(guest, "third one, via replica two"),
        )
        await screenshot(third, "room-third")
        await screenshot(host, "room-host-three")

        # Leaving takes the tile away at the others.
        await third.page.get_by_role("button", name="Leave").click()
        await expect(
            third.page.get_by_role("heading", name="You left the meeting.")
        ).to_be_visible()
        await expect(
            host.page.locator(f'figure.tile[data-user-id="{third.user_id}"]')
        ).to_have_count(0)

        # The host makes the guest a co-host, then removes them from the meeting.
        row = host.page.locator(f'.person[data-user-id="{guest.user_id}"]')
        await row.get_by_label(f"Role of {guest.display_name}").select_option("co-host")
        await expect(row.locator(".badge")).to_have_text("co-host")
        host.page.once("dialog", lambda dialog: asyncio.ensure_future(dialog.accept()))
        await row.get_by_role("button", name="Remove").click()
        await expect(
            guest.page.get_by_role("heading", name="A host removed you from the meeting.")
        ).to_be_visible()
        await expect(
            host.page.locator(f'figure.tile[data-user-id="{guest.user_id}"]')
        ).to_have_count(0)

        # Nothing but 127.0.0.1 left any page as an ICE candidate, and nobody had to
        # reconnect along the way.
        for p in people:
            assert not [line for line in p.console if "konfer:" in line], p.console
            assert not non_loopback_candidates(p.sent), (p.name, non_loopback_candidates(p.sent))
            assert any('"ice-candidate"' in f for f in p.sent), f"{p.name} sent no candidates"
    finally:
        for p in people:
            await p.close()
