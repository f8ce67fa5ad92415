"""The .nlc container (docs/format.md): serialisation, documented field layout, and golden files.

The golden files pin the format *and* the model arithmetic: compressing tests/data/golden_*.png with
the tiny test models must reproduce tests/data/golden_*.nlc byte for byte.  They were made once by
running this module (``python tests/test_container.py``); regenerate them only for a deliberate,
documented format change (and bump the format version).  ``golden_*.v1.nlc``, ``golden_*.v2.nlc``
and ``golden_*.v3.nlc`` were made by format versions 1 (float64 network arithmetic), 2 (longer
segment headers) and 3 (no log-scale offsets): they must still decode.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import nelloc
from conftest import smooth_image
from nelloc import container as ct
from nelloc.errors import BadStreamError

TEST_DATA = Path(__file__).parent / "data"
# name -> (source PNG, tile size used to make the .nlc)
GOLDEN = {
    "golden_rgb": 8,  # 23x17 RGB, 3x3 tiles (clipped at the right and bottom edges)
    "golden_la": 0,  # 13x11 LA with a varying alpha: two neural segments (gray model), untiled
    "golden_rgb_skip": 8,  # golden_rgb.png with the tiny model that has the linear skip layer
    "golden_rgb_adapt": 8,  # golden_rgb.png with log-scale offsets on 5x5 blocks (version 4)
    "golden_rgb_bias": 8,  # ... and a fixed output bias (version 5, segment type 4)
}
GOLDEN_SOURCE = {"golden_rgb_skip": ("golden_rgb", "rgb-skip"), "golden_rgb_adapt": ("golden_rgb", None),
                 "golden_rgb_bias": ("golden_rgb", None)}
GOLDEN_BLOCK = {"golden_rgb_adapt": 5, "golden_rgb_bias": 5}  # adaptation block size (others: the default)
# The encoder fits a bias only to planes of 65,536+ pixels, and how it fits one is not part of the
# format, so this golden file pins a fixed bias: the container and the arithmetic of section 5c.
GOLDEN_BIAS = {"golden_rgb_bias": tuple(int(v) for v in (np.arange(56) * 37 % 41 - 20) * 3)}  # tiny rgb: head 16 + out 40


def golden_png(name: str) -> Path:
    source, _ = GOLDEN_SOURCE.get(name, (name, None))
    return TEST_DATA / f"{source}.png"


def golden_compress(name: str) -> bytes:
    _, model = GOLDEN_SOURCE.get(name, (name, None))
    if name in GOLDEN_BIAS:
        return _compress_with_fixed_bias(name)
    return nelloc.compress(golden_png(name), tile=GOLDEN[name], model=model, adapt_block=GOLDEN_BLOCK.get(name))


def _compress_with_fixed_bias(name: str) -> bytes:
    """What ``nelloc.compress`` writes for the golden PNG if its encoder chooses GOLDEN_BIAS[name]."""
    from nelloc import codec, zoo

    im = Image.open(golden_png(name)).convert("RGB")
    model, bias, tile = zoo.load("rgb"), GOLDEN_BIAS[name], GOLDEN[name]
    coded = codec.encode_segments(model.with_bias(bias), [np.asarray(im)], tile, block=GOLDEN_BLOCK[name])[0]
    seg = ct.Segment(ct.SEG_NEURAL, 3, model_id=bytes.fromhex(model.sha256)[: ct.MODEL_ID_BYTES], tile=tile,
                     block=coded.block, bias=bias, payload=coded.payload)
    return ct.dumps(ct.Container(im.width, im.height, "RGB", pixel_crc=zlib.crc32(im.tobytes()), segments=[seg]))


# -- serialisation -------------------------------------------------------------------------------


def _full_container() -> ct.Container:
    return ct.Container(
        300,
        70000,
        "RGBA",
        pixel_crc=0xDEADBEEF,
        icc_profile=b"icc" * 50,
        segments=[
            ct.Segment(ct.SEG_NEURAL, 3, "", bytes(range(4)), 64, payload=b"\x01\x02\x03\x04" * 40),
            ct.Segment(ct.SEG_CONSTANT, 1, value=200),
            ct.Segment(ct.SEG_NEURAL, 1, "", b"\xff" * 4, 0, payload=b""),
            ct.Segment(ct.SEG_FALLBACK, 4, method=ct.FALLBACK_RAW_LZMA, payload=b"xz" * 100),
        ],
    )


def test_dumps_loads_round_trips_neural_constant_and_fallback_segments():
    c = _full_container()
    assert ct.loads(ct.dumps(c)) == c


def test_metadata_entries_round_trip_after_the_icc_profile():
    c = _full_container()
    c.metadata = [("exif", b"Exif\x00\x00MM" + bytes(300)), ("text:Title", "ünï".encode()), ("xmp", b"")]
    data = ct.dumps(c)
    assert data[5] == ct.FLAG_ICC | ct.FLAG_METADATA
    assert ct.loads(data) == c
    assert len(data) == len(ct.dumps(_full_container())) + 1 + (5 + 2 + 308) + (11 + 1 + 5) + (4 + 1)


def test_metadata_flag_is_refused_before_version_4_and_a_cut_entry_is_a_bad_stream():
    c = ct.Container(2, 2, "L", metadata=[("exif", b"x" * 10)], segments=[ct.Segment(ct.SEG_CONSTANT, 1, value=1)])
    data = bytearray(ct.dumps(c))
    v3 = bytearray(data)
    v3[4] = 3
    with pytest.raises(BadStreamError, match="unknown flags"):
        ct.loads(_refix(bytes(v3)))
    # layout: magic, version, flags, width, height, mode, then count, key string, value length, value
    assert bytes(data[4:22]) == b"\x04\x04\x02\x02\x01" + b"\x01" + b"\x04exif" + b"\x0a" + b"x" * 6
    cut = bytearray(data)
    cut[15] = 200  # the entry's length, past the end of the file
    with pytest.raises(BadStreamError):
        ct.loads(_refix(bytes(cut)))


@pytest.mark.parametrize("mode", ["L", "LA", "RGB", "RGBA", "1", "P", "I;16", "CMYK", "YCbCr"])
@pytest.mark.parametrize("kind", [ct.KIND_NEURAL, ct.KIND_FALLBACK])
def test_dumps_loads_round_trips_every_mode_and_kind(mode, kind):
    c = ct.Container(1, 1, mode, kind=kind, pixel_crc=1,
                     segments=[ct.Segment(ct.SEG_FALLBACK, 1, method=ct.FALLBACK_PNG, payload=b"png")])
    assert ct.loads(ct.dumps(c)) == c


def _refix(data: bytes) -> bytes:
    """Recompute the file CRC of a patched stream."""
    return data[:-4] + struct.pack("<I", zlib.crc32(data[:-4]))


_GOOD = ct.dumps(_full_container())
_CONSTANT_ONLY = ct.dumps(ct.Container(2, 2, "L", segments=[ct.Segment(ct.SEG_CONSTANT, 1, value=7)]))
_TWO_PAYLOADS = ct.dumps(ct.Container(2, 2, "LA", segments=[
    ct.Segment(ct.SEG_NEURAL, 1, "", b"abcd", 0, payload=b"12345678"),
    ct.Segment(ct.SEG_NEURAL, 1, "", b"abcd", 0, payload=b"87654321")]))
MALFORMED = {
    "truncated by one byte": (_GOOD[:-1], "truncated"),
    "trailing byte after constant segments only": (_refix(_CONSTANT_ONLY[:-4] + b"\x00" + _CONSTANT_ONLY[-4:]), "trailing"),
    "a stored payload length beyond the file": (_refix(_TWO_PAYLOADS[:-13] + _TWO_PAYLOADS[-4:]), "truncated"),
    "file crc zeroed": (_GOOD[:-4] + bytes(4), "checksum"),
    "unknown flag bit": (_refix(_GOOD[:5] + b"\x0a" + _GOOD[6:]), "flags"),
    "version 0": (_refix(_GOOD[:4] + b"\x00" + _GOOD[5:]), "version 0"),
    "width 0": (_refix(_GOOD[:6] + b"\x00" + _GOOD[8:]), "size"),
    "unknown mode code": (_refix(_GOOD[:11] + b"\x09" + _GOOD[12:]), "mode code"),
    "endless varint": (_GOOD[:6] + b"\xff" * 12 + _GOOD[6:], "too long"),
    "header only": (_GOOD[:20], "truncated"),
}


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_loads_rejects_malformed_streams_with_a_reason(name):
    data, reason = MALFORMED[name]
    with pytest.raises(BadStreamError, match=reason):
        ct.loads(data)


def test_model_id_must_be_four_bytes():
    with pytest.raises(ValueError):
        ct.dumps(ct.Container(1, 1, "L", segments=[ct.Segment(ct.SEG_NEURAL, 1, "gray", bytes(8))]))


def test_the_last_payload_is_the_rest_of_the_file():
    c = ct.Container(3, 1, "L", segments=[ct.Segment(ct.SEG_NEURAL, 1, "", b"wxyz", 0, payload=b"p" * 300)])
    data = ct.dumps(c)
    assert len(data) == 4 + 1 + 1 + 3 + 4 + 1 + (2 + 4 + 1) + 300 + 4  # no payload length stored
    assert ct.loads(data) == c


# -- documented field layout ---------------------------------------------------------------------


def _varint(n: int) -> bytes:
    """Unsigned LEB128, written here independently of nelloc.container."""
    out = bytearray()
    while True:
        out.append((n & 0x7F) | (0x80 if n >> 7 else 0))
        n >>= 7
        if not n:
            return bytes(out)


def test_header_fields_are_at_their_documented_places():
    c = _full_container()
    data = ct.dumps(c)
    assert data[:4] == b"\x8bNLC" == bytes.fromhex("8B4E4C43")
    assert data[4] == 4 == ct.VERSION
    assert data[5] == 0b10  # flags: bit 0 fallback (no), bit 1 ICC profile (yes)
    pos = 6
    assert data[pos : pos + 2] == b"\xac\x02" == _varint(300)  # width, LEB128
    assert data[pos + 2 : pos + 5] == b"\xf0\xa2\x04" == _varint(70000)  # height
    pos += 5
    assert data[pos] == 4  # mode code RGBA
    pos += 1
    assert data[pos : pos + 2] == _varint(150) == b"\x96\x01"  # ICC length, then the profile
    pos += 2
    assert data[pos : pos + 150] == c.icc_profile
    pos += 150
    assert struct.unpack("<I", data[pos : pos + 4])[0] == 0xDEADBEEF  # pixel CRC, little-endian
    assert data[pos + 4] == 4  # segment count
    pos += 5
    # neural: type, channels, 4-byte model id, tile varint
    assert data[pos : pos + 2] == b"\x00\x03" and data[pos + 2 : pos + 6] == bytes(range(4))
    assert data[pos + 6] == 64
    pos += 7
    assert data[pos : pos + 3] == b"\x01\x01\xc8"  # constant: type, channels, value 200
    pos += 3
    assert data[pos : pos + 7] == b"\x00\x01" + b"\xff" * 4 + b"\x00"  # neural: id, tile 0
    pos += 7
    assert data[pos : pos + 3] == b"\x02\x04\x01"  # fallback: type, channels, method
    pos += 3
    # payload lengths of the segments that have one, except the last (the fallback's runs to the CRC)
    assert data[pos : pos + 3] == _varint(160) + _varint(0) == b"\xa0\x01\x00"
    pos += 3
    assert data[pos:-4] == b"\x01\x02\x03\x04" * 40 + b"xz" * 100  # payloads in segment order
    assert struct.unpack("<I", data[-4:])[0] == zlib.crc32(data[:-4])  # file CRC


def test_fallback_flag_and_mode_string():
    c = ct.Container(5, 7, "CMYK", kind=ct.KIND_FALLBACK, pixel_crc=0x01020304,
                     segments=[ct.Segment(ct.SEG_FALLBACK, 4, method=ct.FALLBACK_RAW_LZMA, payload=b"abc")])
    data = ct.dumps(c)
    assert data[:8] == b"\x8bNLC\x04\x01\x05\x07"  # magic, version, flags = fallback, width, height
    assert data[8:14] == b"\x00\x04CMYK"  # mode code 0, then the mode string
    assert data[14:18] == b"\x04\x03\x02\x01"  # no ICC length: the pixel CRC follows directly
    assert data[18:22] == b"\x01\x02\x04\x01" and data[22:25] == b"abc"  # one segment, its payload last


@pytest.mark.parametrize("mode, code", [("L", 1), ("LA", 2), ("RGB", 3), ("RGBA", 4)])
def test_neural_mode_codes(mode, code):
    data = ct.dumps(ct.Container(2, 3, mode))
    assert data[6:9] == bytes([2, 3, code])


def test_an_adapted_neural_segment_is_type_3_with_its_block_size():
    seg = ct.Segment(ct.SEG_NEURAL, 3, "", b"abcd", 96, block=300, payload=b"q" * 8)
    data = ct.dumps(ct.Container(3, 1, "RGB", segments=[seg]))
    pos = 4 + 1 + 1 + 1 + 1 + 1 + 4 + 1
    assert data[pos : pos + 2] == b"\x03\x03" and data[pos + 2 : pos + 6] == b"abcd"
    assert data[pos + 6 : pos + 9] == _varint(96) + _varint(300) == b"\x60\xac\x02"
    assert ct.loads(data).segments[0] == seg
    v3 = bytearray(data)
    v3[4] = 3  # type 3 did not exist in version 3
    v3[-4:] = struct.pack("<I", zlib.crc32(bytes(v3[:-4])))
    with pytest.raises(BadStreamError, match="unknown segment type 3"):
        ct.loads(bytes(v3))


@pytest.mark.parametrize("block", [0, 48])
def test_a_biased_neural_segment_is_type_4_in_version_5(block):
    bias = (0, 1, -1, 63, -64, 64, -65, 16384, -16384) + (5,) * 91
    seg = ct.Segment(ct.SEG_NEURAL, 3, "", b"abcd", 96, block=block, bias=bias, payload=b"q" * 8)
    data = ct.dumps(ct.Container(3, 1, "RGB", segments=[seg]))
    assert data[4] == ct.BIAS_VERSION == 5
    pos = 4 + 1 + 1 + 1 + 1 + 1 + 4 + 1
    assert data[pos : pos + 2] == b"\x04\x03" and data[pos + 2 : pos + 6] == b"abcd"
    zigzag = b"\x00\x02\x01\x7e\x7f\x80\x01\x81\x01\x80\x80\x02\xff\xff\x01" + b"\x0a" * 91
    assert data[pos + 6 :].startswith(_varint(96) + _varint(block) + _varint(100) + zigzag)
    assert ct.loads(data).segments[0] == seg and ct.loads(data).version == 5
    v4 = bytearray(data)
    v4[4] = 4  # type 4 does not exist in version 4
    v4[-4:] = struct.pack("<I", zlib.crc32(bytes(v4[:-4])))
    with pytest.raises(BadStreamError, match="unknown segment type 4"):
        ct.loads(bytes(v4))


def test_files_without_a_bias_stay_version_4():
    seg = ct.Segment(ct.SEG_NEURAL, 3, "", b"abcd", 96, block=48, payload=b"q" * 8)
    assert ct.dumps(ct.Container(3, 1, "RGB", segments=[seg]))[4] == 4


@pytest.mark.parametrize("count", [0, 4097])
def test_a_bias_of_a_bad_length_is_refused(count):
    seg = ct.Segment(ct.SEG_NEURAL, 1, "", b"abcd", 96, bias=(1,), payload=b"q" * 8)
    with pytest.raises(ValueError):
        ct.dumps(ct.Container(3, 1, "L", segments=[ct.Segment(ct.SEG_NEURAL, 1, "", b"abcd", 0, bias=(), payload=b"")]))
    data = bytearray(ct.dumps(ct.Container(3, 1, "L", segments=[seg])))
    pos = 4 + 1 + 1 + 1 + 1 + 1 + 4 + 1 + 2 + 4 + 1 + 1
    assert data[pos] == 1
    data[pos] = count if count < 128 else 0x80 | (count & 0x7F)
    if count >= 128:
        data.insert(pos + 1, count >> 7)
    data[-4:] = struct.pack("<I", zlib.crc32(bytes(data[:-4])))
    with pytest.raises(BadStreamError, match=f"bias of {count} values"):
        ct.loads(bytes(data))


def test_grey_image_has_25_bytes_of_container_overhead(tiny_models):
    data = nelloc.compress(smooth_image(20, 30, 1, seed=1), adapt_block=0)
    payload = nelloc.info(data)["segments"][0]["payload_bytes"]
    assert len(data) - payload == 25


def test_width_and_height_are_read_back_from_real_streams(tiny_models):
    data = nelloc.compress(smooth_image(3, 130, 3, seed=2), tile=0)
    assert data[6:9] == b"\x82\x01\x03"  # width 130 (two bytes), height 3
    meta = nelloc.info(data)
    assert (meta["width"], meta["height"], meta["mode"]) == (130, 3, "RGB")


# -- golden files --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_golden_file_is_reproduced_byte_for_byte(tiny_models, name):
    png, nlc = golden_png(name), TEST_DATA / f"{name}.nlc"
    made = golden_compress(name)
    assert made == nlc.read_bytes(), (
        f"compressing {png.name} no longer reproduces {nlc.name}: the .nlc format or the model "
        "arithmetic changed (a format break: bump the version and document it)"
    )


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_golden_file_decodes_to_its_png(tiny_models, name):
    src = Image.open(golden_png(name))
    src.load()
    out = nelloc.decompress((TEST_DATA / f"{name}.nlc").read_bytes())
    assert out.mode == src.mode and out.size == src.size
    assert np.array_equal(np.asarray(out), np.asarray(src))


@pytest.mark.parametrize("name, version", [(n, v) for n in ("golden_la", "golden_rgb") for v in (1, 2, 3)]
                         + [("golden_rgb_skip", 3)])  # the skip model postdates versions 1, 2
def test_older_version_golden_file_still_decodes(tiny_models, name, version):
    data = (TEST_DATA / f"{name}.v{version}.nlc").read_bytes()
    assert data[4] == version and ct.loads(data).version == version
    src = Image.open(golden_png(name))
    src.load()
    assert np.array_equal(np.asarray(nelloc.decompress(data)), np.asarray(src))
    assert [s["model"] for s in nelloc.info(data)["segments"]] == [s["model"] for s in nelloc.info(
        (TEST_DATA / f"{name}.nlc").read_bytes())["segments"]]


def test_unknown_version_is_refused():
    data = bytearray((TEST_DATA / "golden_rgb.nlc").read_bytes())
    data[4] = 6
    data[-4:] = struct.pack("<I", zlib.crc32(bytes(data[:-4])))
    with pytest.raises(BadStreamError, match="unsupported format version 6"):
        ct.loads(bytes(data))


def test_golden_files_cover_tiles_and_a_neural_alpha(tiny_models):
    rgb = nelloc.info((TEST_DATA / "golden_rgb.nlc").read_bytes())
    assert (rgb["width"], rgb["height"], rgb["mode"]) == (23, 17, "RGB")
    assert [(s["type"], s["model"], s["tile"]) for s in rgb["segments"]] == [("neural", "rgb", 8)]
    skip = nelloc.info((TEST_DATA / "golden_rgb_skip.nlc").read_bytes())
    assert [(s["type"], s["model"], s["tile"]) for s in skip["segments"]] == [("neural", "rgb-skip", 8)]
    adapted = nelloc.info((TEST_DATA / "golden_rgb_adapt.nlc").read_bytes())
    assert [(s["model"], s["tile"], s["adapt_block"]) for s in adapted["segments"]] == [("rgb", 8, 5)]
    biased = nelloc.info((TEST_DATA / "golden_rgb_bias.nlc").read_bytes())
    assert biased["format_version"] == 5
    assert [(s["model"], s["tile"], s["adapt_block"], tuple(s["bias"])) for s in biased["segments"]] == [
        ("rgb", 8, 5, GOLDEN_BIAS["golden_rgb_bias"])]
    la = nelloc.info((TEST_DATA / "golden_la.nlc").read_bytes())
    assert (la["width"], la["height"], la["mode"]) == (13, 11, "LA")
    assert [(s["type"], s["model"]) for s in la["segments"]] == [("neural", "gray"), ("neural", "gray")]


def _make_golden_files() -> None:
    """Create tests/data/golden_*.{png,nlc} with the tiny models (run once, by hand)."""
    import os
    import shutil
    import tempfile

    models = Path(tempfile.mkdtemp())
    shutil.copy(TEST_DATA / "tiny-rgb.safetensors", models / "rgb.safetensors")
    shutil.copy(TEST_DATA / "tiny-gray.safetensors", models / "gray.safetensors")
    shutil.copy(TEST_DATA / "tiny-rgb-skip.safetensors", models / "rgb-skip.safetensors")
    os.environ["NELLOC_MODELS"] = str(models)
    if not (TEST_DATA / "golden_rgb.png").exists():
        Image.fromarray(smooth_image(17, 23, 3, seed=7)).save(TEST_DATA / "golden_rgb.png")
    if not (TEST_DATA / "golden_la.png").exists():
        la = smooth_image(11, 13, 2, seed=8)
        la[..., 1] = np.clip(255 - 9 * np.arange(13)[None, :] - np.arange(11)[:, None], 0, 255)  # varying alpha
        Image.fromarray(la).save(TEST_DATA / "golden_la.png")
    for name in GOLDEN:
        if (TEST_DATA / f"{name}.nlc").exists():
            continue  # never silently regenerate an existing golden file
        (TEST_DATA / f"{name}.nlc").write_bytes(golden_compress(name))
        print(name, nelloc.info((TEST_DATA / f"{name}.nlc").read_bytes()))



def test_every_readable_version_has_a_network_arithmetic():
    from nelloc.api import ARITHMETIC_OF_VERSION

    assert set(ARITHMETIC_OF_VERSION) == set(ct.READABLE_VERSIONS)


if __name__ == "__main__":
    _make_golden_files()
