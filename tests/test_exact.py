"""Exactness: the integer network gives identical outputs whatever the batching, order or thread
count, the decoder rebuilds exactly the encoder's tables, and export stays close to the float model."""

import math
from fractions import Fraction

import numpy as np
import pytest
import torch

from nelloc import codec, exact
from nelloc import mixture as mx
from nelloc.errors import ModelError
from nelloc.model import ModelConfig, PixelCNN, output_layout
from nelloc.schedule import TileGrid, gather

from conftest import TEST_DATA, smooth_image


def exported(cfg: ModelConfig, seed: int = 0) -> exact.ExactModel:
    torch.manual_seed(seed)
    model = PixelCNN(cfg)
    if cfg.skip:  # the skip starts at zero; give it weights so that it matters
        with torch.no_grad():
            model.skip.normal_(0, 0.05)
    model.train()
    model.bits(torch.rand(2, cfg.channels, 12, 12) * 255)  # calibrates the activation scales
    return exact.ExactModel(exact.export(model.eval()), cfg)


@pytest.fixture(scope="module")
def paper_size_model():
    """h = 3, r = 1, 256 channels, K = 10: the paper's model size (untrained weights)."""
    return exported(ModelConfig(width=256))


@pytest.fixture(scope="module")
def skip_model():
    """A model with the linear skip from the neighbourhood to the outputs."""
    return exported(ModelConfig(width=32, mixtures=5, skip=True))


@pytest.fixture(scope="module")
def wide_act_model():
    """10-bit activations (and the skip layer): the loader's sum bound is |w| * 1023."""
    return exported(ModelConfig(width=32, mixtures=5, skip=True, act_bits=10))


@pytest.fixture(scope="module")
def fine_skip_model():
    """11-bit skip weights (int16 in the file) beside 10-bit activations."""
    return exported(ModelConfig(width=32, mixtures=5, skip=True, act_bits=10, skip_bits=11))


@pytest.fixture(scope="module")
def fine_first_model():
    """12-bit first-layer weights (int16 in the file), as the shipped colour models from stop 46."""
    return exported(ModelConfig(width=32, mixtures=5, skip=True, act_bits=10, skip_bits=11, first_bits=12))


@pytest.fixture(scope="module")
def tiny_rgb():
    return exact.ExactModel.load(TEST_DATA / "tiny-rgb.safetensors")


def outputs_by_steps(model, img, tile, batch, threads):
    grid = TileGrid(img.shape[0], img.shape[1], tile, model.cfg.horizon, model.cfg.channels)
    canvas = grid.full_canvas(img, torch.device("cpu"))
    cells, _, _ = grid.order
    offs = torch.from_numpy(grid.neighbour_offsets)
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        parts = [
            model.forward(gather(canvas, torch.from_numpy(cells[s : s + batch]), offs)).numpy()
            for s in range(0, len(cells), batch)
        ]
    finally:
        torch.set_num_threads(old)
    return np.concatenate(parts)


@pytest.mark.parametrize("which", ["tiny_rgb", "paper_size_model", "skip_model", "wide_act_model", "fine_skip_model"])
def test_network_outputs_identical_for_any_batch_and_threads(which, request):
    model = request.getfixturevalue(which)
    img = smooth_image(23, 29, 3, seed=3)
    reference = outputs_by_steps(model, img, 8, 10**9, 1)
    for batch in (1, 7):
        assert np.array_equal(outputs_by_steps(model, img, 8, batch, 1), reference)
    assert np.array_equal(outputs_by_steps(model, img, 8, 10**9, 2), reference)
    assert np.array_equal(reference, np.round(reference))


def test_network_outputs_independent_of_row_order(paper_size_model):
    x = torch.randint(0, 256, (300, paper_size_model.fan_in)).float()
    perm = torch.randperm(300)
    a = paper_size_model.forward(x).numpy()
    b = paper_size_model.forward(x[perm].contiguous()).numpy()
    assert np.array_equal(a[perm.numpy()], b)


