"""One meeting's media: its peers, their two peer connections each, and their tracks.

Every client has a ``publisher`` connection (the client offers its camera, microphone and
screen; the SFU answers) and a ``subscriber`` connection (the SFU offers whatever there is
to receive and re-offers whenever that changes; the client answers), as design §2 says.
Messages for a client that are not a direct reply to its request (subscriber offers) go
to the peer's :class:`EventLog`, which the control API serves as a long-poll.

The room also decides what flows: video from the last N speakers, audio from the top K
(with a hold time), subscriber m-lines reused as tracks come and go, and ICE restarts
done by replacing a connection (aiortc cannot restart ICE on a live one). Subscriber
offers are numbered (``offer_id``) so that a late answer to a replaced offer is ignored.

``control`` calls this module; it calls ``forwarding`` and, through it, the aiortc hooks.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCPeerConnection,
    RTCRtpReceiver,
    RTCRtpTransceiver,
    RTCSessionDescription,
    sdp,
)
from aiortc.exceptions import InvalidStateError
from aiortc.mediastreams import MediaStreamError
from aiortc.rtcconfiguration import RTCBundlePolicy
from aiortc.rtcrtpparameters import RTCRtpCodecCapability

from konfer.core.errors import Conflict, InsufficientPermissions, NotFound, ValidationFailed
from konfer.core.tokens import MediaGrants
from konfer.sfu import aiortc_hooks as hooks
from konfer.sfu.forwarding import Downstream, PublishedTrack, spawn

log = logging.getLogger(__name__)

SOURCES = ("camera", "microphone", "screen_share")
TICK_SECONDS = 0.5


class InvalidSdp(ValidationFailed):
    code = "INVALID_SDP"
    default_message = "The session description is not a valid WebRTC offer or answer"


class NegotiationConflict(Conflict):
    code = "NEGOTIATION_CONFLICT"
    default_message = "That description does not fit the connection's negotiation state"


@dataclass(frozen=True, slots=True)
class RoomConfig:
    """What one SFU process is for and how it behaves (from settings and the command line)."""

    meeting_id: str
    announced_ip: str | None = None
    last_n: int = 9
    keyframe_interval: float = 0.5
    audio_top_n: int = 3
    audio_hold: float = 1.5


def now_iso() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


class EventLog:
    """SFU-to-client messages with sequence numbers, served as a long-poll."""

    def __init__(self, capacity: int = 256) -> None:
        self._items: deque[tuple[int, dict[str, Any]]] = deque(maxlen=capacity)
        self._seq = 0
        self._changed = asyncio.Event()
        self.closed = False

    @property
    def last_seq(self) -> int:
        return self._seq

    def push(self, message: dict[str, Any]) -> None:
        self._seq += 1
        self._items.append((self._seq, message))
        self._changed.set()
        self._changed = asyncio.Event()

    def close(self) -> None:
        self.closed = True
        self._changed.set()

    def after(self, seq: int) -> list[dict[str, Any]]:
        return [{"seq": s, "message": m} for s, m in self._items if s > seq]

    async def poll(self, after: int, wait_seconds: float) -> list[dict[str, Any]]:
        items = self.after(after)
        if items or self.closed or wait_seconds <= 0:
            return items
        changed = self._changed
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(changed.wait(), wait_seconds)
        return self.after(after)


class ForwardTrack(MediaStreamTrack):
    """The track a subscriber's sender is given: it never yields a frame.

    The sender's RTP loop waits on ``recv`` forever, so it never creates an encoder; the
    forwarder writes the packets underneath it.
    """

    def __init__(self, kind: str, track_id: str) -> None:
        super().__init__()
        self.kind = kind
        hooks.set_track_id(self, track_id)
        self._done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def recv(self) -> Any:
        await self._done
        raise MediaStreamError

    def stop(self) -> None:
        super().stop()
        if not self._done.done():
            self._done.set_result(None)


@dataclass(eq=False)
class Subscription:
    transceiver: RTCRtpTransceiver
    downstream: Downstream
    track: PublishedTrack


@dataclass(eq=False)
class Peer:
    """One client of the meeting (one signaling session of a user)."""

    peer_id: str
    user_id: str
    grants: MediaGrants
    connected_at: str = field(default_factory=now_iso)
    last_activity: str = field(default_factory=now_iso)
    publisher: RTCPeerConnection | None = None
    subscriber: RTCPeerConnection | None = None
    published: dict[str, PublishedTrack] = field(default_factory=dict)  # by publisher mid
    subscriptions: dict[str, Subscription] = field(default_factory=dict)  # by track id
    #: Subscriber m-lines whose track went away, free for the next track of their kind
    #: (with the downstream that last used each, for its numbering).
    spare: list[tuple[RTCRtpTransceiver, Downstream | None]] = field(default_factory=list)
    events: EventLog = field(default_factory=EventLog)
    early_candidates: dict[str, list[dict[str, Any]]] = field(
        default_factory=lambda: {"publisher": [], "subscriber": []}
    )
    media_state: dict[str, Any] = field(
        default_factory=lambda: {
            "audio_enabled": True,
            "video_enabled": True,
            "screen_sharing": False,
            "video_quality": "high",
        }
    )
    publisher_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    subscriber_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    selection: set[str] | None = None  # track ids this peer receives; None: all
    offer_outstanding: bool = False
    #: A change came after the last offer was taken: offer again once it is answered.
    renegotiate_again: bool = False
    renegotiation: asyncio.Task[None] | None = None
    #: Subscriber offers sent so far; the latest one's ``offer_id`` (answers echo it).
    offers_sent: int = 0
    #: The subscriber offer awaiting an answer, parsed (to judge answers without an id),
    #: and whether it came from a connection that replaced another (an ICE restart).
    pending_offer: sdp.SessionDescription | None = None
    pending_restart: bool = False
    #: ICE credentials of the last answer applied on the subscriber connection.
    answer_ice: frozenset[tuple[str, str]] = frozenset()
    ice_restart: bool = False  # the next subscriber offer comes from a new connection
    #: Connections ("publisher", "subscriber") whose replacements are cut too: a test
    #: fault that outlasts ICE restarts (see :meth:`Room.blackhole`).
    faults: set[str] = field(default_factory=set)
    closed: bool = False
    joined_monotonic: float = field(default_factory=time.monotonic)

    @property
    def status(self) -> str:
        pc = self.publisher or self.subscriber
        if self.closed:
            return "disconnected"
        if pc is None:
            return "connecting"
        state = pc.connectionState
        return {"new": "connecting", "closed": "disconnected"}.get(state, state)


class Room:
    """The meeting this SFU process serves."""

    def __init__(self, config: RoomConfig) -> None:
        self.config = config
        self.meeting_id = config.meeting_id
        self.created_at = now_iso()
        self.started_monotonic = time.monotonic()
        self.peers: dict[str, Peer] = {}
        self.tracks: dict[str, PublishedTrack] = {}
        self.last_spoke: dict[str, float] = {}
        #: Peers whose microphone is forwarded now (see :func:`choose_speakers`).
        self.audio_selected: set[str] = set()
        self._next_audio_check = 0.0
        self.rates: dict[str, tuple[float, float]] = {}  # track id -> (in bps, out bps)
        self._rate_marks: dict[str, tuple[int, int]] = {}
        self._rate_time = time.monotonic()
        self._ticker: asyncio.Task[None] | None = None
        self._closing = False
        self.remb_sent = 0
        #: Signaling counters for ``/metrics``: ICE restarts by connection, subscriber
        #: m-lines taken over by another track, and answers to superseded offers.
        self.ice_restarts: dict[str, int] = {"publisher": 0, "subscriber": 0}
        self.mline_reuses = 0
        self.stale_answers = 0
        self._ended_totals: dict[str, dict[str, int]] = {
            kind: dict.fromkeys(TOTAL_KEYS, 0) for kind in ("audio", "video")
        }

    # --- lifecycle ---------------------------------------------------------------------

    def start(self) -> None:
        if self._ticker is None:
            self._ticker = asyncio.create_task(self._tick_forever(), name="sfu-tick")

    async def close(self) -> None:
        self._closing = True
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
        peers = list(self.peers.values())
        for peer in peers:
            peer.events.close()
            if peer.renegotiation is not None:
                peer.renegotiation.cancel()
        for peer in peers:
            await self.leave(peer)

    def close_events(self) -> None:
        """End every pending long-poll now (shutdown: the api sees ``closed``)."""
        for peer in self.peers.values():
            peer.events.close()

    def _new_pc(self) -> RTCPeerConnection:
        return RTCPeerConnection(
            RTCConfiguration(iceServers=[], bundlePolicy=RTCBundlePolicy.MAX_BUNDLE)
        )

    # --- peers -------------------------------------------------------------------------

    def peer(self, peer_id: str) -> Peer:
        peer = self.peers.get(peer_id)
        if peer is None:
            raise NotFound(f"No peer {peer_id!r} in this meeting")
        return peer

    async def join(self, peer_id: str, user_id: str, grants: MediaGrants) -> Peer:
        """The peer, created on first use; a subscriber offer follows if there is media."""
        peer = self.peers.get(peer_id)
        if peer is not None:
            if peer.user_id != user_id:
                raise InsufficientPermissions(f"Peer {peer_id!r} belongs to another user")
            peer.grants = grants
            return peer
        peer = Peer(peer_id=peer_id, user_id=user_id, grants=grants)
        self.peers[peer_id] = peer
        self.last_spoke.setdefault(peer_id, 0.0)
        if grants.can_subscribe:
            for track in list(self.tracks.values()):
                if track.peer_id != peer_id:
                    self._subscribe(peer, track)
            self._schedule_renegotiation(peer)
        return peer

    async def leave(self, peer: Peer) -> None:
        """Close both connections and stop the peer's tracks at everyone else."""
        if peer.closed:
            return
        peer.closed = True
        self.peers.pop(peer.peer_id, None)
        self.last_spoke.pop(peer.peer_id, None)
        for track in list(peer.published.values()):
            track.end()
        for sub in list(peer.subscriptions.values()):
            sub.track.detach(peer.peer_id)
        peer.subscriptions.clear()
        if peer.renegotiation is not None:
            peer.renegotiation.cancel()
        peer.events.close()
        for pc in (peer.publisher, peer.subscriber):
            if pc is not None:
                with contextlib.suppress(Exception):
                    await pc.close()

    def touch(self, peer: Peer) -> None:
        peer.last_activity = now_iso()

    # --- publisher connection ----------------------------------------------------------

    async def publisher_offer(
        self, peer: Peer, offer_sdp: str, track_sources: dict[str, str] | None = None
    ) -> dict[str, Any]:
        """Apply the client's offer on its publisher connection; return the answer message."""
        if not peer.grants.can_publish:
            raise InsufficientPermissions("This media token does not allow publishing")
        description = _parse_sdp(offer_sdp)
        sources = self._sources(description, track_sources or {})
        refused = sorted({s for s in sources.values() if s not in peer.grants.can_publish_sources})
        if refused:
            raise InsufficientPermissions(
                f"This media token may not publish {', '.join(refused)}",
                details={"allowed": list(peer.grants.can_publish_sources)},
            )
        async with peer.publisher_lock:
            previous = peer.publisher
            restart = previous is not None and _ice_restarted(previous, description)
            fresh = previous is None or restart
            pc = self._new_pc() if fresh else previous
            assert pc is not None
            try:
                await pc.setRemoteDescription(RTCSessionDescription(offer_sdp, "offer"))
                await pc.setLocalDescription(await pc.createAnswer())
            except Exception as exc:
                if fresh:
                    with contextlib.suppress(Exception):
                        await pc.close()
                raise _sdp_error(exc) from exc
            if fresh and "publisher" in peer.faults:
                hooks.blackhole(pc)
            if fresh:
                peer.publisher = pc
                pc.on("connectionstatechange", lambda: self._publisher_state(peer, pc))
            for candidate in peer.early_candidates["publisher"]:
                await _add_candidate(pc, candidate)
            peer.early_candidates["publisher"].clear()
            changed = False
            if restart and previous is not None:
                changed = self._move_published(peer, pc, description, sources)
                spawn(previous.close())
                self.ice_restarts["publisher"] += 1
            changed = self._sync_published(peer, pc, description, sources) or changed
        if changed:
            self._renegotiate_everyone(exclude=peer.peer_id)
        answer = pc.localDescription
        return {
            "type": "answer",
            "pc": "publisher",
            "sdp": {"type": "answer", "sdp": self._announce(answer.sdp)},
            "tracks": [self.track_info(t) for t in peer.published.values() if not t.ended],
        }

    def _sources(
        self, description: sdp.SessionDescription, hints: dict[str, str]
    ) -> dict[str, str]:
        """Source of every sending m-line, by mid: a signaling hint, else from the msid."""
        sources: dict[str, str] = {}
        for media in description.media:
            if media.kind not in ("audio", "video") or media.direction not in (
                "sendonly",
                "sendrecv",
            ):
                continue
            mid = media.rtp.muxId or ""
            track_id = description.webrtc_track_id(media) or ""
            hint = hints.get(track_id) or hints.get(mid)
            if hint is not None:
                if hint not in SOURCES:
                    raise ValidationFailed(
                        f"Unknown track source {hint!r}", details={"allowed": list(SOURCES)}
                    )
                sources[mid] = hint
            elif media.kind == "audio":
                sources[mid] = "microphone"
            else:
                msid = (media.msid or "").lower()
                sources[mid] = "screen_share" if "screen" in msid else "camera"
        return sources

    def _sync_published(
        self,
        peer: Peer,
        pc: RTCPeerConnection,
        description: sdp.SessionDescription,
        sources: dict[str, str],
    ) -> bool:
        """Create tracks for new sending m-lines and end those that stopped sending."""
        changed = False
        by_mid = {t.mid: t for t in pc.getTransceivers() if t.mid is not None}
        for media in description.media:
            mid = media.rtp.muxId or ""
            existing = peer.published.get(mid)
            sending = mid in sources and media.port != 0
            if existing is not None and (not sending or existing.ended):
                existing.end()
                changed = True
            if not sending or (existing is not None and not existing.ended):
                continue
            transceiver = by_mid.get(mid)
            if transceiver is None:
                continue
            codecs = hooks.transceiver_codecs(transceiver)
            main = next((c for c in codecs if c.name.lower() != "rtx"), None)
            if main is None:
                continue
            rtx = next(
                (
                    c.payloadType
                    for c in codecs
                    if c.name.lower() == "rtx" and c.parameters.get("apt") == main.payloadType
                ),
                None,
            )
            wanted_id = description.webrtc_track_id(media) or ""
            track_id = (
                wanted_id if wanted_id and wanted_id not in self.tracks else secrets.token_hex(8)
            )
            track = PublishedTrack(
                track_id=track_id,
                peer_id=peer.peer_id,
                user_id=peer.user_id,
                kind=media.kind,
                source=sources[mid],
                codec=main,
                rtx_payload_type=rtx,
                receiver=transceiver.receiver,
                keyframe_interval=self.config.keyframe_interval,
                on_speaking=self.speaking,
                on_ended=self._track_ended,
            )
            track.mid = mid
            track.client_track_id = wanted_id
            track.enabled = self._source_enabled(peer, track.source)
            peer.published[mid] = track
            self.tracks[track_id] = track
            for other in self.peers.values():
                if other is not peer and other.grants.can_subscribe and not other.closed:
                    self._subscribe(other, track)
            changed = True
        return changed

    def _move_published(
        self,
        peer: Peer,
        pc: RTCPeerConnection,
        description: sdp.SessionDescription,
        sources: dict[str, str],
    ) -> bool:
        """ICE restart: carry the peer's tracks over to the connection that replaces the old.

        aiortc cannot restart ICE on a live connection (it starts its ICE transport once),
        so an offer with new ICE credentials gets a new connection, answered with a new
        DTLS fingerprint, which makes the client renegotiate DTLS too. The tracks keep their
        ids and their subscribers; only their receivers change. A track whose m-line no
        longer sends, or now sends another codec, ends (and a new one begins).
        """
        by_mid = {t.mid: t for t in pc.getTransceivers() if t.mid is not None}
        media_by_client_id: dict[str, sdp.MediaDescription] = {}
        media_by_mid: dict[str, sdp.MediaDescription] = {}
        for m in description.media:
            if m.kind in ("audio", "video") and (m.rtp.muxId or "") in sources:
                media_by_mid[m.rtp.muxId or ""] = m
                client_id = description.webrtc_track_id(m)
                if client_id:
                    media_by_client_id[client_id] = m
        changed = False
        moved: dict[str, PublishedTrack] = {}
        for track in list(peer.published.values()):
            media = media_by_client_id.get(track.client_track_id) or media_by_mid.get(track.mid)
            mid = (media.rtp.muxId or "") if media is not None else ""
            transceiver = by_mid.get(mid)
            codecs = hooks.transceiver_codecs(transceiver) if transceiver is not None else []
            main = next((c for c in codecs if c.name.lower() != "rtx"), None)
            if (
                media is None
                or media.port == 0
                or transceiver is None
                or main is None
                or main.mimeType.lower() != track.codec.mimeType.lower()
                or mid in moved
            ):
                track.end()
                changed = True
                continue
            rtx = next(
                (
                    c.payloadType
                    for c in codecs
                    if c.name.lower() == "rtx" and c.parameters.get("apt") == main.payloadType
                ),
                None,
            )
            track.rebind(transceiver.receiver, main, rtx)
            track.mid = mid
            moved[mid] = track
        peer.published = moved
        return changed

    def _publisher_state(self, peer: Peer, pc: RTCPeerConnection) -> None:
        if pc is not peer.publisher:
            return  # replaced by an ICE restart; its tracks live on on the new one
        if pc.connectionState in ("failed", "closed"):
            for track in list(peer.published.values()):
                track.end()

    def totals(self) -> dict[str, dict[str, int]]:
        """Counters of every track this process has forwarded, by kind (for metrics)."""
        out = {kind: dict(values) for kind, values in self._ended_totals.items()}
        for track in self.tracks.values():
            _accumulate(out[track.kind], track)
        return out

    def _track_ended(self, track: PublishedTrack) -> None:
        if self.tracks.pop(track.track_id, None) is not None:
            _accumulate(self._ended_totals[track.kind], track)
        for peer in self.peers.values():
            self._unsubscribe(peer, track.track_id)
        owner = self.peers.get(track.peer_id)
        if owner is not None:
            owner.published = {m: t for m, t in owner.published.items() if t is not track}

    # --- subscriber connection ---------------------------------------------------------

    def _subscribe(self, peer: Peer, track: PublishedTrack) -> None:
        if track.track_id in peer.subscriptions or track.ended:
            return
        if peer.selection is not None and track.track_id not in peer.selection:
            return
        if peer.subscriber is None:
            peer.subscriber = self._new_subscriber_pc(peer)
        forward = ForwardTrack(track.kind, track.track_id)
        reused = self._take_spare(peer, track)
        if reused is None:
            transceiver = peer.subscriber.addTransceiver(forward, direction="sendonly")
            self._bind_subscription(peer, track, transceiver)
            return
        transceiver, previous = reused
        self.mline_reuses += 1
        transceiver.sender.replaceTrack(forward)
        transceiver.direction = "sendonly"
        self._bind_subscription(peer, track, transceiver, previous)

    def _take_spare(
        self, peer: Peer, track: PublishedTrack
    ) -> tuple[RTCRtpTransceiver, Downstream | None] | None:
        """An inactive m-line of the track's kind and codec, so the SDP does not grow.

        Recorders never reuse: an aiortc receiver is bound to the first track of its
        m-line (no new ``track`` event, and RTCP BYE stops its decoder for good).
        """
        if peer.grants.recorder:
            return None
        mime = track.codec.mimeType.lower()
        for i, (transceiver, previous) in enumerate(peer.spare):
            if transceiver.kind != track.kind:
                continue
            if previous is None or previous.track.codec.mimeType.lower() == mime:
                return peer.spare.pop(i)
        return None

    def _new_subscriber_pc(self, peer: Peer) -> RTCPeerConnection:
        pc = self._new_pc()
        pc.on("connectionstatechange", lambda: self._subscriber_state(peer, pc))
        return pc

    def _bind_subscription(
        self,
        peer: Peer,
        track: PublishedTrack,
        transceiver: RTCRtpTransceiver,
        previous: Downstream | None = None,
    ) -> None:
        transceiver.setCodecPreferences(_preferences(track))
        hooks.set_sender_ids(transceiver.sender, track.peer_id, track.track_id)
        downstream = track.attach(transceiver.sender, peer.peer_id, previous)
        downstream.wanted = self._wanted(track) or peer.grants.recorder
        peer.subscriptions[track.track_id] = Subscription(transceiver, downstream, track)

    def _unsubscribe(self, peer: Peer, track_id: str) -> None:
        """Stop sending a track to a peer: an inactive m-line in the re-offer.

        The m-line (and its sender, still running) waits in ``peer.spare`` for the next
        track of its kind; the offer's track list tells the client the track is gone.
        A recorder's sender is stopped instead (RTCP BYE ends the track there).
        """
        sub = peer.subscriptions.pop(track_id, None)
        if sub is None:
            return
        sub.track.detach(peer.peer_id)
        sub.transceiver.direction = "inactive"
        if peer.grants.recorder:
            spawn(sub.transceiver.sender.stop())
        else:
            peer.spare.append((sub.transceiver, sub.downstream))
        self._schedule_renegotiation(peer)

    def set_subscriptions(self, peer: Peer, track_ids: list[str] | None) -> None:
        """Receive only ``track_ids`` (recorder taps, selective viewing); None: everything."""
        if track_ids is not None:
            unknown = sorted(set(track_ids) - set(self.tracks))
            if unknown:
                raise NotFound(
                    f"Unknown track id(s): {', '.join(unknown)}", details={"unknown": unknown}
                )
            peer.selection = set(track_ids)
        else:
            peer.selection = None
        for track_id in list(peer.subscriptions):
            if peer.selection is not None and track_id not in peer.selection:
                self._unsubscribe(peer, track_id)
        if peer.grants.can_subscribe:
            for track in list(self.tracks.values()):
                if track.peer_id != peer.peer_id:
                    self._subscribe(peer, track)
        self._schedule_renegotiation(peer)

    def track(self, track_id: str) -> PublishedTrack:
        track = self.tracks.get(track_id)
        if track is None:
            raise NotFound(f"No track {track_id!r} in this meeting")
        return track

    async def restart_subscriber(self, peer: Peer) -> None:
        """ICE restart of the subscriber connection, on the client's request.

        aiortc cannot restart ICE on a live connection, so the SFU replaces it: a new
        connection with the same m-lines in the same order (kinds and mids match, so a
        browser applies the offer to its existing connection as an ICE and DTLS restart;
        an aiortc client, seeing ``ice_restart``, answers on a new connection), the same
        tracks with the same ids. The offer arrives as usual on the event stream.
        """
        async with peer.subscriber_lock:
            old = peer.subscriber
            if old is None or peer.closed:
                raise NegotiationConflict("There is no subscriber connection to restart")
            pc = self._new_subscriber_pc(peer)
            by_transceiver = {id(s.transceiver): s for s in peer.subscriptions.values()}
            peer.subscriptions = {}
            peer.spare = []
            for transceiver in old.getTransceivers():
                sub = by_transceiver.get(id(transceiver))
                if sub is None:
                    placeholder = pc.addTransceiver(transceiver.kind, direction="inactive")
                    if not peer.grants.recorder:
                        peer.spare.append((placeholder, None))
                    continue
                sub.track.detach(peer.peer_id)
                forward = ForwardTrack(sub.track.kind, sub.track.track_id)
                self._bind_subscription(
                    peer, sub.track, pc.addTransceiver(forward, direction="sendonly")
                )
            peer.subscriber = pc
            peer.offer_outstanding = False
            peer.pending_offer = None
            peer.renegotiate_again = False
            peer.ice_restart = True
            self.ice_restarts["subscriber"] += 1
            peer.early_candidates["subscriber"].clear()
            if peer.renegotiation is not None and not peer.renegotiation.done():
                peer.renegotiation.cancel()
            peer.renegotiation = None
            spawn(old.close())
        self._schedule_renegotiation(peer)

    def _subscriber_state(self, peer: Peer, pc: RTCPeerConnection) -> None:
        if pc is not peer.subscriber:
            return
        if pc.connectionState in ("failed", "closed"):
            for sub in list(peer.subscriptions.values()):
                sub.track.pause(sub.downstream)

    def _renegotiate_everyone(self, exclude: str) -> None:
        for other in self.peers.values():
            if other.peer_id != exclude:
                self._schedule_renegotiation(other)

    def _schedule_renegotiation(self, peer: Peer) -> None:
        """Offer on the peer's subscriber connection soon (changes in one turn coalesce).

        A renegotiation already under way may have taken its offer before this change
        (setting the offer gathers, and tracks arrive meanwhile), so it is told to offer
        again once its offer is answered; it forgets that if it has not taken it yet.
        """
        if peer.closed or peer.subscriber is None or self._closing:
            return
        if peer.renegotiation is None or peer.renegotiation.done():
            peer.renegotiation = asyncio.create_task(self._renegotiate(peer))
        else:
            peer.renegotiate_again = True

    async def _renegotiate(self, peer: Peer) -> None:
        await asyncio.sleep(0)
        async with peer.subscriber_lock:
            pc = peer.subscriber
            if pc is None or peer.closed or pc.connectionState == "closed":
                return
            if peer.offer_outstanding:
                peer.renegotiate_again = True
                return
            if not pc.getTransceivers():
                return
            peer.renegotiate_again = False  # this offer covers every change so far
            try:
                await pc.setLocalDescription(await pc.createOffer())
                if "subscriber" in peer.faults:
                    hooks.blackhole(pc)  # gathered now: its sockets exist
            except InvalidStateError:
                # The client went away without leaving: aiortc is closing the connection
                # while it still reads "connected". Nothing to offer to.
                return
            except Exception:
                if not (peer.closed or self._closing):
                    log.exception("subscriber offer failed", extra={"peer_id": peer.peer_id})
                return
            peer.offer_outstanding = True
            peer.offers_sent += 1
            offer = pc.localDescription
            peer.pending_offer = sdp.SessionDescription.parse(offer.sdp)
            peer.pending_restart = peer.ice_restart
            # Only the tracks this offer sends: one subscribed while it was being set
            # has no m-line in it yet (the next offer brings it).
            sending = {
                m.rtp.muxId
                for m in peer.pending_offer.media
                if m.direction in ("sendonly", "sendrecv")
            }
            message: dict[str, Any] = {
                "type": "offer",
                "pc": "subscriber",
                "offer_id": peer.offers_sent,
                "sdp": {"type": "offer", "sdp": self._announce(offer.sdp)},
                "tracks": [
                    {**self.track_info(s.track), "mid": s.transceiver.mid}
                    for s in peer.subscriptions.values()
                    if s.transceiver.mid in sending
                ],
            }
            if peer.ice_restart:
                message["ice_restart"] = True
                peer.ice_restart = False
            peer.events.push(message)

    async def subscriber_answer(
        self, peer: Peer, answer_sdp: str, offer_id: int | None = None
    ) -> bool:
        """Apply the client's answer to the SFU's last subscriber offer; False if stale.

        An offer can be superseded while its answer is on the way: an ICE restart puts a
        new connection with a new offer in place, and a renegotiation follows an answer
        that a client may send twice. Applying such an answer to the new offer would
        break the connection, so it is ignored (and counted). ``offer_id`` says which
        offer an answer is for; an answer without it (older clients) is applied only if
        it fits the pending offer: the same m-lines, directions that answer the offered
        ones, and, after an ICE restart, ICE credentials other than the old answer's.
        """
        description = _parse_sdp(answer_sdp)
        async with peer.subscriber_lock:
            pc = peer.subscriber
            if offer_id is None and (pc is None or not peer.offer_outstanding):
                raise NegotiationConflict("There is no subscriber offer waiting for an answer")
            if offer_id is not None:
                stale = pc is None or not peer.offer_outstanding or offer_id != peer.offers_sent
            else:
                previous = peer.answer_ice if peer.pending_restart else frozenset()
                stale = not _answer_fits(peer.pending_offer, description, previous)
            if stale:
                self.stale_answers += 1
                log.info(
                    "stale subscriber answer ignored",
                    extra={
                        "peer_id": peer.peer_id,
                        "offer_id": offer_id,
                        "pending_offer_id": peer.offers_sent if peer.offer_outstanding else None,
                    },
                )
                return False
            assert pc is not None
            try:
                await pc.setRemoteDescription(RTCSessionDescription(answer_sdp, "answer"))
            except Exception as exc:
                raise _sdp_error(exc) from exc
            peer.offer_outstanding = False
            peer.pending_offer = None
            peer.answer_ice = _ice_credentials(description)
            for candidate in peer.early_candidates["subscriber"]:
                await _add_candidate(pc, candidate)
            peer.early_candidates["subscriber"].clear()
            again = peer.renegotiate_again
            peer.renegotiate_again = False
        if again:
            self._schedule_renegotiation(peer)
        return True

    def blackhole(self, peer: Peer, pc_name: str, sticky: bool = False) -> int:
        """Test fault: the network between the SFU and one connection of a peer drops
        everything from now on (``KONFER_SFU_FAULT_INJECTION`` only).

        Only the client's ICE restart (or its rejoin) recovers from it, which is what the
        fault is for: it proves that path end to end with a real failure. A ``sticky``
        fault cuts the connections that replace this one too, until the peer leaves, so
        only a rejoin (a new peer) recovers.
        """
        pc = peer.publisher if pc_name == "publisher" else peer.subscriber
        if pc is None:
            raise NegotiationConflict(f"Peer {peer.peer_id!r} has no {pc_name} connection")
        if sticky:
            peer.faults.add(pc_name)
        cut = hooks.blackhole(pc)
        if pc_name == "subscriber":
            # forwarded packets bypass aioice: their cached send paths must drop too
            for sub in peer.subscriptions.values():
                sub.downstream.sendto = hooks.drop_datagram
        log.warning(
            "fault injected: %s connection blackholed",
            pc_name,
            extra={"peer_id": peer.peer_id, "ice_connections": cut},
        )
        return cut

    async def add_candidate(self, peer: Peer, pc_name: str, candidate: dict[str, Any]) -> None:
        pc = peer.publisher if pc_name == "publisher" else peer.subscriber
        if pc is None or pc.remoteDescription is None:
            peer.early_candidates[pc_name].append(candidate)
            return
        await _add_candidate(pc, candidate)

    # --- selection, media state --------------------------------------------------------

    def speaking(self, peer_id: str) -> None:
        """A packet of speech from ``peer_id`` (called on the per-packet path).

        A speaker who is not forwarded yet is considered at once (at most every 100 ms),
        not at the next tick: the packet that called this is then already forwarded, so
        the first syllable is not lost.
        """
        now = time.monotonic()
        self.last_spoke[peer_id] = now
        if peer_id not in self.audio_selected and now >= self._next_audio_check:
            self._next_audio_check = now + 0.1
            self.apply_audio_selection(now)

    def apply_audio_selection(self, now: float | None = None) -> None:
        """Forward microphones only from the top speakers (recorders get every one)."""
        mics = [t for t in self.tracks.values() if t.source == "microphone"]
        self.audio_selected = choose_speakers(
            {t.peer_id for t in mics if t.levels_seen},
            self.last_spoke,
            self.audio_selected,
            self.config.audio_top_n,
            self.config.audio_hold,
            time.monotonic() if now is None else now,
        )
        recorders = {p.peer_id for p in self.peers.values() if p.grants.recorder}
        for track in mics:
            wanted = self._wanted(track)
            for d in list(track.downstreams.values()):
                track.set_wanted(d, wanted or d.peer_id in recorders)

    def selected_speakers(self) -> set[str]:
        """The ``last_n`` peers whose video is forwarded: most recent speakers first."""
        publishers = {t.peer_id for t in self.tracks.values() if t.source == "camera"}
        if len(publishers) <= self.config.last_n:
            return publishers

        def rank(peer_id: str) -> tuple[float, float]:
            peer = self.peers.get(peer_id)
            return (self.last_spoke.get(peer_id, 0.0), -(peer.joined_monotonic if peer else 0))

        return set(sorted(publishers, key=rank, reverse=True)[: self.config.last_n])

    def _wanted(self, track: PublishedTrack, selected: set[str] | None = None) -> bool:
        if track.source == "microphone":
            # A microphone without audio levels cannot be ranked: always forwarded.
            return not track.levels_seen or track.peer_id in self.audio_selected
        if track.source != "camera":
            return True
        return track.peer_id in (selected if selected is not None else self.selected_speakers())

    def apply_selection(self) -> None:
        selected = self.selected_speakers()
        # Recorders and streamers get every camera: last-N saves viewers' bandwidth, but a
        # recording must not lose whoever was quiet.
        recorders = {p.peer_id for p in self.peers.values() if p.grants.recorder}
        for track in self.tracks.values():
            if track.source == "camera":
                wanted = track.peer_id in selected
                for d in list(track.downstreams.values()):
                    track.set_wanted(d, wanted or d.peer_id in recorders)

    def _source_enabled(self, peer: Peer, source: str) -> bool:
        key = {"microphone": "audio_enabled", "camera": "video_enabled"}.get(source)
        return bool(peer.media_state.get(key, True)) if key else True

    def set_media_state(self, peer: Peer, changes: dict[str, Any]) -> dict[str, Any]:
        """Mute/unmute a peer's published tracks for everyone (spec media-state fields)."""
        peer.media_state.update({k: v for k, v in changes.items() if v is not None})
        for track in peer.published.values():
            if track.source != "screen_share":
                track.set_enabled(self._source_enabled(peer, track.source))
            elif changes.get("screen_sharing") is not None:
                track.set_enabled(bool(changes["screen_sharing"]))
        return dict(peer.media_state)

    # --- periodic work -----------------------------------------------------------------

    async def _tick_forever(self) -> None:
        n = 0
        while True:
            await asyncio.sleep(TICK_SECONDS)
            n += 1
            try:
                await self.tick(remb=n % 2 == 0)
            except Exception:
                log.exception("SFU tick failed")

    async def tick(self, remb: bool = True) -> None:
        """Sender reports, last-N selection, REMB aggregation and bitrate sampling."""
        for track in self.tracks.values():
            for d in track.live:
                d.sync_report()
        self.apply_selection()
        self.apply_audio_selection()
        if remb:
            for track in list(self.tracks.values()):
                if await track.send_remb() is not None:
                    self.remb_sent += 1
        now = time.monotonic()
        elapsed = now - self._rate_time
        if elapsed >= 0.9:
            for track_id, track in self.tracks.items():
                before = self._rate_marks.get(track_id, (0, 0))
                self.rates[track_id] = (
                    (track.bytes_in - before[0]) * 8 / elapsed,
                    (track.bytes_out - before[1]) * 8 / elapsed,
                )
                self._rate_marks[track_id] = (track.bytes_in, track.bytes_out)
            for gone in set(self.rates) - set(self.tracks):
                self.rates.pop(gone, None)
                self._rate_marks.pop(gone, None)
            self._rate_time = now

    # --- views -------------------------------------------------------------------------

    def track_info(self, track: PublishedTrack) -> dict[str, Any]:
        info: dict[str, Any] = {
            "track_id": track.track_id,
            "peer_id": track.peer_id,
            "user_id": track.user_id,
            "kind": track.kind,
            "source": track.source,
            "codec": track.codec.name.lower(),
            "bitrate": int(self.rates.get(track.track_id, (0.0, 0.0))[0]),
            "enabled": track.enabled,
        }
        return info

    def peer_info(self, peer: Peer) -> dict[str, Any]:
        """A peer in the shape of ``GET /webrtc/room/{roomId}/peers``."""
        tracks = [t for t in peer.published.values() if not t.ended]
        sources = {t.source for t in tracks}
        media_type = (
            "screen"
            if "screen_share" in sources
            else "video"
            if "camera" in sources
            else "audio"
            if "microphone" in sources
            else "none"
        )
        return {
            "peer_id": peer.peer_id,
            "user_id": peer.user_id,
            "media_type": media_type,
            "status": peer.status,
            "hidden": peer.grants.hidden,
            "tracks": [self.track_info(t) for t in tracks],
            "subscriptions": sorted(peer.subscriptions),
            "media_state": dict(peer.media_state),
            "connected_at": peer.connected_at,
            "last_activity": peer.last_activity,
        }

    async def stats(self) -> dict[str, Any]:
        """Measured room statistics in the shape of ``GET /webrtc/room/{roomId}/stats``."""
        tracks = list(self.tracks.values())
        inbound = sum(self.rates.get(t.track_id, (0.0, 0.0))[0] for t in tracks)
        outbound = sum(self.rates.get(t.track_id, (0.0, 0.0))[1] for t in tracks)
        lost = expected = 0
        jitters = [t.jitter_ms() for t in tracks if t.media_ssrc is not None]
        rtts: list[float] = []
        quality = {"excellent": 0, "good": 0, "fair": 0, "poor": 0}
        visible = [p for p in self.peers.values() if not p.grants.hidden]
        for peer in self.peers.values():
            peer_rtts: list[float] = []
            peer_lost = peer_expected = 0
            for t in peer.published.values():  # upstream: the SFU's receiver statistics
                t_lost, t_expected = t.loss()
                peer_lost += t_lost
                peer_expected += t_expected
            for sub in peer.subscriptions.values():  # downstream: the client's RTCP reports
                rtt = hooks.sender_rtt(sub.downstream.sender)
                if rtt is not None:
                    peer_rtts.append(rtt * 1000.0)
                report = await sub.downstream.sender.getStats()
                for stat in report.values():
                    if getattr(stat, "type", "") != "remote-inbound-rtp":
                        continue
                    s_lost = max(int(stat.packetsLost or 0), 0)
                    peer_lost += s_lost
                    peer_expected += max(int(stat.packetsReceived or 0), 0) + s_lost
                    if stat.jitter is not None:
                        jitters.append(float(stat.jitter) * 1000.0 / sub.track.codec.clockRate)
            lost += peer_lost
            expected += peer_expected
            rtts += peer_rtts
            if not peer.grants.hidden:
                loss_rate = peer_lost / peer_expected if peer_expected else 0.0
                rtt_ms = sum(peer_rtts) / len(peer_rtts) if peer_rtts else 0.0
                quality[_quality(loss_rate, rtt_ms)] += 1
        return {
            "room_id": self.meeting_id,
            "meeting_id": self.meeting_id,
            "created_at": self.created_at,
            "duration": int(time.monotonic() - self.started_monotonic),
            "statistics": {
                "total_peers": len(visible),
                "active_peers": sum(1 for p in visible if p.status == "connected"),
                "total_tracks": len(tracks),
                "audio_tracks": sum(1 for t in tracks if t.kind == "audio"),
                "video_tracks": sum(1 for t in tracks if t.source == "camera"),
                "screen_tracks": sum(1 for t in tracks if t.source == "screen_share"),
                "total_bandwidth": int(inbound + outbound),
                "inbound_bandwidth": int(inbound),
                "outbound_bandwidth": int(outbound),
                "packet_loss_rate": round(lost / expected, 4) if expected else 0.0,
                "average_jitter": round(sum(jitters) / len(jitters), 2) if jitters else 0.0,
                "average_rtt": round(sum(rtts) / len(rtts), 2) if rtts else 0.0,
            },
            "quality_metrics": quality,
        }

    def _announce(self, text: str) -> str:
        """Put ``announced_ip`` in place of the host addresses of the SFU's candidates."""
        ip = self.config.announced_ip
        if not ip:
            return text
        lines = []
        for line in text.split("\r\n"):
            if line.startswith("a=candidate:"):
                parts = line.split(" ")
                if len(parts) > 7 and parts[7] == "host":
                    parts[4] = ip
                line = " ".join(parts)
            elif line.startswith("c=IN IP4 "):
                line = f"c=IN IP4 {ip}"
            lines.append(line)
        return "\r\n".join(lines)


