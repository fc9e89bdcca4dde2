"""Video enhancement with FFmpeg filters through PyAV filter graphs, task video-enhancement.

The filters are the ones PyAV's bundled (LGPL) FFmpeg carries — hqdn3d and eq are GPL
builds only, so denoising uses nlmeans (atadenoise at low quality) and colour correction
uses normalize plus colorlevels:
- super_resolution: lanczos scaling to the target (2x when none is given), unsharp at high
- denoising: atadenoise (low) or nlmeans (medium, high)
- stabilization: deshake
- color_correction: normalize (stretches each channel's range) and colorlevels
Any type ends at the requested size when one is given. Output is H.264 in MP4; the audio is
copied when MP4 can carry it.
"""

from __future__ import annotations

import base64
import contextlib
import re
import tempfile
import time
from fractions import Fraction
from pathlib import Path
from typing import Any

import av

from konfer.ai import audio
from konfer.ai.base import KonferModel, invalid, unsupported_format

TYPES = ("super_resolution", "denoising", "stabilization", "color_correction")
_VIDEO_FORMATS = {"mov", "mp4", "m4a", "matroska", "webm"}
_RESOLUTION = re.compile(r"^(\d{2,5})x(\d{2,5})$")
_CRF = {"low": "30", "medium": "23", "high": "18"}
_PRESET = {"low": "veryfast", "medium": "faster", "high": "medium"}


def parse_resolution(value: object) -> tuple[int, int] | None:
    if value in (None, ""):
        return None
    match = _RESOLUTION.match(str(value).strip().lower())
    if not match:
        raise invalid("target_resolution looks like 1920x1080")
    width, height = int(match.group(1)), int(match.group(2))
    if not (16 <= width <= 7680 and 16 <= height <= 4320) or width % 2 or height % 2:
        raise invalid("target_resolution must be even, between 16x16 and 7680x4320")
    return width, height


def filter_chain(
    kind: str, quality: str, source: tuple[int, int], target: tuple[int, int] | None
) -> list[tuple[str, str]]:
    """The (filter, arguments) list for one enhancement."""
    chain: list[tuple[str, str]] = []
    if kind == "super_resolution":
        width, height = target or (source[0] * 2, source[1] * 2)
        chain.append(("scale", f"{width}:{height}:flags=lanczos"))
        if quality == "high":
            chain.append(("unsharp", "5:5:0.8:5:5:0.0"))
        return chain
    if kind == "denoising":
        if quality == "low":
            chain.append(("atadenoise", ""))
        else:
            strength = "2.0" if quality == "medium" else "4.0"
            chain.append(("nlmeans", f"s={strength}:p=5:r=9"))
    elif kind == "stabilization":
        chain.append(("deshake", ""))
    elif kind == "color_correction":
        chain.append(("normalize", "smoothing=10:independence=0.5"))
        chain.append(("colorlevels", "rimin=0.02:gimin=0.02:bimin=0.02"))
    if target is not None:
        chain.append(("scale", f"{target[0]}:{target[1]}:flags=lanczos"))
    elif source[0] % 2 or source[1] % 2:  # H.264 4:2:0 needs even sizes
        chain.append(("scale", "trunc(iw/2)*2:trunc(ih/2)*2"))
    return chain


