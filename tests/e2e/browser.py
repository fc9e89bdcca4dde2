"""Driving the web client in Debian's Chromium with Playwright: launch, contexts, and the
steps a person takes (sign up, create a meeting, join), for the e2e tests and
``bench/browser.py`` alike.

Chromium runs headless with a fake camera and microphone and the flags of the machine
notes (no background networking, a fresh profile). Every page gets ``loopback_only.js``, a
test-only init script that drops ICE candidates other than 127.0.0.1, and every frame a
page sends on its WebSocket is kept so a test can check that no other address left it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
from playwright.async_api import Browser, BrowserContext, Page, Playwright, WebSocket

CHROMIUM = os.environ.get("KONFER_TEST_CHROMIUM", "/usr/bin/chromium")
ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts" / "e2e"
INIT_SCRIPT = (Path(__file__).with_name("loopback_only.js")).read_text()

CHROMIUM_ARGS = [
    # the machine notes: no sandbox as root, no GPU, no network the machine does not have
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    # fake camera (a moving test pattern) and microphone (a beep), permission prompts
    # answered yes (getDisplayMedia included: it captures the fake screen)
    "--use-fake-device-for-media-stream",
    "--use-fake-ui-for-media-stream",
    "--allow-loopback-in-peer-connection",
]

_IPV4_CANDIDATE = re.compile(r"candidate:\S+ \d+ \S+ \d+ (\S+) \d+ typ")


def chromium_available() -> bool:
    return shutil.which(CHROMIUM) is not None or Path(CHROMIUM).is_file()


async def launch(pw: Playwright) -> Browser:
    """Chromium with a fresh temporary profile (Playwright makes one per launch)."""
    return await pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)


@dataclass
class Person:
    """One browser context: one signed-in user with one page."""

    name: str
    base_url: str
    context: BrowserContext
    page: Page
    sent: list[str] = field(default_factory=list)  # WebSocket frames the page sent
    console: list[str] = field(default_factory=list)
    user_id: str = ""
    password: str = "correct horse battery"

    @property
    def display_name(self) -> str:
        """The nickname sign_up gives: "guest-1a2b3c4d" shows as "Guest"."""
        return self.name.split("-")[0].title()

    def url(self, path: str) -> str:
        return self.base_url + path

    async def close(self) -> None:
        await self.context.close()


async def new_person(browser: Browser, base_url: str, name: str) -> Person:
    context = await browser.new_context(viewport={"width": 1280, "height": 720})
    await context.add_init_script(script=INIT_SCRIPT)
    page = await context.new_page()
    person = Person(name=name, base_url=base_url, context=context, page=page)

    def on_socket(ws: WebSocket) -> None:
        ws.on("framesent", lambda payload: person.sent.append(str(payload)))

    page.on("websocket", on_socket)
    page.on("console", lambda m: person.console.append(f"{m.type}: {m.text}"))
    page.on("pageerror", lambda e: person.console.append(f"pageerror: {e}"))
    return person


def non_loopback_candidates(frames: list[str]) -> list[str]:
    """Addresses other than 127.0.0.1 in candidates a page sent (trickled or in an SDP)."""
    bad: list[str] = []
    for frame in frames:
        try:
            msg = json.loads(frame)
        except ValueError:
            continue
        texts: list[str] = []
        if msg.get("type") == "ice-candidate" and msg.get("candidate"):
            texts.append(str(msg["candidate"].get("candidate", "")))
        sdp = msg.get("sdp")
        if isinstance(sdp, dict):
            texts += [ln for ln in str(sdp.get("sdp", "")).split("\r\n") if "candidate:" in ln]
        for text in texts:
            m = _IPV4_CANDIDATE.search(text)
            if m and m.group(1) != "127.0.0.1":
                bad.append(text)
    return bad


# --- what a person does in the web client ------------------------------------------------


async def sign_up(p: Person) -> None:
    """From the front page through "Create an account" to the meetings list."""
    page = p.page
    await page.goto(p.url("/"))
    await page.get_by_role("link", name="Create an account").click()
    await page.get_by_label("Username", exact=True).fill(p.name)
    await page.get_by_label("E-mail", exact=True).fill(f"{p.name}@example.com")
    await page.get_by_label("Display name (optional)").fill(p.display_name)
    await page.get_by_label("Password", exact=True).fill(p.password)
    await page.get_by_role("button", name="Create account").click()
    await page.get_by_role("heading", name="Meetings").wait_for()
    p.user_id = await page.evaluate(
        "JSON.parse(localStorage.getItem('konfer.session')).user.user_id"
    )


async def create_meeting(p: Person, title: str) -> str:
    """New meeting form → the meeting's page; returns the meeting id."""
    page = p.page
    await page.get_by_role("link", name="New meeting").first.click()
    await page.get_by_label("Title", exact=True).fill(title)
    await page.get_by_role("button", name="Create meeting").click()
    await page.get_by_role("heading", name=title).wait_for()
    m = re.search(r"/meetings/([0-9a-f-]{36})$", page.url)
    assert m, page.url
    return m.group(1)


