"""The public API: lossless round trips of every mode, alpha, fallback, ICC profile, bad inputs, models."""

from __future__ import annotations

import shutil
import struct
import time
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from PIL import Image

import nelloc
from conftest import TEST_DATA, smooth_image
from nelloc import container as ct
from nelloc import exact, zoo
from nelloc.errors import BadStreamError, ModelError, NellocError, UnsupportedImageError

CHANNELS = {"L": 1, "LA": 2, "RGB": 3, "RGBA": 4}
# 1x1, one row / column, below the horizon (h = 3), odd / prime, very wide and very tall
SPECIAL_SIZES = [(1, 1), (1, 2), (2, 1), (1, 9), (9, 1), (2, 3), (3, 2), (3, 3), (4, 4), (7, 13), (13, 7),
                 (11, 17), (1, 300), (300, 1)]


def _pixels(h: int, w: int, c: int, style: str, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if style == "noise":
        return rng.integers(0, 256, (h, w, c), dtype=np.uint8)
    if style == "flat":
        return np.full((h, w, c), rng.integers(0, 256), np.uint8)
    return smooth_image(h, w, c, seed=seed)


@st.composite
def neural_images(draw):
    h, w = draw(st.one_of(st.sampled_from(SPECIAL_SIZES), st.tuples(st.integers(1, 20), st.integers(1, 20))))
    mode = draw(st.sampled_from(sorted(CHANNELS)))
    seed = draw(st.integers(0, 2**32 - 1))
    arr = _pixels(h, w, CHANNELS[mode], draw(st.sampled_from(["noise", "smooth", "flat"])), seed)
    if mode in ("LA", "RGBA") and draw(st.booleans()):
        arr[..., -1] = 255  # fully opaque
    as_pil = draw(st.booleans())
    tile = draw(st.sampled_from([0, 1, 2, 5, 64]))
    if mode == "L" and not as_pil and draw(st.booleans()):
        arr = arr[..., 0]  # (H, W) instead of (H, W, 1)
    if as_pil:
        return Image.fromarray(arr[..., 0] if arr.ndim == 3 and arr.shape[2] == 1 else arr), mode, tile
    return arr, mode, tile


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(neural_images())
@example((_pixels(1, 1, 4, "noise", 1), "RGBA", 1))
@example((_pixels(1, 300, 3, "smooth", 2), "RGB", 0))
@example((Image.fromarray(_pixels(300, 1, 2, "noise", 3)), "LA", 5))
@example((_pixels(2, 3, 1, "noise", 4)[..., 0], "L", 2))
@example((Image.fromarray(_pixels(13, 7, 3, "smooth", 5)), "RGB", 64))
def test_neural_modes_round_trip_pixels_mode_and_size(tiny_models, case):
    image, mode, tile = case
    arr = np.asarray(image)
    data = nelloc.compress(image, tile=tile)
    out = nelloc.decompress(data)
    assert out.mode == mode
    assert out.size == (arr.shape[1], arr.shape[0])
    assert np.array_equal(np.asarray(out).reshape(arr.shape), arr)
    back = nelloc.decompress(data, as_array=True)
    assert np.array_equal(back.reshape(arr.shape), arr)


def test_rgba_array_and_pil_image_give_identical_streams(tiny_models):
    arr = smooth_image(9, 11, 4, seed=1)
    assert nelloc.compress(arr, tile=5) == nelloc.compress(Image.fromarray(arr), tile=5)


def test_default_tile_round_trips_an_image_larger_than_one_tile(tiny_models):
    arr = smooth_image(130, 100, 3, seed=2)  # default tile 96 -> 2x2 tiles, clipped
    assert np.array_equal(nelloc.decompress(nelloc.compress(arr), as_array=True), arr)


@pytest.mark.parametrize("mode", ["RGB", "LA"])
def test_bias_is_used_on_large_planes_and_round_trips(tiny_models, mode, monkeypatch):
    from nelloc import adapt

    monkeypatch.setattr(adapt, "BIAS_MIN_PIXELS", 1 << 14)  # a smaller test image (the fit is the same)
    arr = smooth_image(130, 128, CHANNELS[mode], seed=31)
    if mode == "LA":
        arr[..., 1] = np.clip(np.arange(128)[None, :] * 2 + np.arange(130)[:, None], 0, 255)
    biased, plain = nelloc.compress(arr), nelloc.compress(arr, adapt_bias=False)
    assert (biased[4], plain[4]) == (5, 4) and len(biased) < len(plain)
    segments = nelloc.info(biased)["segments"]
    assert all(s["bias"] is not None for s in segments)
    assert all(s["bias"] is None for s in nelloc.info(plain)["segments"])
    for data in (biased, plain):
        assert np.array_equal(nelloc.decompress(data, as_array=True), arr)


def test_effort_one_is_no_bias_and_a_bad_effort_is_refused(tiny_models, monkeypatch):
    from nelloc import adapt

    monkeypatch.setattr(adapt, "BIAS_MIN_PIXELS", 1 << 14)
    arr = smooth_image(130, 128, 3, seed=32)
    assert nelloc.compress(arr, effort=1) == nelloc.compress(arr, adapt_bias=False) == \
        nelloc.compress(arr, adapt_bias=False, effort=4)
    assert nelloc.compress(arr) == nelloc.compress(arr, effort=2)
    for bad in (0, 5):
        with pytest.raises(nelloc.UnsupportedImageError, match="effort must be one of 1, 2, 3, 4, not"):
            nelloc.compress(arr, effort=bad)


def test_bias_beyond_the_limit_or_not_whole_layers_is_a_bad_stream(tiny_models, monkeypatch):
    from nelloc import adapt

    monkeypatch.setattr(adapt, "BIAS_MIN_PIXELS", 1 << 14)
    arr = smooth_image(130, 128, 3, seed=32)
    c = ct.loads(nelloc.compress(arr))
    fitted = c.segments[0].bias
    c.segments[0].bias = (exact.MAX_BIAS + 1,) + fitted[1:]
    with pytest.raises(BadStreamError, match="bias value beyond"):
        nelloc.decompress(ct.dumps(c))
    c.segments[0].bias = fitted[:-1]
    with pytest.raises(BadStreamError, match="does not cover whole layers"):
        nelloc.decompress(ct.dumps(c))


# -- alpha ---------------------------------------------------------------------------------------


@pytest.fixture
def photo_models(tiny_models_dir, tmp_path, monkeypatch):
    """The tiny models, plus a distinct tiny colour model installed as 'rgb-photo'."""
    d = tmp_path / "models"
    shutil.copytree(tiny_models_dir, d)
    shutil.copy(TEST_DATA / "tiny-rgb-skip.safetensors", d / "rgb-photo.safetensors")
    monkeypatch.setenv("NELLOC_MODELS", str(d))
    return d


def _sharpened(model: exact.ExactModel) -> exact.ExactModel:
    """``model`` with every log-scale output lowered by 2.5 (its predictions far too sharp)."""
    from nelloc.model import output_layout

    bias = np.concatenate([np.full(n, -40 if kind == "logscale" else 0) for kind, n in output_layout(model.cfg)])
    return model.with_bias(bias)


def test_choose_model_takes_the_model_that_codes_the_plane_in_fewer_bits(tiny_models):
    from nelloc import codec

    good = zoo.load("rgb")
    bad = _sharpened(good)
    for h, w in [(9, 13), (40, 30), (64, 64)]:
        plane = smooth_image(h, w, 3, seed=h)
        assert codec.plane_code_length(good, plane) < codec.plane_code_length(bad, plane)
        assert codec.choose_model([good, bad], plane) == 0 and codec.choose_model([bad, good], plane) == 1


@pytest.mark.parametrize("mode", ["RGB", "RGBA"])
def test_default_colour_model_is_the_candidate_the_estimate_picks(photo_models, mode):
    from nelloc import codec

    assert zoo.default_candidates(3) == ["rgb", "rgb-photo"] and zoo.default_candidates(1) == ["gray"]
    candidates = [zoo.load(n) for n in zoo.default_candidates(3)]
    side = int(zoo.PHOTO_MIN_PIXELS**0.5)
    for h, w in [(8, 8), (side - 1, side), (side, side), (side, side + 7)]:
        arr = smooth_image(h, w, CHANNELS[mode], seed=h)
        arr[..., 3:] = np.arange(w, dtype=np.uint8)[None, :, None]  # a varying alpha: a gray-coded plane
        pick = codec.choose_model(candidates, np.ascontiguousarray(arr[..., :3])) if h * w >= side * side else 0
        expected = zoo.default_candidates(3)[pick]
        data = nelloc.compress(arr)
        models = [seg["model"] for seg in nelloc.info(data)["segments"]]
        assert models == ([expected] if mode == "RGB" else [expected, "gray"])
        assert np.array_equal(nelloc.decompress(data, as_array=True), arr)


@pytest.fixture
def grey_photo_models(tiny_models_dir, tmp_path, monkeypatch):
    """The tiny models with a far too sharp 'gray' and the tiny grey model as 'gray-photo': the
    estimate must take 'gray-photo' wherever it looks, and 'gray' goes to small planes."""
    d = tmp_path / "models"
    shutil.copytree(tiny_models_dir, d)
    bad = _sharpened(exact.ExactModel.load(d / "gray.safetensors"))
    (d / "gray.safetensors").replace(d / "gray-photo.safetensors")
    exact.save(d / "gray.safetensors", bad.tensors, bad.cfg, "gray")
    monkeypatch.setenv("NELLOC_MODELS", str(d))
    return d


@pytest.mark.parametrize("mode", ["L", "LA"])
def test_default_grey_model_is_the_photo_model_where_the_estimate_finds_it_better(grey_photo_models, mode):
    assert zoo.default_candidates(1) == ["gray", "gray-photo"]
    side = int(zoo.PHOTO_MIN_PIXELS**0.5)
    for h, w, expected in [(8, 8, "gray"), (side - 1, side, "gray"), (side, side, "gray-photo")]:
        arr = smooth_image(h, w, CHANNELS[mode], seed=h)
        arr = arr[..., 0] if mode == "L" else arr
        data = nelloc.compress(arr, adapt_bias=False)
        assert nelloc.info(data)["segments"][0]["model"] == expected
        assert np.array_equal(nelloc.decompress(data, as_array=True), arr)


def test_a_named_model_wins_over_the_photo_default(photo_models):
    side = int(zoo.PHOTO_MIN_PIXELS**0.5)
    data = nelloc.compress(smooth_image(side, side, 3), model="rgb", adapt_bias=False)
    assert [seg["model"] for seg in nelloc.info(data)["segments"]] == ["rgb"]


def test_a_photo_model_from_another_folder_than_rgb_is_not_a_candidate(tiny_models):
    """The tiny 'rgb' is on $NELLOC_MODELS; the repository's 'rgb-photo' comes later on the search path."""
    assert zoo.model_path("rgb").parent == tiny_models
    assert zoo.default_candidates(3) == ["rgb"]
    assert zoo.default_model(3, zoo.PHOTO_MIN_PIXELS) == "rgb" and zoo.default_model(1, 1 << 20) == "gray"
    data = nelloc.compress(smooth_image(256, 256, 3), adapt_bias=False)
    assert [seg["model"] for seg in nelloc.info(data)["segments"]] == ["rgb"]


@pytest.mark.parametrize("mode", ["LA", "RGBA"])
def test_opaque_alpha_costs_only_a_constant_segment(tiny_models, mode):
    arr = smooth_image(12, 10, CHANNELS[mode], seed=3)
    arr[..., -1] = 255
    data = nelloc.compress(arr)
    segs = nelloc.info(data)["segments"]
    assert [s["type"] for s in segs] == ["neural", "constant"]
    assert segs[1] == {"type": "constant", "channels": 1, "value": 255, "payload_bytes": 0}
    # against the colour-only file (same header size: the mode is a one-byte code), the alpha plane
    # costs the 3 bytes of its constant segment header: type, channels, value
    colour_only = nelloc.compress(arr[..., :-1])
    assert len(data) - len(colour_only) == 3
    assert np.array_equal(nelloc.decompress(data, as_array=True), arr)


def test_constant_transparent_alpha_is_also_a_constant_segment(tiny_models):
    arr = smooth_image(5, 6, 4, seed=4)
    arr[..., 3] = 0
    data = nelloc.compress(arr)
    assert nelloc.info(data)["segments"][1]["value"] == 0
    assert np.array_equal(nelloc.decompress(data, as_array=True), arr)


@pytest.mark.parametrize("mode", ["LA", "RGBA"])
def test_varying_alpha_is_neural_coded_with_the_gray_model(tiny_models, mode):
    arr = smooth_image(12, 10, CHANNELS[mode], seed=5)
    gray_id = zoo.load("gray").sha256[: 2 * ct.MODEL_ID_BYTES]
    data = nelloc.compress(arr, tile=5)
    segs = nelloc.info(data)["segments"]
    assert [s["type"] for s in segs] == ["neural", "neural"]
    assert segs[1]["channels"] == 1 and segs[1]["model"] == "gray" and segs[1]["model_id"] == gray_id
    assert segs[1]["tile"] == 5 and segs[1]["payload_bytes"] > 0
    assert segs[0]["model"] == ("gray" if mode == "LA" else "rgb")
    assert np.array_equal(nelloc.decompress(data, as_array=True), arr)


# -- fallback modes ------------------------------------------------------------------------------


def _random_image(mode: str, size=(7, 5), seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    n = len(Image.new(mode, size).tobytes())
    return Image.frombytes(mode, size, rng.integers(0, 256, n, dtype=np.uint8).tobytes())


def _fallback_images():
    rng = np.random.default_rng(10)
    rgb = Image.fromarray(rng.integers(0, 256, (5, 7, 3), dtype=np.uint8))
    pal = Image.fromarray(rng.integers(0, 16, (5, 7), dtype=np.uint8)).convert("P")
    pal.putpalette(rng.integers(0, 256, 48, dtype=np.uint8).tobytes())
    images = {
        "1": Image.fromarray(rng.integers(0, 2, (5, 7)).astype(bool)),
        "P": pal,
        "I;16 (uint16 array)": rng.integers(0, 65536, (5, 7), dtype=np.uint16),
        "I": Image.fromarray(rng.integers(-(2**31), 2**31 - 1, (5, 7), dtype=np.int32)),
        "F": Image.fromarray(rng.normal(0, 1e6, (5, 7)).astype(np.float32)),
        "CMYK": rgb.convert("CMYK"),
        "YCbCr": rgb.convert("YCbCr"),
        "LAB": _random_image("LAB", seed=11),
        "HSV": _random_image("HSV", seed=12),
        "CMYK (random bytes)": _random_image("CMYK", seed=13),
        "1 (bool array)": rng.integers(0, 2, (5, 7)).astype(bool),
    }
    try:
        pa = pal.convert("PA")
        pa.putalpha(Image.fromarray(rng.integers(0, 256, (5, 7), dtype=np.uint8)))
        images["PA"] = pa
    except (ValueError, OSError):
        pass  # this Pillow has no PA mode
    return images


FALLBACK = _fallback_images()


@pytest.mark.parametrize("name", sorted(FALLBACK))
def test_fallback_modes_round_trip_with_mode_size_and_palette(tiny_models, name):
    src = FALLBACK[name]
    im = nelloc.api.to_image(src)
    data = nelloc.compress(src)
    meta = nelloc.info(data)
    assert meta["kind"] == "fallback" and [s["type"] for s in meta["segments"]] == ["fallback"]
    out = nelloc.decompress(data)
    assert out.mode == im.mode and out.size == im.size
    assert out.tobytes() == im.tobytes()
    assert out.getpalette() == im.getpalette()
    if isinstance(src, np.ndarray):
        assert np.array_equal(np.asarray(out), src)


def test_fallback_needs_no_model(tmp_path, monkeypatch):
    monkeypatch.setenv("NELLOC_MODELS", str(tmp_path))
    monkeypatch.setattr(zoo, "model_dirs", lambda: [tmp_path])
    im = FALLBACK["CMYK"]
    assert nelloc.decompress(nelloc.compress(im)).tobytes() == im.tobytes()


# -- ICC profile ---------------------------------------------------------------------------------

ICC = b"not really an ICC profile \x00\x01\x02\xff" * 3


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "L", "LA", "CMYK", "P"])
def test_icc_profile_is_kept(tiny_models, mode):
    im = Image.fromarray(smooth_image(6, 8, 3, seed=6)).convert(mode)
    im.info["icc_profile"] = ICC
    data = nelloc.compress(im)
    assert nelloc.info(data)["icc_profile_bytes"] == len(ICC)
    out = nelloc.decompress(data)
    assert out.info["icc_profile"] == ICC
    assert out.tobytes() == im.tobytes()