def choose_speakers(
    candidates: set[str],
    last_spoke: dict[str, float],
    current: set[str],
    k: int,
    hold: float,
    now: float,
) -> set[str]:
    """The ``k`` peers whose audio is forwarded, with hysteresis.

    A selected peer keeps its place while it spoke within ``hold`` seconds, so pauses
    between words never cut it off; free places go to the most recent speakers. Peers
    that never spoke are not forwarded at all (their packets would be silence) unless
    there are at most ``k`` candidates.
    """
    if len(candidates) <= k:
        return set(candidates)
    chosen = {p for p in current if p in candidates and now - last_spoke.get(p, 0.0) < hold}
    if len(chosen) > k:  # k shrank: keep the most recent
        chosen = set(sorted(chosen, key=lambda p: last_spoke.get(p, 0.0), reverse=True)[:k])
    for peer_id in sorted(candidates - chosen, key=lambda p: last_spoke.get(p, 0.0), reverse=True):
        if len(chosen) >= k or last_spoke.get(peer_id, 0.0) <= 0.0:
            break
        chosen.add(peer_id)
    return chosen


def _quality(loss_rate: float, rtt_ms: float) -> str:
    """Bucket a peer by measured loss and round-trip time."""
    if loss_rate < 0.01 and rtt_ms < 100:
        return "excellent"
    if loss_rate < 0.03 and rtt_ms < 200:
        return "good"
    if loss_rate < 0.08 and rtt_ms < 400:
        return "fair"
    return "poor"


