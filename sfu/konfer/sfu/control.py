"""The SFU's internal control API (HTTP on loopback or the pod network), for the api.

The api's ``MediaRouter`` relays a client's signaling here and the SFU's messages back:
every control call returns ``{"messages": [...]}``, the signaling messages to send to
that client now (``from_user_id: "sfu"``), and ``GET /v1/peers/{peer_id}/events`` is a
long-poll of the messages that arise later (subscriber re-offers). Every call carries a
media token for this meeting (``Authorization: Bearer …``); errors use the platform's
envelope ``{"error": {code, message, details, request_id, timestamp}}``.

Offers and answers carry an optional ``offer_id``: the SFU numbers its subscriber offers
and ignores an answer whose ``offer_id`` is not the pending offer's (it was superseded by
an ICE restart or a renegotiation); the answer to a client's publisher offer echoes the
client's ``offer_id``. With ``KONFER_SFU_FAULT_INJECTION`` (test systems only)
``POST /v1/peers/{peer_id}/fault`` cuts one of a peer's connections.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from konfer.core.errors import (
    InsufficientPermissions,
    KonferError,
    MethodNotAllowed,
    NotFound,
    ValidationFailed,
)
from konfer.core.tokens import MediaGrants
from konfer.sfu import aiortc_hooks as hooks
from konfer.sfu.auth import MediaAuth
from konfer.sfu.metrics import make_registry
from konfer.sfu.room import Peer, Room, now_iso

log = logging.getLogger(__name__)

MAX_POLL_SECONDS = 30.0
MAX_BODY_BYTES = 256 * 1024
PCS = ("publisher", "subscriber")


def _error(err: KonferError, request_id: str) -> JSONResponse:
    body: dict[str, Any] = {"code": err.code, "message": err.message}
    if err.details is not None:
        body["details"] = err.details
    body["request_id"] = request_id
    body["timestamp"] = now_iso()
    return JSONResponse({"error": body}, status_code=err.status_code, headers=err.headers)


class Control:
    """Request handlers bound to one room and one token checker."""

    def __init__(self, room: Room, auth: MediaAuth, fault_injection: bool = False) -> None:
        self.room = room
        self.auth = auth
        self.fault_injection = fault_injection
        self.registry = make_registry(room)

    # --- plumbing ----------------------------------------------------------------------

    def _principal(self, request: Request) -> tuple[str, MediaGrants]:
        return self.auth.verify(request.headers.get("authorization"))

    async def _body(self, request: Request) -> dict[str, Any]:
        raw = await request.body()
        if len(raw) > MAX_BODY_BYTES:
            raise ValidationFailed(f"Body exceeds {MAX_BODY_BYTES // 1024} KB")
        if not raw:
            return {}
        try:
            body = json.loads(raw)
        except ValueError as exc:
            raise ValidationFailed("Body is not valid JSON") from exc
        if not isinstance(body, dict):
            raise ValidationFailed("Body must be a JSON object")
        return body

    def _owned(self, request: Request, user_id: str, grants: MediaGrants) -> Peer:
        peer = self.room.peer(request.path_params["peer_id"])
        if peer.user_id != user_id and not grants.room_admin:
            raise InsufficientPermissions("This peer belongs to another user")
        return peer

    def _message(self, peer: Peer, body: dict[str, Any]) -> dict[str, Any]:
        return {
            **body,
            "room_id": self.room.meeting_id,
            "from_user_id": "sfu",
            "target_user_id": peer.user_id,
            "timestamp": now_iso(),
        }

    # --- endpoints ---------------------------------------------------------------------

    async def health(self, request: Request) -> JSONResponse:
        return JSONResponse(
            {
                "status": "ok",
                "meeting_id": self.room.meeting_id,
                "peers": len(self.room.peers),
                "tracks": len(self.room.tracks),
                "codec_guard": hooks.codec_guard.installed,
                "codec_instantiations": hooks.codec_guard.attempts,
                "event_loop": type(asyncio.get_running_loop()).__module__,
            }
        )

    async def metrics(self, request: Request) -> Response:
        return Response(generate_latest(self.registry), media_type=CONTENT_TYPE_LATEST)

    async def join(self, request: Request) -> JSONResponse:
        user_id, grants = self._principal(request)
        peer = await self.room.join(request.path_params["peer_id"], user_id, grants)
        return JSONResponse({"peer": self.room.peer_info(peer), "messages": []})

    async def leave(self, request: Request) -> JSONResponse:
        user_id, grants = self._principal(request)
        peer = self._owned(request, user_id, grants)
        await self.room.leave(peer)
        return JSONResponse({"peer_id": peer.peer_id, "left": True, "messages": []})

    async def signal(self, request: Request) -> JSONResponse:
        """One signaling message as the client sent it (offer, answer or ice-candidate)."""
        user_id, grants = self._principal(request)
        body = await self._body(request)
        peer = await self.room.join(request.path_params["peer_id"], user_id, grants)
        kind = body.get("type")
        if kind in ("offer", "answer"):
            return await self._negotiate(peer, body, expect=str(kind))
        if kind == "ice-candidate":
            return await self._candidate(peer, body)
        if kind == "ice-restart":
            return await self._ice_restart(peer, body)
        raise ValidationFailed(
            f"Unsupported message type {kind!r}: send offer, answer, ice-candidate or ice-restart"
        )

    async def _ice_restart(self, peer: Peer, body: dict[str, Any]) -> JSONResponse:
        """The client asks for an ICE restart of the connection the SFU offers on."""
        if _pc_name(body) != "subscriber":
            raise ValidationFailed(
                "The client restarts ICE on its publisher connection itself: send an offer "
                "with new ICE credentials (iceRestart)"
            )
        self.room.touch(peer)
        await self.room.restart_subscriber(peer)
        return JSONResponse({"messages": []})

    async def negotiate(self, request: Request) -> JSONResponse:
        user_id, grants = self._principal(request)
        body = await self._body(request)
        peer = await self.room.join(request.path_params["peer_id"], user_id, grants)
        return await self._negotiate(peer, body, expect=None)

    async def ice(self, request: Request) -> JSONResponse:
        user_id, grants = self._principal(request)
        body = await self._body(request)
        peer = await self.room.join(request.path_params["peer_id"], user_id, grants)
        return await self._candidate(peer, body)

    async def _negotiate(
        self, peer: Peer, body: dict[str, Any], expect: str | None
    ) -> JSONResponse:
        pc = _pc_name(body)
        description = body.get("sdp")
        if isinstance(description, str):
            description = {"type": expect, "sdp": description}
        if not isinstance(description, dict) or not isinstance(description.get("sdp"), str):
            raise ValidationFailed("sdp must be {type, sdp} with the SDP text in sdp")
        sdp_type = description.get("type") or expect
        if expect is not None and sdp_type != expect:
            raise ValidationFailed(f"An {expect} message must carry an {expect} description")
        self.room.touch(peer)
        if pc == "publisher":
            if sdp_type != "offer":
                raise ValidationFailed(
                    "On the publisher connection the client offers and the SFU answers"
                )
            hints = body.get("track_sources")
            if hints is not None and not (
                isinstance(hints, dict) and all(isinstance(v, str) for v in hints.values())
            ):
                raise ValidationFailed("track_sources must map track ids or mids to sources")
            offer_id = _offer_id(body)
            answer = await self.room.publisher_offer(peer, description["sdp"], hints)
            if offer_id is not None:
                answer["offer_id"] = offer_id
            return JSONResponse({"messages": [self._message(peer, answer)]})
        if sdp_type != "answer":
            raise ValidationFailed(
                "On the subscriber connection the SFU offers and the client answers"
            )
        applied = await self.room.subscriber_answer(peer, description["sdp"], _offer_id(body))
        return JSONResponse({"messages": [], "stale": not applied})

    async def _candidate(self, peer: Peer, body: dict[str, Any]) -> JSONResponse:
        pc = _pc_name(body)
        candidate = body.get("candidate")
        if candidate is None:
            candidate = {"candidate": ""}
        if not isinstance(candidate, dict):
            raise ValidationFailed("candidate must be {candidate, sdpMid, sdpMLineIndex}")
        await self.room.add_candidate(peer, pc, candidate)
        return JSONResponse({"messages": []})

    async def events(self, request: Request) -> JSONResponse:
        """Long-poll: messages for the client after sequence number ``after``."""
        user_id, grants = self._principal(request)
        peer = self._owned(request, user_id, grants)
        try:
            after = int(request.query_params.get("after", "0"))
            timeout = float(request.query_params.get("timeout", "25"))
        except ValueError as exc:
            raise ValidationFailed("after must be an integer and timeout a number") from exc
        timeout = max(0.0, min(timeout, MAX_POLL_SECONDS))
        items = await peer.events.poll(after, timeout)
        events = [
            {"seq": item["seq"], "message": self._message(peer, item["message"])} for item in items
        ]
        return JSONResponse(
            {
                "events": events,
                "next": events[-1]["seq"] if events else max(after, 0),
                "closed": peer.events.closed,
            }
        )

    async def peers(self, request: Request) -> JSONResponse:
        self._principal(request)
        peers = [self.room.peer_info(p) for p in self.room.peers.values() if not p.grants.hidden]
        return JSONResponse(
            {"room_id": self.room.meeting_id, "peers": peers, "total_peers": len(peers)}
        )

    async def peer(self, request: Request) -> JSONResponse:
        self._principal(request)
        return JSONResponse(self.room.peer_info(self.room.peer(request.path_params["peer_id"])))

    async def stats(self, request: Request) -> JSONResponse:
        self._principal(request)
        return JSONResponse(await self.room.stats())

    async def media(self, request: Request) -> JSONResponse:
        """Mute/unmute a peer's tracks; its owner, or a room admin (host) for anyone."""
        user_id, grants = self._principal(request)
        body = await self._body(request)
        peer = self._owned(request, user_id, grants)
        changes: dict[str, Any] = {}
        for key in ("audio_enabled", "video_enabled", "screen_sharing"):
            if key in body and body[key] is not None:
                if not isinstance(body[key], bool):
                    raise ValidationFailed(f"{key} must be a boolean")
                changes[key] = body[key]
        if "video_quality" in body and body["video_quality"] is not None:
            if body["video_quality"] not in ("low", "medium", "high"):
                raise ValidationFailed("video_quality must be low, medium or high")
            changes["video_quality"] = body["video_quality"]
        state = self.room.set_media_state(peer, changes)
        return JSONResponse(
            {
                "peer_id": peer.peer_id,
                "user_id": peer.user_id,
                "media_state": state,
                "updated_at": now_iso(),
            }
        )

    async def subscriptions(self, request: Request) -> JSONResponse:
        user_id, grants = self._principal(request)
        body = await self._body(request)
        peer = self._owned(request, user_id, grants)
        track_ids = body.get("track_ids")
        if track_ids is not None and not (
            isinstance(track_ids, list) and all(isinstance(t, str) for t in track_ids)
        ):
            raise ValidationFailed("track_ids must be a list of track ids, or null for all")
        self.room.set_subscriptions(peer, track_ids)
        return JSONResponse({"peer_id": peer.peer_id, "subscriptions": track_ids})

    async def track(self, request: Request) -> JSONResponse:
        self._principal(request)
        track = self.room.track(request.path_params["track_id"])
        info = self.room.track_info(track)
        info["subscribers"] = sorted(track.downstreams)
        info["forwarding_to"] = len(track.live)
        return JSONResponse(info)

    async def fault(self, request: Request) -> JSONResponse:
        """Test systems: blackhole one connection of a peer (``{"pc": ..., "fault":
        "blackhole", "sticky": false}``), so a client's recovery is tested against a real
        failure; a sticky fault cuts the connections replacing it too."""
        if not self.fault_injection:
            raise NotFound()
        user_id, grants = self._principal(request)
        body = await self._body(request)
        peer = self._owned(request, user_id, grants)
        if body.get("fault", "blackhole") != "blackhole":
            raise ValidationFailed("The only fault is blackhole")
        pc = _pc_name(body)
        sticky = body.get("sticky", False)
        if not isinstance(sticky, bool):
            raise ValidationFailed("sticky must be a boolean")
        cut = self.room.blackhole(peer, pc, sticky=sticky)
        return JSONResponse({"peer_id": peer.peer_id, "pc": pc, "ice_connections": cut})

    async def keyframe(self, request: Request) -> JSONResponse:
        """Ask a track's publisher for a keyframe (recorder taps starting a file)."""
        self._principal(request)
        track = self.room.track(request.path_params["track_id"])
        track.request_keyframe()
        return JSONResponse({"track_id": track.track_id, "requested": True})


