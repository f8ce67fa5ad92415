"""Discretized logistic-uniform mixture (paper eq. 7): float likelihood and exact integer tables.

Two views of the same distribution over the 256 values of a sub-pixel:

* ``log_prob`` -- float, differentiable, for training and likelihood evaluation;
* ``counts`` -- integer frequencies summing to ``TOTAL = 2**24 - 256`` built only from integer
  arithmetic and the stored tables of a model file, for the range coder.  Every value keeps a
  count >= ``UNIFORM`` (the alpha share), so nothing is ever impossible.

Fixed-point conventions shared by the exporter (``exact.py``) and the C kernel (``_cdf.c``):

====================  ==========================  ==========================
parameter             integer unit                 range (inclusive)
====================  ==========================  ==========================
mixture logit         1/16 nat                     LOGIT_MIN..LOGIT_MAX
mean                  1/64 grey level              MEAN_MIN..MEAN_MAX
log-scale             1/16 (natural log, grey)     LOGSCALE_MIN..LOGSCALE_MAX
channel coefficient   1/256 (2**-coeff_bits)       COEFF_MIN..COEFF_MAX (``coeff_grid``)
====================  ==========================  ==========================
"""

from __future__ import annotations

import math
import os

from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

ALPHA = 1e-4
NUM_VALUES = 256

LOGIT_UNIT, LOGIT_MIN, LOGIT_MAX = 1 / 16, -2048, 2047
MEAN_UNIT, MEAN_MIN, MEAN_MAX = 1 / 64, -64 * 64, 320 * 64
LOGSCALE_UNIT, LOGSCALE_MIN, LOGSCALE_MAX = 1 / 16, -40, 96


def coeff_grid(bits: int) -> tuple[float, int, int]:
    """(unit, lo, hi) of colour coefficients in units of 2**-bits: the same range, -2..2."""
    return 2.0**-bits, -2 << bits, 2 << bits


COEFF_UNIT, COEFF_MIN, COEFF_MAX = coeff_grid(8)  # ModelConfig.coeff_bits 8: 1/256, -512, 512


CDF_BITS = 20          # each component's CDF is an integer in [0, 2**20]
WEIGHT_BITS = 12       # mixture weights are integers in [0, 2**12]
INV_SCALE_BITS = 20    # 1/s in units of 2**-20
SIG_STEPS_PER_UNIT = 64
SIG_RANGE = 16         # stored sigmoid table covers t in [-16, 16] in steps of 1/64
FINE_STEPS_PER_UNIT = 1024
FINE_RANGE = 12        # the CDF is evaluated on [-12, 12) in steps of 1/1024 (0 / 1 outside)
EXP_TABLE_SIZE = 256   # weight for logit gaps 0..255 (in 1/16 nat); larger gaps weigh 0
EXP_CUTOFF = 80        # components more than 5 nats below the best weigh 0 (< 0.7%): measured
                       # free in rate, and the kernel skips them
TOTAL = 2**24 - 256    # constriction quantises a float64 row with this sum to exactly count + 1
UNIFORM = 6            # floor of every count: (UNIFORM + 1) * 256 / 2**24 ~= ALPHA
# Joint colour models (ModelConfig.joint): channel c's logits gain the log of each component's
# integer mass at the earlier channels' values, in 1/16 nat (``log_mass``):
LOG_MANTISSA = 256     # the stored log table covers mantissas 256..511 (9 significant bits)
LOG_FIXED = 4096       # ... in units of 1/4096 nat
LN2_FIXED = 2839       # round(4096 * ln 2)
ZERO_MASS_LOGIT = -8192  # a component that gives the known value no mass at all: weight 0 for sure


# --------------------------------------------------------------------------- float model


