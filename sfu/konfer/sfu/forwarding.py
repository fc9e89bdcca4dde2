"""The per-packet path: one publisher's RTP to every subscriber, encoded, untouched.

A :class:`PublishedTrack` owns one publisher's receiver (hooked in ``aiortc_hooks``); each
subscriber that receives the track has a :class:`Downstream` bound to its own sender. A
packet arrives once, its header extensions are rebuilt once, and then each subscriber
gets a 12-byte RTP header of its own (SSRC, payload type, sequence number and timestamp
rewritten) in front of the same bytes, SRTP-protected and sent synchronously: header and
body are written into one reused C buffer, libsrtp protects them there in place with the
subscriber's session, and the datagram transport gets one copy of the result. No
``RtpPacket`` is built or serialized per subscriber and no coroutine runs per packet.

Video subscribers join at a keyframe: a new (or resumed) subscriber waits in ``pending``
until a packet that starts a keyframe arrives, and a keyframe request goes upstream
(rate-limited per track). Audio is forwarded per packet, never buffered.

Called from ``room`` (which creates and wires tracks and downstreams) and by aiortc
through the hooks; nothing here logs or allocates per subscriber per packet beyond the
header and the protected datagram.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import struct
import time
from collections.abc import Callable, Coroutine
from typing import Any

from aiortc import RTCRtpReceiver, RTCRtpSender
from aiortc.rtcrtpparameters import RTCRtpCodecParameters, RTCRtpSendParameters
from aiortc.rtcrtpreceiver import StreamStatistics
from aiortc.rtp import RtcpByePacket, RtcpSrPacket, RtpPacket

from konfer.sfu import aiortc_hooks as hooks

_HEADER = struct.Struct("!BBHII")
_pack_header = _HEADER.pack_into
_buffer = hooks.PacketBuffer()  # the per-subscriber header + body, protected in place
_protect_in_place = hooks.srtp_protect_in_place
_ABS_SEND_TIME = struct.Struct("!BBBBI")  # BEDE, length 1, then id/len + 24-bit value
_NTP_EPOCH_OFFSET = 2208988800
HISTORY_SIZE = 1024  # packets of video kept per track for subscribers' NACKs
#: RTP header-extension ids on subscriber connections. The SFU is the offerer there, so
#: these are aiortc's own ids (``aiortc.codecs.HEADER_EXTENSIONS``) for every subscriber.
AUDIO_LEVEL_ID = 2
ABS_SEND_TIME_ID = 3
#: dBov below which (louder than) a packet counts as speech for last-N.
SPEAKING_LEVEL = 60


def is_keyframe_start(codec: str, payload: bytes) -> bool:
    """Whether an RTP payload begins a keyframe (VP8 or H.264), without decoding."""
    n = len(payload)
    if codec == "VP8":
        b0 = payload[0]
        if not b0 & 0x10 or b0 & 0x0F:  # not the start of partition 0
            return False
        pos = 1
        if b0 & 0x80:
            if n < 2:
                return False
            ext = payload[1]
            pos = 2
            if ext & 0x80:
                if n <= pos:
                    return False
                pos += 2 if payload[pos] & 0x80 else 1
            if ext & 0x40:
                pos += 1
            if ext & 0x30:
                pos += 1
        return n > pos and not payload[pos] & 0x01
    if codec == "H264":
        nal = payload[0] & 0x1F
        if nal in (5, 7):
            return True
        if nal == 28:  # FU-A
            return n > 1 and bool(payload[1] & 0x80) and (payload[1] & 0x1F) in (5, 7)
        if nal == 24:  # STAP-A
            pos = 1
            while pos + 2 < n:
                size = (payload[pos] << 8) | payload[pos + 1]
                if payload[pos + 2] & 0x1F in (5, 7):
                    return True
                pos += 2 + size
        return False
    return True


_background: set[asyncio.Future[Any]] = set()


def spawn(coro: Coroutine[Any, Any, Any]) -> None:
    """Run ``coro`` in the background, holding a reference until it is done."""
    task = asyncio.ensure_future(coro)
    _background.add(task)
    task.add_done_callback(_background.discard)


def ntp_from_time(t: float) -> int:
    return int((t + _NTP_EPOCH_OFFSET) * 4294967296.0)


class Downstream:
    """One subscriber's sender for one published track."""

    __slots__ = (
        "addr",
        "is_closing",
        "next_seq",
        "next_ts",
        "octets",
        "on_keyframe_request",
        "packets",
        "paused_at",
        "peer_id",
        "protect",
        "pt",
        "rebase",
        "remb",
        "sender",
        "sendto",
        "seq_delta",
        "session",
        "srtp",
        "ssrc",
        "started",
        "track",
        "ts_delta",
        "wanted",
    )

    def __init__(
        self,
        track: PublishedTrack,
        sender: RTCRtpSender,
        peer_id: str,
        previous: Downstream | None = None,
    ) -> None:
        self.track = track
        self.sender = sender
        self.peer_id = peer_id
        self.ssrc = hooks.sender_ssrc(sender)
        self.pt = 0
        self.seq_delta = 0
        self.ts_delta = secrets.randbits(32)
        self.next_seq = secrets.randbits(15)
        self.packets = 0
        self.octets = 0
        # Timestamps continue from ``next_ts`` (plus the time since ``paused_at``) when
        # the source changes under the same SSRC: a reused m-line, a publisher's restart.
        self.next_ts = 0
        self.paused_at = 0.0
        self.rebase = False
        if previous is not None:  # the sender (SSRC) carried another track before
            self.next_seq = previous.next_seq
            self.next_ts = previous.next_ts
            self.paused_at = previous.paused_at
            self.rebase = previous.paused_at > 0.0
            self.packets = previous.packets
            self.octets = previous.octets
        self.remb: int | None = None
        self.started = False
        self.wanted = True  # last-N / mute selection wants this subscriber fed
        self.protect: Callable[[bytes], bytes] = _closed_protect
        self.srtp: Any = hooks.CLOSED_SRTP  # libsrtp handle for the in-place protection
        self.session: Any = hooks.CLOSED_SRTP_SESSION  # keeps that handle alive
        self.sendto: Callable[[bytes, Any], None] = _closed_sendto
        self.is_closing: Callable[[], bool] = _true
        self.addr: Any = None
        hooks.hook_sender(
            sender,
            hooks.SenderHooks(
                started=self._started,
                keyframe_requested=self._keyframe_requested,
                retransmit=self._retransmit,
                remb=self._remb,
            ),
        )

    def _started(self, parameters: RTCRtpSendParameters) -> None:
        if self.track.downstreams.get(self.peer_id) is not self:
            return  # unsubscribed meanwhile (aiortc calls send() again on renegotiation)
        path = hooks.send_path(self.sender.transport)
        if path is None:
            return
        self.bind(path, parameters.codecs[0].payloadType or 0)

    def bind(self, path: hooks.SendPath, payload_type: int) -> None:
        """Send through ``path`` from now on (video from the next keyframe)."""
        self.protect, self.sendto, self.addr = path.protect, path.sendto, path.addr
        self.srtp, self.session = path.srtp, path.session
        self.is_closing = path.is_closing
        self.pt = payload_type
        self.started = True
        self.track.resume(self, reason="subscribe")

    def _keyframe_requested(self) -> None:
        self.track.keyframe_requests_received += 1
        self.track.request_keyframe()

    def _remb(self, bitrate: int) -> None:
        self.remb = bitrate

    def _retransmit(self, out_seq: int) -> None:
        track = self.track
        in_seq = (out_seq - self.seq_delta) & 0xFFFF
        entry = track.history[in_seq & (HISTORY_SIZE - 1)]
        if entry is None or entry[0] != in_seq or self.is_closing():
            return
        _, ts, b1, b0, body = entry
        data = _HEADER.pack(b0, b1 | self.pt, out_seq, (ts + self.ts_delta) & 0xFFFFFFFF, self.ssrc)
        self.sendto(self.protect(data + body), self.addr)
        track.retransmitted += 1

    def sync_report(self) -> None:
        """Refresh what the sender's next RTCP sender report says."""
        track = self.track
        if not self.started or track.last_time == 0.0:
            return
        hooks.set_sender_report(
            self.sender,
            self.packets & 0xFFFFFFFF,
            self.octets & 0xFFFFFFFF,
            ntp_from_time(track.last_time),
            (track.last_ts + self.ts_delta) & 0xFFFFFFFF,
        )


