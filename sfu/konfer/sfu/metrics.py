"""Prometheus metrics of one SFU process (``konfer_sfu_*``), served at ``/metrics``.

The per-packet path keeps plain integer counters on its own objects; this collector reads
them at scrape time, so forwarding never touches a metrics lock.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from konfer.sfu import aiortc_hooks as hooks
from konfer.sfu.room import Room


class RoomCollector(Collector):
    def __init__(self, room: Room) -> None:
        self.room = room

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        room = self.room
        labels = ["meeting_id"]
        mid = [room.meeting_id]
        peers = GaugeMetricFamily("konfer_sfu_peers", "Peers in the meeting", labels=labels)
        peers.add_metric(mid, len(room.peers))
        yield peers

        tracks = GaugeMetricFamily(
            "konfer_sfu_tracks", "Published tracks", labels=[*labels, "kind", "source"]
        )
        by_kind = Counter((t.kind, t.source) for t in room.tracks.values())
        for (kind, source), n in sorted(by_kind.items()):
            tracks.add_metric([*mid, kind, source], n)
        yield tracks

        streams = GaugeMetricFamily(
            "konfer_sfu_forwarded_streams",
            "Subscriber streams being fed now",
            labels=[*labels, "kind"],
        )
        live = Counter[str]()
        for t in room.tracks.values():
            live[t.kind] += len(t.live)
        for kind in ("audio", "video"):
            streams.add_metric([*mid, kind], live[kind])
        yield streams

        totals = room.totals()
        for name, key, text in (
            ("konfer_sfu_received_packets", "packets_in", "RTP packets received from publishers"),
            ("konfer_sfu_received_bytes", "bytes_in", "RTP payload bytes from publishers"),
            ("konfer_sfu_forwarded_packets", "packets_out", "RTP packets sent to subscribers"),
            ("konfer_sfu_forwarded_bytes", "bytes_out", "RTP payload bytes sent to subscribers"),
            ("konfer_sfu_retransmitted_packets", "retransmitted", "Packets resent on NACK"),
        ):
            family = CounterMetricFamily(name, text, labels=[*labels, "kind"])
            for kind in ("audio", "video"):
                family.add_metric([*mid, kind], totals[kind][key])
            yield family

        keyframes = CounterMetricFamily(
            "konfer_sfu_keyframe_requests",
            "Keyframe requests: from subscribers, and sent upstream to publishers",
            labels=[*labels, "direction"],
        )
        keyframes.add_metric([*mid, "from_subscribers"], totals["video"]["keyframes_in"])
        keyframes.add_metric([*mid, "to_publishers"], totals["video"]["keyframes_out"])
        yield keyframes

        remb = CounterMetricFamily(
            "konfer_sfu_remb", "Aggregated REMB messages sent to publishers", labels=labels
        )
        remb.add_metric(mid, room.remb_sent)
        yield remb

        restarts = CounterMetricFamily(
            "konfer_sfu_ice_restarts",
            "ICE restarts, each done by replacing the SFU's side of a connection",
            labels=[*labels, "pc"],
        )
        for pc in ("publisher", "subscriber"):
            restarts.add_metric([*mid, pc], room.ice_restarts[pc])
        yield restarts

        reuses = CounterMetricFamily(
            "konfer_sfu_mline_reuses",
            "Subscriber m-lines taken over by another track after theirs ended",
            labels=labels,
        )
        reuses.add_metric(mid, room.mline_reuses)
        yield reuses

        stale = CounterMetricFamily(
            "konfer_sfu_stale_answers_ignored",
            "Client answers to subscriber offers already superseded, ignored",
            labels=labels,
        )
        stale.add_metric(mid, room.stale_answers)
        yield stale

        codecs = CounterMetricFamily(
            "konfer_sfu_codec_instantiations",
            "Decoders or encoders aiortc tried to create in this process (must stay 0)",
            labels=labels,
        )
        codecs.add_metric(mid, hooks.codec_guard.attempts)
        yield codecs

        cpu = CounterMetricFamily(
            "konfer_sfu_cpu_seconds", "CPU time of the SFU process", labels=labels
        )
        cpu.add_metric(mid, time.process_time())
        yield cpu


def make_registry(room: Room) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(RoomCollector(room))
    return registry
