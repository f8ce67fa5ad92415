"""Corrupted streams: every damaged file ends in a NeLLoC error (or, if no check can see the damage,
the original image), never another exception, and quickly.

Two layers: whole-file mutations (truncation, flips, insertions, deletions), which the container's
checks must catch; and corruptions re-wrapped with a valid file CRC (payload bytes, header fields),
which reach the decoder and must be caught by it or by the pixel checksum.
"""

from __future__ import annotations

import lzma
import struct
import time
from dataclasses import replace

import numpy as np
import pytest
from PIL import Image

import nelloc
from conftest import smooth_image
from nelloc import container as ct
from nelloc.errors import BadStreamError, NellocError

CASE_LIMIT_S = 10.0
TOTAL_LIMIT_S = 120.0


@pytest.fixture(scope="module")
def originals(tiny_models_dir):
    """Two valid small files made with the tiny models: RGB 12x9 (tiled) and LA 7x5 (neural alpha)."""
    rgb = Image.fromarray(smooth_image(9, 12, 3, seed=21))
    la_arr = smooth_image(5, 7, 2, seed=22)
    la_arr[..., 1] = np.arange(35, dtype=np.uint8).reshape(5, 7) * 7  # varying alpha: a neural segment
    la = Image.fromarray(la_arr)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("NELLOC_MODELS", str(tiny_models_dir))
        return {"rgb": (rgb, nelloc.compress(rgb, tile=5)), "la": (la, nelloc.compress(la, tile=0))}


class Outcomes:
    """Runs decompress on each case; records bad outcomes instead of stopping at the first."""

    def __init__(self) -> None:
        self.problems: list[str] = []
        self.counts = {"error": 0, "same image": 0}
        self.start = time.perf_counter()

    def check(self, label: str, data: bytes, original: Image.Image, expected=NellocError) -> None:
        t0 = time.perf_counter()
        try:
            out = nelloc.decompress(data)
        except expected:
            self.counts["error"] += 1
        except Exception as exc:  # noqa: BLE001 - the very thing under test
            self.problems.append(f"{label}: {type(exc).__name__}: {exc}")
        else:
            if out.mode != original.mode or out.size != original.size or out.tobytes() != original.tobytes():
                self.problems.append(f"{label}: decoded a different image without an error")
            else:
                self.counts["same image"] += 1
        dt = time.perf_counter() - t0
        if dt > CASE_LIMIT_S:
            self.problems.append(f"{label}: took {dt:.1f} s")

    def assert_clean(self) -> None:
        total = time.perf_counter() - self.start
        assert not self.problems, f"{len(self.problems)} bad outcomes:\n" + "\n".join(self.problems[:30])
        assert total < TOTAL_LIMIT_S, f"fuzz loop took {total:.0f} s"


def _mutations(data: bytes, rng: np.random.Generator, n: int):
    """(label, mutated bytes): single and multi-byte flips, insertions, deletions."""
    for i in range(n):
        b = bytearray(data)
        kind = i % 5
        if kind == 0:  # single byte flip
            pos = int(rng.integers(len(b)))
            b[pos] ^= int(rng.integers(1, 256))
            label = f"flip byte {pos}"
        elif kind == 1:  # single bit flip
            pos, bit = int(rng.integers(len(b))), int(rng.integers(8))
            b[pos] ^= 1 << bit
            label = f"flip bit {bit} of byte {pos}"
        elif kind == 2:  # several scattered flips
            pos = sorted(int(p) for p in rng.choice(len(b), size=int(rng.integers(2, 9)), replace=False))
            for p in pos:
                b[p] ^= int(rng.integers(1, 256))
            label = f"flip bytes {pos}"
        elif kind == 3:  # insertion
            pos, k = int(rng.integers(len(b) + 1)), int(rng.integers(1, 5))
            b[pos:pos] = rng.integers(0, 256, k, dtype=np.uint8).tobytes()
            label = f"insert {k} bytes at {pos}"
        else:  # deletion
            pos, k = int(rng.integers(len(b))), int(rng.integers(1, 5))
            del b[pos : pos + k]
            label = f"delete {k} bytes at {pos}"
        yield label, bytes(b)