@pytest.mark.parametrize("tile", [0, 5, 16])
def test_decoder_rebuilds_the_encoders_tables(tiny_rgb, tile, monkeypatch):
    img = smooth_image(13, 11, 3, seed=4)
    recorded = []
    real_counts = mx.counts

    def spy(*args, **kwargs):
        out = real_counts(*args, **kwargs)
        recorded.append(out.copy())
        return out

    monkeypatch.setattr(mx, "counts", spy)
    payload = codec.encode_plane(tiny_rgb, img, tile)
    enc = np.concatenate(recorded)
    recorded.clear()
    decoded = codec.decode_plane(tiny_rgb, payload, 13, 11, tile)
    dec = np.concatenate(recorded)
    assert np.array_equal(decoded, img)
    assert np.array_equal(enc, dec)  # same tables, in the same symbol order


@pytest.mark.parametrize("threads", [1, 2])
def test_round_trip_with_thread_counts(paper_size_model, threads):
    img = smooth_image(9, 14, 3, seed=5)
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        payload = codec.encode_plane(paper_size_model, img, 4)
    finally:
        torch.set_num_threads(old)
    torch.set_num_threads(3 - threads)
    try:
        assert np.array_equal(codec.decode_plane(paper_size_model, payload, 9, 14, 4), img)
    finally:
        torch.set_num_threads(old)


@pytest.mark.parametrize("skip,act_bits,joint,skip_bits,first_bits,coeff_bits",
                         [(False, 8, False, 8, 8, 8), (True, 8, False, 8, 8, 8), (True, 10, False, 8, 8, 8),
                          (True, 10, True, 8, 8, 8), (True, 10, False, 11, 8, 8), (True, 10, False, 11, 12, 8),
                          (True, 10, False, 11, 12, 12), (True, 10, True, 11, 12, 12)])
def test_export_close_to_float_model(skip, act_bits, joint, skip_bits, first_bits, coeff_bits):
    torch.manual_seed(0)
    cfg = ModelConfig(width=32, mixtures=5, skip=skip, act_bits=act_bits, joint=joint, skip_bits=skip_bits,
                      first_bits=first_bits, coeff_bits=coeff_bits)
    model = PixelCNN(cfg)
    img = smooth_image(24, 24, 3, seed=6)
    x = torch.from_numpy(img).permute(2, 0, 1)[None].float()
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    for _ in range(30):
        loss = model.bits(x).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        float_bits = float(model.bits(x))
    em = exact.ExactModel(exact.export(model), cfg)
    exact_bits = codec.plane_code_length(em, img, 0)
    assert abs(exact_bits - float_bits) / float_bits < 0.01


def test_only_the_output_layer_stores_clamp_bounds_and_older_files_still_load(skip_model, tiny_rgb):
    assert "out.lo" in skip_model.tensors and "out.hi" in skip_model.tensors
    assert not any(k.endswith((".lo", ".hi")) for k in skip_model.tensors if not k.startswith("out."))
    assert "first.lo" in tiny_rgb.tensors  # a file from before stop 46 stores every layer's bounds
    for model in (skip_model, tiny_rgb):
        lo, hi = model.bounds("head")
        assert (lo == 0).all() and (hi == model.cfg.act_qmax).all()
    stored = dict(skip_model.tensors)
    n = stored["head.mul"].shape[0]
    stored["head.lo"], stored["head.hi"] = np.zeros(n), np.full(n, float(skip_model.cfg.act_qmax))
    with_bounds = exact.ExactModel(stored, skip_model.cfg)  # the same network, another id
    assert with_bounds.sha256 != skip_model.sha256
    x = torch.from_numpy(np.random.default_rng(3).integers(-128, 129, (40, skip_model.fan_in)).astype(np.float32))
    assert torch.equal(with_bounds.forward(x), skip_model.forward(x))
    stored["head.hi"] = stored["head.hi"] - 1
    with pytest.raises(ModelError, match="clamped"):
        exact.ExactModel(stored, skip_model.cfg)
    del stored["head.hi"]
    with pytest.raises(ModelError, match="head.hi"):
        exact.ExactModel(stored, skip_model.cfg)


