"""Every private aiortc / aioice member the SFU touches, in one place.

aiortc decodes everything it receives and encodes everything it sends. The SFU wants
neither, so it reaches into the pinned ``aiortc==1.16.0`` here, and only here:

* receivers: ``_handle_rtp_packet`` and ``_handle_rtcp_packet`` are replaced per instance
  so RTP goes to the forwarder (never into the jitter buffer or the decoder thread);
  the receiver's ``__remote_streams`` statistics keep feeding its RTCP receiver reports,
  its ``__nack_generator`` keeps asking the publisher for lost packets, and
  ``_send_rtcp_pli`` / ``_send_rtcp`` carry keyframe requests and REMB upstream.
* senders: ``send`` (to learn when a subscriber's sender has started), ``_send_keyframe``
  (a subscriber's PLI/FIR, which aiortc drops when nothing encodes), ``_retransmit``
  (NACKs served from the forwarder's history), ``_handle_rtcp_packet`` (REMB), the
  sender-report counters ``__packet_count`` / ``__octet_count`` / ``__ntp_timestamp`` /
  ``__rtp_timestamp`` and the RTT estimate ``__rtt``. The sender's own RTP loop waits on a
  track that never yields, so ``get_encoder`` is never reached.
* the send path below ``RTCDtlsTransport._send_rtp``: ``_tx_srtp`` and aioice's nominated
  pair (``Connection._nominated``, its protocol's datagram transport and remote address),
  so a forwarded packet is protected and sent in one synchronous step. The protection
  itself calls libsrtp's ``srtp_protect`` through pylibsrtp's compiled binding on the
  session's handle (``Session._srtp``), in a buffer the forwarder reuses for every
  packet (:class:`PacketBuffer`): pylibsrtp's ``Session.protect`` would allocate, copy in
  and copy out per call, which at 80 subscribers is a good part of the SFU's own CPU.
* ``MediaStreamTrack._id``, so a subscriber's track carries the SFU's track id.
* aioice's module function ``get_host_addresses`` (``KONFER_SFU_ICE_HOSTS``).
* fault injection only (``KONFER_SFU_FAULT_INJECTION``, test systems): aioice's
  ``Connection._protocols``, each protocol's ``transport`` and ``datagram_received``, so a
  connection's datagrams can be dropped both ways as a broken network would.
* ``get_decoder`` / ``get_encoder`` as imported by the receiver and sender modules: the
  codec guard makes any use of them in the SFU process count and fail.
* the recorder's receivers: ``__jitter_buffer`` is wrapped so each reassembled encoded
  frame goes to the recorder's muxer and none reaches ``decoder_worker`` (which only
  creates a decoder for a frame it is handed); ``__remote_bitrate_estimator`` is dropped
  so a recorder sends no REMB.

``tests/unit/test_sfu_hooks.py`` fails loudly when the pinned version or any of these
members change.
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import importlib
import inspect
import ipaddress
import itertools
import types
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass
from typing import Any

import aioice.ice
import aiortc
import aiortc.mediastreams
import aiortc.rtcdtlstransport
import aiortc.rtcpeerconnection
import aiortc.rtcrtpreceiver
import aiortc.rtcrtpsender
import pylibsrtp
from aiortc import MediaStreamTrack, RTCRtpReceiver, RTCRtpSender, RTCRtpTransceiver
from aiortc.jitterbuffer import JitterBuffer
from aiortc.rtcdtlstransport import RTCDtlsTransport
from aiortc.rtcrtpparameters import RTCRtpCodecParameters, RTCRtpSendParameters
from aiortc.rtcrtpreceiver import NackGenerator, StreamStatistics
from aiortc.rtp import RTCP_PSFB_APP, RtcpPacket, RtcpPsfbPacket, RtpPacket, pack_remb_fci

AIORTC_VERSION = "1.16.0"

# pylibsrtp's compiled cffi binding (it ships no type information): libsrtp itself.
_srtp_binding: Any = importlib.import_module("pylibsrtp._binding")
_srtp_ffi: Any = _srtp_binding.ffi
_srtp_lib: Any = _srtp_binding.lib

#: sha256 (first 16 hex digits) of the source of every function whose behaviour the hooks
#: rely on; a new aiortc / aioice that changes any of them fails the hooks test.
SOURCE_FINGERPRINTS: dict[str, str] = {
    "aiortc.rtcrtpreceiver.RTCRtpReceiver.__init__": "3e3b7b5cefbaac6f",
    "aiortc.rtcrtpreceiver.RTCRtpReceiver._handle_rtp_packet": "4e54983d021a6336",
    "aiortc.rtcrtpreceiver.RTCRtpReceiver._run_rtcp": "0f57daa3218616c0",
    "aiortc.rtcrtpreceiver.RTCRtpReceiver._send_rtcp_pli": "ae74c43d50f6eb7b",
    "aiortc.rtcrtpreceiver.RTCRtpReceiver._send_rtcp_nack": "5735e597c91b5cf6",
    "aiortc.rtcrtpsender.RTCRtpSender.__init__": "beb1bc0ae04db20d",
    "aiortc.rtcrtpsender.RTCRtpSender._handle_rtcp_packet": "a4ee4c7355f8de7a",
    "aiortc.rtcrtpsender.RTCRtpSender._next_encoded_frame": "89dd9fa4fb33741c",
    "aiortc.rtcrtpsender.RTCRtpSender._run_rtp": "ff597a1d554cb373",
    "aiortc.rtcrtpsender.RTCRtpSender.send": "3969482b77a2a65f",
    "aiortc.rtcrtpsender.RTCRtpSender._retransmit": "ae0b2491944b52dc",
    "aiortc.rtcrtpsender.RTCRtpSender._send_keyframe": "26c49629470d1928",
    "aiortc.rtcrtpreceiver.RTCRtpReceiver.receive": "d6d8d8d7a0bf4e95",
    "aiortc.rtcrtpreceiver.RTCRtpReceiver._handle_rtcp_packet": "ec9f46214c3495b2",
    "aiortc.mediastreams.MediaStreamTrack.__init__": "967f6fa1c4980ce5",
    "aiortc.rtcrtpsender.RTCRtpSender._run_rtcp": "51e0a924eac4e39b",
    "aiortc.rtcdtlstransport.RTCDtlsTransport._send_rtp": "763b02bceb0b0ab9",
    "aiortc.rtcdtlstransport.RTCDtlsTransport._handle_rtp_data": "5def9061cc3da1f6",
    "aiortc.rtcdtlstransport.RTCDtlsTransport._handle_rtcp_data": "5469e786d77b37b2",
    "aiortc.rtcpeerconnection.RTCPeerConnection._RTCPeerConnection__connect": "9199a73a7cde4776",
    "aioice.ice.Connection.sendto": "bf162ec03bdce2cc",
    "aioice.ice.Connection.gather_candidates": "d33db28d4d1e49ff",
    "aioice.ice.StunProtocol.send_data": "8bfbce074a897482",
    "aioice.ice.StunProtocol.send_stun": "51a4d50a9080939d",
    "aioice.ice.StunProtocol.datagram_received": "ff4c8b910d45fb3a",
    "aioice.ice.Connection.request_received": "dcdc9a3862c1a0b4",
    "aioice.ice.Connection.get_component_candidates": "118597a9fcb703f9",
    "aiortc.jitterbuffer.JitterBuffer.add": "c6cd693611aa3eb4",
    "aiortc.jitterbuffer.JitterBuffer._remove_frame": "3ffad0bfb07f58e6",
    "aiortc.rtcrtpreceiver.decoder_worker": "d500d4e567d6846c",
    "pylibsrtp.Session.__init__": "2d5acb2032893aeb",
    "pylibsrtp.Session._Session__process": "924e126dae5c15b8",
}

#: The C signature of libsrtp's ``srtp_protect`` as pylibsrtp's binding declares it; the
#: in-place protection (:func:`srtp_protect_in_place`) relies on it.
SRTP_PROTECT_SIGNATURE = "srtp_err_status_t(*)(struct srtp_ctx_t_ *, void *, int *)"

#: Instance attributes (name-mangled where private) read or written on live objects.
RECEIVER_ATTRIBUTES = (
    "_RTCRtpReceiver__remote_streams",
    "_RTCRtpReceiver__nack_generator",
    "_RTCRtpReceiver__rtcp_ssrc",
    "_RTCRtpReceiver__jitter_buffer",
    "_RTCRtpReceiver__remote_bitrate_estimator",
    "_handle_rtp_packet",
    "_handle_rtcp_packet",
    "_send_rtcp",
    "_send_rtcp_pli",
    "_send_rtcp_nack",
)
SENDER_ATTRIBUTES = (
    "_ssrc",
    "_stream_id",
    "_track_id",
    "_RTCRtpSender__packet_count",
    "_RTCRtpSender__octet_count",
    "_RTCRtpSender__ntp_timestamp",
    "_RTCRtpSender__rtp_timestamp",
    "_RTCRtpSender__rtt",
    "send",
    "_send_keyframe",
    "_retransmit",
    "_handle_rtcp_packet",
)


def _fingerprint(qualname: str) -> str:
    if qualname in _PATCHED_GLOBALLY:  # fingerprint what aioice shipped, not our wrapper
        return hashlib.sha256(inspect.getsource(_PATCHED_GLOBALLY[qualname]).encode()).hexdigest()[
            :16
        ]
    module_name = qualname.partition(".")[0]
    obj: Any = __import__(module_name)
    for part in qualname.split(".")[1:]:
        obj = getattr(obj, part)
    return hashlib.sha256(inspect.getsource(obj).encode()).hexdigest()[:16]


def current_fingerprints() -> dict[str, str]:
    """The fingerprints of the installed aiortc/aioice (to refresh ``SOURCE_FINGERPRINTS``)."""
    return {name: _fingerprint(name) for name in SOURCE_FINGERPRINTS}


def check_compatibility() -> list[str]:
    """What differs from the aiortc these hooks were written for; empty when all is well."""
    problems = []
    if aiortc.__version__ != AIORTC_VERSION:
        problems.append(f"aiortc is {aiortc.__version__}, the hooks need {AIORTC_VERSION}")
    signature = _srtp_ffi.typeof(_srtp_lib.srtp_protect).cname
    if signature != SRTP_PROTECT_SIGNATURE:
        problems.append(f"libsrtp's srtp_protect is {signature}, not {SRTP_PROTECT_SIGNATURE}")
    for name, expected in SOURCE_FINGERPRINTS.items():
        try:
            got = _fingerprint(name)
        except (AttributeError, OSError, TypeError) as exc:
            problems.append(f"{name} is gone: {exc}")
            continue
        if got != expected:
            problems.append(f"{name} changed (source fingerprint {got}, expected {expected})")
    return problems


def missing_attributes(obj: object, names: Iterable[str]) -> list[str]:
    """Which of ``names`` a live receiver or sender lacks."""
    return [name for name in names if not hasattr(obj, name)]


# --- ICE ------------------------------------------------------------------------------

_original_get_host_addresses = aioice.ice.get_host_addresses


def set_ice_hosts(hosts: list[str] | None) -> None:
    """Gather only on ``hosts`` (e.g. ``["127.0.0.1"]``); ``None`` or empty restores aioice.

    aioice looks ``get_host_addresses`` up as a module global at gathering time and never
    offers 127.0.0.1, so replacing the function is the one place to say where to gather.
    It applies to every connection in the process.
    """
    if not hosts:
        aioice.ice.get_host_addresses = _original_get_host_addresses
        aioice.ice.Connection.request_received = _original_request_received  # type: ignore[method-assign]
        return
    chosen = list(hosts)

    def get_host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        return [a for a in chosen if (":" in a and use_ipv6) or (":" not in a and use_ipv4)]

    aioice.ice.get_host_addresses = get_host_addresses
    if all(ipaddress.ip_address(a).is_loopback for a in chosen):
        # A loopback-only SFU must also answer only loopback peers: a browser may send
        # checks to our 127.0.0.1 candidate from the machine's own interface address, and
        # answering would send media to that address (peer-reflexive candidates).
        aioice.ice.Connection.request_received = _loopback_request_received  # type: ignore[method-assign]
    else:
        aioice.ice.Connection.request_received = _original_request_received  # type: ignore[method-assign]


_original_request_received = aioice.ice.Connection.request_received
_PATCHED_GLOBALLY: dict[str, Any] = {
    "aioice.ice.Connection.request_received": _original_request_received,
}


def _loopback_request_received(
    self: aioice.ice.Connection, message: Any, addr: tuple[str, int], protocol: Any
) -> None:
    if not ipaddress.ip_address(addr[0]).is_loopback:
        return
    _original_request_received(self, message, addr, protocol)


# --- UDP port range ---------------------------------------------------------------------
#
# aioice binds every host candidate to an ephemeral port (``local_addr=(address, 0)`` in
# ``Connection.get_component_candidates``, the only datagram endpoint it makes for host
# candidates). A pod behind a firewall or a Service needs a known range instead, so the
# ``asyncio`` that module sees hands out a loop whose ``create_datagram_endpoint`` turns
# port 0 into the next free port of the range. Everything else goes to the real asyncio.


class _RangedLoop:
    """The running loop, except that port 0 means "a free port of the range"."""

    def __init__(self, loop: asyncio.AbstractEventLoop, ports: _PortRange) -> None:
        self._loop = loop
        self._ports = ports

    def __getattr__(self, name: str) -> Any:
        return getattr(self._loop, name)

    async def create_datagram_endpoint(self, factory: Any, **kwargs: Any) -> Any:
        local = kwargs.get("local_addr")
        if not local or local[1] != 0:
            return await self._loop.create_datagram_endpoint(factory, **kwargs)
        for port in self._ports.candidates():
            try:
                return await self._loop.create_datagram_endpoint(
                    factory, **{**kwargs, "local_addr": (local[0], port)}
                )
            except OSError as exc:
                if exc.errno != errno.EADDRINUSE:
                    raise
        raise OSError(
            errno.EADDRINUSE,
            f"every UDP port {self._ports.low}-{self._ports.high} is in use on {local[0]}",
        )


class _PortRange:
    def __init__(self, low: int, high: int) -> None:
        self.low, self.high = low, high
        self._next = itertools.cycle(range(low, high + 1))

    def candidates(self) -> Iterable[int]:
        """Every port once, starting after the last one handed out (spreads reuse)."""
        for _ in range(self.high - self.low + 1):
            yield next(self._next)


def _asyncio_with_ports(ports: _PortRange) -> types.ModuleType:
    shim = types.ModuleType("asyncio")
    shim.__dict__.update(asyncio.__dict__)
    shim.get_running_loop = lambda: _RangedLoop(asyncio.get_running_loop(), ports)  # type: ignore[attr-defined]
    return shim


def set_udp_port_range(low: int | None, high: int | None) -> None:
    """Bind ICE host candidates to ports ``low``..``high`` (inclusive); ``None`` restores
    ephemeral ports. Applies to every connection made afterwards in the process."""
    if low is None or high is None:
        aioice.ice.asyncio = asyncio  # type: ignore[attr-defined]
        return
    if not 0 < low <= high <= 65535:
        raise ValueError(f"invalid UDP port range {low}-{high}")
    aioice.ice.asyncio = _asyncio_with_ports(_PortRange(low, high))  # type: ignore[attr-defined]


# --- codec guard ----------------------------------------------------------------------


class CodecGuard:
    """Counts (and refuses) every decoder or encoder aiortc tries to create."""

    def __init__(self) -> None:
        self.attempts = 0
        self.installed = False

    def install(self) -> None:
        """Make ``get_decoder``/``get_encoder`` fail in this process (the SFU's, not tests')."""

        def refuse(codec: RTCRtpCodecParameters) -> Any:
            self.attempts += 1
            raise RuntimeError(f"the SFU must not decode or encode ({codec.mimeType})")

        setattr(aiortc.rtcrtpreceiver, "get_decoder", refuse)  # noqa: B010
        setattr(aiortc.rtcrtpsender, "get_encoder", refuse)  # noqa: B010
        self.installed = True


codec_guard = CodecGuard()


# --- receivers (publishers' tracks) ----------------------------------------------------

RtpHandler = Callable[[RtpPacket, int], Coroutine[Any, Any, None]]
RtcpHandler = Callable[[Any], Coroutine[Any, Any, None]]


def hook_receiver(receiver: RTCRtpReceiver, on_rtp: RtpHandler, on_rtcp: RtcpHandler) -> None:
    """Route the receiver's RTP to ``on_rtp`` instead of jitter buffer + decoder.

    ``on_rtcp`` sees every RTCP packet routed to the receiver before aiortc does.
    """
    original_rtcp = receiver._handle_rtcp_packet

    async def handle_rtcp(packet: Any) -> None:
        await on_rtcp(packet)
        await original_rtcp(packet)

    receiver._handle_rtp_packet = on_rtp  # type: ignore[method-assign,assignment]
    receiver._handle_rtcp_packet = handle_rtcp  # type: ignore[method-assign]


def unhook_receiver(receiver: RTCRtpReceiver) -> None:
    """Drop everything a receiver still gets (its connection was replaced, see ``rebind``).

    The client closing its old connection sends RTCP BYE there; that must not end the
    track that now lives on the new connection.
    """

    async def drop_rtp(packet: RtpPacket, arrival_time_ms: int) -> None:
        return None

    async def drop_rtcp(packet: Any) -> None:
        return None

    receiver._handle_rtp_packet = drop_rtp  # type: ignore[method-assign]
    receiver._handle_rtcp_packet = drop_rtcp  # type: ignore[method-assign]


def receiver_started(receiver: RTCRtpReceiver) -> bool:
    """Whether aiortc started the receiver: only a started one is registered with its
    transport's RTP router, so packets for a receiver that never started are dropped."""
    return bool(receiver._RTCRtpReceiver__started)  # type: ignore[attr-defined]


