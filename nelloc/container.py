"""The .nlc file format (specified in docs/format.md): header, segments, payloads, checksums.

This module only (de)serialises; it knows nothing about models or pixels.  Every malformed input
raises ``BadStreamError`` with a one-line reason, and sizes are validated before anything is
allocated.  The header is compact (25 bytes for a grey image) because NeLLoC is also used on
thumbnails, where every byte of overhead shows in bits per sub-pixel.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, field

from nelloc.errors import BadStreamError

MAGIC = b"\x8bNLC"
VERSION = 4  # what this version writes, unless a segment needs a later one (BIAS_VERSION)
BIAS_VERSION = 5  # the first version with per-image biases (segment type 4)
READABLE_VERSIONS = (1, 2, 3, 4, 5)  # 1: float64 network arithmetic; 1, 2: longer segment headers; 4: log-scale
#                                   offsets (a block size in the neural segment header); 5: per-image biases
FLAG_FALLBACK, FLAG_ICC, FLAG_METADATA = 1, 2, 4  # FLAG_METADATA: version 4 files from stop 19 on
KIND_NEURAL, KIND_FALLBACK = 0, 1
SEG_NEURAL, SEG_CONSTANT, SEG_FALLBACK = 0, 1, 2
SEG_NEURAL_ADAPTED = 3  # version 4: a neural segment with log-scale offsets (stored as type 3 + block size)
SEG_NEURAL_BIASED = 4  # version 5: a neural segment with a per-image bias (type 4, block size, bias values)
MAX_BIAS_VALUES = 4096  # the encoder sends 228 (RGB) or 94 (grey): the constants of the last two layers
FALLBACK_PNG, FALLBACK_RAW_LZMA = 0, 1
MODE_CODES = {"L": 1, "LA": 2, "RGB": 3, "RGBA": 4}
MODEL_ID_BYTES = 4  # first bytes of the model's SHA-256 (versions 1 and 2: 8, after the model's name)
OLD_MODEL_ID_BYTES = 8
DEFAULT_MAX_PIXELS = 1 << 28  # 268 megapixels
MAX_VARINT_BYTES = 9


@dataclass
class Segment:
    """One group of planes: neural-coded, a constant plane, or a fallback blob."""

    type: int
    channels: int = 1
    model_name: str = ""  # the encoder's model; stored only by versions 1 and 2 (3 identifies it by id)
    model_id: bytes = b""
    tile: int = 0
    block: int = 0  # neural segments, version 4: side of the squares with their own log-scale offsets (0: none)
    bias: tuple[int, ...] | None = None  # neural segments, version 5: per-image bias of the model's last layers
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
    # (key, value): "exif" (Pillow's info["exif"]), "xmp" (the XMP packet), "text:KEYWORD" (a PNG text chunk, UTF-8)
    metadata: list[tuple[str, bytes]] = field(default_factory=list)
    segments: list[Segment] = field(default_factory=list)
    version: int = VERSION  # as read; ``dumps`` always writes VERSION


def _varint(n: int) -> bytes:
    """Unsigned LEB128."""
    if n < 0:
        raise ValueError("varint must be non-negative")
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def signed_varints(values) -> bytes:
    """Each integer zigzagged (0, -1, 1, -2, ... -> 0, 1, 2, 3, ...), then LEB128."""
    return b"".join(_varint(2 * n if n >= 0 else -2 * n - 1) for n in map(int, values))


def write_version(c: Container) -> int:
    """The version ``dumps`` writes: the earliest that holds every segment."""
    return BIAS_VERSION if any(s.bias is not None for s in c.segments) else VERSION


def _string(s: bytes) -> bytes:
    if len(s) > 255:
        raise ValueError("string field longer than 255 bytes")
    return bytes([len(s)]) + s


def dumps(c: Container) -> bytes:
    flags = (FLAG_FALLBACK if c.kind == KIND_FALLBACK else 0) | (FLAG_ICC if c.icc_profile else 0)
    flags |= FLAG_METADATA if c.metadata else 0
    out = bytearray(MAGIC) + bytes([write_version(c), flags]) + _varint(c.width) + _varint(c.height)
    code = MODE_CODES.get(c.mode, 0)
    out += bytes([code]) + (b"" if code else _string(c.mode.encode("ascii")))
    if c.icc_profile:
        out += _varint(len(c.icc_profile)) + c.icc_profile
    if c.metadata:
        out += _varint(len(c.metadata))
        for key, value in c.metadata:
            out += _string(key.encode("utf-8")) + _varint(len(value)) + value
    out += struct.pack("<IB", c.pixel_crc, len(c.segments))
    for s in c.segments:
        biased = s.type == SEG_NEURAL and s.bias is not None
        adapted = s.type == SEG_NEURAL and s.block > 0 and not biased
        out += bytes([SEG_NEURAL_BIASED if biased else SEG_NEURAL_ADAPTED if adapted else s.type, s.channels])
        if s.type == SEG_NEURAL:
            if len(s.model_id) != MODEL_ID_BYTES:
                raise ValueError(f"model id must be {MODEL_ID_BYTES} bytes")
            out += s.model_id + _varint(s.tile) + (_varint(s.block) if adapted or biased else b"")
            if biased:
                if not 1 <= len(s.bias) <= MAX_BIAS_VALUES:
                    raise ValueError(f"a bias has 1 to {MAX_BIAS_VALUES} values")
                out += _varint(len(s.bias)) + signed_varints(s.bias)
        elif s.type == SEG_CONSTANT:
            if s.payload:
                raise ValueError("a constant segment has no payload")
            out += bytes([s.value])
        else:
            out += bytes([s.method])
    # payload lengths, except the last payload's: it runs up to the file CRC
    carriers = [s for s in c.segments if s.type != SEG_CONSTANT]
    out += b"".join(_varint(len(s.payload)) for s in carriers[:-1])
    out += b"".join(s.payload for s in c.segments)
    return bytes(out) + struct.pack("<I", zlib.crc32(out))


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise BadStreamError("truncated file: header ends early")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def byte(self) -> int:
        return self.take(1)[0]

    def varint(self) -> int:
        value = 0
        for i in range(MAX_VARINT_BYTES):
            b = self.byte()
            value |= (b & 0x7F) << (7 * i)
            if not b & 0x80:
                return value
        raise BadStreamError("corrupted header: integer field too long")

    def string(self) -> bytes:
        return self.take(self.byte())

    def signed(self) -> int:
        z = self.varint()
        return -(z + 1) // 2 if z & 1 else z // 2


def _segment(r: _Reader, version: int) -> tuple[Segment, int | None]:
    """A segment header, and its payload length as versions 1 and 2 store it there (None in version 3,
    where the lengths follow all the headers; 0 for a constant segment)."""
    seg = Segment(r.byte(), r.byte())
    adapted = seg.type == SEG_NEURAL_ADAPTED and version >= 4
    biased = seg.type == SEG_NEURAL_BIASED and version >= BIAS_VERSION
    if adapted or biased:
        seg.type = SEG_NEURAL
    if seg.type == SEG_CONSTANT:
        seg.value = r.byte()
        return seg, 0
    if seg.type == SEG_NEURAL:
        if version >= 3:
            seg.model_id = r.take(MODEL_ID_BYTES)
        else:
            seg.model_name = r.string().decode("utf-8", errors="replace")
            seg.model_id = r.take(OLD_MODEL_ID_BYTES)
        seg.tile = r.varint()
        if adapted:
            seg.block = r.varint()
            if seg.block == 0:
                raise BadStreamError("corrupted header: adaptation block size 0")
        if biased:
            seg.block = r.varint()
            count = r.varint()
            if not 1 <= count <= MAX_BIAS_VALUES:
                raise BadStreamError(f"corrupted header: bias of {count} values")
            seg.bias = tuple(r.signed() for _ in range(count))
    elif seg.type == SEG_FALLBACK:
        seg.method = r.byte()
    else:
        raise BadStreamError(f"corrupted header: unknown segment type {seg.type}")
    return seg, None if version >= 3 else r.varint()


def pixel_limit_message(width: int, height: int, max_pixels: int) -> str:
    """Why an image is refused, for the encoder and the decoder alike."""
    return f"{width}x{height} = {width * height} pixels exceeds the limit of {max_pixels} (see --max-pixels)"


def _metadata(r: _Reader) -> list[tuple[str, bytes]]:
    entries = []
    for _ in range(r.varint()):
        try:
            key = r.string().decode("utf-8")
        except UnicodeDecodeError:
            raise BadStreamError("corrupted header: metadata key is not UTF-8") from None
        entries.append((key, r.take(r.varint())))
    return entries


def loads(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> Container:
    data = bytes(data)
    if len(data) < 4 or data[:4] != MAGIC:
        raise BadStreamError("not a NeLLoC file (bad magic)")
    r = _Reader(data)
    r.take(4)
    version = r.byte()
    if version not in READABLE_VERSIONS:
        raise BadStreamError(f"unsupported format version {version} (this nelloc reads versions "
                             f"{', '.join(map(str, READABLE_VERSIONS))})")
    flags = r.byte()
    if flags & ~(FLAG_FALLBACK | FLAG_ICC | (FLAG_METADATA if version >= 4 else 0)):
        raise BadStreamError(f"corrupted header: unknown flags {flags:#x}")
    width, height = r.varint(), r.varint()
    if width < 1 or height < 1:
        raise BadStreamError(f"corrupted header: image size {width}x{height}")
    if width * height > max_pixels:
        raise BadStreamError(f"image of {pixel_limit_message(width, height, max_pixels)}")
    code = r.byte()
    names = {v: k for k, v in MODE_CODES.items()}
    if code == 0:
        try:
            mode = r.string().decode("ascii")
        except UnicodeDecodeError:
            raise BadStreamError("corrupted header: mode is not ASCII") from None
    elif code in names:
        mode = names[code]
    else:
        raise BadStreamError(f"corrupted header: unknown mode code {code}")
    icc = r.take(r.varint()) if flags & FLAG_ICC else b""
    metadata = _metadata(r) if flags & FLAG_METADATA else []
    pixel_crc = struct.unpack("<I", r.take(4))[0]
    segments, lengths = [], []
    for _ in range(r.byte()):
        seg, length = _segment(r, version)
        segments.append(seg)
        lengths.append(length)
    carriers = [i for i, n in enumerate(lengths) if n is None]  # version 3: lengths follow the headers
    for i in carriers[:-1]:
        lengths[i] = r.varint()
    stored = r.pos + sum(n for n in lengths if n is not None) + 4
    if carriers:  # the last payload is the rest of the file
        lengths[carriers[-1]] = len(data) - stored
        if lengths[carriers[-1]] < 0:
            raise BadStreamError(f"truncated file: {len(data)} bytes, its header says at least {stored}")
    elif stored != len(data):
        what = "truncated" if stored > len(data) else "corrupted (trailing bytes)"
        raise BadStreamError(f"{what} file: expected {stored} bytes, got {len(data)}")
    if zlib.crc32(data[:-4]) != struct.unpack("<I", data[-4:])[0]:
        raise BadStreamError("corrupted or truncated file (checksum mismatch)")
    pos = r.pos
    for s, n in zip(segments, lengths):
        s.payload = data[pos : pos + n]
        pos += n
    kind = KIND_FALLBACK if flags & FLAG_FALLBACK else KIND_NEURAL
    return Container(width, height, mode, kind, pixel_crc, icc, metadata, segments, version)