def test_truncated_flipped_inserted_and_deleted_bytes_end_in_nelloc_errors(tiny_models, originals):
    rng = np.random.default_rng(2024)
    outcomes = Outcomes()
    la, la_data = originals["la"]
    rgb, rgb_data = originals["rgb"]
    small, small_data = (la, la_data) if len(la_data) <= len(rgb_data) else (rgb, rgb_data)
    for n in range(len(small_data)):  # every truncation of the smaller file
        outcomes.check(f"smaller file truncated to {n} bytes", small_data[:n], small, BadStreamError)
    for n in sorted(int(k) for k in rng.choice(len(rgb_data), 20, replace=False)):
        outcomes.check(f"rgb truncated to {n} bytes", rgb_data[:n], rgb, BadStreamError)
    for name, (image, data) in originals.items():
        for label, mutated in _mutations(data, rng, 100):
            outcomes.check(f"{name}: {label}", mutated, image)
    assert sum(outcomes.counts.values()) + len(outcomes.problems) >= 300
    outcomes.assert_clean()
    assert outcomes.counts["same image"] == 0  # nothing here slips past the file CRC


def test_every_single_byte_flip_of_the_header_is_caught(tiny_models, originals):
    image, data = originals["la"]
    outcomes = Outcomes()
    header_len = len(data) - 4 - sum(len(s.payload) for s in ct.loads(data).segments)
    for pos in range(header_len):
        for x in (0x01, 0x80, 0xFF):
            b = bytearray(data)
            b[pos] ^= x
            outcomes.check(f"header byte {pos} ^ {x:#x}", bytes(b), image)
    outcomes.assert_clean()
    assert outcomes.counts["same image"] == 0  # the file CRC sees every one of them


# -- corruptions that carry a valid file CRC: the decoder and the pixel checksum must catch them --


def _rewrap(data: bytes, **changes) -> bytes:
    """Re-serialise a stream with changed container fields (a valid file CRC)."""
    return ct.dumps(replace(ct.loads(data), **changes))


def _with_segment(data: bytes, index: int, **changes) -> bytes:
    c = ct.loads(data)
    c.segments[index] = replace(c.segments[index], **changes)
    return ct.dumps(c)


