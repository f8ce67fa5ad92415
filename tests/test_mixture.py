"""The integer mixture: the C kernel equals the numpy reference, counts are valid, and the float
likelihood agrees with the integer tables."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from nelloc import mixture as mx

TABLES = mx.build_tables()
NLS = mx.LOGSCALE_MAX - mx.LOGSCALE_MIN + 1


def random_params(rng, n, k):
    logits = rng.integers(mx.LOGIT_MIN, mx.LOGIT_MAX + 1, (n, k))
    means = rng.integers(mx.MEAN_MIN, mx.MEAN_MAX + 1, (n, k))
    ls = rng.integers(0, NLS, (n, k))
    return logits, means, ls


# Every kernel is tested where it runs; the AVX-512 one is skipped (with this reason) elsewhere.
KERNELS = [
    pytest.param(name, marks=pytest.mark.skipif(name not in mx.kernels(), reason=f"this CPU does not run the {name} kernel"))
    for name in ("scalar", "avx512")
]


@pytest.mark.parametrize("kernel", KERNELS)
@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 300), k=st.integers(1, 12))
def test_kernel_equals_reference(kernel, seed, n, k):
    logits, means, ls = random_params(np.random.default_rng(seed), n, k)
    ref = mx.counts_reference(logits, means, ls, TABLES)
    assert np.array_equal(mx.counts(logits, means, ls, TABLES, threads=1, kernel=kernel), ref)
    assert np.array_equal(mx.counts(logits, means, ls, TABLES, threads=2, kernel=kernel), ref)


@pytest.mark.parametrize("kernel", KERNELS)
def test_extreme_parameters_equal_reference(kernel):
    cases = []
    means_at_edges = (mx.MEAN_MIN, -33, -32, 0, 31, 32, 8160, 15840, 15872, 16288, 16320, mx.MEAN_MAX)
    for m in means_at_edges:
        for s in (0, 1, NLS // 2, NLS - 1):
            cases.append(([0, mx.LOGIT_MIN, mx.LOGIT_MAX], [m, m, m], [s, s, s]))
    logits, means, ls = (np.array([c[i] for c in cases]) for i in range(3))
    got = mx.counts(logits, means, ls, TABLES, kernel=kernel)
    assert np.array_equal(got, mx.counts_reference(logits, means, ls, TABLES))


@pytest.mark.parametrize("kernel", KERNELS)
def test_kernel_equals_reference_on_sharp_mixtures_at_every_mean(kernel):
    """Trained models are sharp: narrow windows starting anywhere in the 8-value blocks that the
    vector kernel works in, one to ten components close together."""
    rng = np.random.default_rng(7)
    n, k = 4000, 10
    centre = rng.integers(mx.MEAN_MIN, mx.MEAN_MAX + 1, (n, 1))
    means = np.clip(centre + rng.integers(-400, 401, (n, k)), mx.MEAN_MIN, mx.MEAN_MAX)
    ls = rng.integers(0, NLS // 3, (n, k))  # the smallest third of the scales
    logits = rng.integers(-200, 1, (n, k))
    got = mx.counts(logits, means, ls, TABLES, kernel=kernel)
    assert np.array_equal(got, mx.counts_reference(logits, means, ls, TABLES))


def test_counts_fills_a_given_buffer_and_checks_it():
    logits, means, ls = random_params(np.random.default_rng(3), 600, 10)
    buffer = np.full((1000, mx.NUM_VALUES), -1.0)
    got = mx.counts(logits, means, ls, TABLES, threads=2, out=buffer)
    assert np.shares_memory(got, buffer) and got.shape == (600, mx.NUM_VALUES)
    assert np.array_equal(got, mx.counts_reference(logits, means, ls, TABLES))
    assert (buffer[600:] == -1).all()
    with pytest.raises(ValueError, match="out must be"):
        mx.counts(logits, means, ls, TABLES, out=np.empty((599, mx.NUM_VALUES)))
    with pytest.raises(ValueError, match="out must be"):
        mx.counts(logits, means, ls, TABLES, out=np.empty((600, mx.NUM_VALUES), np.float32))


def test_unknown_kernel_is_refused():
    logits, means, ls = random_params(np.random.default_rng(3), 5, 3)
    with pytest.raises(ValueError, match="does not run on this CPU"):
        mx.counts(logits, means, ls, TABLES, kernel="neon")


def test_counts_sum_and_floor():
    logits, means, ls = random_params(np.random.default_rng(1), 2000, 10)
    c = mx.counts(logits, means, ls, TABLES)
    assert (c.sum(axis=1) == mx.TOTAL).all()
    assert c.min() >= mx.UNIFORM  # every value stays possible
    assert np.array_equal(c, np.round(c))


def test_sharp_component_concentrates_mass():
    c = mx.counts(np.array([[0]]), np.array([[100 * 64]]), np.array([[0]]), TABLES)[0]
    assert c.argmax() == 100 and c[100] > 0.99 * mx.TOTAL


def test_float_log_prob_matches_integer_counts():
    rng = np.random.default_rng(2)
    n, k = 500, 5
    logits = rng.integers(-32, 32, (n, k))  # gaps below EXP_CUTOFF: no component is pruned
    means = rng.integers(0, 255 * 64, (n, k))
    ls = rng.integers(16, NLS - 20, (n, k))  # scales from ~0.3 to ~140 grey levels
    x = rng.integers(0, 256, n)
    counts = mx.counts(logits, means, ls, TABLES)
    int_bits = -np.log2((counts[np.arange(n), x] + 1) / 2**24)
    lp = mx.log_prob(
        torch.tensor(x, dtype=torch.float64),
        torch.tensor(logits * mx.LOGIT_UNIT),
        torch.tensor(means * mx.MEAN_UNIT),
        torch.tensor((ls + mx.LOGSCALE_MIN) * mx.LOGSCALE_UNIT),
    ).numpy()
    float_bits = -lp / math.log(2)
    # the integer tables are a close approximation of the float distribution
    assert abs(int_bits.sum() - float_bits.sum()) / float_bits.sum() < 0.005
    likely = float_bits < 10  # rare values differ more: the uniform floor and 2**-20 table steps
    assert np.abs(int_bits - float_bits)[likely].max() < 0.15  # broad components: 1/1024 steps in t


def test_float_log_prob_normalised():
    v = torch.arange(256, dtype=torch.float64)
    logits = torch.tensor([[0.3, -1.0, 2.0]]).expand(256, 3)
    means = torch.tensor([[10.0, 128.4, 250.0]]).expand(256, 3)
    log_scales = torch.tensor([[-2.0, 1.0, 4.0]]).expand(256, 3)
    total = mx.log_prob(v, logits.double(), means.double(), log_scales.double()).exp().sum()
    assert abs(float(total) - 1.0) < 1e-9


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_counts_in_order_hands_over_every_row_once_in_order(threads):
    logits, means, ls = random_params(np.random.default_rng(5), 3001, 10)
    seen = []
    buffer = np.empty((3001, mx.NUM_VALUES))
    got = np.empty((3001, mx.NUM_VALUES))

    def consume(lo, hi, counts):
        seen.append((lo, hi))
        got[lo:hi] = counts

    mx.counts_in_order(logits, means, ls, TABLES, consume, out=buffer, chunks=7, threads=threads)
    assert seen[0][0] == 0 and seen[-1][1] == 3001
    assert all(a[1] == b[0] for a, b in zip(seen, seen[1:]))
    assert np.array_equal(got, mx.counts_reference(logits, means, ls, TABLES))


def test_counts_in_order_passes_on_the_consumers_error():
    logits, means, ls = random_params(np.random.default_rng(6), 2000, 10)

    def consume(lo, hi, counts):
        if lo > 0:
            raise RuntimeError("stop")

    with pytest.raises(RuntimeError, match="stop"):
        mx.counts_in_order(logits, means, ls, TABLES, consume, out=np.empty((2000, mx.NUM_VALUES)), threads=2)