def _log_bin_mass(x: torch.Tensor, mean: torch.Tensor, log_scale: torch.Tensor) -> torch.Tensor:
    """log P(value == x) for discretized logistics in grey-level units (x in 0..255)."""
    inv_s = torch.exp(-log_scale)
    upper = (x + 0.5 - mean) * inv_s
    lower = (x - 0.5 - mean) * inv_s
    # sigma(a) - sigma(b) = sigma(a) * sigma(-b) * (1 - exp(b - a)): stable for every a > b.
    middle = F.logsigmoid(upper) + F.logsigmoid(-lower) + torch.log(-torch.expm1(-inv_s))
    first = F.logsigmoid(upper)
    last = F.logsigmoid(-lower)
    return torch.where(x <= 0, first, torch.where(x >= 255, last, middle))


def log_prob(
    x: torch.Tensor, logits: torch.Tensor, means: torch.Tensor, log_scales: torch.Tensor
) -> torch.Tensor:
    """Natural-log probability of integer-valued ``x`` under the logistic-uniform mixture.

    ``x``: (...), values 0..255 as float; ``logits``, ``means``, ``log_scales``: (..., K) in
    grey-level units.  Returns (...).
    """
    comp = _log_bin_mass(x.unsqueeze(-1), means, log_scales)
    mix = torch.logsumexp(F.log_softmax(logits, dim=-1) + comp, dim=-1)
    uniform = torch.full_like(mix, math.log(ALPHA / NUM_VALUES))
    return torch.logaddexp(mix + math.log1p(-ALPHA), uniform)


def log_prob_joint(
    x: torch.Tensor, logits: torch.Tensor, means: torch.Tensor, log_scales: torch.Tensor
) -> torch.Tensor:
    """Like ``log_prob`` for a whole pixel, with the components shared across its channels.

    ``x``: (..., C); ``logits``: (..., K); ``means``, ``log_scales``: (..., C, K).  Channel ``c`` is
    coded with the components' posterior weights given channels ``0..c-1`` (PixelCNN++'s joint
    mixture, taken one channel at a time), so a component that explained red well also carries
    green.  Returns (..., C): the conditional log probability of each channel.
    """
    comp = _log_bin_mass(x.unsqueeze(-1), means, log_scales)  # (..., C, K)
    weights = F.log_softmax(logits, dim=-1)
    out = []
    for c in range(x.shape[-1]):
        mix = torch.logsumexp(weights + comp[..., c, :], dim=-1)
        uniform = torch.full_like(mix, math.log(ALPHA / NUM_VALUES))
        out.append(torch.logaddexp(mix + math.log1p(-ALPHA), uniform))
        weights = F.log_softmax(weights + comp[..., c, :], dim=-1)
    return torch.stack(out, dim=-1)


# --------------------------------------------------------------------------- integer tables


def build_tables() -> dict[str, np.ndarray]:
    """The lookup tables the integer CDF needs; computed once at export and stored in the model.

    Stored rather than recomputed at decode time, so that no libm difference between machines
    can ever reach a probability.
    """
    n_sig = 2 * SIG_RANGE * SIG_STEPS_PER_UNIT + 1
    t = np.arange(n_sig, dtype=np.float64) / SIG_STEPS_PER_UNIT - SIG_RANGE
    sig = np.round((1.0 / (1.0 + np.exp(-t))) * 2**CDF_BITS).astype(np.int32)
    sig[0], sig[-1] = 0, 2**CDF_BITS
    gaps = np.arange(EXP_TABLE_SIZE, dtype=np.float64) * LOGIT_UNIT
    exp = np.round(np.exp(-gaps) * 2**WEIGHT_BITS).astype(np.int32)
    exp[EXP_CUTOFF:] = 0
    ls = np.arange(LOGSCALE_MIN, LOGSCALE_MAX + 1, dtype=np.float64) * LOGSCALE_UNIT
    inv_scale = np.round(np.exp(-ls) * 2**INV_SCALE_BITS).astype(np.int32)
    return {"sigmoid": sig, "exp": exp, "inv_scale": inv_scale}