def test_no_icc_profile_means_none_after_decoding(tiny_models):
    out = nelloc.decompress(nelloc.compress(smooth_image(4, 4, 3)))
    assert not out.info.get("icc_profile")


# -- metadata: EXIF, XMP, PNG text ---------------------------------------------------------------


def _png_with_metadata(path, mode: str = "RGB") -> Image.Image:
    from PIL import PngImagePlugin

    im = Image.fromarray(smooth_image(6, 8, 3, seed=12)).convert(mode)
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation
    exif[0x010F] = "Maker"
    chunks = PngImagePlugin.PngInfo()
    chunks.add_text("Title", "a title")
    chunks.add_text("Comment", "long " * 400, zip=True)
    chunks.add_itxt("Author", "Zoë Ünïcode")
    chunks.add_itxt("XML:com.adobe.xmp", "<x:xmpmeta xmlns:x='adobe:ns:meta/'/>")
    im.save(path, exif=exif, pnginfo=chunks)
    out = Image.open(path)
    out.load()
    return out


@pytest.mark.parametrize("mode", ["RGB", "P"], ids=["neural", "fallback"])
def test_exif_xmp_and_png_text_are_kept(tiny_models, tmp_path, mode):
    src = _png_with_metadata(tmp_path / "meta.png", mode)
    data = nelloc.compress(tmp_path / "meta.png")
    assert [m["key"] for m in nelloc.info(data)["metadata"]] == [
        "exif", "text:Title", "text:Comment", "text:Author", "text:XML:com.adobe.xmp"]
    out = nelloc.decompress(data)
    assert out.tobytes() == src.tobytes()
    assert out.text == src.text
    for key in ("exif", "xmp", "Title", "Author"):
        assert out.info[key] == src.info[key]
    assert out.getexif()[0x0112] == 6


