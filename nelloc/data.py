"""Staged datasets by name (root: ``$NELLOC_DATA``, default ``../shared/data`` beside the repo)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

IMAGE_SUFFIXES = {".png", ".bmp", ".tif", ".tiff", ".ppm", ".pgm", ".webp", ".jpg", ".jpeg", ".gif"}

# name -> (relative path, kind); kind "npz" = images array, "dir" = folder of images
DATASETS = {
    "kodak": ("kodak", "dir"),
    "clic": ("clic2025_valid", "dir"),
    "classic": ("classic", "dir"),
    "cifar10-train": ("cifar10_train_subset.npz", "npz"),
    "cifar10-test": ("cifar10_test_subset.npz", "npz"),
    "mnist-train": ("mnist_train.npz", "npz"),
    "mnist-test": ("mnist_test.npz", "npz"),
    "fashion-mnist-train": ("fashion_mnist_train.npz", "npz"),
    "fashion-mnist-test": ("fashion_mnist_test.npz", "npz"),
    "omniglot": ("omniglot_background_small1.npz", "npz"),
    "omniglot2": ("omniglot_background_small2.npz", "npz"),
    "celeba": ("celeba_32x32.npz", "npz"),
    "yale": ("yale_b_cropped.npz", "npz"),
}
# never train on these
EVALUATION_SETS = {"kodak", "cifar10-test", "mnist-test", "fashion-mnist-test"}


def data_root() -> Path:
    env = os.environ.get("NELLOC_DATA")
    if env:
        return Path(env)
    return Path(__file__).resolve().parent.parent.parent / "shared" / "data"


def resolve(name_or_path: str) -> Path:
    """A staged set's path by name, or the given path."""
    if name_or_path in DATASETS:
        return data_root() / DATASETS[name_or_path][0]
    return Path(name_or_path)


def _to_mode(arr: np.ndarray, channels: int | None) -> np.ndarray:
    if channels is None:
        return arr
    if channels == 1:
        if arr.ndim == 3:
            arr = np.asarray(Image.fromarray(arr[..., :3]).convert("L"))
        return arr
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=2)
    return arr[..., :3]


def load_images(name_or_path: str, channels: int | None = None, limit: int | None = None) -> list[np.ndarray]:
    """uint8 arrays (H, W) or (H, W, 3) of a named set, a folder of images or an .npz file."""
    path = resolve(name_or_path)
    if not path.exists():
        raise FileNotFoundError(f"dataset {name_or_path!r} not found at {path} (set NELLOC_DATA)")
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)[:limit]
        out = []
        for p in files:
            with Image.open(p) as im:
                im = im.convert("L" if channels == 1 or (channels is None and im.mode in ("L", "I;16")) else "RGB")
                out.append(np.asarray(im))
        return out
    with np.load(path) as f:
        arr = f["images"][:limit]
    return [_to_mode(a, channels) for a in arr]


def downscale(img: np.ndarray, factor: int) -> np.ndarray:
    """The image shrunk by an integer factor: each output pixel is the mean of a factor x factor block,
    rounded half up; rows and columns past the last whole block are dropped."""
    if factor == 1:
        return img
    h, w = img.shape[0] // factor, img.shape[1] // factor
    if h == 0 or w == 0:
        raise ValueError(f"a {img.shape[1]}x{img.shape[0]} image is smaller than the downscale factor {factor}")
    blocks = img[: h * factor, : w * factor].reshape(h, factor, w, factor, *img.shape[2:])
    n = factor * factor
    return ((blocks.sum(axis=(1, 3), dtype=np.uint32) + n // 2) // n).astype(np.uint8)