TOTAL_KEYS = (
    "packets_in",
    "bytes_in",
    "packets_out",
    "bytes_out",
    "retransmitted",
    "keyframes_in",
    "keyframes_out",
)


def _accumulate(into: dict[str, int], track: PublishedTrack) -> None:
    into["packets_in"] += track.packets_in
    into["bytes_in"] += track.bytes_in
    into["packets_out"] += track.packets_out
    into["bytes_out"] += track.bytes_out
    into["retransmitted"] += track.retransmitted
    into["keyframes_in"] += track.keyframe_requests_received
    into["keyframes_out"] += track.keyframe_requests_sent


def _preferences(track: PublishedTrack) -> list[RTCRtpCodecCapability]:
    """Offer a subscriber exactly the publisher's codec (and RTX for video)."""
    caps = RTCRtpReceiver.getCapabilities(track.kind)
    assert caps is not None
    chosen = [
        c
        for c in caps.codecs
        if c.mimeType.lower() == track.codec.mimeType.lower()
        and c.parameters == track.codec.parameters
    ]
    if not chosen:
        chosen = [c for c in caps.codecs if c.mimeType.lower() == track.codec.mimeType.lower()]
    if track.kind == "video":
        chosen += [c for c in caps.codecs if c.mimeType.lower() == "video/rtx"]
    return chosen


