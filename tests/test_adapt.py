"""Forward adaptation (nelloc.adapt): the offsets' coding table, block layout and the encoder's choice."""

import numpy as np
import pytest

from nelloc import adapt
from nelloc import mixture as mx


def test_offset_table_codes_exactly_16_offsets_in_4_bits():
    counts = adapt.offset_counts()
    assert counts.sum() == mx.TOTAL and np.count_nonzero(counts) == 16
    assert np.flatnonzero(counts).tolist() == list(range(16))
    assert np.allclose(adapt.offset_bits(), 4.0, atol=1e-4)


def test_blocks_are_row_major_squares_independent_of_tiles():
    h, w, b = 7, 10, 4
    y, x = np.mgrid[0:h, 0:w]
    got = adapt.block_of_pixel((y * w + x).ravel(), w, b).reshape(h, w)
    assert adapt.grid_shape(h, w, b) == (2, 3) and adapt.num_blocks(h, w, b) == 6
    assert got[0, 0] == 0 and got[0, 4] == 1 and got[0, 9] == 2 and got[4, 0] == 3 and got[6, 9] == 5


def test_shift_clamps_to_the_log_scale_table():
    params = {"logscale_idx": np.array([[[0, 136]], [[5, 70]]], np.int32)}  # (N=2, C=1, K=2)
    adapt.shift_log_scales(params, np.array([[-3], [7]]))
    assert params["logscale_idx"].tolist() == [[[0, 133]], [[12, 77]]]


@pytest.mark.parametrize("true_shift, sign", [(0.4, 1), (-0.35, -1)])
def test_the_encoder_widens_an_overconfident_model_and_sharpens_a_timid_one(true_shift, sign):
    rng = np.random.default_rng(0)
    n, k = 4000, 2
    log_scale = 1.5  # the model's, in nats; the data's is log_scale + true_shift
    u = rng.uniform(1e-6, 1 - 1e-6, n)
    values = np.clip(np.round(128 + np.exp(log_scale + true_shift) * np.log(u / (1 - u))), 0, 255).astype(np.int32)
    params = {
        "logits": np.zeros((n, k), np.int32),
        "logscale_idx": np.full((n, 1, k), round(log_scale / mx.LOGSCALE_UNIT) - mx.LOGSCALE_MIN, np.int32),
    }
    means = np.full((n, 1, k), 128 * 64, np.int32)
    blocks = np.zeros(n, np.int64)
    offsets, saving = adapt.choose_offsets(params, means, values[:, None], blocks, 1)
    expect = round(true_shift / mx.LOGSCALE_UNIT)
    assert np.sign(offsets[0, 0]) == sign and abs(offsets[0, 0] - expect) <= 2
    assert saving[0] > 0 and adapt.worth_it(saving[0], 48)
    calibrated = adapt.choose_offsets(params, means, np.clip(np.round(128 + np.exp(log_scale) * np.log(u / (1 - u))), 0, 255).astype(np.int32)[:, None], blocks, 1)
    assert abs(calibrated[0][0, 0]) <= 1 and not adapt.worth_it(calibrated[1][0], 48)