def receiver_statistics(receiver: RTCRtpReceiver) -> dict[int, StreamStatistics]:
    """The per-SSRC statistics the receiver's RTCP loop reports upstream (shared dict)."""
    streams: dict[int, StreamStatistics] = receiver._RTCRtpReceiver__remote_streams  # type: ignore[attr-defined]
    return streams


def receiver_nack_generator(receiver: RTCRtpReceiver) -> NackGenerator | None:
    nack: NackGenerator | None = receiver._RTCRtpReceiver__nack_generator  # type: ignore[attr-defined]
    return nack


async def send_nack(receiver: RTCRtpReceiver, media_ssrc: int, lost: list[int]) -> None:
    await receiver._send_rtcp_nack(media_ssrc, lost)


async def send_pli(receiver: RTCRtpReceiver, media_ssrc: int) -> None:
    """Ask the publisher for a keyframe (RTCP PLI)."""
    await receiver._send_rtcp_pli(media_ssrc)


async def send_remb(receiver: RTCRtpReceiver, bitrate: int, ssrcs: list[int]) -> None:
    """Send one REMB (receiver estimated maximum bitrate) to the publisher."""
    rtcp_ssrc: int | None = receiver._RTCRtpReceiver__rtcp_ssrc  # type: ignore[attr-defined]
    if rtcp_ssrc is None:
        return
    packet = RtcpPsfbPacket(
        fmt=RTCP_PSFB_APP, ssrc=rtcp_ssrc, media_ssrc=0, fci=pack_remb_fci(bitrate, ssrcs)
    )
    await receiver._send_rtcp(packet)