def test_decoded_metadata_survives_a_second_round_trip_and_strip_drops_it(tiny_models, tmp_path):
    _png_with_metadata(tmp_path / "meta.png")
    once = nelloc.decompress(nelloc.compress(tmp_path / "meta.png"))
    assert nelloc.compress(once) == nelloc.compress(tmp_path / "meta.png")
    stripped = nelloc.compress(tmp_path / "meta.png", keep_metadata=False)
    assert nelloc.info(stripped)["metadata"] == []
    assert stripped == nelloc.compress(np.asarray(once))
    bare = nelloc.decompress(stripped)
    assert "exif" not in bare.info and not getattr(bare, "text", None)


def test_xmp_outside_png_text_is_its_own_entry(tiny_models):
    im = Image.fromarray(smooth_image(4, 5, 3, seed=13))
    im.info["xmp"] = b"<x:xmpmeta/>"
    data = nelloc.compress(im)
    assert nelloc.info(data)["metadata"] == [{"key": "xmp", "bytes": 12}]
    assert nelloc.decompress(data).info["xmp"] == b"<x:xmpmeta/>"


# -- bad inputs ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad",
    [
        np.zeros((4, 4), np.float64),
        np.zeros((4, 4, 3), np.float32),
        np.zeros((4, 4), np.int64),
        np.zeros((4, 4, 3), np.uint16),
        np.zeros((4, 4, 5), np.uint8),
        np.zeros((2, 2, 2, 2), np.uint8),
        np.zeros((7,), np.uint8),
        np.zeros((0, 0), np.uint8),
        np.zeros((0, 5, 3), np.uint8),
        np.zeros((3, 0), np.uint8),
        np.zeros((2, 3, 0), np.uint8),
        Image.new("RGB", (0, 0)),
        Image.new("L", (0, 5)),
    ],
    ids=lambda x: f"{getattr(x, 'dtype', 'PIL')}{getattr(x, 'shape', getattr(x, 'size', ''))}".replace(" ", ""),
)
def test_unsupported_arrays_and_empty_images_raise_unsupported_image_error(tiny_models, bad):
    with pytest.raises(UnsupportedImageError):
        nelloc.compress(bad)


