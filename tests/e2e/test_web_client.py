"""The web client as served by the api, and used with a keyboard on a phone-sized screen."""

from __future__ import annotations

import httpx
from playwright.async_api import Browser, Page, expect

from tests.e2e.browser import INIT_SCRIPT, artifact, unique
from tests.integration.replicas import Cluster


async def test_api_serves_the_client_without_shadowing_api_routes(web_cluster: Cluster) -> None:
    async with httpx.AsyncClient(base_url=web_cluster.replicas[0].http) as http:
        index = await http.get("/")
        assert index.status_code == 200
        assert '<script type="module" src="/js/app.js">' in index.text
        assert "default-src 'self'" in index.headers["content-security-policy"]
        assert index.headers["cache-control"] == "no-cache"
        # client-side routes (the join_url the api hands out) answer the same page
        spa = await http.get("/meetings/00000000-0000-0000-0000-000000000000/join")
        assert spa.status_code == 200
        assert spa.text == index.text
        module = await http.get("/js/app.js")
        assert module.status_code == 200
        assert module.headers["content-type"].startswith(
            ("text/javascript", "application/javascript")
        )
        assert (await http.get("/js/missing.js")).status_code == 404
        # api paths keep the api's answers: JSON 404 envelope, 405, health, OpenAPI
        missing = await http.get("/api/v1/does-not-exist")
        assert missing.status_code == 404
        assert missing.json()["error"]["code"]
        assert (await http.get("/api/v1/auth/login")).status_code == 405
        assert (await http.get("/health")).json()
        assert "/api/v1/meetings" in (await http.get("/openapi.json")).json()["paths"]
        assert (await http.post("/meetings/new")).status_code == 405


async def tab_to(page: Page, name: str, limit: int = 40) -> None:
    """Press Tab until the focused element is the one named ``name``."""
    for _ in range(limit):
        await page.keyboard.press("Tab")
        focused = await page.evaluate(
            "() => { const e = document.activeElement;"
            " return (e.labels && e.labels[0] ? e.labels[0].textContent : '')"
            " + '|' + (e.getAttribute('aria-label') || '') + '|' + (e.textContent || '').trim() }"
        )
        if name in focused.split("|"):
            return
    raise AssertionError(f"{name!r} is not reachable with Tab")


UNLABELLED = """
() => [...document.querySelectorAll('button, input, select, textarea, a[href]')]
  .filter((e) => e.offsetParent !== null)
  .filter((e) => !((e.labels && e.labels.length) || e.getAttribute('aria-label')
                    || (e.textContent || '').trim()))
  .map((e) => e.outerHTML.slice(0, 120))
"""

OVERFLOW = "() => document.documentElement.scrollWidth - window.innerWidth"


async def test_keyboard_only_on_a_phone_from_sign_up_to_the_room(
    web_cluster: Cluster, browser: Browser
) -> None:
    context = await browser.new_context(
        viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True
    )
    await context.add_init_script(script=INIT_SCRIPT)
    page = await context.new_page()
    try:
        await page.goto(web_cluster.replicas[0].http + "/signup")
        name = unique("phone")
        await tab_to(page, "Username")
        await page.keyboard.type(name)
        await tab_to(page, "E-mail")
        await page.keyboard.type(f"{name}@example.com")
        await tab_to(page, "Password")
        await page.keyboard.type("keyboard only 123")
        await page.keyboard.press("Enter")
        await expect(page.get_by_role("heading", name="Meetings")).to_be_focused()
        assert await page.evaluate(OVERFLOW) <= 0
        assert await page.evaluate(UNLABELLED) == []

        await tab_to(page, "New meeting")
        await page.keyboard.press("Enter")
        await expect(page.get_by_role("heading", name="New meeting")).to_be_focused()
        await tab_to(page, "Title")
        await page.keyboard.type("Standup from the bus")
        await page.keyboard.press("Enter")
        await expect(page.get_by_role("heading", name="Standup from the bus")).to_be_focused()
        assert await page.evaluate(UNLABELLED) == []

        await tab_to(page, "Join")
        await page.keyboard.press("Enter")
        await expect(page.get_by_role("button", name="Join now")).to_be_visible()
        assert await page.evaluate(OVERFLOW) <= 0
        await tab_to(page, "Join now")
        await page.keyboard.press("Enter")
        await expect(page.locator("section.room")).to_be_visible()
        assert await page.evaluate(OVERFLOW) <= 0
        assert await page.evaluate(UNLABELLED) == []

        # Controls work from the keyboard: mute, open the chat, send, close with Escape.
        await tab_to(page, "Mute")
        await page.keyboard.press("Enter")
        await expect(page.locator('[data-control="mic"]')).to_have_text("Unmute")
        await tab_to(page, "Chat")
        await page.keyboard.press("Enter")
        await expect(page.get_by_label("Message", exact=True)).to_be_focused()
        await page.keyboard.type("typed on a phone")
        await page.keyboard.press("Enter")
        await expect(page.locator(".chat-log .chat-text")).to_have_text("typed on a phone")
        await page.keyboard.press("Escape")
        await expect(page.locator('[data-control="chat"]')).to_be_focused()
        await expect(page.locator("#side-panel")).to_be_hidden()
        controls = await page.locator(".controls").bounding_box()
        assert controls is not None
        assert controls["y"] + controls["height"] <= 844
        await page.screenshot(path=str(artifact("room-phone.png")))
        await page.get_by_role("button", name="Leave").click()
        await expect(page.get_by_role("heading", name="You left the meeting.")).to_be_focused()
    finally:
        await context.close()