# --- recorder taps (encoded frames, never decoded) -------------------------------------

#: Called with (the frame's bytes as depayloaded by aiortc, its RTP timestamp).
FrameSink = Callable[[bytes, int], None]


class _TapJitterBuffer:
    """aiortc's jitter buffer reassembling frames for a sink instead of the decoder."""

    def __init__(self, inner: JitterBuffer, sink: FrameSink) -> None:
        self.inner = inner
        self.sink = sink

    @property
    def capacity(self) -> int:
        return self.inner.capacity

    def add(self, packet: RtpPacket) -> tuple[bool, None]:
        pli, frame = self.inner.add(packet)
        if frame is not None:
            self.sink(frame.data, frame.timestamp)
        return pli, None

    def remove(self, count: int) -> None:
        self.inner.remove(count)

    def smart_remove(self, count: int) -> bool:
        return self.inner.smart_remove(count)


def tap_receiver(receiver: RTCRtpReceiver, sink: FrameSink) -> None:
    """Hand every encoded frame the receiver reassembles to ``sink``, and none to decode.

    aiortc's own ``_handle_rtp_packet`` still runs (RTCP statistics, NACKs, RTX, payload
    parsing), so the recorder is a well-behaved receiver that simply never decodes.
    """
    inner: JitterBuffer = receiver._RTCRtpReceiver__jitter_buffer  # type: ignore[attr-defined]
    receiver._RTCRtpReceiver__jitter_buffer = _TapJitterBuffer(inner, sink)  # type: ignore[attr-defined]
    # No REMB from a tap: a recorder takes whatever the publisher sends and must never
    # pull the meeting's bitrate down (and the estimator is a good share of its CPU).
    receiver._RTCRtpReceiver__remote_bitrate_estimator = None  # type: ignore[attr-defined]