def test_path_that_is_not_an_image_raises_unsupported_image_error(tiny_models, tmp_path):
    p = tmp_path / "notes.png"
    p.write_text("hello, not a picture")
    with pytest.raises(UnsupportedImageError, match="not an image"):
        nelloc.compress(p)


def test_truncated_png_raises_unsupported_image_error(tiny_models, tmp_path):
    p = tmp_path / "cut.png"
    Image.fromarray(smooth_image(30, 30, 3)).save(p)
    p.write_bytes(p.read_bytes()[:80])
    with pytest.raises(UnsupportedImageError):
        nelloc.compress(str(p))


def _png_16bit(path, samples: np.ndarray, color_type: int) -> None:
    """A 16-bit-per-sample PNG written by hand (Pillow cannot write 16-bit colour)."""
    h, w = samples.shape[:2]
    raw = b"".join(b"\x00" + samples[y].astype(">u2").tobytes() for y in range(h))

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", w, h, 16, color_type, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw))
                     + chunk(b"IEND", b""))


@pytest.mark.parametrize("channels, color_type", [(3, 2), (4, 6), (2, 4)], ids=["RGB", "RGBA", "LA"])
def test_16_bit_colour_or_alpha_png_is_refused_not_truncated_to_8_bits(tiny_models, tmp_path, channels, color_type):
    p = tmp_path / "deep.png"
    _png_16bit(p, np.random.default_rng(7).integers(0, 65536, (5, 6, channels)), color_type)
    with pytest.raises(UnsupportedImageError, match="16 bits per sample"):
        nelloc.compress(p)


