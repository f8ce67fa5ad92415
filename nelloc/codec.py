"""Planes of pixels <-> range-coded payloads, with the exact model and the wavefront schedule.

Encoding is one batched pass: the network runs over every pixel at once (in chunks), then the
symbols are coded in the schedule's order.  Decoding advances every tile along the wavefront, one
batched network call per step, then decodes channel 0, 1, 2 of the step's pixels in turn.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import constriction
import torch

from nelloc import mixture as mx
from nelloc.errors import BadStreamError
from nelloc.exact import ExactModel, coupled_means
from nelloc.schedule import CENTRE, TileGrid, gather

DEFAULT_TILE = 64
ENCODE_CHUNK = 1 << 15  # pixels per network call / coder call when encoding


def _categorical():
    return constriction.stream.model.Categorical(perfect=False)


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("CUDA was requested but is not available")
    return dev


def _network(model: ExactModel, canvas: torch.Tensor, cells: np.ndarray, grid: TileGrid) -> dict[str, np.ndarray]:
    offsets = torch.from_numpy(grid.neighbour_offsets).to(canvas.device)
    x = gather(canvas, torch.from_numpy(cells).to(canvas.device), offsets)
    return model.split(model.forward(x).cpu().numpy())


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
    for c in range(c_total):
        sel = ch == c
        sub = {k: v[px[sel]] for k, v in params.items()}
        means[sel] = coupled_means(sub, c, values[px[sel], :c])
        lsi[sel] = sub["logscale_idx"][:, c, :]
    return mx.counts(params["logits"][px], means, lsi, model.tables)


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


def _coded_chunks(model: ExactModel, pixels: np.ndarray, tile: int, device: str | torch.device):
    """Yield (symbols, counts) in stream order, a group of wavefront steps at a time.

    The network runs only on the group's pixels, so memory stays bounded for any image size.
    """
    h, w, c = pixels.shape
    if c != model.cfg.channels:
        raise ValueError(f"model codes {model.cfg.channels}-channel planes, got {c}")
    grid = TileGrid(h, w, tile, model.cfg.horizon, c)
    canvas = grid.full_canvas(pixels, resolve_device(device))
    cells, pix, bounds = grid.order
    values = pixels.reshape(-1, c)[pix].astype(np.int32)  # stream order
    for start, stop in _step_groups(bounds, ENCODE_CHUNK):
        lo, hi = bounds[start], bounds[stop]
        params = _network(model, canvas, cells[lo:hi], grid)
        px, ch = _symbol_order(bounds - lo, c, start, stop)
        yield values[lo:hi][px, ch], _counts_for(model, params, values[lo:hi], px, ch)


def _encode_threads(pixels: np.ndarray) -> int:
    """Small images encode faster on one torch thread (no fork/join per tiny matmul)."""
    return 1 if pixels.shape[0] * pixels.shape[1] < SMALL_IMAGE else torch.get_num_threads()


def encode_plane(model: ExactModel, pixels: np.ndarray, tile: int = DEFAULT_TILE, device: str | torch.device = "cpu") -> bytes:
    """(H, W, C) uint8 with C == model channels -> payload bytes."""
    encoder = constriction.stream.queue.RangeEncoder()
    with _torch_threads(_encode_threads(pixels)):
        for symbols, counts in _coded_chunks(model, pixels, tile, device):
            encoder.encode(symbols, _categorical(), counts)
    return encoder.get_compressed().astype("<u4").tobytes()


def plane_code_length(model: ExactModel, pixels: np.ndarray, tile: int = DEFAULT_TILE, device: str | torch.device = "cpu") -> float:
    """Exact ideal code length in bits of a plane (what the coder achieves, to within ~32 bits)."""
    with _torch_threads(_encode_threads(pixels)):
        return sum(mx.code_length_bits(c, s) for s, c in _coded_chunks(model, pixels, tile, device))


SMALL_STEP = 1024  # below this many pixels per step on average, decode with one torch thread


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
    grid = TileGrid(height, width, tile, model.cfg.horizon, model.cfg.channels)
    small = height * width < SMALL_STEP * grid.num_steps
    with _torch_threads(1 if small else torch.get_num_threads()):
        return _decode_plane(model, payload, grid, device, progress)


def _decode_plane(model: ExactModel, payload: bytes, grid: TileGrid, device, progress) -> np.ndarray:
    height, width = grid.height, grid.width
    if len(payload) % 4:
        raise BadStreamError("corrupted stream: payload length is not a multiple of 4")
    dev = resolve_device(device)
    c_total = model.cfg.channels
    canvas = grid.empty_canvas(dev)
    flat = canvas.view(-1, c_total + 1)
    cells, pix, bounds = grid.order
    words = np.frombuffer(payload, dtype="<u4").astype(np.uint32)
    decoder = constriction.stream.queue.RangeDecoder(words)
    out = np.empty((len(cells), c_total), np.int32)
    for s in range(grid.num_steps):
        rows = slice(bounds[s], bounds[s + 1])
        if rows.start == rows.stop:
            continue
        params = _network(model, canvas, cells[rows], grid)
        values = np.empty((rows.stop - rows.start, c_total), np.int32)
        for c in range(c_total):
            means = coupled_means(params, c, values[:, :c])
            counts = mx.counts(params["logits"], means, params["logscale_idx"][:, c, :], model.tables)
            try:
                values[:, c] = decoder.decode(_categorical(), counts)
            except (ValueError, RuntimeError, OverflowError, AssertionError) as exc:  # constriction asserts
                raise BadStreamError(f"corrupted stream: range decoder failed ({exc})") from exc
        out[rows] = values
        if progress is not None:
            progress(rows.stop - rows.start)
        idx = torch.from_numpy(cells[rows]).to(dev)
        flat[idx, :c_total] = torch.from_numpy(values.astype(np.float32) - CENTRE).to(dev)
    image = np.empty((height * width, c_total), np.uint8)
    image[pix] = out
    return image.reshape(height, width, c_total)


def likelihood_bits(image, *, model: str | None = None) -> float | None:
    """Code length in bits the shipped *float* model assigns to an image's colour / grey planes
    (None if the model has no float weights).  The gap to the file size is the cost of exactness."""
    from nelloc import zoo

    arr = np.asarray(image)
    arr = arr[..., None] if arr.ndim == 2 else arr
    channels = 3 if arr.shape[2] >= 3 else 1
    fm = zoo.load_float(model or zoo.default_model(channels))
    if fm is None:
        return None
    x = torch.from_numpy(np.array(arr[..., :channels])).permute(2, 0, 1)[None].float()
    with torch.no_grad():
        return float(fm.bits(x))
