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
