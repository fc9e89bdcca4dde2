"""What the recorder needs to know about an encoded frame without decoding it.

A stream-copied track still needs its picture size in the container header and must
start at a keyframe; both are in the first bytes of a VP8 keyframe or an H.264 SPS, so
they are read here from the bytes aiortc reassembled (VP8 frames, H.264 Annex B access
units). ``muxer`` calls this for every video frame until a track has started.
"""

from __future__ import annotations

_START = b"\x00\x00\x01"


def vp8_is_keyframe(frame: bytes) -> bool:
    """Bit 0 of the frame tag is 0 on a keyframe (RFC 6386 §9.1)."""
    return len(frame) >= 10 and not frame[0] & 0x01


def vp8_size(frame: bytes) -> tuple[int, int] | None:
    """(width, height) from a VP8 keyframe header, None for an interframe."""
    if not vp8_is_keyframe(frame) or frame[3:6] != b"\x9d\x01\x2a":
        return None
    width = int.from_bytes(frame[6:8], "little") & 0x3FFF
    height = int.from_bytes(frame[8:10], "little") & 0x3FFF
    return (width, height) if width and height else None


def h264_nal_units(access_unit: bytes) -> list[bytes]:
    """The NAL units of an Annex B access unit (start codes removed)."""
    units: list[bytes] = []
    pos = access_unit.find(_START)
    while pos >= 0:
        start = pos + 3
        nxt = access_unit.find(_START, start)
        end = len(access_unit) if nxt < 0 else nxt
        unit = access_unit[start:end]
        if nxt >= 0 and unit.endswith(b"\x00"):  # a 4-byte start code follows
            unit = unit.rstrip(b"\x00")
        if unit:
            units.append(unit)
        pos = nxt
    return units


def h264_is_keyframe(access_unit: bytes) -> bool:
    """An IDR slice or an SPS in the access unit."""
    return any(u[0] & 0x1F in (5, 7) for u in h264_nal_units(access_unit))


class _Bits:
    """Exp-Golomb reader over an RBSP (emulation-prevention bytes removed)."""

    def __init__(self, data: bytes) -> None:
        self.data = data.replace(b"\x00\x00\x03", b"\x00\x00")
        self.pos = 0

    def bit(self) -> int:
        byte = self.data[self.pos >> 3]  # IndexError on a truncated SPS
        value = (byte >> (7 - (self.pos & 7))) & 1
        self.pos += 1
        return value

    def bits(self, n: int) -> int:
        value = 0
        for _ in range(n):
            value = (value << 1) | self.bit()
        return value

    def ue(self) -> int:
        zeros = 0
        while self.bit() == 0:
            zeros += 1
            if zeros > 31:
                raise ValueError("invalid Exp-Golomb code")
        return (1 << zeros) - 1 + self.bits(zeros)

    def se(self) -> int:
        k = self.ue()
        return (k + 1) // 2 if k & 1 else -(k // 2)


def _skip_scaling_list(bits: _Bits, size: int) -> None:
    last = nxt = 8
    for _ in range(size):
        if nxt:
            nxt = (last + bits.se() + 256) % 256
        last = nxt or last


def h264_sps_size(sps: bytes) -> tuple[int, int]:
    """(width, height) of an SPS NAL unit, cropping applied (ITU-T H.264 §7.3.2.1.1)."""
    bits = _Bits(sps[1:])
    profile = bits.bits(8)
    bits.bits(16)  # constraint flags, level
    bits.ue()  # seq_parameter_set_id
    chroma_format = 1
    if profile in (100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135):
        chroma_format = bits.ue()
        if chroma_format == 3:
            bits.bit()
        bits.ue()
        bits.ue()
        bits.bit()
        if bits.bit():  # seq_scaling_matrix_present
            for i in range(8 if chroma_format != 3 else 12):
                if bits.bit():
                    _skip_scaling_list(bits, 16 if i < 6 else 64)
    bits.ue()  # log2_max_frame_num
    poc_type = bits.ue()
    if poc_type == 0:
        bits.ue()
    elif poc_type == 1:
        bits.bit()
        bits.se()
        bits.se()
        for _ in range(bits.ue()):
            bits.se()
    bits.ue()  # max_num_ref_frames
    bits.bit()
    width_mbs = bits.ue() + 1
    height_units = bits.ue() + 1
    frame_mbs_only = bits.bit()
    if not frame_mbs_only:
        bits.bit()
    bits.bit()  # direct_8x8_inference
    width = width_mbs * 16
    height = height_units * 16 * (2 - frame_mbs_only)
    if bits.bit():  # frame_cropping
        left, right, top, bottom = bits.ue(), bits.ue(), bits.ue(), bits.ue()
        crop_x = 2 if chroma_format in (1, 2) else 1
        crop_y = (2 if chroma_format == 1 else 1) * (2 - frame_mbs_only)
        width -= (left + right) * crop_x
        height -= (top + bottom) * crop_y
    return width, height


def h264_size(access_unit: bytes) -> tuple[int, int] | None:
    """(width, height) from the SPS in an access unit, None when it carries none."""
    for unit in h264_nal_units(access_unit):
        if unit[0] & 0x1F == 7:
            try:
                return h264_sps_size(unit)
            except (IndexError, ValueError):
                return None
    return None


def is_keyframe(codec: str, frame: bytes) -> bool:
    if codec == "vp8":
        return vp8_is_keyframe(frame)
    if codec == "h264":
        return h264_is_keyframe(frame)
    return True


def picture_size(codec: str, frame: bytes) -> tuple[int, int] | None:
    if codec == "vp8":
        return vp8_size(frame)
    if codec == "h264":
        return h264_size(frame)
    return None
