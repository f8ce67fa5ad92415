"""The .nlc file format (specified in docs/format.md): header, segments, payloads, checksums.

This module only (de)serialises; it knows nothing about models or pixels.  Every malformed input
raises ``BadStreamError`` with a one-line reason, and sizes are validated before anything is
allocated.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, field

from nelloc.errors import BadStreamError

MAGIC = b"\x8bNLC"
VERSION = 1
KIND_NEURAL, KIND_FALLBACK = 0, 1
SEG_NEURAL, SEG_CONSTANT, SEG_FALLBACK = 0, 1, 2
FALLBACK_PNG, FALLBACK_RAW_LZMA = 0, 1
DEFAULT_MAX_PIXELS = 1 << 28  # 268 megapixels


@dataclass
class Segment:
    """One group of planes: neural-coded, a constant plane, or a fallback blob."""

    type: int
    channels: int = 1
    model_name: str = ""
    model_sha256: bytes = b""
    tile: int = 0
    value: int = 0  # constant segments
    method: int = 0  # fallback segments
    payload: bytes = b""


@dataclass
class Container:
    width: int
    height: int
    mode: str
    kind: int = KIND_NEURAL
    pixel_crc: int = 0
    icc_profile: bytes = b""
    segments: list[Segment] = field(default_factory=list)


def _pack_str(s: bytes) -> bytes:
    if len(s) > 255:
        raise ValueError("string field longer than 255 bytes")
    return struct.pack("<B", len(s)) + s


def dumps(c: Container) -> bytes:
    head = bytearray(MAGIC)
    head += struct.pack("<BBHII", VERSION, c.kind, 0, c.width, c.height)
    head += _pack_str(c.mode.encode("ascii"))
    head += struct.pack("<I", len(c.icc_profile)) + c.icc_profile
    head += struct.pack("<IB", c.pixel_crc, len(c.segments))
    for s in c.segments:
        head += struct.pack("<BB", s.type, s.channels)
        if s.type == SEG_NEURAL:
            head += _pack_str(s.model_name.encode("utf-8")) + s.model_sha256
            head += struct.pack("<IQ", s.tile, len(s.payload))
        elif s.type == SEG_CONSTANT:
            head += struct.pack("<B", s.value)
        else:
            head += struct.pack("<BQ", s.method, len(s.payload))
    head += struct.pack("<I", zlib.crc32(head))
    body = b"".join(s.payload for s in c.segments)
    out = bytes(head) + body
    return out + struct.pack("<I", zlib.crc32(out))


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise BadStreamError("truncated file: header ends early")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def unpack(self, fmt: str) -> tuple:
        return struct.unpack(fmt, self.take(struct.calcsize(fmt)))

    def string(self) -> bytes:
        (n,) = self.unpack("<B")
        return self.take(n)


def loads(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> Container:
    data = bytes(data)
    if len(data) < 4 or data[:4] != MAGIC:
        raise BadStreamError("not a NeLLoC file (bad magic)")
    r = _Reader(data)
    r.take(4)
    version, kind, _flags, width, height = r.unpack("<BBHII")
    if version != VERSION:
        raise BadStreamError(f"unsupported format version {version} (this nelloc reads version {VERSION})")
    try:
        mode = r.string().decode("ascii")
    except UnicodeDecodeError:
        raise BadStreamError("corrupted header: mode is not ASCII") from None
    (icc_len,) = r.unpack("<I")
    if icc_len > len(data):
        raise BadStreamError("corrupted header: ICC profile longer than the file")
    icc = r.take(icc_len)
    pixel_crc, nseg = r.unpack("<IB")
    segments, lengths = [], []
    for _ in range(nseg):
        seg_type, channels = r.unpack("<BB")
        seg = Segment(seg_type, channels)
        length = 0
        if seg_type == SEG_NEURAL:
            seg.model_name = r.string().decode("utf-8", errors="replace")
            seg.model_sha256 = r.take(32)
            seg.tile, length = r.unpack("<IQ")
        elif seg_type == SEG_CONSTANT:
            (seg.value,) = r.unpack("<B")
        elif seg_type == SEG_FALLBACK:
            seg.method, length = r.unpack("<BQ")
        else:
            raise BadStreamError(f"corrupted header: unknown segment type {seg_type}")
        segments.append(seg)
        lengths.append(length)
    (head_crc,) = r.unpack("<I")
    if zlib.crc32(data[: r.pos - 4]) != head_crc:
        raise BadStreamError("corrupted header (checksum mismatch)")
    # the header is now trusted: validate sizes before anything is allocated
    if kind not in (KIND_NEURAL, KIND_FALLBACK):
        raise BadStreamError(f"corrupted header: unknown kind {kind}")
    if width < 1 or height < 1:
        raise BadStreamError(f"corrupted header: image size {width}x{height}")
    if width * height > max_pixels:
        raise BadStreamError(
            f"image of {width}x{height} = {width * height} pixels exceeds the limit of {max_pixels} (see --max-pixels)"
        )
    if r.pos + sum(lengths) + 4 != len(data):
        raise BadStreamError(
            f"truncated or padded file: expected {r.pos + sum(lengths) + 4} bytes, got {len(data)}"
        )
    (file_crc,) = struct.unpack("<I", data[-4:])
    if zlib.crc32(data[:-4]) != file_crc:
        raise BadStreamError("corrupted file (checksum mismatch)")
    pos = r.pos
    for s, n in zip(segments, lengths):
        s.payload = data[pos : pos + n]
        pos += n
    return Container(width, height, mode, kind, pixel_crc, icc, segments)