def test_16_bit_colour_ppm_is_refused(tiny_models, tmp_path):
    p = tmp_path / "deep.ppm"
    p.write_bytes(b"P6 3 2 65535\n" + np.arange(18, dtype=">u2").tobytes() * 1)
    with pytest.raises(UnsupportedImageError, match="16 bits per sample"):
        nelloc.compress(p)


def test_a_png_claiming_gigapixels_is_refused_before_its_pixels_are_read(tiny_models, tmp_path):
    p = tmp_path / "bomb.png"
    Image.new("RGB", (1, 1)).save(p)
    header = bytearray(p.read_bytes())
    header[16:24] = struct.pack(">II", 60000, 60000)  # IHDR width, height (the CRC is not checked first)
    header[29:33] = struct.pack(">I", zlib.crc32(bytes(header[12:29])))
    p.write_bytes(bytes(header))
    with pytest.raises(UnsupportedImageError, match="60000x60000 = 3600000000 pixels exceeds the limit"):
        nelloc.compress(p)
    with pytest.raises(UnsupportedImageError, match="exceeds the limit of 20"):
        nelloc.api.to_image(tmp_path / "bomb.png", max_pixels=20)


def test_16_bit_grey_png_round_trips_all_16_bits(tiny_models, tmp_path):
    p = tmp_path / "grey16.png"
    samples = np.random.default_rng(8).integers(0, 65536, (5, 6))
    _png_16bit(p, samples, 0)
    out = nelloc.decompress(nelloc.compress(p), as_array=True)
    assert np.array_equal(out.astype(np.int64), samples)