def test_loader_refuses_models_that_could_round(tmp_path):
    em = exact.ExactModel.load(TEST_DATA / "tiny-rgb.safetensors")
    tensors = dict(em.tensors)
    w = tensors["head.weight"].copy()
    w[:] = 127  # sum of |w| * 255 over 16 inputs is fine; make the fan-in huge instead
    big = np.full((70000, w.shape[1]), 127, np.int8)
    tensors["head.weight"] = big
    with pytest.raises(ModelError):
        exact.ExactModel(tensors, em.cfg)
    tensors = dict(em.tensors)
    tensors["out.mul"] = tensors["out.mul"] * (1 + 2**-40)  # no longer dyadic with 24 bits
    with pytest.raises(ModelError):
        exact.ExactModel(tensors, em.cfg)


def test_skip_model_round_trips_and_refuses_version_1_arithmetic(skip_model):
    img = smooth_image(17, 19, 3, seed=2)
    payload = codec.encode_plane(skip_model, img, 8)
    assert np.array_equal(codec.decode_plane(skip_model, payload, 17, 19, 8), img)
    x = torch.zeros(4, skip_model.fan_in)
    with pytest.raises(ModelError):
        skip_model.forward(x, arithmetic=1)


def test_skip_changes_the_model_id_but_not_older_models_ids():
    assert "skip" not in ModelConfig().to_dict()  # older models keep their SHA-256 (their file id)
    assert ModelConfig(skip=True).to_dict()["skip"] is True


def test_act_bits_is_in_the_id_only_when_not_8_and_is_bounded():
    assert "act_bits" not in ModelConfig().to_dict()  # older models keep their SHA-256
    assert ModelConfig(act_bits=10).to_dict()["act_bits"] == 10
    for bad in (3, 13, 8.0):
        with pytest.raises(ValueError):
            ModelConfig(act_bits=bad)


def test_skip_bits_is_in_the_id_only_when_not_8_and_is_bounded():
    assert "skip_bits" not in ModelConfig(skip=True).to_dict()  # older models keep their SHA-256
    assert ModelConfig(skip=True, skip_bits=11).to_dict()["skip_bits"] == 11
    assert ModelConfig(skip_bits=11).skip_qmax == 1023
    for bad in (7, 13, 11.0):
        with pytest.raises(ValueError):
            ModelConfig(skip_bits=bad)


def test_first_bits_is_in_the_id_only_when_not_8_and_is_bounded():
    assert "first_bits" not in ModelConfig(skip=True).to_dict()  # older models keep their SHA-256
    assert ModelConfig(first_bits=12).to_dict()["first_bits"] == 12
    assert ModelConfig(first_bits=12).first_qmax == 2047
    for bad in (7, 13, 12.0):
        with pytest.raises(ValueError):
            ModelConfig(first_bits=bad)
    with pytest.raises(ValueError, match="local"):
        ModelConfig(kind="full", first_bits=12)


def test_coeff_bits_is_in_the_id_only_when_not_8_and_is_bounded():
    assert "coeff_bits" not in ModelConfig(skip=True).to_dict()  # older models keep their SHA-256
    assert ModelConfig(coeff_bits=12).to_dict()["coeff_bits"] == 12
    assert mx.coeff_grid(8) == (mx.COEFF_UNIT, mx.COEFF_MIN, mx.COEFF_MAX)
    assert mx.coeff_grid(12) == (1 / 4096, -8192, 8192)  # the same range, -2..2, 16 times finer
    for bad in (7, 13, 12.0):
        with pytest.raises(ValueError):
            ModelConfig(coeff_bits=bad)
    with pytest.raises(ValueError, match="colour"):
        ModelConfig(channels=1, coeff_bits=12)


