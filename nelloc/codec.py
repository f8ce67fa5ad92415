"""Planes of pixels <-> range-coded payloads, with the exact model and the wavefront schedule.

Encoding is one batched pass: the network runs over every pixel at once (in chunks), then the
symbols are coded in the schedule's order, after the per-block log-scale offsets (``nelloc.adapt``)
if the encoder finds that they pay.  Before that, a large plane may get its own bias of the model's
last two layers (``adapt.fit_bias``; the segment header carries it, the decoder applies it).
Decoding advances every tile along the wavefront, one batched network call per step, then decodes
channel 0, 1, 2 of the step's pixels in turn.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, NamedTuple, Sequence

import numpy as np
import constriction
import torch

from nelloc import adapt
from nelloc import mixture as mx
from nelloc.errors import BadStreamError, ModelError
from nelloc.exact import ARITHMETIC, ExactModel, channel_logits, coupled_means
from nelloc.schedule import CENTRE, TileGrid, gather

DEFAULT_TILE = 96  # +0.73% over untiled on Kodak; decodes within ~2% of tile 64 there (docs/codec.md)
ENCODE_CHUNK = 1 << 13  # pixels per network call / coder call when encoding (measured on kodim23:
#   same speed as 1 << 15, peak RSS 410 instead of 850 MiB: the chunk's float64 count tables)


def _categorical():
    return constriction.stream.model.Categorical(perfect=False)


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("CUDA was requested but is not available")
    return dev


def _network(model: ExactModel, canvas: torch.Tensor, cells: np.ndarray, grid: TileGrid, arithmetic: int,
             parts: int = 1) -> dict[str, np.ndarray]:
    offsets = torch.from_numpy(grid.neighbour_offsets).to(canvas.device)
    x = gather(canvas, torch.from_numpy(cells).to(canvas.device), offsets)
    return model.split(_network_rows(model, x, arithmetic, parts).cpu().numpy())


def _symbol_order(bounds: np.ndarray, channels: int, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
    """(pixel index, channel) of every symbol of steps [start, stop), in stream order."""
    px, ch = [], []
    for s in range(start, stop):
        rows = np.arange(bounds[s], bounds[s + 1])
        for c in range(channels):
            px.append(rows)
            ch.append(np.full(len(rows), c))
    if not px:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(px), np.concatenate(ch)


def _step_groups(bounds: np.ndarray, target: int) -> list[tuple[int, int]]:
    """Split the steps into consecutive groups of about ``target`` pixels."""
    groups, start = [], 0
    while start < len(bounds) - 1:
        stop = int(np.searchsorted(bounds, bounds[start] + target, side="right")) - 1
        stop = max(stop, start + 1)
        stop = min(stop, len(bounds) - 1)
        groups.append((start, stop))
        start = stop
    return groups


def _counts_for(model: ExactModel, params: dict[str, np.ndarray], values: np.ndarray, px: np.ndarray, ch: np.ndarray) -> np.ndarray:
    """Counts for symbols (pixel px, channel ch), given the pixels' true values (encoder)."""
    c_total = model.cfg.channels
    means = np.empty((len(px), model.cfg.mixtures), np.int32)
    lsi = np.empty_like(means)
    logits = np.empty_like(means)
    for c in range(c_total):
        sel = ch == c
        sub = {k: v[px[sel]] for k, v in params.items()}
        means[sel] = coupled_means(sub, c, values[px[sel], :c], model.cfg.coeff_bits)
        lsi[sel] = sub["logscale_idx"][:, c, :]
        logits[sel] = channel_logits(sub, c, values[px[sel], :c], model.tables, model.cfg.joint, model.cfg.coeff_bits)
    return mx.counts(logits, means, lsi, model.tables)


class _torch_threads:
    """Temporarily run torch with ``n`` threads (small per-step batches are slower with more)."""

    def __init__(self, n: int) -> None:
        self.n, self.old = n, torch.get_num_threads()

    def __enter__(self) -> None:
        if self.n != self.old:
            torch.set_num_threads(self.n)

    def __exit__(self, *exc) -> None:
        if self.n != self.old:
            torch.set_num_threads(self.old)


SMALL_IMAGE = 1 << 16  # below this many pixels, encode with one torch thread


def _all_means(model: ExactModel, params: dict[str, np.ndarray], values: np.ndarray) -> np.ndarray:
    """Coupled means of every channel, given the pixels' values: (N, C, K)."""
    return np.stack([coupled_means(params, c, values[:, :c], model.cfg.coeff_bits) for c in range(model.cfg.channels)], axis=1)


