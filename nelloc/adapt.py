"""Forward adaptation: one log-scale offset per block of pixels and channel (docs/format.md 5b).

A static model cannot tell from a 7x7 window how noisy the rest of the image is, so it is often
too sure of itself on grainy photos and too unsure on clean ones.  The encoder, which sees the
whole image, picks for every ``block x block`` square and channel an offset in 1/16 nat that it
adds to every component's log-scale there, and sends the offsets at the start of the stream (coded
with the fixed table ``offset_counts``, a few bits each).  The offsets are integers added to the
model's integer log-scales, so the arithmetic stays exact; how the encoder chooses them is not part
of the format (any choice decodes), only their values are.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from nelloc import mixture as mx
from nelloc.container import signed_varints
from nelloc.model import floor_ste, round_ste

OFFSET_MIN, OFFSET_MAX = -8, 7  # 1/16 nat (the log-scale's own unit): scales x0.61 .. x1.55
SYMBOL_BIAS = -OFFSET_MIN  # offset o is sent as the symbol o + 8 (0..15)
DEFAULT_BLOCK = 48  # Kodak-8 likelihood with the shipped rgb, measured: no offsets 3.3540, one per
#   image and channel 3.3322, blocks of 192 / 96 / 48 pixels 3.3207 / 3.3139 / 3.3063 (side
#   information not counted: ~0.002 bits per sub-pixel at 48)
SAMPLE_TARGET = 1 << 15  # the encoder estimates each block's best offset from at most this many pixels
#   (Kodak-4, block 48: 2**14 random pixels -0.91%, 2**15 -1.00%, 2**16 -1.05% against no offsets;
#   the likelihood of only the 3 heaviest components per pixel: -0.5%, the tails matter)
SMALL_SAMPLE = 256  # ... and at least this many (or all of a smaller plane)
EVAL_ROWS = 4096  # rows per float likelihood call of the search
MARGIN_BITS = 16  # a sampled estimate must beat the header byte by this much (MNIST-500: with no
#   margin 1.661 against 1.660 bits/sub-pixel without offsets: noisy estimates of tiny savings)


def offset_counts() -> np.ndarray:
    """The fixed coding table of the offsets: a 256-value row of integer counts summing to
    ``mixture.TOTAL`` (only symbols 0..15 are offsets; the others keep count 0)."""
    offsets = np.arange(OFFSET_MIN, OFFSET_MAX + 1)
    counts = np.zeros(mx.NUM_VALUES, np.int64)
    counts[offsets + SYMBOL_BIAS] = mx.TOTAL // len(offsets)
    counts[SYMBOL_BIAS] += mx.TOTAL - counts.sum()
    return counts.astype(np.float64)


def worth_it(saving_bits: float, block: int) -> bool:
    """Whether a plane's estimated saving pays for the block size in its segment header."""
    return saving_bits > 8 * (1 + (block.bit_length() - 1) // 7) + MARGIN_BITS


def offset_bits() -> np.ndarray:
    """Code length in bits of each offset OFFSET_MIN..OFFSET_MAX under ``offset_counts``."""
    c = offset_counts()[SYMBOL_BIAS + OFFSET_MIN : SYMBOL_BIAS + OFFSET_MAX + 1] + 1.0
    return -np.log2(c / 2**24)


def grid_shape(height: int, width: int, block: int) -> tuple[int, int]:
    """Blocks down and across (``block`` > 0)."""
    return -(-height // block), -(-width // block)


def num_blocks(height: int, width: int, block: int) -> int:
    rows, cols = grid_shape(height, width, block)
    return rows * cols


def block_of_pixel(pixel: np.ndarray, width: int, block: int) -> np.ndarray:
    """Block index (row-major over the block grid) of image pixels given as ``y * width + x``."""
    y, x = np.divmod(np.asarray(pixel, np.int64), width)
    return (y // block) * grid_shape(1, width, block)[1] + x // block


def shift_log_scales(params: dict[str, np.ndarray], row_offsets: np.ndarray) -> None:
    """Add each row's offsets (N, C) to its log-scale indices (N, C, K), clamped to the table."""
    lsi = params["logscale_idx"].astype(np.int64) + row_offsets[:, :, None]
    params["logscale_idx"] = np.clip(lsi, 0, mx.LOGSCALE_MAX - mx.LOGSCALE_MIN).astype(np.int32)


def sample_rows(n: int) -> np.ndarray:
    """Stream positions the encoder evaluates to choose the offsets: an eighth of the pixels
    (at least SMALL_SAMPLE, at most SAMPLE_TARGET), a fixed pseudo-random sample (a regular stride
    aliases with the tiles' step order)."""
    size = min(n, SAMPLE_TARGET, max(SMALL_SAMPLE, n // 8))
    if size == n:
        return np.arange(n)
    return np.sort(np.random.default_rng(0).choice(n, size, replace=False))


def choose_offsets(
    params: dict[str, np.ndarray], means: np.ndarray, values: np.ndarray, blocks: np.ndarray, nblocks: int,
    pixels_per_sample: float = 1.0,
) -> tuple[np.ndarray, np.ndarray]:
    """The offsets (nblocks, C) that minimise the estimated code length of the sampled pixels, and
    the estimated saving in bits of each block (offsets' own cost included) against no offsets.

    ``params``: the sampled pixels' integer outputs (``ExactModel.split``); ``means``: their
    coupled means (N, C, K); ``values``: their grey levels (N, C); ``blocks``: their block index.
    The estimate is the float mixture likelihood (``mixture.log_prob``) of the sampled pixels times
    ``pixels_per_sample``, plus the offsets' own cost.  The search is coarse to fine (steps of 4,
    2, 1 around the best so far: 7 evaluations instead of 16; the cost is smooth in the offset).
    """
    n, c = values.shape
    logits = torch.from_numpy(params["logits"].astype(np.float32) * mx.LOGIT_UNIT)[:, None, :].expand(n, c, -1)
    mean_f = torch.from_numpy(means.astype(np.float32) * mx.MEAN_UNIT)
    x = torch.from_numpy(values.astype(np.float32))
    lsi = params["logscale_idx"].astype(np.int64)
    used = (np.bincount(blocks, minlength=nblocks) > 0)[:, None]
    offset_cost = offset_bits()  # indexed by offset - OFFSET_MIN

    def estimate(candidates: list[np.ndarray]) -> list[np.ndarray]:
        """Estimated bits (nblocks, C) with each candidate table of offsets (nblocks, C)."""
        row_offsets = np.stack([cand[blocks] for cand in candidates])  # (G, N, C)
        bits = np.empty(row_offsets.shape)
        for a in range(0, n, EVAL_ROWS):  # bounded temporaries (~10 MB per 4096 rows and candidate)
            b = min(n, a + EVAL_ROWS)
            shifted = np.clip(lsi[None, a:b] + row_offsets[:, a:b, :, None], 0, mx.LOGSCALE_MAX - mx.LOGSCALE_MIN)
            log_scales = torch.from_numpy((shifted + mx.LOGSCALE_MIN).astype(np.float32) * mx.LOGSCALE_UNIT)
            with torch.no_grad():
                lp = mx.log_prob(x[None, a:b].expand(len(candidates), -1, -1), logits[None, a:b], mean_f[None, a:b], log_scales)
            bits[:, a:b] = lp.numpy() / -math.log(2)
        out = []
        for j, cand in enumerate(candidates):
            per_block = np.stack([np.bincount(blocks, weights=bits[j, :, ch], minlength=nblocks) for ch in range(c)], axis=1)
            out.append(per_block * pixels_per_sample + offset_cost[cand - OFFSET_MIN] * used)
        return out

    best = np.zeros((nblocks, c), np.int64)
    (best_cost,) = estimate([best])
    plain = best_cost.sum(axis=1) - (offset_cost[-OFFSET_MIN] * used).sum(axis=1)
    for step in (4, 2, 1):
        candidates = [np.clip(best + d, OFFSET_MIN, OFFSET_MAX) for d in (-step, step)]
        for cand, cost in zip(candidates, estimate(candidates)):
            better = cost < best_cost
            best, best_cost = np.where(better, cand, best), np.where(better, cost, best_cost)
    return best.astype(np.int32), plain - best_cost.sum(axis=1)


# -- per-image bias (docs/format.md section 5c) ---------------------------------------------------
# The model's last two layers end in a constant term per output: ``head``'s feed the last hidden
# features, ``out``'s the mixture parameters (logit, mean, log-scale and colour coefficient of every
# component).  The encoder fits integer changes to those constants (228 for the colour model, 94
# for grey) to the image and sends them in the segment header: a static model trained on
# thumbnails learns the average photo; one photo is sharper, noisier, darker or more saturated.
# Why head and out: Kodak-2 likelihood of the float model with fitted biases: out alone -3.0%, head
# and out -4.7%, every layer's -4.9% (the format takes any whole layers from the end).
BIAS_SAMPLE = 1 << 12  # pixels the fit sees, and as many others that check it (fixed pseudo-random
#   samples; a smaller plane is split in two)
BIAS_STEPS = 60  # Adam steps at BIAS_RATE (in the layers' own output units)
BIAS_CHECK_EVERY = 10  # the bias kept is the best on the check sample at steps 0, 10, ..., BIAS_STEPS
BIAS_RATE = 2.0
BIAS_RATE_HEAD = 2.0
# Sizing (file sizes with offsets against offsets alone, Kodak 1, 2, 3, 11, 16, 24, stop-19 rgb; the
# fit on one thread; encoding without it takes ~2.6 s per image): 2 x 2**12 pixels, 60 steps
# -3.53% (+1.7 s); 2 x 2**13 -3.46% (+3.6 s); 2 x 2**11 -3.29% (+0.8 s); 2 x 2**12, 80 steps -3.64%
# (+2.7 s); out alone -2.60%.  Without the check sample (40 steps, 8,192 pixels, Kodak 1-3): head
# rate 1 / 2 / 4: -3.86 / -3.90 / -3.42%, but worse than out alone on some images (kodim24 -1.33 vs
# -2.14% in the run over all 24): the check sample fixed that.
BIAS_FIT_ROWS = 2048  # rows per forward/backward pass of the fit (gradients summed over passes):
#   bounds the memory the autograd graph of the mixture takes
BIAS_MIN_PIXELS = 1 << 16  # smaller planes get no bias: the fit's ~2 s would be several times their encoding
BIAS_FULL_PIXELS = 1 << 18  # below this, half the steps on half the pixels (measured on 6 Kodak crops, file
#   sizes against no bias, encode time per image without / with: 256x256: full fit -2.45%, 0.53 / 2.92 s;
#   30 steps on 2 x 2,048 pixels -1.81%, 0.90 s; 20 on 2 x 1,024 -0.97%; 128x128: full fit -2.10%, 0.19 / 2.36 s)


# The encoder's effort (``nelloc compress --effort``): the fit's (Adam steps, pixels per sample half)
# on a plane of BIAS_FULL_PIXELS or more, None for no fit.  Longer fits keep gaining because the bias
# travels at most ~BIAS_RATE per Adam step (larger rates or a decaying rate lost); more pixels let
# the check sample keep later steps.  File sizes against effort 2, rgb-photo 1c80fa1b, 4 RGB classic
# images and 4 crops of the 2 held-out CLIC images at half size, one thread (docs/codec.md):
# 120 steps -0.22% (+2.1 s per image), 200 -0.30% (+4.6 s), 400 -0.33%; 2 x 8,192 pixels and 120
# steps -0.36% (+6.8 s), 200 steps -0.48% (+12 s); 2 x 16,384 and 200 steps -0.61% (+28 s), 300 steps
# -0.69% (+45 s); 2 x 32,768 and 200 steps -0.65% (+51 s).
EFFORTS: dict[int, tuple[int, int] | None] = {1: None, 2: (BIAS_STEPS, BIAS_SAMPLE), 3: (200, 8192), 4: (300, 16384)}
DEFAULT_EFFORT = 2


def check_effort(effort: int) -> int:
    """``effort`` if it is one of ``EFFORTS``, else ValueError."""
    if isinstance(effort, bool) or effort not in EFFORTS:
        raise ValueError(f"effort must be one of {', '.join(map(str, EFFORTS))}, not {effort!r}")
    return effort


def bias_effort(n: int, effort: int = DEFAULT_EFFORT) -> tuple[int, int] | None:
    """(Adam steps, pixels per sample half) of the fit for a plane of ``n`` pixels at ``effort``
    (``EFFORTS``; smaller planes get half of both), None where that effort fits no bias."""
    level = EFFORTS[check_effort(effort)]
    if level is None or n < BIAS_MIN_PIXELS:
        return None
    steps, sample = level
    return (steps, sample) if n >= BIAS_FULL_PIXELS else (steps // 2, sample // 2)


def bias_sample_rows(n: int, sample: int = BIAS_SAMPLE) -> np.ndarray:
    """Pixels (``y * width + x``) of the fit's two samples, interleaved (even: fit, odd: check)."""
    if n <= 2 * sample:
        return np.random.default_rng(1).permutation(n)
    return np.random.default_rng(1).choice(n, 2 * sample, replace=False)


def bias_header_bits(bias: np.ndarray) -> int:
    """Bits the bias values take in a segment header (docs/format.md 5c: signed varints)."""
    return 8 * len(signed_varints(bias))


def surrogate_bits(pre: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, values: torch.Tensor, mixtures: int,
                   coeff_bits: int = 8) -> torch.Tensor:
    """Float code length in bits of pixels whose last layer's values before the floor are ``pre``
    (N, outputs): the integer outputs' floor and the colour coupling's rounding are straight-through,
    everything else as ``mixture.log_prob``."""
    out = torch.maximum(torch.minimum(floor_ste(pre), hi), lo)
    n, c = values.shape
    k = mixtures
    logits = (out[:, :k] * mx.LOGIT_UNIT)[:, None, :].expand(n, c, k)
    means = out[:, k : k + c * k].reshape(n, c, k)
    log_scales = out[:, k + c * k : k + 2 * c * k].reshape(n, c, k) * mx.LOGSCALE_UNIT
    if c == 3:  # coupled means (exact.coupled_means: coefficients in 2**-coeff_bits, values in 1/64 units)
        coeff = out[:, k + 2 * c * k :].reshape(n, 3, k)
        v = values[:, :, None] * (1.0 / mx.MEAN_UNIT)
        unit, _, _ = mx.coeff_grid(coeff_bits)
        g = means[:, 1] + round_ste(coeff[:, 0] * v[:, 0] * unit)
        b = means[:, 2] + round_ste((coeff[:, 1] * v[:, 0] + coeff[:, 2] * v[:, 1]) * unit)
        means = torch.stack([means[:, 0], g.clamp(mx.MEAN_MIN, mx.MEAN_MAX), b.clamp(mx.MEAN_MIN, mx.MEAN_MAX)], 1)
    lp = mx.log_prob(values, logits, means * mx.MEAN_UNIT, log_scales)
    return -lp.sum() / math.log(2)


def fit_bias(model, x: torch.Tensor, values: np.ndarray, pixels_per_sample: float = 1.0,
             steps: int = BIAS_STEPS) -> tuple[np.ndarray, float]:
    """The integer bias of the model's ``head`` and ``out`` layers (``ExactModel.with_bias``) that
    minimises the estimated code length, and the estimated saving in bits over the whole plane (the
    values' own header bytes included).

    ``x``: the neighbourhoods of the sampled pixels (``bias_sample_rows``, N, fan_in); ``values``:
    their grey levels (N, C); ``pixels_per_sample``: plane pixels per sampled pixel.  Adam fits the
    bias on the even rows; the odd rows pick the step to keep and estimate the saving, so a bias
    that only fits the sample's noise is not kept.  How the encoder chooses the bias is not part of
    the format: any bias within the limits decodes."""
    h, skip = model.tail_inputs(x)
    lo, hi = (torch.from_numpy(b.astype(np.float32)).to(h.device) for b in model.output_bounds())
    vals = torch.from_numpy(values.astype(np.float32)).to(h.device)
    (_, n_head), (_, n_out) = model.bias_split(model.cfg.width + model.cfg.out_channels)
    head_bias = torch.zeros(n_head, device=h.device, requires_grad=True)
    out_bias = torch.zeros(n_out, device=h.device, requires_grad=True)

    def chunks(parity: int, count: int) -> list[tuple]:
        """The passes over the rows of one ``parity`` (0: fit, 1: check), ``BIAS_FIT_ROWS`` at a time:
        ``head``'s values (the biases do not change them), skip, values."""
        out = []
        for a in range(0, count, BIAS_FIT_ROWS):
            rows = slice(2 * a + parity, 2 * min(a + BIAS_FIT_ROWS, count) + parity, 2)
            out.append((model.head_values(h[rows]), None if skip is None else skip[rows], vals[rows]))
        return out

    def bits(rows: tuple, hb, ob) -> torch.Tensor:
        head, s, v = rows
        return surrogate_bits(model.tail_after_head(head, s, hb, ob), lo, hi, v, model.cfg.mixtures,
                              model.cfg.coeff_bits)

    n_fit, checked = (len(vals) + 1) // 2, len(vals) // 2
    fits, checks = chunks(0, n_fit), chunks(1, checked)

    def check_bits(hb, ob) -> float:
        with torch.no_grad():
            return sum(float(bits(rows, hb, ob)) for rows in checks)

    opt = torch.optim.Adam([{"params": [head_bias], "lr": BIAS_RATE_HEAD}, {"params": [out_bias], "lr": BIAS_RATE}])
    plain = check_bits(0.0, 0.0)
    best, best_bits = np.zeros(n_head + n_out, np.int64), plain
    for step in range(1, steps + 1):
        opt.zero_grad()
        for rows in fits:
            (bits(rows, head_bias, out_bias) / n_fit).backward()
        opt.step()
        if step % BIAS_CHECK_EVERY == 0:
            hb, ob = torch.round(head_bias.detach()), torch.round(out_bias.detach())
            now = check_bits(hb, ob)
            if now < best_bits:
                best, best_bits = torch.cat([hb, ob]).cpu().numpy().astype(np.int64), now
    saving = (plain - best_bits) * pixels_per_sample * len(vals) / max(checked, 1)
    return best, saving - bias_header_bits(best)