@pytest.mark.parametrize("coeff_bits", [8, 10, 12])
def test_coupled_means_round_the_coefficient_terms_half_up_to_the_mean_grid(coeff_bits):
    rng = np.random.default_rng(coeff_bits)
    n, k = 400, 3
    _, lo, hi = mx.coeff_grid(coeff_bits)
    params = {"means": rng.integers(-3000, 18000, (n, 3, k)).astype(np.int32),
              "coeffs": rng.integers(lo, hi + 1, (n, 3, k)).astype(np.int32)}
    values = rng.integers(0, 256, (n, 3)).astype(np.int32)
    for c, terms in ((1, [(0, 0)]), (2, [(1, 0), (2, 1)])):
        got = exact.coupled_means(params, c, values[:, :c], coeff_bits)
        for i in range(0, n, 37):
            for j in range(k):
                shift = sum(Fraction(int(params["coeffs"][i, ci, j]) * int(values[i, src]) * 64, 2**coeff_bits)
                            for ci, src in terms)
                want = int(params["means"][i, c, j]) + math.floor(shift + Fraction(1, 2))  # exact rationals
                assert got[i, j] == min(max(want, mx.MEAN_MIN), mx.MEAN_MAX)


def test_fine_coefficients_round_trip_and_change_the_output_grid():
    fine = exported(ModelConfig(width=32, mixtures=5, skip=True, act_bits=10, first_bits=12, coeff_bits=12))
    lo, hi = fine.output_bounds()
    coeff = np.concatenate([np.full(n, kind == "coeff") for kind, n in output_layout(fine.cfg)])
    assert (lo[coeff] == -8192).all() and (hi[coeff] == 8192).all() and (hi[~coeff] < 8192).any()
    img = smooth_image(15, 22, 3, seed=12)
    payload = codec.encode_plane(fine, img, 8)
    assert np.array_equal(codec.decode_plane(fine, payload, 15, 22, 8), img)


def test_fine_first_layer_is_stored_as_int16_and_round_trips(fine_first_model, fine_skip_model):
    w = fine_first_model.tensors["first.weight"]
    assert w.dtype == np.int16 and np.abs(w).max() == 2047  # each output's largest weight sets its scale
    assert fine_skip_model.tensors["first.weight"].dtype == np.int8
    img = smooth_image(15, 22, 3, seed=12)
    payload = codec.encode_plane(fine_first_model, img, 8)
    assert np.array_equal(codec.decode_plane(fine_first_model, payload, 15, 22, 8), img)
    assert np.array_equal(outputs_by_steps(fine_first_model, img, 8, 5, 1), outputs_by_steps(fine_first_model, img, 8, 64, 2))


def test_loader_checks_the_first_layer_against_its_bits(fine_first_model, fine_skip_model):
    as_int16 = dict(fine_skip_model.tensors, **{"first.weight": fine_skip_model.tensors["first.weight"].astype(np.int16)})
    with pytest.raises(ModelError, match="int8"):  # an 8-bit first layer must be int8, as older files are
        exact.ExactModel(as_int16, fine_skip_model.cfg)
    wide = fine_first_model.tensors["first.weight"].copy()
    wide[0, 0] = 2048
    with pytest.raises(ModelError, match="2047"):
        exact.ExactModel(dict(fine_first_model.tensors, **{"first.weight": wide}), fine_first_model.cfg)


def test_fine_skip_is_stored_as_int16_and_round_trips(fine_skip_model):
    w = fine_skip_model.tensors["skip.weight"]
    assert w.dtype == np.int16 and np.abs(w).max() == 1023  # each output's largest weight sets its scale
    img = smooth_image(15, 22, 3, seed=12)
    payload = codec.encode_plane(fine_skip_model, img, 8)
    assert np.array_equal(codec.decode_plane(fine_skip_model, payload, 15, 22, 8), img)


