"""Which formats the media library accepts, and what a file is, read from its first bytes.

The API documents the accepted formats per type (video: MP4, WebM, MKV, AVI, MOV, FLV;
audio: MP3, WAV, OGG, FLAC, AAC, M4A; image: JPG, PNG, GIF, WebP, BMP; document: PDF,
TXT). ``sniff`` decides the container from magic bytes only — never from the file name
or the client's Content-Type — and ``services.media`` then confirms it with a PyAV (or
Pillow) probe, which also settles whether an MP4/MKV/WebM/Ogg holds video or only audio.
Pure functions; called by the upload path and the job planner.
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass
from typing import Literal

FileType = Literal["video", "audio", "image", "document"]
FILE_TYPES: tuple[FileType, ...] = ("video", "audio", "image", "document")

SNIFF_BYTES = 64 * 1024

# container -> (file type when it holds video, mime type, PyAV muxer name)
VIDEO_CONTAINERS: dict[str, tuple[str, str]] = {
    "mp4": ("video/mp4", "mp4"),
    "webm": ("video/webm", "webm"),
    "mkv": ("video/x-matroska", "matroska"),
    "avi": ("video/x-msvideo", "avi"),
    "mov": ("video/quicktime", "mov"),
    "flv": ("video/x-flv", "flv"),
}
AUDIO_CONTAINERS: dict[str, tuple[str, str]] = {
    "mp3": ("audio/mpeg", "mp3"),
    "wav": ("audio/wav", "wav"),
    "ogg": ("audio/ogg", "ogg"),
    "flac": ("audio/flac", "flac"),
    "aac": ("audio/aac", "adts"),
    "m4a": ("audio/mp4", "ipod"),
}
IMAGE_FORMATS: dict[str, str] = {
    "jpg": "image/jpeg",
    "png": "image/png",
    "gif": "image/gif",
    "webp": "image/webp",
    "bmp": "image/bmp",
}
DOCUMENT_FORMATS: dict[str, str] = {"pdf": "application/pdf", "txt": "text/plain; charset=utf-8"}

# Audio-only files in a video container keep the container but get an audio MIME type.
AUDIO_ONLY_MIME = {
    "mp4": ("m4a", "audio/mp4"),
    "mov": ("m4a", "audio/mp4"),
    "webm": ("webm", "audio/webm"),
    "mkv": ("mkv", "audio/x-matroska"),
}

SUPPORTED_TEXT = (
    "video: MP4, WebM, MKV, AVI, MOV, FLV; audio: MP3, WAV, OGG, FLAC, AAC, M4A; "
    "image: JPG, PNG, GIF, WebP, BMP; document: PDF, TXT"
)


@dataclass(frozen=True, slots=True)
class Sniffed:
    """What the first bytes say: the container and the type it most likely holds."""

    container: str
    file_type: FileType

    @property
    def needs_probe(self) -> bool:
        return self.file_type in ("video", "audio")


def mime_for(container: str, file_type: str) -> str:
    if file_type == "audio" and container in AUDIO_ONLY_MIME:
        return AUDIO_ONLY_MIME[container][1]
    if container in VIDEO_CONTAINERS:
        return VIDEO_CONTAINERS[container][0]
    if container in AUDIO_CONTAINERS:
        return AUDIO_CONTAINERS[container][0]
    if container in IMAGE_FORMATS:
        return IMAGE_FORMATS[container]
    return DOCUMENT_FORMATS.get(container, "application/octet-stream")


def extension_for(container: str) -> str:
    return {"mkv": "mkv"}.get(container, container)


def _ebml_doctype(head: bytes) -> str | None:
    """The DocType of an EBML header (``webm`` or ``matroska``), if it is in ``head``."""
    at = head.find(b"\x42\x82", 4, 64)
    if at < 0 or at + 3 > len(head):
        return None
    size_byte = head[at + 2]
    if not size_byte & 0x80:  # only one-byte sizes occur in practice
        return None
    size = size_byte & 0x7F
    return head[at + 3 : at + 3 + size].decode("ascii", "replace").rstrip("\x00")


def _is_mp3_frame(head: bytes) -> bool:
    if len(head) < 4 or head[0] != 0xFF or head[1] & 0xE0 != 0xE0:
        return False
    version, layer = (head[1] >> 3) & 0x03, (head[1] >> 1) & 0x03
    bitrate, rate = head[2] >> 4, (head[2] >> 2) & 0x03
    return version != 1 and layer != 0 and bitrate not in (0, 15) and rate != 3


def _is_adts(head: bytes) -> bool:
    return len(head) >= 7 and head[0] == 0xFF and head[1] & 0xF6 == 0xF0


def looks_like_text(head: bytes, complete: bool) -> bool:
    """UTF-8 (a multi-byte character may be cut at the end) without binary control bytes."""
    if not head or b"\x00" in head:
        return False
    try:
        text = codecs.getincrementaldecoder("utf-8")().decode(head, final=complete)
    except UnicodeDecodeError:
        return False
    controls = sum(1 for ch in text if ord(ch) < 32 and ch not in "\t\n\r\f\x1b")
    return controls <= len(text) // 100


def sniff(head: bytes, complete: bool = False) -> Sniffed | None:
    """The container of a file from its first bytes (``complete``: the whole file)."""
    if head[:4] == b"\x1a\x45\xdf\xa3":
        doctype = _ebml_doctype(head)
        if doctype == "webm":
            return Sniffed("webm", "video")
        if doctype == "matroska":
            return Sniffed("mkv", "video")
        return None
    if head[:4] == b"RIFF" and len(head) >= 12:
        kind = head[8:12]
        if kind == b"AVI ":
            return Sniffed("avi", "video")
        if kind == b"WAVE":
            return Sniffed("wav", "audio")
        if kind == b"WEBP":
            return Sniffed("webp", "image")
        return None
    if head[:4] == b"FLV\x01":
        return Sniffed("flv", "video")
    if head[4:8] == b"ftyp" and len(head) >= 12:
        brand = head[8:12]
        if brand == b"qt  ":
            return Sniffed("mov", "video")
        if brand in (b"M4A ", b"M4B ", b"M4P "):
            return Sniffed("m4a", "audio")
        return Sniffed("mp4", "video")
    if head[4:8] in (b"moov", b"mdat", b"wide", b"free", b"skip", b"pnot"):
        return Sniffed("mov", "video")
    if head[:4] == b"OggS":
        return Sniffed("ogg", "audio")
    if head[:4] == b"fLaC":
        return Sniffed("flac", "audio")
    if head[:3] == b"\xff\xd8\xff":
        return Sniffed("jpg", "image")
    if head[:8] == b"\x89PNG\r\n\x1a\n":
        return Sniffed("png", "image")
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return Sniffed("gif", "image")
    if head[:2] == b"BM" and len(head) >= 26 and head[6:10] == b"\x00\x00\x00\x00":
        return Sniffed("bmp", "image")
    if head[:5] == b"%PDF-":
        return Sniffed("pdf", "document")
    if head[:3] == b"ID3":
        return Sniffed("mp3", "audio")
    if _is_adts(head):
        return Sniffed("aac", "audio")
    if _is_mp3_frame(head):
        return Sniffed("mp3", "audio")
    if looks_like_text(head.removeprefix(codecs.BOM_UTF8), complete):
        return Sniffed("txt", "document")
    return None


# Which probed PyAV demuxer names confirm a sniffed container.
DEMUXERS: dict[str, tuple[str, ...]] = {
    "mp4": ("mp4", "mov"),
    "m4a": ("mp4", "mov", "m4a"),
    "mov": ("mov", "mp4"),
    "webm": ("webm", "matroska"),
    "mkv": ("matroska", "webm"),
    "avi": ("avi",),
    "flv": ("flv",),
    "mp3": ("mp3",),
    "wav": ("wav",),
    "ogg": ("ogg",),
    "flac": ("flac",),
    "aac": ("aac",),
}