class VideoModel(KonferModel):
    def load_model(self) -> None:
        missing = [
            name
            for name in ("scale", "nlmeans", "atadenoise", "deshake", "normalize", "colorlevels")
            if name not in av.filter.filters_available
        ]
        if missing:
            raise RuntimeError(f"PyAV's FFmpeg lacks filters: {', '.join(missing)}")

    def infer(self, request: dict[str, Any]) -> dict[str, Any]:
        started = time.perf_counter()
        kind = str(request.get("enhancement_type", ""))
        if kind not in TYPES:
            raise invalid("enhancement_type must be one of " + ", ".join(TYPES))
        quality = str(request.get("quality", "medium"))
        if quality not in _CRF:
            raise invalid("quality must be low, medium or high")
        target = parse_resolution(request.get("target_resolution"))
        data = audio.payload_bytes(request, "video")
        with tempfile.TemporaryDirectory(prefix="konfer-enhance-") as tmp:
            source = Path(tmp) / "in"
            source.write_bytes(data)
            output = Path(tmp) / "out.mp4"
            facts = self._process(source, output, kind, quality, target)
            encoded = output.read_bytes()
        return {
            "video": base64.b64encode(encoded).decode(),
            "container": "mp4",
            "enhancement_type": kind,
            "filters": facts["filters"],
            "original_resolution": facts["original"],
            "enhanced_resolution": facts["enhanced"],
            "duration": facts["duration"],
            "file_size": len(encoded),
            "processing_time": round(time.perf_counter() - started, 3),
        }

    def _process(
        self,
        source: Path,
        output: Path,
        kind: str,
        quality: str,
        target: tuple[int, int] | None,
    ) -> dict[str, Any]:
        try:
            src = av.open(str(source), mode="r")
        except (av.error.FFmpegError, ValueError) as exc:
            raise unsupported_format("supported formats: mp4, webm, mkv") from exc
        with src:
            names = set((src.format.name or "").split(","))
            if not names & _VIDEO_FORMATS or not src.streams.video:
                raise unsupported_format("supported formats: mp4, webm, mkv")
            vin = src.streams.video[0]
            width, height = vin.codec_context.width, vin.codec_context.height
            rate = vin.average_rate or vin.guessed_rate or Fraction(25)
            chain = filter_chain(kind, quality, (width, height), target)
            chain.append(("format", "yuv420p"))
            graph = av.filter.Graph()
            node = graph.add_buffer(template=vin)
            for name, args in chain:
                nxt = graph.add(name, args) if args else graph.add(name)
                node.link_to(nxt)
                node = nxt
            sink = graph.add("buffersink")
            node.link_to(sink)
            graph.configure()
            out = av.open(str(output), mode="w", format="mp4")
            with out:
                vout = out.add_stream("libx264", rate=rate)
                vout.pix_fmt = "yuv420p"
                vout.options = {"crf": _CRF[quality], "preset": _PRESET[quality]}
                # Sized before anything is muxed: the first mux opens every encoder.
                if target is not None:
                    enhanced = target
                elif kind == "super_resolution":
                    enhanced = (width * 2, height * 2)
                else:
                    enhanced = (width - width % 2, height - height % 2)
                vout.width, vout.height = enhanced
                ain = src.streams.audio[0] if src.streams.audio else None
                aout = None
                if ain is not None and ain.codec_context.name in ("aac", "mp3", "opus"):
                    with contextlib.suppress(ValueError, av.error.FFmpegError):
                        aout = out.add_stream_from_template(ain)
                index = 0

                def drain() -> None:
                    nonlocal index
                    while True:
                        try:
                            frame = graph.vpull()
                        except (av.error.BlockingIOError, av.error.EOFError):
                            return
                        if (frame.width, frame.height) != enhanced:
                            frame = frame.reformat(width=enhanced[0], height=enhanced[1])
                        frame.pts = index
                        frame.time_base = Fraction(1) / Fraction(rate)
                        index += 1
                        for packet in vout.encode(frame):
                            out.mux(packet)

                streams = [vin] + ([ain] if aout is not None and ain is not None else [])
                try:
                    for packet in src.demux(*streams):
                        if packet.stream is ain and aout is not None:
                            if packet.dts is not None:
                                packet.stream = aout
                                out.mux(packet)
                            continue
                        for frame in packet.decode():
                            graph.vpush(frame)  # type: ignore[arg-type]
                            drain()
                except av.error.FFmpegError as exc:
                    raise unsupported_format(f"the video could not be decoded: {exc}") from exc
                graph.vpush(None)
                drain()
                for packet in vout.encode(None):
                    out.mux(packet)
                if index == 0:
                    raise unsupported_format("the video has no decodable frames")
            duration = float(index / Fraction(rate))
        return {
            "filters": ",".join(f"{n}={a}" if a else n for n, a in chain),
            "original": f"{width}x{height}",
            "enhanced": f"{enhanced[0]}x{enhanced[1]}",
            "duration": round(duration, 3),
        }