def test_flipped_payload_bytes_behind_a_valid_crc_fail_the_pixel_checksum(tiny_models, originals):
    rng = np.random.default_rng(7)
    outcomes = Outcomes()
    for name, (image, data) in originals.items():
        c = ct.loads(data)
        for index, seg in enumerate(c.segments):
            for _ in range(25):
                payload = bytearray(seg.payload)
                pos = int(rng.integers(len(payload)))
                payload[pos] ^= int(rng.integers(1, 256))
                outcomes.check(f"{name} segment {index}: payload byte {pos} flipped",
                               _with_segment(data, index, payload=bytes(payload)), image, BadStreamError)
            cuts = {"payload emptied": b"", "last word dropped": seg.payload[:-4],
                    "half the payload": seg.payload[: len(seg.payload) // 8 * 4],
                    "one byte short": seg.payload[:-1], "one byte extra": seg.payload + b"\x00",
                    "zero word appended": seg.payload + bytes(4), "junk words appended": seg.payload + b"\xff" * 16,
                    "all ones": b"\xff" * len(seg.payload), "all zeros": bytes(len(seg.payload))}
            for label, payload in cuts.items():
                outcomes.check(f"{name} segment {index}: {label}", _with_segment(data, index, payload=payload),
                               image, BadStreamError)
    outcomes.assert_clean()


def test_changed_header_fields_behind_a_valid_crc_end_in_nelloc_errors(tiny_models, originals):
    outcomes = Outcomes()
    for name, (image, data) in originals.items():
        c = ct.loads(data)
        w, h = c.width, c.height
        other_id = ct.loads(originals["la" if name == "rgb" else "rgb"][1]).segments[0].model_id
        cases = {
            "width + 1": _rewrap(data, width=w + 1),
            "height - 1": _rewrap(data, height=h - 1),
            "width and height swapped": _rewrap(data, width=h, height=w),
            "1x1": _rewrap(data, width=1, height=1),
            "pixel crc + 1": _rewrap(data, pixel_crc=(c.pixel_crc + 1) % 2**32),
            "mode L": _rewrap(data, mode="L"),
            "mode RGBA": _rewrap(data, mode="RGBA"),
            "mode P": _rewrap(data, mode="P"),
            "mode nonsense": _rewrap(data, mode="XYZ"),
            "kind fallback": _rewrap(data, kind=ct.KIND_FALLBACK),
            "no segments": _rewrap(data, segments=[]),
            "segments doubled": _rewrap(data, segments=c.segments * 2),
            "segments reversed": _rewrap(data, segments=c.segments[::-1]),
            "tile 1": _with_segment(data, 0, tile=1),
            "tile 3": _with_segment(data, 0, tile=3),
            "tile 0 <-> 5": _with_segment(data, 0, tile=5 if c.segments[0].tile == 0 else 0),
            "tile 65536": _with_segment(data, 0, tile=65536),
            "tile 65537": _with_segment(data, 0, tile=65537),
            "tile 2**40": _with_segment(data, 0, tile=2**40),
            "channels 0": _with_segment(data, 0, channels=0),
            "channels 2": _with_segment(data, 0, channels=2),
            "channels 255": _with_segment(data, 0, channels=255),
            "model id zeroed": _with_segment(data, 0, model_id=bytes(ct.MODEL_ID_BYTES)),
            "model id one bit off": _with_segment(data, 0, model_id=bytes([c.segments[0].model_id[0] ^ 1]) + c.segments[0].model_id[1:]),
            "model id of the other model": _with_segment(data, 0, model_id=other_id),
            "segment made fallback": _with_segment(data, 0, type=ct.SEG_FALLBACK, method=ct.FALLBACK_PNG),
            "segment made fallback raw": _with_segment(data, 0, type=ct.SEG_FALLBACK, method=ct.FALLBACK_RAW_LZMA),
            "fallback method 9": _rewrap(data, kind=ct.KIND_FALLBACK, segments=[
                ct.Segment(ct.SEG_FALLBACK, 1, method=9, payload=c.segments[0].payload)]),
        }
        if c.segments[0].channels == 1:  # for 3 channels see test_BUG_constant_segment_for_a_three_channel_plane...
            cases["segment made constant"] = _with_segment(data, 0, type=ct.SEG_CONSTANT, value=3, payload=b"")
        if len(c.segments) > 1:
            cases["alpha made constant"] = _with_segment(data, 1, type=ct.SEG_CONSTANT, value=0, payload=b"")
            cases["alpha tile 2"] = _with_segment(data, 1, tile=2)
        for label, mutated in cases.items():
            outcomes.check(f"{name}: {label}", mutated, image)
    outcomes.assert_clean()


def test_wrong_model_id_is_a_model_error(tiny_models, originals):
    image, data = originals["rgb"]
    with pytest.raises(nelloc.ModelError, match="id 00000000, which is not installed"):
        nelloc.decompress(_with_segment(data, 0, model_id=bytes(ct.MODEL_ID_BYTES)))


# -- regressions: crafted streams with a valid CRC that once escaped as ValueError ------------------


def test_constant_segment_for_a_three_channel_plane_raises_bad_stream_error(tiny_models):
    """Regression (nelloc/api.py, _decode_neural): a constant segment always yields a 1-channel plane, so an
    RGB stream whose only segment is constant with channels=3 reaches
    ``Image.fromarray(arr[..., 0], mode="RGB")`` and raises ValueError("Invalid mode for data type")."""
    data = ct.dumps(ct.Container(4, 3, "RGB", segments=[ct.Segment(ct.SEG_CONSTANT, 3, value=5)]))
    with pytest.raises(NellocError):
        nelloc.decompress(data)


def test_raw_fallback_with_an_oversized_palette_raises_bad_stream_error(tiny_models):
    """Regression (nelloc/api.py, decompress/_decode_fallback): ``putpalette`` accepts a 3000-byte RGB palette
    lazily; the ValueError("invalid palette size") surfaces later in ``im.tobytes()`` (the pixel CRC
    check in ``decompress``), outside the try block that turns decoding errors into BadStreamError."""
    payload = b"\x03RGB" + struct.pack("<I", 3000) + b"abc" * 1000 + lzma.compress(b"x" * 12)
    seg = ct.Segment(ct.SEG_FALLBACK, 1, method=ct.FALLBACK_RAW_LZMA, payload=payload)
    data = ct.dumps(ct.Container(4, 3, "P", kind=ct.KIND_FALLBACK, segments=[seg]))
    with pytest.raises(NellocError):
        nelloc.decompress(data)