def test_16_bit_per_pixel_bmp_is_accepted_because_8_bits_per_channel_hold_it(tiny_models, tmp_path):
    # BI_RGB, 16 bits per pixel: 5-5-5, which Pillow expands to 8 bits per channel without loss
    w, h = 4, 2
    pixels = np.random.default_rng(9).integers(0, 1 << 15, (h, w)).astype("<u2").tobytes()
    info = struct.pack("<IiiHHIIiiII", 40, w, h, 1, 16, 0, len(pixels), 2835, 2835, 0, 0)
    head = b"BM" + struct.pack("<IHHI", 14 + 40 + len(pixels), 0, 0, 14 + 40)
    p = tmp_path / "rgb555.bmp"
    p.write_bytes(head + info + pixels)
    im = Image.open(p)
    im.load()
    assert nelloc.decompress(nelloc.compress(p)).tobytes() == im.tobytes()


@pytest.mark.parametrize("suffix", [".gif", ".tif"])
def test_animated_or_multi_page_files_are_refused_not_cut_to_their_first_frame(tiny_models, tmp_path, suffix):
    rng = np.random.default_rng(10)
    frames = [Image.fromarray(rng.integers(0, 256, (6, 5), dtype=np.uint8)) for _ in range(3)]
    p = tmp_path / f"frames{suffix}"
    frames[0].save(p, save_all=True, append_images=frames[1:])
    with pytest.raises(UnsupportedImageError, match="3 frames"):
        nelloc.compress(p)
    frames[0].save(tmp_path / f"one{suffix}")
    assert nelloc.decompress(nelloc.compress(tmp_path / f"one{suffix}")).size == (5, 6)


@pytest.mark.parametrize("mode, key", [("RGB", (0, 0, 0)), ("L", 0)])
def test_png_colour_key_transparency_is_kept(tiny_models, tmp_path, mode, key):
    im = Image.fromarray(smooth_image(6, 7, 3, seed=11)).convert(mode)
    p = tmp_path / "keyed.png"
    im.save(p, transparency=key)
    data = nelloc.compress(p)
    assert nelloc.info(data)["kind"] == "fallback"
    out = nelloc.decompress(data)
    assert out.mode == mode and out.tobytes() == im.tobytes() and out.info["transparency"] == key