async def open_join_screen(p: Person, meeting_id: str) -> None:
    await p.page.goto(p.url(f"/meetings/{meeting_id}/join"))
    # the device check is live: the preview plays the fake camera
    await p.page.wait_for_function(
        "() => { const v = document.querySelector('.preview video'); return v && v.videoWidth > 0 }"
    )


async def click_join(p: Person) -> None:
    await p.page.get_by_role("button", name="Join now").click()
    await p.page.locator("section.room").wait_for()


async def join(p: Person, meeting_id: str) -> None:
    await open_join_screen(p, meeting_id)
    await click_join(p)


REMOTE_VIDEO = """
async ([userId, source]) => {
  const v = document.querySelector(
    `figure.tile[data-user-id="${userId}"][data-source="${source}"]:not([data-self]) video`);
  if (!v || !v.srcObject || v.videoWidth === 0) return null;
  const track = v.srcObject.getVideoTracks()[0];
  // The receiver of exactly this track: after a rejoin a new track may reuse the id of
  // one that ended, so matching inbound-rtp by trackIdentifier can find the stale one.
  let frames = null;
  for (const pc of window.__konferE2E.pcs) {
    if (pc.connectionState === "closed") continue;
    for (const receiver of pc.getReceivers()) {
      if (receiver.track !== track) continue;
      (await receiver.getStats()).forEach((s) => {
        if (s.type === "inbound-rtp") frames = s.framesDecoded;
      });
    }
  }
  return { width: v.videoWidth, height: v.videoHeight, frames };
}
"""


async def remote_video(p: Person, user_id: str, source: str = "camera") -> dict[str, Any] | None:
    result: dict[str, Any] | None = await p.page.evaluate(REMOTE_VIDEO, [user_id, source])
    return result


async def wait_video_playing(
    p: Person, user_id: str, source: str = "camera", within: float = 30.0
) -> dict[str, Any]:
    """The other's video renders (videoWidth > 0) and its decoded frame count grows."""
    deadline = time.monotonic() + within
    first: dict[str, Any] | None = None
    while time.monotonic() < deadline:
        now = await remote_video(p, user_id, source)
        if now is not None and now["frames"] is not None:
            if first is None:
                first = now
            elif now["frames"] > first["frames"]:
                return {**now, "frames_before": first["frames"]}
        await p.page.wait_for_timeout(250)
    raise AssertionError(
        f"{p.name}: {source} video of {user_id} not playing; last {first}; console:\n"
        + "\n".join(p.console[-30:])
    )


def sfu_pid(meeting_id: str) -> int:
    """The pid of the ``konfer sfu`` process serving a meeting (a child of some replica)."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"sfu" in argv and meeting_id.encode() in argv:
            return int(proc.name)
    raise LookupError(f"no SFU process for {meeting_id}")


def sfu_url(meeting_id: str) -> str:
    """The control API of a meeting's SFU: the local runtime serves it on 127.0.0.1, on a
    port the kernel picked (its one listening TCP socket)."""
    proc = psutil.Process(sfu_pid(meeting_id))
    sockets = getattr(proc, "net_connections", proc.connections)  # renamed in psutil 6
    listening = [c.laddr.port for c in sockets(kind="tcp") if c.status == psutil.CONN_LISTEN]
    assert len(listening) == 1, listening
    return f"http://127.0.0.1:{listening[0]}"


async def sfu_metrics(meeting_id: str) -> str:
    """The text of a meeting's SFU ``/metrics`` (served without a token)."""
    async with httpx.AsyncClient() as http:
        r = await http.get(f"{sfu_url(meeting_id)}/metrics")
        r.raise_for_status()
        return r.text


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def artifact(name: str) -> Path:
    """A path under ``test-artifacts/e2e/`` (git-ignored) for screenshots and logs."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS / name


async def screenshot(p: Person, name: str) -> Path:
    """The page as it is, without the transient notices (toasts) over it."""
    await p.page.locator(".toast").evaluate_all("(els) => els.forEach((e) => e.remove())")
    path = artifact(f"{name}.png")
    await p.page.screenshot(path=str(path))
    return path