def build_log_table() -> np.ndarray:
    """round(4096 * ln(m / 512)) for mantissas m = 256..511: the only table joint models add."""
    m = np.arange(LOG_MANTISSA, 2 * LOG_MANTISSA, dtype=np.float64)
    return np.round(np.log(m / (2 * LOG_MANTISSA)) * LOG_FIXED).astype(np.int32)


def fine_sigmoid(sig: np.ndarray) -> np.ndarray:
    """The 1/1024-step table the CDF reads, interpolated from the stored 1/64-step table with
    integer arithmetic only (so it is a pure function of the model file)."""
    q = np.arange(2 * FINE_RANGE * FINE_STEPS_PER_UNIT, dtype=np.int64)
    c = (q >> 4) + (SIG_RANGE - FINE_RANGE) * SIG_STEPS_PER_UNIT
    lo, hi = sig[c].astype(np.int64), sig[c + 1].astype(np.int64)
    return (lo + (((hi - lo) * (q & 15)) >> 4)).astype(np.int32)


def _cdf_at(edges: np.ndarray, mean: np.ndarray, inv_scale: np.ndarray, fine: np.ndarray) -> np.ndarray:
    """Integer CDF of components (mean, inv_scale) at ``edges`` (1/64 grey levels), broadcast."""
    t = (edges - mean.astype(np.int64)) * inv_scale.astype(np.int64)  # 2**-26
    q = (t >> 16) + FINE_RANGE * FINE_STEPS_PER_UNIT  # index into the fine table, step 1/1024
    val = fine[np.clip(q, 0, fine.size - 1)].astype(np.int64)
    return np.where(q < 0, 0, np.where(q >= fine.size, 2**CDF_BITS, val))


def _component_cdf_ref(mean: np.ndarray, inv_scale: np.ndarray, fine: np.ndarray) -> np.ndarray:
    """Integer CDF at the 255 inner bin edges v + 1/2, v = 0..254: (..., 255) int64."""
    edges = 64 * np.arange(255, dtype=np.int64) + 32
    return _cdf_at(edges, mean[..., None], inv_scale[..., None], fine)


def _fine_table(tables: dict[str, np.ndarray]) -> np.ndarray:
    """The fine CDF table of a model's tables (derived once, cached in ``tables``)."""
    fine = tables.get("fine")
    if fine is None:
        fine = tables["fine"] = fine_sigmoid(tables["sigmoid"])
    return fine


def bin_mass(means: np.ndarray, logscale_idx: np.ndarray, values: np.ndarray, tables: dict[str, np.ndarray]) -> np.ndarray:
    """Each component's integer mass (0..2**20, its share of the counts) at ``values``.

    ``means``, ``logscale_idx``: (N, K); ``values``: (N,) grey levels.  Returns (N, K) int64: the
    differences of the same integer CDF the counts are built from."""
    fine = _fine_table(tables)
    inv = tables["inv_scale"][logscale_idx]
    v = values.astype(np.int64)[:, None]
    upper = np.where(v >= NUM_VALUES - 1, 2**CDF_BITS, _cdf_at(64 * v + 32, means, inv, fine))
    lower = np.where(v <= 0, 0, _cdf_at(64 * v - 32, means, inv, fine))
    return upper - lower


def log_mass(mass: np.ndarray, log_table: np.ndarray) -> np.ndarray:
    """ln(mass / 2**20) in 1/16 nat (rounded), integers only; ZERO_MASS_LOGIT where mass is 0.

    mass = m * 2**e with a 9-bit mantissa m (truncated: < 0.004 nat off), so
    ln(mass / 2**20) = ln(m / 512) + (bits(mass) - 20) * ln 2."""
    mass = np.asarray(mass, dtype=np.int64)
    safe = np.maximum(mass, 1)
    bits = np.frexp(safe.astype(np.float64))[1].astype(np.int64)  # bit length (frexp is exact)
    shift = bits - 9
    mant = np.where(shift >= 0, safe >> np.maximum(shift, 0), safe << np.maximum(-shift, 0))
    fixed = log_table[mant - LOG_MANTISSA].astype(np.int64) + (bits - 20) * LN2_FIXED
    return np.where(mass > 0, (fixed + 128) >> 8, ZERO_MASS_LOGIT)