async def request_keyframe(receiver: RTCRtpReceiver) -> bool:
    """Send a PLI for the receiver's current stream; False before any packet arrived."""
    streams = receiver_statistics(receiver)
    if not streams:
        return False
    for ssrc in list(streams):
        await receiver._send_rtcp_pli(ssrc)
    return True


# --- senders (subscribers' tracks) -----------------------------------------------------


@dataclass(slots=True)
class SendPath:
    """The synchronous bottom of a subscriber's send path: SRTP protect, then sendto.

    ``srtp`` is the libsrtp session handle for :func:`srtp_protect_in_place`; ``session``
    owns it (libsrtp frees the handle when the session is collected), so whoever holds
    the handle holds this too.
    """

    protect: Callable[[bytes], bytes]
    sendto: Callable[[bytes, Any], None]
    addr: Any
    is_closing: Callable[[], bool]
    srtp: Any
    session: pylibsrtp.Session


def send_path(transport: RTCDtlsTransport) -> SendPath | None:
    """What ``RTCDtlsTransport._send_rtp`` does per packet, without its three awaits."""
    if transport.state != "connected":
        return None
    session = transport._tx_srtp
    pair = transport.transport._connection._nominated.get(1)
    if session is None or pair is None:
        return None
    udp = pair.protocol.transport
    return srtp_send_path(session, udp.sendto, pair.remote_addr, udp.is_closing)