def test_loader_checks_the_skip_against_its_bits(fine_skip_model, skip_model):
    as_int8 = dict(skip_model.tensors, **{"skip.weight": skip_model.tensors["skip.weight"].astype(np.int16)})
    with pytest.raises(ModelError, match="int8"):  # an 8-bit skip must be int8, as older files are
        exact.ExactModel(as_int8, skip_model.cfg)
    wide = fine_skip_model.tensors["skip.weight"].copy()
    wide[0, 0] = 1024
    with pytest.raises(ModelError, match="1023"):
        exact.ExactModel(dict(fine_skip_model.tensors, **{"skip.weight": wide}), fine_skip_model.cfg)
    huge = np.full_like(wide, 1023)  # 96 inputs * 1023 * 128 is fine; a larger fan-in is not
    cfg = ModelConfig(width=32, mixtures=5, skip=True, act_bits=10, skip_bits=12, horizon=5)
    big = np.full((cfg.fan_in, wide.shape[1]), 2047, np.int16)
    assert huge.shape[0] * 1023 * 128 < 2**24 <= big.shape[0] * 2047 * 128
    with pytest.raises(ModelError, match="2\\*\\*24"):
        exact._checked_sum_bound("skip", big, 128.0, cfg.skip_qmax, np.int16)


def test_export_keeps_wide_layers_within_the_float32_sum_bound():
    # 256 inputs * |w| up to 127 * 4095 can pass 2**24: the exporter coarsens those channels' steps
    # (as fake quantisation does in training), so the model loads and stays exact
    cfg = ModelConfig(width=256, act_bits=12, skip=True, skip_bits=12)
    em = exported(cfg)
    for name in ("block0.conv0", "head", "out"):
        sums = np.abs(em.tensors[f"{name}.weight"].astype(np.int64)).sum(axis=0) * cfg.act_qmax
        assert sums.max() < 2**24 and sums.max() > 2**23  # at the bound, not far below it
    skip = np.abs(em.tensors["skip.weight"].astype(np.int64)).sum(axis=0) * 128
    assert skip.max() < 2**24
    img = smooth_image(9, 11, 3, seed=13)
    assert np.array_equal(codec.decode_plane(em, codec.encode_plane(em, img, 8), 9, 11, 8), img)


def test_the_loader_still_refuses_sums_that_could_round(skip_model):
    w = skip_model.tensors["head.weight"]
    with pytest.raises(ModelError, match="2\\*\\*24"):
        exact.ExactModel(dict(skip_model.tensors, **{"head.weight": np.full((70000, w.shape[1]), 127, np.int8)}),
                         skip_model.cfg)


def test_wide_activation_model_round_trips(wide_act_model):
    img = smooth_image(13, 21, 3, seed=4)
    payload = codec.encode_plane(wide_act_model, img, 8)
    assert np.array_equal(codec.decode_plane(wide_act_model, payload, 13, 21, 8), img)


@pytest.fixture(scope="module")
def joint_model():
    """Components shared across a pixel's channels (ModelConfig.joint)."""
    return exported(ModelConfig(width=32, mixtures=5, skip=True, act_bits=10, joint=True))


def test_joint_model_round_trips_and_differs_from_the_factorised_one(joint_model):
    img = smooth_image(19, 23, 3, seed=7)
    payload = codec.encode_plane(joint_model, img, 8)
    assert np.array_equal(codec.decode_plane(joint_model, payload, 19, 23, 8), img)
    factorised = exact.ExactModel({k: v for k, v in joint_model.tensors.items() if k != "table.log"},
                                  ModelConfig(width=32, mixtures=5, skip=True, act_bits=10))
    assert factorised.sha256 != joint_model.sha256
    assert codec.encode_plane(factorised, img, 8) != payload


