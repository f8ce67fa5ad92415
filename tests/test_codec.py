"""Planes <-> payloads: batched encoding and decoding give the same streams and pixels as one plane
at a time, whatever the mix of sizes and tiles; a bad stream in a batch fails alone."""

import constriction
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import nelloc
from nelloc import codec, exact
from nelloc.errors import BadStreamError

from conftest import TEST_DATA, smooth_image


@pytest.fixture(scope="module")
def tiny_rgb():
    return exact.ExactModel.load(TEST_DATA / "tiny-rgb.safetensors")


@pytest.fixture(scope="module")
def tiny_gray():
    return exact.ExactModel.load(TEST_DATA / "tiny-gray.safetensors")


def _planes(sizes, channels, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for i, (h, w) in enumerate(sizes):
        p = smooth_image(h, w, channels, seed=seed + i)
        if i % 3 == 2:  # some noise planes too: every symbol value gets exercised
            p = rng.integers(0, 256, (h, w, channels), dtype=np.uint8)
        out.append(p)
    return out


# same sizes (stacked), different sizes, one larger than the encoder's chunk (encoded alone)
SIZES = [(8, 8), (8, 8), (8, 8), (5, 11), (1, 1), (1, 9), (9, 1), (190, 180), (8, 8), (5, 11)]


@pytest.mark.parametrize("tile", [0, 4, 64])
def test_batched_encoding_gives_each_planes_own_stream(tiny_rgb, tile):
    planes = _planes(SIZES, 3)
    batched = codec.encode_planes(tiny_rgb, planes, tile)
    assert batched == [codec.encode_plane(tiny_rgb, p, tile) for p in planes]


@pytest.mark.parametrize("tile", [0, 4, 64])
def test_batched_decoding_of_mixed_geometries(tiny_gray, tile):
    planes = _planes(SIZES, 1, seed=7)
    jobs = [codec.PlaneJob(codec.encode_plane(tiny_gray, p, tile), p.shape[0], p.shape[1], tile) for p in planes]
    decoded = codec.decode_planes(tiny_gray, jobs)
    for p, d in zip(planes, decoded):
        assert np.array_equal(d, p)


@settings(max_examples=10, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 12), st.integers(1, 12)), min_size=1, max_size=6),
       st.sampled_from([0, 1, 3, 64]), st.integers(0, 1000))
def test_batch_round_trip_property(tiny_rgb, sizes, tile, seed):
    planes = _planes(sizes, 3, seed)
    jobs = [codec.PlaneJob(d, p.shape[0], p.shape[1], tile) for d, p in zip(codec.encode_planes(tiny_rgb, planes, tile), planes)]
    for p, d in zip(planes, codec.decode_planes(tiny_rgb, jobs)):
        assert np.array_equal(d, p)


def test_a_bad_stream_fails_alone(tiny_rgb):
    planes = _planes([(9, 9)] * 3, 3)
    payloads = codec.encode_planes(tiny_rgb, planes, 64)
    jobs = [codec.PlaneJob(payloads[0], 9, 9, 64), codec.PlaneJob(payloads[1][:-2], 9, 9, 64),
            codec.PlaneJob(payloads[2], 9, 9, 64)]
    out = codec.decode_planes(tiny_rgb, jobs)
    assert isinstance(out[1], BadStreamError)
    assert np.array_equal(out[0], planes[0]) and np.array_equal(out[2], planes[2])


def test_api_many_equals_one_at_a_time(tiny_models):
    images = [smooth_image(10, 10, 3, seed=1), smooth_image(10, 10, 4, seed=2), smooth_image(7, 3, 1, seed=3),
              smooth_image(10, 10, 3, seed=4), np.zeros((4, 4, 2), np.uint8)]
    images[1][..., 3] = np.arange(100).reshape(10, 10)  # a real alpha plane (neural-coded with gray)
    blobs = nelloc.compress_many(images)
    assert blobs == [nelloc.compress(im) for im in images]
    for im, back in zip(images, nelloc.decompress_many(blobs, as_array=True)):
        assert np.array_equal(back.reshape(im.shape), im)


def test_api_many_returns_errors_in_place(tiny_models):
    images = [smooth_image(6, 6, 3, seed=s) for s in range(3)]
    blobs = nelloc.compress_many(images)
    blobs[1] = blobs[1][:-5] + bytes([blobs[1][-5] ^ 1]) + blobs[1][-4:]
    out = nelloc.decompress_many(blobs + [b"not a stream"], as_array=True, errors="return")
    assert np.array_equal(out[0], images[0]) and np.array_equal(out[2], images[2])
    assert isinstance(out[1], nelloc.NellocError) and isinstance(out[3], nelloc.NellocError)
    with pytest.raises(nelloc.NellocError):
        nelloc.decompress_many(blobs)