def srtp_send_path(
    session: pylibsrtp.Session,
    sendto: Callable[[bytes, Any], None],
    addr: Any,
    is_closing: Callable[[], bool],
) -> SendPath:
    """A send path protecting with ``session`` (a transport's, or a test's own)."""
    return SendPath(
        protect=session.protect,
        sendto=sendto,
        addr=addr,
        is_closing=is_closing,
        srtp=session._srtp[0],
        session=session,
    )


#: Room for any RTP packet a publisher can send (UDP on a 1500-byte MTU) plus libsrtp's
#: largest trailer (authentication tag and MKI, which ``srtp_protect`` appends in place).
PACKET_BUFFER_SIZE = 2048
MAX_PROTECTED_INPUT = PACKET_BUFFER_SIZE - 144


class PacketBuffer:
    """One C buffer in which packets are assembled and SRTP-protected in place.

    Why: protecting one packet for every subscriber in a row, the forwarder writes the
    subscriber's header and the shared body here, lets libsrtp encrypt and authenticate
    in place (:func:`srtp_protect_in_place`) and copies the result out once, for the
    datagram transport. ``view`` is the writable buffer (``struct.pack_into`` and slice
    assignment); ``length`` is libsrtp's in/out length cell. Used synchronously only, so
    one buffer serves every track of the process.
    """

    __slots__ = ("cdata", "length", "view")

    def __init__(self) -> None:
        self.cdata: Any = _srtp_ffi.new("char[]", PACKET_BUFFER_SIZE)
        self.view: Any = _srtp_ffi.buffer(self.cdata)
        self.length: Any = _srtp_ffi.new("int *")