def _parse_sdp(text: str) -> sdp.SessionDescription:
    """Parse and check what aiortc would otherwise accept silently or crash on later."""
    if not isinstance(text, str) or not text.startswith("v=0"):
        raise InvalidSdp("The session description must be SDP text starting with 'v=0'")
    try:
        description = sdp.SessionDescription.parse(text)
    except Exception as exc:
        raise InvalidSdp(f"Unparseable SDP: {exc}") from exc
    media = [m for m in description.media if m.kind in ("audio", "video", "application")]
    if not media:
        raise InvalidSdp("The session description has no audio or video m-line")
    for m in media:
        if m.ice is None or not m.ice.usernameFragment or not m.ice.password:
            raise InvalidSdp(f"m-line {m.rtp.muxId or m.kind} lacks ICE credentials")
        if not m.dtls or not m.dtls.fingerprints:
            raise InvalidSdp(f"m-line {m.rtp.muxId or m.kind} lacks a DTLS fingerprint")
    return description


def _ice_restarted(pc: RTCPeerConnection, offer: sdp.SessionDescription) -> bool:
    """Whether ``offer`` carries ICE credentials other than the connection's current ones."""
    current = pc.remoteDescription
    if current is None:
        return False
    before = {
        (m.ice.usernameFragment, m.ice.password)
        for m in sdp.SessionDescription.parse(current.sdp).media
        if m.ice is not None
    }
    after = {(m.ice.usernameFragment, m.ice.password) for m in offer.media if m.ice is not None}
    return bool(before) and not (after & before)