@pytest.mark.parametrize("split", [True, False])
def test_decode_with_the_network_call_shared_between_threads(tiny_rgb, split, monkeypatch):
    """The CPU decoder's row split (torch single-threaded, each step's rows in two threads) and
    torch's own threading decode the same streams to the same pixels."""
    import torch

    monkeypatch.setattr(codec, "SPLIT_FORWARD", split)
    monkeypatch.setattr(codec, "SMALL_STEP", 1)
    monkeypatch.setattr(codec, "MIN_SPLIT_ROWS", 4)
    monkeypatch.setattr(codec.mx, "_THREADS", 2)  # two threads even on a one-core machine
    img = smooth_image(45, 61, 3, seed=12)
    payload = codec.encode_plane(tiny_rgb, img, 16)
    calls = []
    forward = tiny_rgb.forward
    monkeypatch.setattr(tiny_rgb, "forward", lambda x, *a: calls.append(len(x)) or forward(x, *a))
    old = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        back = codec.decode_plane(tiny_rgb, payload, 45, 61, 16)
    finally:
        torch.set_num_threads(old)
    assert np.array_equal(back, img)
    steps = codec.TileGrid(45, 61, 16, tiny_rgb.cfg.horizon, 3).num_steps
    assert (len(calls) > steps) == split  # split steps make two calls


# -- log-scale offsets (nelloc.adapt, format section 5b) --------------------------------------------


@pytest.mark.parametrize("shape, tile, block", [((37, 53, 3), 16, 8), ((20, 20, 3), 0, 48), ((29, 31, 3), 8, 6)])
def test_log_scale_offsets_round_trip_alone_and_batched(tiny_rgb, shape, tile, block):
    img = smooth_image(*shape, seed=11)
    (payload, used, _), = codec.encode_segments(tiny_rgb, [img], tile, block=block)
    assert used == block  # the tiny model is far from calibrated: offsets always pay here
    assert payload != codec.encode_plane(tiny_rgb, img, tile)
    other = img[::-1].copy()
    batched = codec.encode_segments(tiny_rgb, [img, other], tile, block=block)
    assert batched[0] == (payload, used, None)
    jobs = [codec.PlaneJob(p, shape[0], shape[1], tile, b) for p, b, _ in batched]
    jobs.append(codec.PlaneJob(codec.encode_plane(tiny_rgb, img, tile), shape[0], shape[1], tile, 0))
    out = codec.decode_planes(tiny_rgb, jobs)
    assert np.array_equal(out[0], img) and np.array_equal(out[1], other) and np.array_equal(out[2], img)


def test_offsets_are_skipped_where_they_do_not_pay(tiny_rgb, monkeypatch):
    from nelloc import adapt

    monkeypatch.setattr(adapt, "worth_it", lambda saving, block: False)
    img = smooth_image(16, 16, 3, seed=12)
    assert codec.encode_segments(tiny_rgb, [img], 8, block=8) == [(codec.encode_plane(tiny_rgb, img, 8), 0, None)]


def test_offset_symbols_outside_the_range_are_a_bad_stream(tiny_rgb):
    from nelloc import adapt

    enc = constriction.stream.queue.RangeEncoder()
    row = adapt.offset_counts()[None, :].repeat(3, axis=0)
    enc.encode(np.array([8, 20, 8], np.int32), constriction.stream.model.Categorical(perfect=False), row)
    payload = enc.get_compressed().astype("<u4").tobytes()
    (result,) = codec.decode_planes(tiny_rgb, [codec.PlaneJob(payload, 4, 4, 0, 48)])
    assert isinstance(result, BadStreamError) and "offset out of range" in str(result)


# -- per-image bias (nelloc.adapt.fit_bias, format section 5c) ---------------------------------------


def test_bias_is_fitted_for_large_planes_and_decodes_only_with_it(tiny_rgb, monkeypatch):
    from nelloc import adapt

    monkeypatch.setattr(adapt, "BIAS_MIN_PIXELS", 1 << 14)  # a smaller test image (the fit is the same)
    img = smooth_image(130, 128, 3, seed=21)  # 16,640 pixels
    plain, fitted = codec.encode_segments(tiny_rgb, [img], 32, block=0, effort=1)[0], \
        codec.encode_segments(tiny_rgb, [img], 32, block=0, effort=2)[0]
    assert plain.bias is None and fitted.bias is not None and len(fitted.bias) == tiny_rgb.cfg.width + tiny_rgb.cfg.out_channels
    saved = 8 * (len(plain.payload) - len(fitted.payload))
    assert saved > adapt.bias_header_bits(np.array(fitted.bias))  # the tiny model is far off: it pays
    job = codec.PlaneJob(fitted.payload, 130, 128, 32, fitted.block)
    (out,) = codec.decode_planes(tiny_rgb.with_bias(fitted.bias), [job])
    assert np.array_equal(out, img)
    (wrong,) = codec.decode_planes(tiny_rgb, [job])  # without the bias: another distribution
    assert isinstance(wrong, Exception) or not np.array_equal(wrong, img)