def _choose_offsets(model: ExactModel, canvas: torch.Tensor, grid: TileGrid, values: np.ndarray,
                    planes: int, block: int, parts: int, params: dict[str, np.ndarray] | None = None) -> list[np.ndarray | None]:
    """Each plane's log-scale offsets (blocks, C), estimated from a sample of its pixels, or None
    where they would not pay for themselves.

    ``canvas`` holds the planes' tiles one plane after another; ``values`` their pixels in
    stream order, plane after plane."""
    cells, pix, _ = grid.order
    rows = adapt.sample_rows(len(cells))
    size = int(np.prod(grid.canvas_shape[:3]))
    plane = np.repeat(np.arange(planes), len(rows))
    all_cells = (cells[rows][None, :] + size * np.arange(planes)[:, None]).ravel()
    if params is not None:  # every pixel's outputs, already computed (plane after plane): take the sample's
        picked = (rows[None, :] + len(cells) * np.arange(planes)[:, None]).ravel()
        params = {k: v[picked] for k, v in params.items()}
    else:
        chunks = [_network(model, canvas, all_cells[a : a + ENCODE_CHUNK], grid, ARITHMETIC, parts)
                  for a in range(0, len(all_cells), ENCODE_CHUNK)]
        params = {k: np.concatenate([p[k] for p in chunks]) for k in chunks[0]}
    vals = values.reshape(planes, len(cells), -1)[:, rows].reshape(len(all_cells), -1)
    nblocks = adapt.num_blocks(grid.height, grid.width, block)
    blocks = np.tile(adapt.block_of_pixel(pix[rows], grid.width, block), planes) + plane * nblocks
    offsets, saving = adapt.choose_offsets(params, _all_means(model, params, vals), vals, blocks, planes * nblocks,
                                           len(cells) / len(rows))
    offsets, saving = offsets.reshape(planes, nblocks, -1), saving.reshape(planes, nblocks).sum(axis=1)
    return [off if adapt.worth_it(gain, block) else None for off, gain in zip(offsets, saving)]