def test_joint_is_in_the_id_only_when_set_and_needs_its_table(joint_model):
    assert "joint" not in ModelConfig().to_dict()  # older models keep their SHA-256
    tensors = {k: v for k, v in joint_model.tensors.items() if k != "table.log"}
    with pytest.raises(ModelError, match="log"):
        exact.ExactModel(tensors, joint_model.cfg)
    with pytest.raises(ModelError, match="log"):
        exact.ExactModel({**tensors, "table.log": np.ones(mx.LOG_MANTISSA, np.int32)}, joint_model.cfg)


def test_channel_logits_add_each_components_log_mass_at_the_known_values(joint_model):
    rng = np.random.default_rng(3)
    x = torch.from_numpy(rng.integers(-128, 128, (50, joint_model.fan_in)).astype(np.float32))
    params = joint_model.split(joint_model.forward(x).numpy())
    values = rng.integers(0, 256, (50, 3)).astype(np.int32)
    tables = joint_model.tables
    assert np.array_equal(exact.channel_logits(params, 0, values[:, :0], tables, True), params["logits"])
    blue = exact.channel_logits(params, 2, values[:, :2], tables, True).astype(np.int64)
    expect = params["logits"].astype(np.int64)
    for src in range(2):  # the masses the counts themselves give each component, one at a time
        means = exact.coupled_means(params, src, values[:, :src])
        for k in range(joint_model.cfg.mixtures):
            one = np.full((50, joint_model.cfg.mixtures), -4000, np.int32)
            one[:, k] = 0  # every other component weighs 0: the counts are component k's pmf
            counts = mx.counts_reference(one, means, params["logscale_idx"][:, src, :], tables)
            pmf = (counts - mx.UNIFORM)[np.arange(50), values[:, src]]  # its mass, rescaled to TOTAL - 256 * UNIFORM
            mass = mx.bin_mass(means, params["logscale_idx"][:, src, :], values[:, src], tables)[:, k]
            assert np.all(np.abs(pmf - mass * ((mx.TOTAL - 256 * mx.UNIFORM) / 2**20)) <= 256)
            expect[:, k] += mx.log_mass(mass, tables["log"])
    assert np.array_equal(blue, expect)


def test_log_mass_is_within_a_unit_of_the_natural_log():
    table = mx.build_log_table()
    mass = np.arange(2**20 + 1)
    got = mx.log_mass(mass, table)
    assert got[0] == mx.ZERO_MASS_LOGIT and got[-1] == 0
    assert np.abs(got[1:] - 16 * np.log(mass[1:] / 2**20)).max() <= 0.6


def test_corrupted_model_file_is_refused(tmp_path):
    data = bytearray((TEST_DATA / "tiny-gray.safetensors").read_bytes())
    data[-10] ^= 0xFF
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(bytes(data))
    with pytest.raises(ModelError):
        exact.ExactModel.load(bad)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_cuda_and_cpu_streams_are_interchangeable(paper_size_model):
    img = smooth_image(40, 52, 3, seed=8)
    on_gpu = codec.encode_plane(paper_size_model.to("cuda"), img, 16, "cuda")
    assert np.array_equal(codec.decode_plane(paper_size_model.to("cpu"), on_gpu, 40, 52, 16, "cpu"), img)
    on_cpu = codec.encode_plane(paper_size_model.to("cpu"), img, 16, "cpu")
    assert on_cpu == on_gpu
    assert np.array_equal(codec.decode_plane(paper_size_model.to("cuda"), on_cpu, 40, 52, 16, "cuda"), img)
    paper_size_model.to("cpu")