def _closed_protect(data: bytes) -> bytes:
    return data


def _closed_sendto(data: bytes, addr: Any) -> None:
    return None


def _true() -> bool:
    return True


class PublishedTrack:
    """One publisher's audio or video track and everyone who receives it."""

    def __init__(
        self,
        *,
        track_id: str,
        peer_id: str,
        user_id: str,
        kind: str,
        source: str,
        codec: RTCRtpCodecParameters,
        rtx_payload_type: int | None,
        receiver: RTCRtpReceiver,
        keyframe_interval: float,
        on_speaking: Callable[[str], None],
        on_ended: Callable[[PublishedTrack], None],
    ) -> None:
        self.track_id = track_id
        self.mid = ""
        self.client_track_id = ""  # the track id in the publisher's msid
        self.peer_id = peer_id
        self.user_id = user_id
        self.kind = kind
        self.source = source
        self.codec = codec
        self.codec_name = codec.name.upper()
        self.payload_type: int = codec.payloadType or 0
        self.rtx_payload_type = rtx_payload_type
        self.receiver = receiver
        self.keyframe_interval = keyframe_interval
        self.is_audio = kind == "audio"
        self.enabled = True  # media state: False while the publisher is muted
        self.levels_seen = False  # audio: the publisher sends audio levels (top-N ranking)
        self.live: list[Downstream] = []
        self.pending: list[Downstream] = []
        self.downstreams: dict[str, Downstream] = {}
        self.history: list[tuple[int, int, int, int, bytes] | None] = (
            [] if self.is_audio else [None] * HISTORY_SIZE
        )
        self.media_ssrc: int | None = None
        self.last_seq = 0
        self.last_ts = 0
        self.last_time = 0.0
        self.packets_in = 0
        self.bytes_in = 0
        self.packets_out = 0
        self.bytes_out = 0
        self.retransmitted = 0
        self.keyframe_requests_sent = 0
        self.keyframe_requests_received = 0
        self.width: int | None = None
        self.height: int | None = None
        self.created_at = time.time()
        self._last_pli = 0.0
        self._pli_timer: asyncio.TimerHandle | None = None
        self._on_speaking = on_speaking
        self._on_ended = on_ended
        self._clockrate = codec.clockRate
        self._streams = hooks.receiver_statistics(receiver)
        self._nack = hooks.receiver_nack_generator(receiver)
        self.ended = False
        hooks.hook_receiver(receiver, self.on_rtp, self.on_rtcp)

    # --- the per-packet path -----------------------------------------------------------

    async def on_rtp(self, packet: RtpPacket, arrival_time_ms: int) -> None:
        """Every RTP packet of the publisher's track (called by the DTLS transport)."""
        pt = packet.payload_type
        stats = self._streams.get(packet.ssrc)
        if stats is None:
            if pt != self.payload_type and pt != self.rtx_payload_type:
                return
            stats = self._streams[packet.ssrc] = StreamStatistics(self._clockrate)
        stats.add(packet)
        if pt != self.payload_type:
            if pt != self.rtx_payload_type or self.media_ssrc is None:
                return
            payload = packet.payload
            if len(payload) <= 2:
                return  # padding probe
            packet.ssrc = self.media_ssrc
            packet.sequence_number = (payload[0] << 8) | payload[1]
            packet.payload = payload[2:]
            packet.payload_type = self.payload_type
        elif packet.ssrc != self.media_ssrc:
            self._new_stream(packet.ssrc)
        nack = self._nack
        if nack is not None and nack.add(packet):
            await hooks.send_nack(self.receiver, packet.ssrc, sorted(nack.missing))
        self.forward(packet)

    def _new_stream(self, ssrc: int) -> None:
        """The first packet of the publisher's media stream (or of a replacement stream)."""
        self.media_ssrc = ssrc
        if self.pending and not self.is_audio:
            self.request_keyframe()

    def rebind(
        self, receiver: RTCRtpReceiver, codec: RTCRtpCodecParameters, rtx_payload_type: int | None
    ) -> None:
        """Receive this track from another receiver (the publisher's new connection).

        Subscribers keep their senders and numbering: each restarts at the next keyframe
        of the new stream, exactly as after a pause.
        """
        hooks.unhook_receiver(self.receiver)
        self.receiver = receiver
        self.codec = codec
        self.codec_name = codec.name.upper()
        self.payload_type = codec.payloadType or 0
        self.rtx_payload_type = rtx_payload_type
        self._clockrate = codec.clockRate
        self._streams = hooks.receiver_statistics(receiver)
        self._nack = hooks.receiver_nack_generator(receiver)
        self.media_ssrc = None
        self._last_pli = 0.0
        if not self.is_audio:
            self.history = [None] * HISTORY_SIZE
        for d in list(self.live):
            self.pause(d)
            d.rebase = True
            self.resume(d, reason="restart")
        hooks.hook_receiver(receiver, self.on_rtp, self.on_rtcp)

    def forward(self, packet: RtpPacket) -> None:
        payload = packet.payload
        size = len(payload)
        if not size or not self.enabled:
            return
        now = time.time()
        b1 = 0x80 if packet.marker else 0
        seq = packet.sequence_number
        ts = packet.timestamp
        self.last_seq = seq
        self.last_ts = ts
        self.last_time = now
        self.packets_in += 1
        self.bytes_in += size
        if self.is_audio:
            level = packet.extensions.audio_level
            if level is None:
                b0 = 0x80
                body = payload
            else:
                b0 = 0x90
                self.levels_seen = True
                if level[1] < SPEAKING_LEVEL:
                    self._on_speaking(self.peer_id)
                body = (
                    bytes((0xBE, 0xDE, 0, 1, 0x20, (0x80 if level[0] else 0) | level[1], 0, 0))
                    + payload
                )
            if self.pending:
                self._admit(seq, ts)
        else:
            b0 = 0x90
            body = (
                _ABS_SEND_TIME.pack(0xBE, 0xDE, 0, 1, 0x32000000 | (int(now * 262144) & 0xFFFFFF))
                + payload
            )
            if self.pending and is_keyframe_start(self.codec_name, payload):
                self._admit(seq, ts)
            self.history[seq & (HISTORY_SIZE - 1)] = (seq, ts, b1, b0, body)
        end = 12 + len(body)
        if end > hooks.MAX_PROTECTED_INPUT:
            return  # larger than any datagram a publisher can send on a 1500-byte MTU
        view = _buffer.view
        cdata = _buffer.cdata
        length = _buffer.length
        body_at = slice(12, end)
        sent = 0
        for d in self.live:
            # Nothing here may raise into aiortc: the publisher's receive loop runs this.
            try:
                _pack_header(
                    view, 0, b0, b1 | d.pt, (seq + d.seq_delta) & 0xFFFF,
                    (ts + d.ts_delta) & 0xFFFFFFFF, d.ssrc,
                )  # fmt: skip
                view[body_at] = body
                length[0] = end
                if _protect_in_place(d.srtp, cdata, length):
                    continue  # libsrtp refused (a session being replaced): a lost packet
                d.sendto(view[0 : length[0]], d.addr)
            except Exception:  # noqa: S112  (a closed subscriber; the room drops it)
                continue
            d.packets += 1
            d.octets += size
            sent += 1
        self.packets_out += sent
        self.bytes_out += size * sent

    def _admit(self, seq: int, ts: int) -> None:
        """Start the waiting subscribers at this packet, continuing their own numbering."""
        for d in self.pending:
            d.seq_delta = (d.next_seq - seq) & 0xFFFF
            if d.rebase:
                elapsed = max(time.time() - d.paused_at, 0.0)
                d.ts_delta = (d.next_ts + int(elapsed * self._clockrate) - ts) & 0xFFFFFFFF
                d.rebase = False
            self.live.append(d)
        self.pending.clear()

    async def on_rtcp(self, packet: Any) -> None:
        if isinstance(packet, RtcpByePacket) and self.media_ssrc in packet.sources:
            self.end()
        elif isinstance(packet, RtcpSrPacket):
            return

    # --- subscribers -------------------------------------------------------------------

    def attach(
        self, sender: RTCRtpSender, peer_id: str, previous: Downstream | None = None
    ) -> Downstream:
        d = Downstream(self, sender, peer_id, previous)
        self.downstreams[peer_id] = d
        return d

    def detach(self, peer_id: str) -> Downstream | None:
        d = self.downstreams.pop(peer_id, None)
        if d is not None:
            self.pause(d)
            d.started = False
        return d

    def resume(self, d: Downstream, reason: str) -> None:
        """Feed ``d`` again (from the next keyframe for video)."""
        if not d.started or not d.wanted or d in self.live or d in self.pending:
            return
        self.pending.append(d)
        if not self.is_audio:
            self.request_keyframe()

    def pause(self, d: Downstream) -> None:
        """Stop feeding ``d``; its numbering continues where it stopped when resumed."""
        if d in self.live:
            self.live.remove(d)
            d.next_seq = (self.last_seq + d.seq_delta + 1) & 0xFFFF
            d.next_ts = (self.last_ts + d.ts_delta) & 0xFFFFFFFF
            d.paused_at = self.last_time
        elif d in self.pending:
            self.pending.remove(d)

    def set_wanted(self, d: Downstream, wanted: bool) -> None:
        if d.wanted == wanted:
            return
        d.wanted = wanted
        if wanted:
            self.resume(d, reason="selected")
        else:
            self.pause(d)

    def set_enabled(self, enabled: bool) -> None:
        """Mute or unmute the publisher's track for everyone."""
        if enabled == self.enabled:
            return
        self.enabled = enabled
        if enabled and not self.is_audio:
            for d in list(self.live):
                self.pause(d)
                self.resume(d, reason="unmute")

    # --- keyframes ---------------------------------------------------------------------

    def request_keyframe(self) -> None:
        """Ask the publisher for a keyframe: now, or once the rate limit allows."""
        if self.is_audio or self.ended:
            return
        now = time.monotonic()
        wait = self._last_pli + self.keyframe_interval - now
        if wait <= 0:
            self._send_pli()
        elif self._pli_timer is None:
            self._pli_timer = asyncio.get_running_loop().call_later(wait, self._send_pli)

    def _send_pli(self) -> None:
        self._pli_timer = None
        if self.media_ssrc is None or self.ended:
            # Nothing received yet: the first packets will be a keyframe anyway.
            return
        self._last_pli = time.monotonic()
        self.keyframe_requests_sent += 1
        spawn(hooks.send_pli(self.receiver, self.media_ssrc))

    async def send_remb(self) -> int | None:
        """Send the smallest of the subscribers' bandwidth estimates to the publisher."""
        estimates = [d.remb for d in self.live if d.remb is not None]
        if self.is_audio or not estimates or self.media_ssrc is None:
            return None
        bitrate = max(min(estimates), 30_000)
        await hooks.send_remb(self.receiver, bitrate, [self.media_ssrc])
        return bitrate

    def end(self) -> None:
        """The publisher stopped sending this track (BYE, renegotiation, leave)."""
        if self.ended:
            return
        self.ended = True
        if self._pli_timer is not None:
            self._pli_timer.cancel()
            self._pli_timer = None
        for d in list(self.live):
            self.pause(d)  # where its numbering stops, should its m-line carry another track
        self.pending.clear()
        self._on_ended(self)

    def jitter_ms(self) -> float:
        if self.media_ssrc is None:
            return 0.0
        stats = self._streams.get(self.media_ssrc)
        return stats.jitter * 1000.0 / self._clockrate if stats else 0.0

    def loss(self) -> tuple[int, int]:
        """(packets lost, packets expected) upstream, from the receiver's statistics."""
        if self.media_ssrc is None:
            return 0, 0
        stats = self._streams.get(self.media_ssrc)
        if stats is None or stats.max_seq is None:
            return 0, 0
        with contextlib.suppress(TypeError):
            return max(stats.packets_lost, 0), stats.packets_expected
        return 0, 0
