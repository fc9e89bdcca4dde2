"""Prometheus metrics of one recorder process (``konfer_recording_*``).

``session`` updates them; ``konfer recorder --metrics-port`` serves them, and the same
numbers travel to the api in every status report.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge


class RecorderMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.frames = Counter(
            "konfer_recording_frames_total", "Encoded frames written", ["kind"], registry=r
        )
        self.bytes = Counter(
            "konfer_recording_bytes_total", "Encoded bytes written", ["kind"], registry=r
        )
        self.tracks = Gauge("konfer_recording_tracks", "Tracks being recorded", registry=r)
        self.packets_lost = Gauge(
            "konfer_recording_packets_lost", "RTP packets lost on the way in", registry=r
        )
        self.decoders = Gauge(
            "konfer_recording_decoders",
            "Decoders created in this process (0 for a per-track recording)",
            registry=r,
        )
        self.upload_attempts = Counter(
            "konfer_recording_upload_attempts_total", "Uploads tried", ["result"], registry=r
        )
        self.duration = Gauge(
            "konfer_recording_duration_seconds", "Length recorded so far", registry=r
        )
        self.phase = Gauge(
            "konfer_recording_phase",
            "1 for the phase the recorder is in",
            ["phase"],
            registry=r,
        )

    def set_phase(self, phase: str) -> None:
        for name in ("pending", "recording", "finalizing", "uploading", "completed", "failed"):
            self.phase.labels(name).set(1 if name == phase else 0)