def _pc_name(body: dict[str, Any]) -> str:
    pc = body.get("pc") or "publisher"
    if pc not in PCS:
        raise ValidationFailed(f"pc must be publisher or subscriber, not {pc!r}")
    return str(pc)


def _offer_id(body: dict[str, Any]) -> int | None:
    offer_id = body.get("offer_id")
    if offer_id is None:
        return None
    if isinstance(offer_id, bool) or not isinstance(offer_id, int) or offer_id < 0:
        raise ValidationFailed("offer_id must be a non-negative integer")
    return offer_id


def create_app(room: Room, auth: MediaAuth, fault_injection: bool = False) -> Starlette:
    """The control API of one SFU process."""
    control = Control(room, auth, fault_injection)
    routes = [
        Route("/healthz", control.health, methods=["GET"]),
        Route("/metrics", control.metrics, methods=["GET"]),
        Route("/v1/peers", control.peers, methods=["GET"]),
        Route("/v1/peers/{peer_id}", control.join, methods=["PUT"]),
        Route("/v1/peers/{peer_id}", control.peer, methods=["GET"]),
        Route("/v1/peers/{peer_id}", control.leave, methods=["DELETE"]),
        Route("/v1/peers/{peer_id}/signal", control.signal, methods=["POST"]),
        Route("/v1/peers/{peer_id}/negotiate", control.negotiate, methods=["POST"]),
        Route("/v1/peers/{peer_id}/ice", control.ice, methods=["POST"]),
        Route("/v1/peers/{peer_id}/events", control.events, methods=["GET"]),
        Route("/v1/peers/{peer_id}/media", control.media, methods=["POST"]),
        Route("/v1/peers/{peer_id}/subscriptions", control.subscriptions, methods=["PUT"]),
        Route("/v1/peers/{peer_id}/fault", control.fault, methods=["POST"]),
        Route("/v1/stats", control.stats, methods=["GET"]),
        Route("/v1/tracks/{track_id}", control.track, methods=["GET"]),
        Route("/v1/tracks/{track_id}/keyframe", control.keyframe, methods=["POST"]),
    ]

    async def konfer_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, KonferError)
        return _error(exc, request.state.request_id)

    async def http_error(request: Request, exc: Exception) -> Response:
        status = getattr(exc, "status_code", 500)
        err: KonferError = (
            NotFound()
            if status == 404
            else MethodNotAllowed()
            if status == 405
            else ValidationFailed(str(getattr(exc, "detail", "")) or None)
        )
        return _error(err, getattr(request.state, "request_id", uuid.uuid4().hex))

    async def unexpected(request: Request, exc: Exception) -> Response:
        log.exception("control API request failed", exc_info=exc)
        return _error(KonferError(), getattr(request.state, "request_id", uuid.uuid4().hex))

    async def request_id(request: Request, call_next: Any) -> Response:
        request.state.request_id = request.headers.get("x-request-id") or uuid.uuid4().hex
        response: Response = await call_next(request)
        response.headers["X-Request-ID"] = request.state.request_id
        return response

    return Starlette(
        routes=routes,
        middleware=[Middleware(BaseHTTPMiddleware, dispatch=request_id)],
        exception_handlers={
            KonferError: konfer_error,
            HTTPException: http_error,
            Exception: unexpected,
        },
    )