def _offset_symbols(offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(symbols, counts) of one plane's offsets (blocks, C), block by block, channels in turn."""
    symbols = offsets.ravel().astype(np.int32) + adapt.SYMBOL_BIAS
    return symbols, np.tile(adapt.offset_counts(), (len(symbols), 1))


def _coded_chunks(model: ExactModel, pixels: np.ndarray, tile: int, device: str | torch.device, block: int = 0,
                  used: list | None = None, effort: int = 1, biases: list | None = None):
    """Yield (symbols, counts) in stream order: the log-scale offsets (if ``block`` and they pay
    for themselves; the block size the stream uses, 0 or ``block``, is appended to ``used``), then
    the pixels a group of wavefront steps at a time.  Where ``effort`` fits a bias (``adapt.EFFORTS``;
    1: none), the symbols are those of the model with the plane's bias (``_choose_bias``; the bias
    or None is appended to ``biases``).

    The network runs only on the group's pixels, so memory stays bounded for any image size.
    """
    h, w, c = pixels.shape
    if c != model.cfg.channels:
        raise ValueError(f"model codes {model.cfg.channels}-channel planes, got {c}")
    parts = _split_parts(resolve_device(device))
    grid = TileGrid(h, w, tile, model.cfg.horizon, c)
    bias = _choose_bias(model, grid, pixels, effort)  # before the canvas: less memory
    if bias is not None:
        try:
            model = model.with_bias(bias)
        except ModelError:  # beyond the model's exactness budget: code with the model as it is
            bias = None
    if biases is not None:
        biases.append(bias)
    canvas = grid.full_canvas(pixels, resolve_device(device))
    cells, pix, bounds = grid.order
    values = pixels.reshape(-1, c)[pix].astype(np.int32)  # stream order
    offsets = None
    if block:
        with _torch_threads(1 if parts > 1 else torch.get_num_threads()):
            offsets = _choose_offsets(model, canvas, grid, values, 1, block, parts)[0]
    if used is not None:
        used.append(block if offsets is not None else 0)
    if offsets is not None:
        yield _offset_symbols(offsets)
        row_blocks = adapt.block_of_pixel(pix, w, block)
    for start, stop in _step_groups(bounds, ENCODE_CHUNK):
        lo, hi = bounds[start], bounds[stop]
        with _torch_threads(1 if parts > 1 else torch.get_num_threads()):
            params = _network(model, canvas, cells[lo:hi], grid, ARITHMETIC, parts)
        if offsets is not None:
            adapt.shift_log_scales(params, offsets[row_blocks[lo:hi]])
        px, ch = _symbol_order(bounds - lo, c, start, stop)
        yield values[lo:hi][px, ch], _counts_for(model, params, values[lo:hi], px, ch)


class CodedPlane(NamedTuple):
    """One plane's payload and the side information its segment header carries."""

    payload: bytes
    block: int = 0  # side of the squares with their own log-scale offsets (0: none)
    bias: tuple[int, ...] | None = None  # per-image bias of the last layers (None: the model as shipped)


def _on_cpu(model: ExactModel) -> ExactModel:
    """``model`` itself if it is on the CPU, else a CPU copy (for the encoder's float estimates)."""
    return model if model.device == torch.device("cpu") else ExactModel(model.tensors, model.cfg, model.name)


def _choose_bias(model: ExactModel, grid: TileGrid, pixels: np.ndarray, effort: int) -> np.ndarray | None:
    """The plane's bias (``adapt.fit_bias`` at ``effort``), or None where it would not pay."""
    n = grid.height * grid.width
    plan = adapt.bias_effort(n, effort)
    if plan is None:
        return None
    # The fit is float arithmetic: on the CPU with one thread, whatever the device and thread count,
    # so that they never change the file (its inputs, the network's integers, are exact anywhere).
    fit_model = _on_cpu(model)
    steps, sample = plan
    index = adapt.bias_sample_rows(n, sample)
    x = grid.neighbourhoods(pixels, index)
    with _torch_threads(1):
        bias, saving = adapt.fit_bias(fit_model, x, pixels.reshape(n, -1)[index], n / len(index), steps)
    return bias if saving > adapt.MARGIN_BITS and bias.any() else None


def choose_model(models: Sequence[ExactModel], pixels: np.ndarray, tile: int = DEFAULT_TILE) -> int:
    """Index of the model that codes the plane (H, W, C) in the fewest bits, as estimated from the
    float code length of up to 8,192 sampled pixels (``adapt.bias_sample_rows``; all of a smaller
    plane) without offsets or bias; the first on a tie.  On the CPU with one thread, like the bias
    fit, so the choice (which the file records as its model id) never depends on device or threads."""
    if len(models) == 1:
        return 0
    h, w, c = pixels.shape
    index = adapt.bias_sample_rows(h * w)
    values = torch.from_numpy(pixels.reshape(h * w, c)[index].astype(np.float32))
    estimates, neighbourhoods = [], {}
    with _torch_threads(1), torch.no_grad():
        for model in map(_on_cpu, models):
            horizon = model.cfg.horizon
            if horizon not in neighbourhoods:  # the same for every model of this horizon
                neighbourhoods[horizon] = TileGrid(h, w, tile, horizon, c).neighbourhoods(pixels, index)
            x = neighbourhoods[horizon]
            lo, hi = (torch.from_numpy(b.astype(np.float32)) for b in model.output_bounds())
            pre = model.tail(*model.tail_inputs(x))
            estimates.append(float(adapt.surrogate_bits(pre, lo, hi, values, model.cfg.mixtures, model.cfg.coeff_bits)))
    return int(np.argmin(estimates))


def _encode_threads(pixels: int) -> int:
    """Small images encode faster on one torch thread (no fork/join per tiny matmul)."""
    return 1 if pixels < SMALL_IMAGE else torch.get_num_threads()


def encode_plane(model: ExactModel, pixels: np.ndarray, tile: int = DEFAULT_TILE, device: str | torch.device = "cpu") -> bytes:
    """(H, W, C) uint8 with C == model channels -> payload bytes (no log-scale offsets, no bias)."""
    return _encode_one(model, pixels, tile, device, 0).payload


def _encode_one(model: ExactModel, pixels: np.ndarray, tile: int, device, block: int, effort: int = 1) -> CodedPlane:
    encoder = constriction.stream.queue.RangeEncoder()
    used: list[int] = []
    biases: list[np.ndarray | None] = []
    with _torch_threads(_encode_threads(pixels.shape[0] * pixels.shape[1])):
        for symbols, counts in _coded_chunks(model, pixels, tile, device, block, used, effort, biases):
            encoder.encode(symbols, _categorical(), counts)
    bias = biases[0]
    return CodedPlane(encoder.get_compressed().astype("<u4").tobytes(), used[0],
                      None if bias is None else tuple(int(v) for v in bias))


def _small_batches(planes: Sequence[np.ndarray], tile: int) -> dict[tuple, list[list[int]]]:
    """Indices of the small planes, grouped by geometry into batches of about ENCODE_CHUNK pixels."""
    batches: dict[tuple, list[list[int]]] = {}
    for i, p in enumerate(planes):
        h, w = p.shape[:2]
        if h * w > ENCODE_CHUNK:
            continue
        groups = batches.setdefault((h, w), [[]])
        if groups[-1] and (len(groups[-1]) + 1) * h * w > ENCODE_CHUNK:
            groups.append([])
        groups[-1].append(i)
    return batches


def _encode_small(model: ExactModel, planes: list[np.ndarray], tile: int, device, block: int = 0) -> list[CodedPlane]:
    """Same-size small planes in one network call and one CDF call; one stream each."""
    h, w, c = planes[0].shape
    grid = TileGrid(h, w, tile, model.cfg.horizon, c)
    dev = resolve_device(device)
    canvas = torch.cat([grid.full_canvas(p, dev) for p in planes])
    cells, pix, bounds = grid.order
    size = int(np.prod(grid.canvas_shape[:3]))
    n = len(cells)
    all_cells = (cells[None, :] + size * np.arange(len(planes))[:, None]).ravel()
    params = _network(model, canvas, all_cells, grid, ARITHMETIC)
    values = np.concatenate([p.reshape(-1, c)[pix] for p in planes]).astype(np.int32)
    offsets = [None] * len(planes)
    if block:
        offsets = _choose_offsets(model, canvas, grid, values, len(planes), block, 1, params)
        if any(off is not None for off in offsets):
            nblocks = adapt.num_blocks(h, w, block)
            table = np.stack([np.zeros((nblocks, c), np.int32) if off is None else off for off in offsets])
            row_blocks = np.tile(adapt.block_of_pixel(pix, w, block), len(planes))
            plane_of_row = np.repeat(np.arange(len(planes)), n)
            adapt.shift_log_scales(params, table[plane_of_row, row_blocks])
    px, ch = _symbol_order(bounds, c, 0, grid.num_steps)
    all_px = (px[None, :] + n * np.arange(len(planes))[:, None]).ravel()
    all_ch = np.tile(ch, len(planes))
    counts = _counts_for(model, params, values, all_px, all_ch)
    symbols = values[all_px, all_ch]
    out = []
    for i in range(len(planes)):
        part = slice(i * len(px), (i + 1) * len(px))
        encoder = constriction.stream.queue.RangeEncoder()
        if offsets[i] is not None:
            off_symbols, off_counts = _offset_symbols(offsets[i])
            encoder.encode(off_symbols, _categorical(), off_counts)
        encoder.encode(symbols[part], _categorical(), counts[part])
        out.append(CodedPlane(encoder.get_compressed().astype("<u4").tobytes(), 0 if offsets[i] is None else block))
    return out


def encode_planes(
    model: ExactModel, planes: Sequence[np.ndarray], tile: int = DEFAULT_TILE, device: str | torch.device = "cpu"
) -> list[bytes]:
    """Several (H, W, C) planes -> their payloads, identical to ``encode_plane`` on each.

    Small planes of the same size share network and CDF calls (e.g. a folder of thumbnails).
    """
    return [coded.payload for coded in encode_segments(model, planes, tile, device, 0)]


def encode_segments(
    model: ExactModel, planes: Sequence[np.ndarray], tile: int = DEFAULT_TILE, device: str | torch.device = "cpu",
    block: int = 0,
    effort: int = 1,
) -> list[CodedPlane]:
    """Several (H, W, C) planes -> their payloads and side information.  ``block``: side of the
    squares that get their own log-scale offsets (``nelloc.adapt``); a plane where the encoder
    estimates they would not pay for themselves is coded without (block size 0), like ``block = 0``.
    ``effort`` (``adapt.EFFORTS``): from 2 on, fit a per-image bias (``adapt.fit_bias``, longer at 3
    and 4) to every plane of at least ``adapt.BIAS_MIN_PIXELS`` pixels, kept where it pays for its
    header bytes; 1: none.

    Small planes of the same size share network and CDF calls (e.g. a folder of thumbnails).
    """
    adapt.check_effort(effort)
    payloads: list[CodedPlane | None] = [None] * len(planes)
    for groups in _small_batches(planes, tile).values():
        for group in groups:
            with _torch_threads(_encode_threads(sum(planes[i].shape[0] * planes[i].shape[1] for i in group))):
                coded = _encode_small(model, [planes[i] for i in group], tile, device, block)
            for i, data in zip(group, coded):
                payloads[i] = data
    for i, p in enumerate(planes):
        if payloads[i] is None:
            payloads[i] = _encode_one(model, p, tile, device, block, effort)
    return payloads


def plane_code_length(model: ExactModel, pixels: np.ndarray, tile: int = DEFAULT_TILE, device: str | torch.device = "cpu",
                      block: int = 0, effort: int = 1) -> float:
    """Exact ideal code length in bits of a plane (what the coder achieves, to within ~32 bits),
    the log-scale offsets included (the bias's header bytes are not)."""
    with _torch_threads(_encode_threads(pixels.shape[0] * pixels.shape[1])):
        chunks = _coded_chunks(model, pixels, tile, device, block, effort=effort)
        return sum(mx.code_length_bits(c, s) for s, c in chunks)


SMALL_STEP = 96  # below this many pixels per step on average, decode with one torch thread (as fast
#   or faster up to ~50 pixels per step; two threads win from ~100: docs/codec.md)


@dataclass(frozen=True)
class PlaneJob:
    """One coded plane to decode: its payload and the geometry from its header."""

    payload: bytes
    height: int
    width: int
    tile: int
    block: int = 0  # side of the squares with their own log-scale offsets (0: none)


class _Stack:
    """Planes of one geometry decoded side by side: their canvases stacked like extra tiles."""

    def __init__(self, grid: TileGrid, members: list[int], dev: torch.device,
                 offsets: np.ndarray | None = None, block: int = 0) -> None:
        self.grid, self.members = grid, members
        self.canvas = torch.cat([grid.empty_canvas(dev)] * len(members))
        self.flat = self.canvas.view(-1, grid.channels + 1)
        self.cells, self.pix, self.bounds = grid.order
        size = int(np.prod(grid.canvas_shape[:3]))
        self.base = size * np.arange(len(members))[:, None]
        self.offsets = torch.from_numpy(grid.neighbour_offsets).to(dev)
        self.out = np.zeros((len(members), len(self.cells), grid.channels), np.int32)
        self.scale_offsets = offsets  # (members, blocks, C) log-scale offsets, or None
        self.row_blocks = adapt.block_of_pixel(self.pix, grid.width, block) if offsets is not None else None

    def row_offsets(self, lo: int, hi: int) -> np.ndarray:
        """The offsets of the rows of stream positions [lo, hi) of every member: (members * (hi - lo), C)."""
        if self.scale_offsets is None:
            return np.zeros((len(self.members) * (hi - lo), self.grid.channels), np.int32)
        return self.scale_offsets[:, self.row_blocks[lo:hi]].reshape(-1, self.grid.channels)

    def step_cells(self, s: int) -> tuple[int, int, np.ndarray]:
        """(first, last) stream position of step ``s`` in one plane, and the cells of all planes."""
        if s >= self.grid.num_steps:
            return 0, 0, np.zeros(0, np.int64)
        lo, hi = int(self.bounds[s]), int(self.bounds[s + 1])
        return lo, hi, (self.cells[lo:hi][None, :] + self.base).ravel()


def decode_planes(
    model: ExactModel,
    jobs: Sequence[PlaneJob],
    device: str | torch.device = "cpu",
    progress: Callable[[int], None] | None = None,
    arithmetic: int = ARITHMETIC,
) -> list[np.ndarray | BadStreamError]:
    """Decode several planes in one wavefront: each step is one network call over every tile of
    every plane.  Returns (H, W, C) uint8 arrays, or a ``BadStreamError`` for a plane whose stream
    is invalid (the others are unaffected).  ``arithmetic``: the network arithmetic the streams
    were made with (it follows the container's format version)."""
    c_total = model.cfg.channels
    errors: list[BadStreamError | None] = [None] * len(jobs)
    decoders = []
    for i, job in enumerate(jobs):
        if len(job.payload) % 4:
            errors[i] = BadStreamError("corrupted stream: payload length is not a multiple of 4")
        words = np.frombuffer(job.payload[: len(job.payload) // 4 * 4], dtype="<u4").astype(np.uint32)
        decoders.append(constriction.stream.queue.RangeDecoder(words))
    offsets: list[np.ndarray | None] = []
    for i, job in enumerate(jobs):
        off = _decode_offsets(decoders[i], job, c_total) if job.block and errors[i] is None else None
        if isinstance(off, BadStreamError):
            errors[i] = off
        if job.block and not isinstance(off, np.ndarray):  # a failed plane still takes its place in the batch
            off = np.zeros((adapt.num_blocks(job.height, job.width, job.block), c_total), np.int32)
        offsets.append(off)
    dev = resolve_device(device)
    geometry: dict[tuple[int, int, int, int], list[int]] = {}
    for i, job in enumerate(jobs):
        geometry.setdefault((job.height, job.width, job.tile, job.block), []).append(i)
    stacks = [_Stack(TileGrid(h, w, t, model.cfg.horizon, c_total), members, dev,
                     np.stack([offsets[i] for i in members]) if b else None, b)
              for (h, w, t, b), members in geometry.items()]
    num_steps = max((st.grid.num_steps for st in stacks), default=0)
    pixels = sum(job.height * job.width for job in jobs)
    small_steps = pixels < SMALL_STEP * max(num_steps, 1)
    parts = 1 if small_steps else _split_parts(dev)
    with _torch_threads(1 if small_steps or parts > 1 else torch.get_num_threads()):
        scratch = _StepScratch(parts)
        for s in range(num_steps):
            _decode_step(model, stacks, s, decoders, errors, dev, progress, arithmetic, scratch)
    results: list[np.ndarray | BadStreamError] = [None] * len(jobs)  # type: ignore[list-item]
    for st in stacks:
        for k, i in enumerate(st.members):
            job = jobs[i]
            image = np.empty((job.height * job.width, c_total), np.uint8)
            image[st.pix] = st.out[k]
            results[i] = errors[i] or image.reshape(job.height, job.width, c_total)
    return results


def _decode_offsets(decoder, job: PlaneJob, channels: int) -> np.ndarray | BadStreamError:
    """A plane's log-scale offsets (blocks, C) from the start of its stream."""
    n = adapt.num_blocks(job.height, job.width, job.block) * channels
    try:
        symbols = decoder.decode(_categorical(), np.tile(adapt.offset_counts(), (n, 1)))
    except (ValueError, RuntimeError, OverflowError, AssertionError) as exc:
        return BadStreamError(f"corrupted stream: range decoder failed ({exc})")
    offsets = np.asarray(symbols, np.int32) - adapt.SYMBOL_BIAS
    if offsets.size and (offsets.min() < adapt.OFFSET_MIN or offsets.max() > adapt.OFFSET_MAX):
        return BadStreamError("corrupted stream: log-scale offset out of range")
    return offsets.reshape(-1, channels)


class _StepScratch:
    """What one decode reuses across wavefront steps.

    ``rows(n)``: a float64 buffer for the counts of a step (each channel's counts are consumed by
    the range decoders before the next channel's are built; a fresh array per step would cost its
    page faults every time).  ``forward_parts``: threads that share each step's network call on the CPU (with
    torch single-threaded: torch's OpenMP workers otherwise keep spinning on the other core after
    each call, and the CDF kernel's second thread then gets little of it)."""

    def __init__(self, forward_parts: int = 1) -> None:
        self.buf = np.empty((0, mx.NUM_VALUES), np.float64)
        self.forward_parts = forward_parts

    def rows(self, n: int) -> np.ndarray:
        if len(self.buf) < n:
            self.buf = np.empty((n, mx.NUM_VALUES), np.float64)
        return self.buf


SPLIT_FORWARD = True  # CPU decode: share each step's network call among threads (see _StepScratch)
MIN_SPLIT_ROWS = 64  # below this many rows per thread a step's network call stays in one thread


def _split_parts(dev: torch.device) -> int:
    """Threads to share a network call among ourselves (1: leave the threading to torch)."""
    threads = min(torch.get_num_threads(), mx.default_threads())
    return threads if SPLIT_FORWARD and dev.type == "cpu" and threads > 1 else 1


def _network_rows(model: ExactModel, x: torch.Tensor, arithmetic: int, parts: int) -> torch.Tensor:
    """``model.forward`` with the rows shared among ``parts`` threads (rows are independent and the
    arithmetic is exact for any batch, so the result is the same)."""
    if parts <= 1 or len(x) < parts * MIN_SPLIT_ROWS:
        return model.forward(x, arithmetic)
    bounds = [len(x) * i // parts for i in range(parts + 1)]
    pool = mx.thread_pool()
    jobs = [pool.submit(model.forward, x[a:b], arithmetic) for a, b in zip(bounds[1:-1], bounds[2:])]
    first = model.forward(x[: bounds[1]], arithmetic)
    return torch.cat([first] + [job.result() for job in jobs])


def _decode_step(model, stacks, s, decoders, errors, dev, progress, arithmetic, scratch: _StepScratch) -> None:
    c_total = model.cfg.channels
    blocks, xs = [], []
    for st in stacks:
        lo, hi, cells = st.step_cells(s)
        if hi > lo:
            cells = torch.from_numpy(cells).to(dev)
            blocks.append((st, lo, hi, cells))
            xs.append(gather(st.canvas, cells, st.offsets))
    if not blocks:
        return
    params = model.split(_network_rows(model, torch.cat(xs), arithmetic, scratch.forward_parts).cpu().numpy())
    if any(st.scale_offsets is not None for st, *_ in blocks):
        adapt.shift_log_scales(params, np.concatenate([st.row_offsets(lo, hi) for st, lo, hi, _ in blocks]))
    values = np.zeros((len(params["logits"]), c_total), np.int32)
    buffer = scratch.rows(len(values))
    segments, r = [], 0  # (first row, end row, plane) in stream order
    for st, lo, hi, _ in blocks:
        for i in st.members:
            segments.append((r, r + hi - lo, i))
            r += hi - lo
    for c in range(c_total):
        means = coupled_means(params, c, values[:, :c], model.cfg.coeff_bits)
        logits = channel_logits(params, c, values[:, :c], model.tables, model.cfg.joint, model.cfg.coeff_bits)

        def decode_rows(lo: int, hi: int, counts: np.ndarray, c: int = c) -> None:
            """Range-decode channel c of rows [lo, hi): each plane's part, in stream order."""
            for a, b, i in segments:
                a, b = max(a, lo), min(b, hi)
                if a < b and errors[i] is None:
                    try:
                        values[a:b, c] = decoders[i].decode(_categorical(), counts[a - lo : b - lo])
                    except (ValueError, RuntimeError, OverflowError, AssertionError) as exc:  # constriction asserts
                        errors[i] = BadStreamError(f"corrupted stream: range decoder failed ({exc})")

        mx.counts_in_order(logits, means, params["logscale_idx"][:, c, :], model.tables, decode_rows,
                           out=buffer, threads=scratch.forward_parts if scratch.forward_parts > 1 else None)
    r = 0
    for st, lo, hi, cells in blocks:
        n = len(cells)
        block = values[r : r + n]
        st.out[:, lo:hi] = block.reshape(len(st.members), hi - lo, c_total)
        st.flat[cells, :c_total] = torch.from_numpy(block.astype(np.float32) - CENTRE).to(dev)
        r += n
    if progress is not None:
        progress(r)


def decode_plane(
    model: ExactModel,
    payload: bytes,
    height: int,
    width: int,
    tile: int,
    device: str | torch.device = "cpu",
    progress: Callable[[int], None] | None = None,
) -> np.ndarray:
    """payload -> (H, W, C) uint8.  Raises BadStreamError if the payload is not a valid stream."""
    (result,) = decode_planes(model, [PlaneJob(payload, height, width, tile)], device, progress)
    if isinstance(result, BadStreamError):
        raise result
    return result


def likelihood_bits(image, *, model: str | None = None) -> float | None:
    """Code length in bits the shipped *float* model assigns to an image's colour / grey planes
    (None if the model has no float weights).  The gap to the file size is the cost of exactness."""
    from nelloc import zoo

    arr = np.asarray(image)
    arr = arr[..., None] if arr.ndim == 2 else arr
    channels = 3 if arr.shape[2] >= 3 else 1
    fm = zoo.load_float(model or zoo.default_model(channels, arr.shape[0] * arr.shape[1]))
    if fm is None:
        return None
    x = torch.from_numpy(np.array(arr[..., :channels])).permute(2, 0, 1)[None].float()
    with torch.no_grad():
        return float(fm.bits(x))
