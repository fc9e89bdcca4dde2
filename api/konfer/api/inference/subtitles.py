"""Transcript segments as plain text, SubRip (.srt) or WebVTT; pure functions."""

from __future__ import annotations

from typing import Any


def _stamp(seconds: float, sep: str) -> str:
    millis = max(0, round(seconds * 1000))
    h, rest = divmod(millis, 3_600_000)
    m, rest = divmod(rest, 60_000)
    s, ms = divmod(rest, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d}"


def to_text(segments: list[dict[str, Any]]) -> str:
    return " ".join(str(s["text"]).strip() for s in segments if str(s["text"]).strip())


def to_srt(segments: list[dict[str, Any]]) -> str:
    blocks = []
    for index, seg in enumerate((s for s in segments if str(s["text"]).strip()), start=1):
        start, end = float(seg["start"]), max(float(seg["end"]), float(seg["start"]) + 0.001)
        blocks.append(
            f"{index}\n{_stamp(start, ',')} --> {_stamp(end, ',')}\n{str(seg['text']).strip()}\n"
        )
    return "\n".join(blocks)


def to_vtt(segments: list[dict[str, Any]]) -> str:
    lines = ["WEBVTT", ""]
    for seg in segments:
        text = str(seg["text"]).strip()
        if not text:
            continue
        start, end = float(seg["start"]), max(float(seg["end"]), float(seg["start"]) + 0.001)
        lines += [f"{_stamp(start, '.')} --> {_stamp(end, '.')}", text.replace("-->", "->"), ""]
    return "\n".join(lines)
