"""Shared fixtures: tiny committed models (fast, deterministic) and the staged data."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from nelloc.data import data_root

TEST_DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="session")
def tiny_models_dir(tmp_path_factory) -> Path:
    """A model folder where the tiny test models are installed as the defaults 'rgb' and 'gray'
    (and 'rgb-skip', a tiny model with the linear skip layer)."""
    d = tmp_path_factory.mktemp("models")
    shutil.copy(TEST_DATA / "tiny-rgb.safetensors", d / "rgb.safetensors")
    shutil.copy(TEST_DATA / "tiny-gray.safetensors", d / "gray.safetensors")
    shutil.copy(TEST_DATA / "tiny-rgb-skip.safetensors", d / "rgb-skip.safetensors")
    return d


@pytest.fixture
def tiny_models(tiny_models_dir, monkeypatch) -> Path:
    """Use the tiny models as the installed defaults for this test."""
    monkeypatch.setenv("NELLOC_MODELS", str(tiny_models_dir))
    return tiny_models_dir


@pytest.fixture(scope="session")
def staged_data() -> Path:
    root = data_root()
    if not (root / "kodak").is_dir():
        pytest.skip(f"staged datasets not found at {root} (set NELLOC_DATA)")
    return root


def smooth_image(h: int, w: int, c: int, seed: int = 0) -> np.ndarray:
    """A natural-ish test image: gradients plus noise, uint8 (H, W, C)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    base = (x * 3 + y * 2)[..., None] + rng.integers(0, 60, (1, 1, c))
    return np.clip(base + rng.normal(0, 6, (h, w, c)), 0, 255).astype(np.uint8)


@pytest.fixture
def image_folder(tmp_path) -> Path:
    """Three small smooth RGB images in a folder: a training set for tiny runs."""
    from PIL import Image

    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(3):
        Image.fromarray(smooth_image(40, 48, 3, seed=i)).save(folder / f"{i}.png")
    return folder