def counts_reference(
    logits: np.ndarray, means: np.ndarray, logscale_idx: np.ndarray, tables: dict[str, np.ndarray]
) -> np.ndarray:
    """Pure-numpy reference of the C kernel: (N, K) int params -> (N, 256) int64 counts.

    ``logscale_idx`` is the log-scale minus LOGSCALE_MIN (an index into ``inv_scale``).
    """
    fine, exp, inv = fine_sigmoid(tables["sigmoid"]), tables["exp"], tables["inv_scale"]
    logits = logits.astype(np.int64)
    gap = np.minimum(logits.max(axis=1, keepdims=True) - logits, EXP_TABLE_SIZE)
    weight = np.where(gap < EXP_TABLE_SIZE, exp[np.minimum(gap, EXP_TABLE_SIZE - 1)], 0)
    cdf = _component_cdf_ref(means, inv[logscale_idx], fine)  # (N, K, 255)
    n, k = logits.shape
    full = np.concatenate(
        [np.zeros((n, k, 1), np.int64), cdf, np.full((n, k, 1), 2**CDF_BITS, np.int64)], axis=2
    )
    pmf = np.diff(full, axis=2)  # (N, K, 256), each row sums to 2**CDF_BITS
    mass = (weight[..., None] * pmf).sum(axis=1)
    norm = weight.sum(axis=1, keepdims=True) << CDF_BITS
    counts = mass * (TOTAL - 256 * UNIFORM) // norm + UNIFORM
    rest = TOTAL - counts.sum(axis=1)
    counts[np.arange(n), counts.argmax(axis=1)] += rest
    return counts


def code_length_bits(counts: np.ndarray, symbols: np.ndarray) -> float:
    """Exact ideal code length of ``symbols`` under integer ``counts`` (as the coder sees them)."""
    picked = counts[np.arange(len(symbols)), symbols].astype(np.float64) + 1.0
    return float(-np.log2(picked / 2**24).sum())


_POOL = None
_THREADS: int | None = None  # set_threads(); None = one per core, at most 8
MIN_ROWS_PER_THREAD = 256


_CORES = max(1, min(os.cpu_count() or 1, 8))  # os.cpu_count() costs ~25 us: not once per wavefront step


def default_threads() -> int:
    return _THREADS or _CORES


def set_threads(n: int | None) -> None:
    """Threads for the CDF kernel (None: one per core, at most 8).  Results never depend on it."""
    global _POOL, _THREADS
    if n is not None and n < 1:
        raise ValueError("threads must be >= 1")
    _THREADS = n
    if _POOL is not None:
        _POOL.shutdown(wait=True)
        _POOL = None


def thread_pool():
    """The worker threads shared by the CDF kernel and the decoder's row-split network calls."""
    return _pool()


def _pool():
    global _POOL
    if _POOL is None:
        from concurrent.futures import ThreadPoolExecutor

        _POOL = ThreadPoolExecutor(default_threads(), thread_name_prefix="nelloc-cdf")
    return _POOL


def _kernel_args(logits, means, logscale_idx, tables, out) -> tuple:
    """``build_counts``'s buffers: int32 parameters, the fine table (cached in ``tables``) and the
    first N rows of ``out`` (checked; a new array if None)."""
    n = len(logits)
    if out is None:
        out = np.empty((n, NUM_VALUES), dtype=np.float64)
    elif out.dtype != np.float64 or not out.flags.c_contiguous or out.shape[1:] != (NUM_VALUES,) or len(out) < n:
        raise ValueError("out must be a C-contiguous float64 array of at least (N, 256)")
    fine = _fine_table(tables)
    params = (np.ascontiguousarray(a, dtype=np.int32) for a in (logits, means, logscale_idx))
    return (*params, fine, tables["exp"], tables["inv_scale"], out[:n])