def _numpy_forward32(model, x: np.ndarray) -> np.ndarray:
    """docs/format.md section 4, arithmetic 2, written with numpy float32 (IEEE) operations."""
    t = model.tensors

    def product(name, a):
        acc = (a.astype(np.int64) @ t[f"{name}.weight"].astype(np.int64)).astype(np.float32)  # exact ints
        return acc * t[f"{name}.mul"].astype(np.float32)

    def layer(name, a, act=True, skip=False):
        y = product(name, a)
        if skip:
            y = y + product("skip", x)
        y = np.floor(y + t[f"{name}.add"].astype(np.float32))
        mul = t[f"{name}.mul"]  # hidden layers clamp to 0..Q, which older files also store
        lo = t.get(f"{name}.lo", np.zeros_like(mul))
        hi = t.get(f"{name}.hi", np.full_like(mul, model.cfg.act_qmax))
        return np.clip(y, lo.astype(np.float32), hi.astype(np.float32))

    h = layer("first", x)
    for b in range(model.cfg.res_blocks):
        r0, r1 = t[f"block{b}.residual"].astype(np.float32)
        u = layer(f"block{b}.conv2", layer(f"block{b}.conv1", layer(f"block{b}.conv0", h)))
        h = np.clip(np.floor((h * r0 + u * r1) + np.float32(0.5)), 0, 2**model.cfg.act_bits - 1)
    return layer("out", layer("head", h), act=False, skip=model.cfg.skip)


@pytest.mark.parametrize("which", ["tiny_rgb", "paper_size_model", "skip_model", "wide_act_model", "fine_skip_model"])
def test_float32_arithmetic_matches_an_independent_numpy_reference(which, request):
    model = request.getfixturevalue(which)
    img = smooth_image(24, 20, model.cfg.channels, seed=5)
    img[::3, ::2] = np.random.default_rng(0).integers(0, 256, img[::3, ::2].shape)
    grid = TileGrid(24, 20, 8, model.cfg.horizon, model.cfg.channels)
    canvas = grid.full_canvas(img, torch.device("cpu"))
    cells, _, _ = grid.order
    x = gather(canvas, torch.from_numpy(cells), torch.from_numpy(grid.neighbour_offsets))
    assert np.array_equal(model.forward(x, arithmetic=2).numpy(), _numpy_forward32(model, x.numpy()))


def test_version_1_arithmetic_is_also_batch_invariant_and_close_to_version_2(tiny_rgb):
    img = smooth_image(30, 30, 3, seed=9)
    grid = TileGrid(30, 30, 0, 3, 3)
    canvas = grid.full_canvas(img, torch.device("cpu"))
    cells, _, _ = grid.order
    x = gather(canvas, torch.from_numpy(cells), torch.from_numpy(grid.neighbour_offsets))
    whole = tiny_rgb.forward(x, arithmetic=1).numpy()
    parts = np.concatenate([tiny_rgb.forward(x[i : i + 7], arithmetic=1).numpy() for i in range(0, len(x), 7)])
    assert np.array_equal(whole, parts)
    assert (whole == tiny_rgb.forward(x, arithmetic=2).numpy()).mean() > 0.99


@pytest.mark.parametrize("which", ["tiny_rgb", "paper_size_model", "skip_model", "wide_act_model", "fine_skip_model"])
def test_fused_cpu_ops_equal_the_torch_ops_that_cuda_runs(which, request, monkeypatch):
    """The CPU's fused C re-quantisation (nelloc/_requant.c) and the separate torch ops (what a
    CUDA device runs) give the same numbers, extreme neighbourhoods included."""
    model = request.getfixturevalue(which)
    rng = np.random.default_rng(11)
    x = rng.integers(-128, 129, (2000, model.fan_in)).astype(np.float32)
    x[:50] = -128
    x[50:100] = 128
    x = torch.from_numpy(x)
    fused = model.forward(x).numpy()
    monkeypatch.setattr(model, "fuse_cpu_ops", False)
    assert np.array_equal(model.forward(x).numpy(), fused)


