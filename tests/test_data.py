"""Staged datasets: names resolve under NELLOC_DATA; images shrink by block means."""

from pathlib import Path

import numpy as np
import pytest

from nelloc import data


def test_a_name_resolves_under_nelloc_data(monkeypatch, tmp_path):
    monkeypatch.setenv("NELLOC_DATA", str(tmp_path))
    assert data.resolve("kodak") == tmp_path / "kodak"
    assert data.resolve("some/folder") == Path("some/folder")
    with pytest.raises(FileNotFoundError, match="NELLOC_DATA"):
        data.load_images("kodak")


@pytest.mark.parametrize("shape", [(6, 9), (6, 9, 3)])
def test_downscale_takes_rounded_block_means(shape):
    """Block means rounded half up; the partial last row and column of blocks is dropped."""
    img = np.random.default_rng(0).integers(0, 256, (shape[0] + 2, shape[1] + 1) + shape[2:], dtype=np.uint8)
    small = data.downscale(img, 3)
    assert small.shape == (2, 3) + shape[2:] and small.dtype == np.uint8
    means = img[:6, :9].reshape(2, 3, 3, 3, *shape[2:]).astype(np.float64).mean(axis=(1, 3))
    np.testing.assert_array_equal(small, np.floor(means + 0.5))
    assert data.downscale(img, 1) is img


def test_downscale_refuses_an_image_smaller_than_the_factor():
    with pytest.raises(ValueError, match="smaller than the downscale factor"):
        data.downscale(np.zeros((2, 5), np.uint8), 3)