#: ``srtp_protect(handle, buffer.cdata, buffer.length)``: encrypts and authenticates the
#: ``length[0]`` bytes at the start of the buffer in place, sets ``length[0]`` to the
#: protected size and returns libsrtp's status (0 when it worked).
srtp_protect_in_place: Callable[[Any, Any, Any], int] = _srtp_lib.srtp_protect

#: A session without streams: protecting with its handle fails cleanly (libsrtp finds no
#: context), so a subscriber that has no send path yet holds this, never a null handle.
CLOSED_SRTP_SESSION = pylibsrtp.Session()
CLOSED_SRTP: Any = CLOSED_SRTP_SESSION._srtp[0]


@dataclass(slots=True)
class SenderHooks:
    """What the forwarder wants to hear from one subscriber's sender."""

    started: Callable[[RTCRtpSendParameters], None]
    keyframe_requested: Callable[[], None]
    retransmit: Callable[[int], None]
    remb: Callable[[int], None]


_HOOKED = "_konfer_sender_hooks"


def hook_sender(sender: RTCRtpSender, hooks: SenderHooks) -> None:
    """Wire a subscriber's sender to the forwarder (see the module docstring).

    A sender whose m-line is reused for another track is wired again: the new hooks
    replace the old ones (no second layer of wrappers).
    """
    cell: list[SenderHooks] | None = getattr(sender, _HOOKED, None)
    if cell is not None:
        cell[0] = hooks
        sender._send_keyframe = hooks.keyframe_requested  # type: ignore[method-assign]
        return
    cell = [hooks]
    setattr(sender, _HOOKED, cell)
    original_send = sender.send
    original_rtcp = sender._handle_rtcp_packet

    async def send(parameters: RTCRtpSendParameters) -> None:
        await original_send(parameters)
        cell[0].started(parameters)

    async def retransmit(sequence_number: int) -> None:
        cell[0].retransmit(sequence_number)

    async def handle_rtcp(packet: Any) -> None:
        if isinstance(packet, RtcpPsfbPacket) and packet.fmt == RTCP_PSFB_APP:
            try:
                bitrate, ssrcs = aiortc.rtp.unpack_remb_fci(packet.fci)
            except ValueError:
                return
            if sender._ssrc in ssrcs:
                cell[0].remb(bitrate)
            return
        await original_rtcp(packet)

    sender.send = send  # type: ignore[method-assign]
    sender._send_keyframe = hooks.keyframe_requested  # type: ignore[method-assign]
    sender._retransmit = retransmit  # type: ignore[method-assign]
    sender._handle_rtcp_packet = handle_rtcp  # type: ignore[method-assign]


