"""Tiles and wavefront: every pixel once, every dependency decoded at an earlier step."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import torch

from nelloc.schedule import TileGrid, gather


@settings(max_examples=40, deadline=None)
@given(h=st.integers(1, 40), w=st.integers(1, 40), tile=st.sampled_from([0, 1, 2, 3, 7, 16]), horizon=st.integers(1, 4))
def test_wavefront_respects_causality(h, w, tile, horizon):
    grid = TileGrid(h, w, tile, horizon, 1)
    cells, pix, bounds = grid.order
    assert sorted(pix.tolist()) == list(range(h * w))  # every pixel exactly once
    step_of_cell = np.full(int(np.prod(grid.canvas_shape[:3])), -1)
    for s in range(grid.num_steps):
        step_of_cell[cells[bounds[s] : bounds[s + 1]]] = s
    for s in range(grid.num_steps):
        here = cells[bounds[s] : bounds[s + 1]]
        deps = step_of_cell[here[:, None] + grid.neighbour_offsets[None, :]]
        # a neighbour is padding (-1) or was decoded strictly earlier
        assert ((deps == -1) | (deps < s)).all()


def test_step_count_is_wavefront_not_raster():
    grid = TileGrid(512, 768, 64, 3, 3)
    assert grid.num_steps == 64 + 4 * 63
    assert grid.num_tiles == 8 * 12
    assert TileGrid(512, 768, 0, 3, 3).num_steps == 768 + 4 * 511


@pytest.mark.parametrize("shape", [(1, 1), (1, 9), (9, 1), (2, 3)])
def test_tiny_images(shape):
    grid = TileGrid(*shape, 64, 3, 3)
    cells, pix, bounds = grid.order
    assert len(cells) == shape[0] * shape[1]
    assert bounds[-1] == len(cells)


@pytest.mark.parametrize("h, w, tile, channels", [(23, 17, 8, 3), (10, 31, 0, 1), (40, 41, 16, 3), (5, 5, 96, 1)])
def test_neighbourhoods_straight_from_the_image_equal_the_canvas_gather(h, w, tile, channels):
    pixels = np.random.default_rng(h * w).integers(0, 256, (h, w, channels), dtype=np.uint8)
    grid = TileGrid(h, w, tile, 3, channels)
    cells, pix, _ = grid.order
    gathered = gather(grid.full_canvas(pixels, torch.device("cpu")), torch.from_numpy(cells),
                      torch.from_numpy(grid.neighbour_offsets))
    direct = grid.neighbourhoods(pixels, pix)
    assert direct.dtype == gathered.dtype and torch.equal(direct, gathered)