def test_missing_file_and_directory_raise_unsupported_image_error(tiny_models, tmp_path):
    with pytest.raises(UnsupportedImageError, match="no such file"):
        nelloc.compress(tmp_path / "missing.png")
    with pytest.raises(UnsupportedImageError, match="directory"):
        nelloc.compress(tmp_path)


@pytest.mark.parametrize("tile", [-1, 65537, 10**9])
def test_out_of_range_tile_raises_unsupported_image_error(tiny_models, tile):
    with pytest.raises(UnsupportedImageError, match="tile"):
        nelloc.compress(smooth_image(3, 3, 3), tile=tile)


def _patch_byte(stream: bytes, offset: int, value: int) -> bytes:
    """Set one byte and recompute the file CRC (the last 4 bytes) as container.dumps does."""
    data = bytearray(stream)
    data[offset] = value
    data[-4:] = struct.pack("<I", zlib.crc32(bytes(data[:-4])))
    return bytes(data)


@pytest.fixture
def valid_stream(tiny_models) -> bytes:
    return nelloc.compress(smooth_image(6, 7, 3, seed=8), tile=4)


@pytest.mark.parametrize(
    "bad",
    [b"", b"\x8b", b"\x8bNL", b"\x8bNLC", b"PNG\x00" * 8, b"\x89PNG\r\n\x1a\n" + bytes(40),
     np.random.default_rng(0).integers(0, 256, 200, dtype=np.uint8).tobytes()],
    ids=["empty", "1byte", "3bytes", "magic-only", "junk", "png-signature", "random"],
)
def test_garbage_streams_raise_bad_stream_error(tiny_models, bad):
    with pytest.raises(BadStreamError):
        nelloc.decompress(bad)
    with pytest.raises(BadStreamError):
        nelloc.info(bad)


def test_wrong_magic_raises_bad_stream_error(valid_stream):
    with pytest.raises(BadStreamError, match="magic"):
        nelloc.decompress(b"\x8bNLD" + valid_stream[4:])


def test_unsupported_version_raises_bad_stream_error_naming_it(valid_stream):
    patched = _patch_byte(valid_stream, 4, 9)
    with pytest.raises(BadStreamError, match="version 9"):
        nelloc.decompress(patched)
    with pytest.raises(BadStreamError, match="version 9"):
        nelloc.info(patched)
    # the helper itself is faithful: patching the version back gives the original stream
    assert _patch_byte(patched, 4, ct.VERSION) == valid_stream


def _constant_stream(width: int, height: int, pixel_crc: int = 0) -> bytes:
    """A valid L stream whose only segment is a constant plane of 7s (no payload to allocate)."""
    seg = ct.Segment(ct.SEG_CONSTANT, 1, value=7)
    return ct.dumps(ct.Container(width, height, "L", pixel_crc=pixel_crc, segments=[seg]))


def test_header_claiming_ten_gigapixels_fails_fast_naming_the_limit(tiny_models):
    data = _constant_stream(100_000, 100_000)
    t0 = time.perf_counter()
    with pytest.raises(BadStreamError, match="limit"):
        nelloc.decompress(data)
    with pytest.raises(BadStreamError, match="limit"):
        nelloc.info(data)
    assert time.perf_counter() - t0 < 0.5  # refused before allocating 10 GB


def test_max_pixels_is_honoured(valid_stream):
    pixels = 6 * 7
    assert np.asarray(nelloc.decompress(valid_stream, max_pixels=pixels)).shape == (6, 7, 3)
    with pytest.raises(BadStreamError, match="limit"):
        nelloc.decompress(valid_stream, max_pixels=pixels - 1)
    with pytest.raises(BadStreamError, match="limit"):
        nelloc.info(valid_stream, max_pixels=pixels - 1)
    # a 6-megapixel constant image: refused one pixel under the limit, decoded at the limit
    data = _constant_stream(3000, 2000, zlib.crc32(bytes([7]) * 6_000_000))
    with pytest.raises(BadStreamError, match="limit"):
        nelloc.decompress(data, max_pixels=5_999_999)
    out = nelloc.decompress(data, max_pixels=6_000_000, as_array=True)
    assert out.shape == (2000, 3000) and (out == 7).all()


def test_bad_stream_errors_are_nelloc_errors():
    assert issubclass(BadStreamError, NellocError) and issubclass(ModelError, NellocError)
    assert issubclass(UnsupportedImageError, NellocError)