def counts_in_order(
    logits: np.ndarray,
    means: np.ndarray,
    logscale_idx: np.ndarray,
    tables: dict[str, np.ndarray],
    consume: Callable[[int, int, np.ndarray], None],
    out: np.ndarray,
    chunks: int = 8,
    threads: int | None = None,
) -> None:
    """``counts`` handed over in row order, chunk by chunk: ``consume(lo, hi, counts[lo:hi])`` runs
    in the calling thread as soon as chunk [lo, hi) is built, while the other threads build the
    next ones (a decoder's range decoding thus overlaps the kernel).  Between chunks the calling
    thread builds chunks itself whenever the next one is not ready.  ``out`` as in ``counts``."""
    from nelloc import _cdf

    n, k = logits.shape
    parts = max(1, min(threads or default_threads(), n // MIN_ROWS_PER_THREAD))
    if parts == 1:
        consume(0, n, counts(logits, means, logscale_idx, tables, threads=1, out=out))
        return
    args = _kernel_args(logits, means, logscale_idx, tables, out)
    chunk = -(-n // chunks)
    total = -(-n // chunk)
    counter, done = np.zeros(1, np.int64), np.zeros(total, np.uint8)
    jobs = [_pool().submit(_cdf.build_counts, *args, 0, n, k, -1, counter, chunk, done) for _ in range(parts - 1)]
    try:
        for j in range(total):
            while not _cdf.chunk_done(done, j, False):
                if _cdf.build_counts(*args, 0, n, k, -1, counter, chunk, done, 1) == 0:
                    _cdf.chunk_done(done, j, True)  # another thread is building it
            consume(j * chunk, min(n, (j + 1) * chunk), out[j * chunk : min(n, (j + 1) * chunk)])
    finally:
        for job in jobs:
            job.result()


def kernels() -> tuple[str, ...]:
    """The C kernels this CPU runs (``scalar`` everywhere; ``avx512`` on x86-64 CPUs with
    AVX-512 F/DQ/VL), slowest first."""
    from nelloc import _cdf

    return _cdf.kernels()


def _kernel_index(name: str) -> int:
    names = kernels()
    if name not in names:
        raise ValueError(f"kernel {name!r} does not run on this CPU (available: {', '.join(names)})")
    return names.index(name)


def counts(
    logits: np.ndarray,
    means: np.ndarray,
    logscale_idx: np.ndarray,
    tables: dict[str, np.ndarray],
    threads: int | None = None,
    out: np.ndarray | None = None,
    kernel: str | None = None,
) -> np.ndarray:
    """(N, K) integer params -> (N, 256) float64 integer counts (the C kernel; see the reference).

    Rows are shared among ``threads`` threads (the kernel releases the GIL; the calling thread is
    one of them), in chunks taken in turn; the result does not depend on who computes which rows.  ``out``: a C-contiguous float64 buffer
    of at least N rows to fill instead of a new array (a decoder reuses one: a fresh array per
    wavefront step costs page faults); the first N rows are returned.  ``kernel``: one of
    ``kernels()`` (default: the fastest this CPU runs); every kernel gives the same counts.
    """
    from nelloc import _cdf

    n, k = logits.shape
    args = _kernel_args(logits, means, logscale_idx, tables, out)
    out = args[-1]
    which = -1 if kernel is None else _kernel_index(kernel)
    parts = max(1, min(threads or default_threads(), n // MIN_ROWS_PER_THREAD))
    if parts == 1:
        _cdf.build_counts(*args, 0, n, k, which)
        return out
    # Chunks from a shared counter rather than fixed shares: right after a torch call, torch's
    # OpenMP workers spin for a while on the other cores, and a fixed share there would finish last.
    counter = np.zeros(1, np.int64)
    chunk = max(16, n // (8 * parts))
    jobs = [_pool().submit(_cdf.build_counts, *args, 0, n, k, which, counter, chunk) for _ in range(parts - 1)]
    _cdf.build_counts(*args, 0, n, k, which, counter, chunk)
    for job in jobs:
        job.result()
    return out
