"""Relays a client's SFU-addressed signaling to its meeting's SFU, and the SFU's back.

Each joined socket is a peer of the SFU (peer id = signaling session id). Calls carry a
media token minted here with the participant's grants; what the SFU says later (new
subscriber offers when tracks come and go) arrives on a long-poll that this replica keeps
per socket and hands straight to that socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from konfer.api.runtime.base import SfuRuntime
from konfer.api.signaling.presence import SessionInfo
from konfer.api.signaling.protocol import SignalingError
from konfer.core.tokens import MediaGrants, TokenCodec

log = logging.getLogger(__name__)

SERVICE_USER = uuid.UUID(int=0)
_POLL_SECONDS = 25


@dataclass(eq=False)
class _Link:
    url: str
    token: str
    send: Callable[[dict[str, Any]], None]
    poller: asyncio.Task[None] | None = field(default=None, repr=False)
    renew: Callable[[], str] | None = field(default=None, repr=False)
    renew_at: float = float("inf")

    def bearer(self) -> str:
        """The media token, minted again halfway through its life for long meetings."""
        if self.renew is not None and time.monotonic() >= self.renew_at:
            self.token = self.renew()
            self.renew_at = time.monotonic() + self.renew_ttl / 2
        return self.token

    renew_ttl: float = 0.0


class SfuMediaRouter:
    def __init__(self, runtime: SfuRuntime, tokens: TokenCodec, token_ttl: int) -> None:
        self.runtime = runtime
        self.tokens = tokens
        self.token_ttl = token_ttl
        self.links: dict[str, _Link] = {}
        self.http = httpx.AsyncClient(
            timeout=httpx.Timeout(10, read=_POLL_SECONDS + 10),
            limits=httpx.Limits(max_connections=None),
        )

    async def join(
        self, session: SessionInfo, grants: MediaGrants, send: Callable[[dict[str, Any]], None]
    ) -> None:
        url = await self._endpoint(session.meeting_id)

        def mint() -> str:
            return self.tokens.issue_media(
                uuid.UUID(session.user_id), session.username, grants, self.token_ttl
            )

        link = _Link(
            url,
            mint(),
            send,
            renew=mint,
            renew_ttl=self.token_ttl,
            renew_at=time.monotonic() + self.token_ttl / 2,
        )
        await self._call(link, "PUT", f"/v1/peers/{session.session_id}")
        self.runtime.peers_changed(session.meeting_id)
        link.poller = asyncio.create_task(
            self._poll(session.session_id, link), name=f"sfu-events-{session.session_id}"
        )
        self.links[session.session_id] = link

    async def handle(self, session: SessionInfo, message: dict[str, Any]) -> list[dict[str, Any]]:
        link = self.links.get(session.session_id)
        if link is None:
            raise SignalingError("SFU_UNAVAILABLE", "Not connected to the media server; join again")
        body = await self._call(link, "POST", f"/v1/peers/{session.session_id}/signal", message)
        messages: list[dict[str, Any]] = body.get("messages", [])
        return messages

    async def disconnect(self, session: SessionInfo) -> None:
        link = self.links.pop(session.session_id, None)
        if link is None:
            return
        if link.poller is not None:
            link.poller.cancel()
        with contextlib.suppress(SignalingError):
            await self._call(link, "DELETE", f"/v1/peers/{session.session_id}")
        self.runtime.peers_changed(session.meeting_id)

    def forget_meeting(self, meeting_id: str, url: str | None = None) -> None:
        """After an SFU crash: its peers are gone; clients will join again."""
        for sid, link in list(self.links.items()):
            if url is None or link.url == url:
                if link.poller is not None:
                    link.poller.cancel()
                del self.links[sid]

    # -- the room as the public webrtc routes see it ---------------------------------------

    def service_token(self, meeting_id: str) -> str:
        grants = MediaGrants(
            room=meeting_id, can_publish=False, can_publish_sources=[], room_admin=True, hidden=True
        )
        return self.tokens.issue_media(SERVICE_USER, "konfer-api", grants, 60)

    async def room_call(
        self,
        meeting_id: str,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        token: str | None = None,
    ) -> dict[str, Any] | None:
        """A control call for the public routes; None when the meeting has no SFU running."""
        url = await self.runtime.directory.lookup(meeting_id)
        if url is None:
            return None
        link = _Link(url, token or self.service_token(meeting_id), lambda _m: None)
        return await self._call(link, method, path, body)

    # -- plumbing ----------------------------------------------------------------------

    async def _endpoint(self, meeting_id: str) -> str:
        try:
            return await self.runtime.endpoint(meeting_id)
        except Exception as exc:
            log.exception("no SFU for meeting", extra={"meeting_id": meeting_id})
            raise SignalingError("SFU_UNAVAILABLE", "The media server could not start") from exc

    async def _call(
        self, link: _Link, method: str, path: str, body: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        try:
            r = await self.http.request(
                method,
                link.url + path,
                json=body,
                headers={"Authorization": f"Bearer {link.bearer()}"},
            )
        except httpx.HTTPError as exc:
            raise SignalingError("SFU_UNAVAILABLE", "The media server is unreachable") from exc
        if r.status_code >= 400:
            try:
                err = r.json()["error"]
                code, text = str(err["code"]), str(err["message"])
            except (ValueError, KeyError, TypeError):
                code, text = "", r.text[:200]
            raise SignalingError(
                _SIGNALING_CODES.get(r.status_code, "INVALID_MESSAGE"),
                f"{text} ({code})" if code else text,
            )
        data: dict[str, Any] = r.json()
        return data

    async def _poll(self, peer_id: str, link: _Link) -> None:
        cursor = 0
        while True:
            try:
                r = await self.http.get(
                    f"{link.url}/v1/peers/{peer_id}/events",
                    params={"after": cursor, "timeout": _POLL_SECONDS},
                    headers={"Authorization": f"Bearer {link.bearer()}"},
                )
            except httpx.HTTPError:
                await asyncio.sleep(1)
                continue
            if r.status_code != 200:
                return
            body = r.json()
            for event in body.get("events", []):
                cursor = event["seq"]
                link.send(event["message"])
            if body.get("closed"):
                return
            cursor = body.get("next", cursor)


_SIGNALING_CODES = {
    401: "UNAUTHORIZED",
    403: "UNAUTHORIZED",
    404: "TARGET_NOT_FOUND",
    503: "SFU_UNAVAILABLE",
}