def test_fused_ops_refuse_arrays_of_the_wrong_kind():
    from nelloc import _requant

    y, v = np.zeros((4, 3), np.float32), np.zeros(3, np.float32)
    _requant.requant(y, v, v, v, v)
    with pytest.raises(ValueError, match="float32"):
        _requant.requant(y.astype(np.float64), v, v, v, v)
    with pytest.raises(ValueError, match="float32"):
        _requant.requant(y, np.zeros(4, np.float32), v, v, v)
    with pytest.raises(ValueError, match="contiguous"):
        _requant.requant(np.zeros((3, 4), np.float32).T, v, v, v, v)
    with pytest.raises(ValueError, match="both"):
        _requant.requant(y, v, v, v, v, y)
    with pytest.raises(ValueError, match="float32"):
        _requant.residual(y, np.zeros((4, 4), np.float32), 1.0, 1.0, 255.0)


# -- per-image bias (docs/format.md section 5c) ---------------------------------------------------


def _neighbourhoods(model, seed: int = 5):
    img = smooth_image(24, 20, model.cfg.channels, seed=seed)
    grid = TileGrid(24, 20, 8, model.cfg.horizon, model.cfg.channels)
    canvas = grid.full_canvas(img, torch.device("cpu"))
    cells, _, _ = grid.order
    return gather(canvas, torch.from_numpy(cells), torch.from_numpy(grid.neighbour_offsets))


@pytest.mark.parametrize("which, layers", [("tiny_rgb", 1), ("tiny_rgb", 2), ("skip_model", 2), ("skip_model", 5)])
def test_bias_is_the_documented_change_of_the_last_layers_constants(which, layers, request):
    model = request.getfixturevalue(which)
    x = _neighbourhoods(model)
    sizes = model.bias_layer_sizes()[-layers:]
    bias = np.random.default_rng(3).integers(-300, 301, sum(n for _, n in sizes))
    t, start = dict(model.tensors), 0
    for name, n in sizes:  # section 5c by hand: float64 + integer (exact), f32() in the reference
        t[f"{name}.add"] = model.tensors[f"{name}.add"] + bias[start : start + n]
        start += n

    class _WithTensors:
        tensors, cfg = t, model.cfg

    adapted = model.with_bias(bias)
    assert [name for name, _ in model.bias_split(len(bias))] == [name for name, _ in sizes]
    assert np.array_equal(adapted.forward(x).numpy(), _numpy_forward32(_WithTensors, x.numpy()))
    assert not np.array_equal(adapted.forward(x).numpy(), model.forward(x).numpy())
    assert model.with_bias(np.zeros(len(bias), int)).sha256 == model.sha256


def test_bias_refused_when_out_of_range_or_not_whole_layers(tiny_rgb):
    from nelloc.exact import MAX_BIAS

    n = tiny_rgb.cfg.out_channels
    for count in (3, n + 1, n + tiny_rgb.cfg.width - 1, 0):
        with pytest.raises(ModelError, match=f"a bias of {count} values does not cover whole layers"):
            tiny_rgb.with_bias(np.ones(count, int))
    with pytest.raises(ModelError, match="beyond"):
        tiny_rgb.with_bias(np.full(n, MAX_BIAS + 1))
    tiny_rgb.with_bias(np.full(n, -300))
    with pytest.raises(ModelError, match="exceed 2\\*\\*53"):  # within the limit, but beyond this model's budget
        tiny_rgb.with_bias(np.full(n, -MAX_BIAS))


@pytest.mark.parametrize("which", ["tiny_rgb", "skip_model", "wide_act_model"])
def test_the_encoders_differentiable_tail_floors_and_clamps_to_the_coded_outputs(which, request):
    model = request.getfixturevalue(which)
    x = _neighbourhoods(model, seed=8)
    lo, hi = model.output_bounds()
    with torch.no_grad():
        pre = model.tail(*model.tail_inputs(x)).numpy()
    assert np.array_equal(np.clip(np.floor(pre), lo, hi), model.forward(x).numpy())