# --- fault injection (test systems) -----------------------------------------------------


class _DroppingTransport:
    """A datagram transport that sends nothing; everything else is the real one's."""

    def __init__(self, inner: asyncio.DatagramTransport) -> None:
        self._inner = inner

    def sendto(self, data: bytes, addr: Any = None) -> None:
        """Dropped, as on a broken path."""

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def drop_datagram(data: bytes, addr: Any) -> None:
    """A ``sendto`` that sends nothing (a blackholed subscriber's forwarding path)."""


def _ignore_datagram(data: bytes | str, addr: tuple[Any, ...]) -> None:
    """Received datagrams of a blackholed connection: lost, as on a broken path."""


def ice_connections(pc: aiortc.RTCPeerConnection) -> list[aioice.ice.Connection]:
    """The aioice connections under a peer connection (one with bundling)."""
    found: dict[int, aioice.ice.Connection] = {}
    for transceiver in pc.getTransceivers():
        for dtls in (transceiver.sender.transport, transceiver.receiver.transport):
            if dtls is not None:
                connection = dtls.transport._connection
                found[id(connection)] = connection
    return list(found.values())


def blackhole_connection(connection: aioice.ice.Connection) -> None:
    """Drop every datagram of an ICE connection, in and out, from now on.

    The sockets stay open (no ICMP errors, no close alerts), so the other side sees what
    a broken path looks like: silence. STUN consent checks fail on both ends after that.
    """
    for protocol in list(connection._protocols):
        protocol.datagram_received = _ignore_datagram  # type: ignore[method-assign]
        transport = protocol.transport
        if not isinstance(transport, _DroppingTransport):
            protocol.transport = _DroppingTransport(transport)  # type: ignore[assignment]


