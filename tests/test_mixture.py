"""The integer mixture: the C kernel equals the numpy reference, counts are valid, and the float
likelihood agrees with the integer tables."""

import math

import numpy as np
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


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 300), k=st.integers(1, 12))
def test_kernel_equals_reference(seed, n, k):
    logits, means, ls = random_params(np.random.default_rng(seed), n, k)
    ref = mx.counts_reference(logits, means, ls, TABLES)
    assert np.array_equal(mx.counts(logits, means, ls, TABLES, threads=1), ref)
    assert np.array_equal(mx.counts(logits, means, ls, TABLES, threads=2), ref)


def test_extreme_parameters_equal_reference():
    cases = []
    for m in (mx.MEAN_MIN, -33, -32, 0, 31, 32, 8160, 16288, 16320, mx.MEAN_MAX):
        for s in (0, 1, NLS // 2, NLS - 1):
            cases.append(([0, mx.LOGIT_MIN, mx.LOGIT_MAX], [m, m, m], [s, s, s]))
    logits, means, ls = (np.array([c[i] for c in cases]) for i in range(3))
    assert np.array_equal(mx.counts(logits, means, ls, TABLES), mx.counts_reference(logits, means, ls, TABLES))


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