def test_bias_is_not_fitted_for_small_planes_or_when_it_does_not_pay(tiny_rgb, monkeypatch):
    from nelloc import adapt

    small = smooth_image(255, 256, 3, seed=22)  # 65,280 pixels: just below adapt.BIAS_MIN_PIXELS
    assert codec.encode_segments(tiny_rgb, [small], 32, effort=2)[0].bias is None
    monkeypatch.setattr(adapt, "BIAS_MIN_PIXELS", 1 << 14)
    monkeypatch.setattr(adapt, "fit_bias", lambda *a, **k: (np.ones(tiny_rgb.cfg.out_channels, np.int64), 10.0))
    big = smooth_image(130, 128, 3, seed=23)
    assert codec.encode_segments(tiny_rgb, [big], 32, effort=2)[0].bias is None


def test_bias_with_offsets_round_trips_in_a_batch_of_planes(tiny_gray, monkeypatch):
    from nelloc import adapt

    monkeypatch.setattr(adapt, "BIAS_MIN_PIXELS", 1 << 14)
    imgs = [smooth_image(129, 130, 1, seed=s) for s in (24, 25)] + [smooth_image(12, 9, 1, seed=26)]
    coded = codec.encode_segments(tiny_gray, imgs, 16, block=40, effort=2)
    assert [c.bias is not None for c in coded] == [True, True, False]
    for img, c in zip(imgs, coded):
        model = tiny_gray if c.bias is None else tiny_gray.with_bias(c.bias)
        (out,) = codec.decode_planes(model, [codec.PlaneJob(c.payload, img.shape[0], img.shape[1], 16, c.block)])
        assert np.array_equal(out, img)


def test_bias_fit_effort_halves_below_a_quarter_megapixel():
    from nelloc import adapt

    full = (adapt.BIAS_STEPS, adapt.BIAS_SAMPLE)
    assert adapt.bias_effort(512 * 512) == full and adapt.bias_effort(768 * 512) == full
    assert adapt.bias_effort(256 * 256) == (full[0] // 2, full[1] // 2)
    assert adapt.bias_effort(255 * 256) is None  # below BIAS_MIN_PIXELS
    assert len(adapt.bias_sample_rows(10**6, 100)) == 200 and len(set(adapt.bias_sample_rows(10**6, 100))) == 200
    assert sorted(adapt.bias_sample_rows(150, 100)) == list(range(150))


def test_bias_header_bits_count_zigzag_varint_bytes():
    from nelloc import adapt

    assert adapt.bias_header_bits(np.array([0, 1, -1, 63, -64])) == 8 * 5
    assert adapt.bias_header_bits(np.array([64, -65, 8191])) == 8 * 6
    assert adapt.bias_header_bits(np.array([8192])) == 8 * 3


def test_higher_efforts_fit_longer_on_more_pixels_and_effort_one_fits_nothing():
    from nelloc import adapt

    n = 768 * 512
    assert adapt.DEFAULT_EFFORT == 2 and adapt.bias_effort(n, 1) is None
    plans = [adapt.bias_effort(n, e) for e in (2, 3, 4)]
    assert all(a[0] <= b[0] and a[1] <= b[1] and a != b for a, b in zip(plans, plans[1:]))
    for bad in (0, 5, True, 2.5, "2"):
        with pytest.raises(ValueError, match="effort must be one of 1, 2, 3, 4"):
            adapt.check_effort(bad)


def test_effort_sets_the_fit_the_encoder_runs_and_every_effort_decodes(tiny_rgb, monkeypatch):
    from nelloc import adapt

    monkeypatch.setattr(adapt, "BIAS_MIN_PIXELS", 1 << 14)
    monkeypatch.setattr(adapt, "BIAS_FULL_PIXELS", 1 << 14)
    monkeypatch.setattr(adapt, "EFFORTS", {1: None, 2: (10, 256), 3: (20, 512), 4: (30, 1024)})
    real_fit, runs = adapt.fit_bias, []

    def recording_fit(model, x, values, pixels_per_sample, steps):
        runs.append((steps, len(values)))
        return real_fit(model, x, values, pixels_per_sample, steps)

    monkeypatch.setattr(adapt, "fit_bias", recording_fit)
    img = smooth_image(130, 128, 3, seed=27)
    for effort in (1, 2, 3, 4):
        (coded,) = codec.encode_segments(tiny_rgb, [img], 32, block=40, effort=effort)
        model = tiny_rgb if coded.bias is None else tiny_rgb.with_bias(coded.bias)
        (out,) = codec.decode_planes(model, [codec.PlaneJob(coded.payload, 130, 128, 32, coded.block)])
        assert np.array_equal(out, img)
        assert (coded.bias is None) == (effort == 1)
    assert runs == [(10, 512), (20, 1024), (30, 2048)]
    with pytest.raises(ValueError, match="effort"):
        codec.encode_segments(tiny_rgb, [img[:8, :8]], 32, effort=0)  # checked even where no plane would fit