def blackhole(pc: aiortc.RTCPeerConnection) -> int:
    """Drop every datagram of a peer connection; how many ICE connections that took."""
    connections = ice_connections(pc)
    for connection in connections:
        blackhole_connection(connection)
    return len(connections)


def set_track_id(track: MediaStreamTrack, track_id: str) -> None:
    """Give a track the id subscribers see (``MediaStreamTrack.id`` has no setter)."""
    track._id = track_id


def sender_ssrc(sender: RTCRtpSender) -> int:
    ssrc: int = sender._ssrc
    return ssrc


def set_sender_ids(sender: RTCRtpSender, stream_id: str, track_id: str) -> None:
    """The msid a subscriber sees: ``<publisher peer id> <SFU track id>``."""
    sender._stream_id = stream_id
    sender._track_id = track_id


def set_sender_report(
    sender: RTCRtpSender, packets: int, octets: int, ntp_timestamp: int, rtp_timestamp: int
) -> None:
    """What the sender's next RTCP sender report says (its RTP loop never sends)."""
    sender._RTCRtpSender__packet_count = packets  # type: ignore[attr-defined]
    sender._RTCRtpSender__octet_count = octets  # type: ignore[attr-defined]
    sender._RTCRtpSender__ntp_timestamp = ntp_timestamp  # type: ignore[attr-defined]
    sender._RTCRtpSender__rtp_timestamp = rtp_timestamp  # type: ignore[attr-defined]


def sender_rtt(sender: RTCRtpSender) -> float | None:
    """Round-trip time in seconds from the subscriber's receiver reports, if any yet."""
    rtt: float | None = sender._RTCRtpSender__rtt  # type: ignore[attr-defined]
    return rtt


def transceiver_codecs(transceiver: RTCRtpTransceiver) -> list[RTCRtpCodecParameters]:
    """The codecs negotiated on a transceiver (first non-RTX one is what flows)."""
    codecs: list[RTCRtpCodecParameters] = transceiver._codecs
    return codecs


def parse_rtcp(data: bytes) -> list[Any]:
    """Parse compound RTCP (tests use it to look at what the SFU sends)."""
    return list(RtcpPacket.parse(data))