# -- models --------------------------------------------------------------------------------------


def _models_dir(tmp_path, rgb_tensors_patch=None):
    d = tmp_path / "models"
    d.mkdir()
    shutil.copy(TEST_DATA / "tiny-gray.safetensors", d / "gray.safetensors")
    m = exact.ExactModel.load(TEST_DATA / "tiny-rgb.safetensors")
    tensors = {k: v.copy() for k, v in m.tensors.items()}
    if rgb_tensors_patch:
        rgb_tensors_patch(tensors)
    exact.save(d / "rgb.safetensors", tensors, m.cfg, "rgb")
    return d


def _nudge_one_weight(tensors):
    w = tensors["first.weight"]
    w.flat[0] = w.flat[0] + (1 if w.flat[0] < 0 else -1)


def test_stream_from_a_different_rgb_model_raises_model_error_naming_it(tiny_models, tmp_path, monkeypatch):
    data = nelloc.compress(smooth_image(5, 6, 3, seed=9))
    need = nelloc.info(data)["segments"][0]["model_id"]
    other = _models_dir(tmp_path, _nudge_one_weight)
    monkeypatch.setenv("NELLOC_MODELS", str(other))
    assert not zoo.load("rgb").sha256.startswith(need)
    with pytest.raises(ModelError, match="not installed") as exc:
        nelloc.decompress(data)
    # the message names the id the stream needs and what is installed instead (name and id)
    assert need in str(exc.value) and f"rgb ({zoo.load('rgb').sha256[:8]})" in str(exc.value)


def test_unchanged_resaved_model_still_decodes(tiny_models, tmp_path, monkeypatch):
    arr = smooth_image(5, 6, 3, seed=9)
    data = nelloc.compress(arr)
    monkeypatch.setenv("NELLOC_MODELS", str(_models_dir(tmp_path)))
    assert np.array_equal(nelloc.decompress(data, as_array=True), arr)


def test_model_installed_under_another_name_is_found_by_hash(tiny_models, tmp_path, monkeypatch):
    arr = smooth_image(5, 6, 3, seed=9)
    data = nelloc.compress(arr)
    d = tmp_path / "renamed"
    d.mkdir()
    shutil.copy(TEST_DATA / "tiny-rgb.safetensors", d / "my-rgb.safetensors")
    monkeypatch.setenv("NELLOC_MODELS", str(d))
    monkeypatch.setattr(zoo, "model_dirs", lambda: [d])
    assert np.array_equal(nelloc.decompress(data, as_array=True), arr)


def test_no_models_installed_raises_model_error(tiny_models, tmp_path, monkeypatch):
    data = nelloc.compress(smooth_image(5, 6, 3, seed=9))
    gray = nelloc.compress(smooth_image(5, 6, 1, seed=9))
    empty = tmp_path / "none"
    empty.mkdir()
    monkeypatch.setenv("NELLOC_MODELS", str(empty))
    monkeypatch.setattr(zoo, "model_dirs", lambda: [empty])
    for stream in (data, gray):
        with pytest.raises(ModelError, match=r"not installed \(installed: none"):
            nelloc.decompress(stream)
    with pytest.raises(ModelError, match="'rgb'"):
        nelloc.compress(smooth_image(3, 3, 3))
    with pytest.raises(ModelError, match="'gray'"):
        nelloc.compress(smooth_image(3, 3, 1))


def test_unknown_model_name_raises_model_error(tiny_models):
    with pytest.raises(ModelError, match="no-such-model"):
        nelloc.compress(smooth_image(3, 3, 3), model="no-such-model")


def test_model_with_wrong_channel_count_raises_model_error(tiny_models):
    with pytest.raises(ModelError, match="gray"):
        nelloc.compress(smooth_image(3, 3, 3), model="gray")


def test_corrupted_model_file_raises_model_error(tiny_models, tmp_path, monkeypatch):
    data = nelloc.compress(smooth_image(5, 6, 3, seed=9))
    d = tmp_path / "broken"
    d.mkdir()
    (d / "rgb.safetensors").write_bytes(b"\x00" * 64)
    monkeypatch.setenv("NELLOC_MODELS", str(d))
    monkeypatch.setattr(zoo, "model_dirs", lambda: [d])
    with pytest.raises(ModelError):
        nelloc.compress(smooth_image(3, 3, 3))
    with pytest.raises(ModelError):
        nelloc.decompress(data)