_ANSWERS_TO = {
    "sendonly": ("recvonly", "inactive"),
    "recvonly": ("sendonly", "inactive"),
    "inactive": ("inactive",),
}


def _ice_credentials(description: sdp.SessionDescription) -> frozenset[tuple[str, str]]:
    return frozenset(
        (m.ice.usernameFragment or "", m.ice.password or "")
        for m in description.media
        if m.ice is not None
    )


def _answer_fits(
    offer: sdp.SessionDescription | None,
    answer: sdp.SessionDescription,
    old_credentials: frozenset[tuple[str, str]],
) -> bool:
    """Whether an answer without an ``offer_id`` can be the answer to ``offer``."""
    if offer is None or len(offer.media) != len(answer.media):
        return False
    for offered, answered in zip(offer.media, answer.media, strict=True):
        if offered.kind != answered.kind or offered.rtp.muxId != answered.rtp.muxId:
            return False
        allowed = _ANSWERS_TO.get(offered.direction or "")
        if allowed is not None and answered.port != 0 and answered.direction not in allowed:
            return False
    return not (old_credentials & _ice_credentials(answer))


def _sdp_error(exc: Exception) -> Exception:
    if isinstance(exc, InvalidStateError):
        return NegotiationConflict(str(exc))
    if isinstance(exc, InvalidSdp | NegotiationConflict):
        return exc
    return InvalidSdp(f"The session description was refused: {exc or type(exc).__name__}")


async def _add_candidate(pc: RTCPeerConnection, candidate: dict[str, Any]) -> None:
    text = str(candidate.get("candidate") or "")
    if not text:
        await pc.addIceCandidate(None)
        return
    try:
        parsed = sdp.candidate_from_sdp(text.removeprefix("a=").removeprefix("candidate:"))
    except (ValueError, IndexError) as exc:
        raise ValidationFailed(f"Unparseable ICE candidate: {text!r}") from exc
    parsed.sdpMid = candidate.get("sdpMid")
    parsed.sdpMLineIndex = candidate.get("sdpMLineIndex")
    if parsed.sdpMid is None and parsed.sdpMLineIndex is None:
        parsed.sdpMLineIndex = 0
    await pc.addIceCandidate(parsed)
