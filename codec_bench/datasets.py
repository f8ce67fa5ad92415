"""Benchmark datasets: named sets under the data root, image folders, ``.npz`` files.

Images are uint8 numpy arrays of shape (H, W), (H, W, 3) or (H, W, 4).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
from PIL import Image

__all__ = ["Dataset", "NAMED_DATASETS", "data_root", "load_dataset", "load_image"]

REPO_ROOT = Path(__file__).resolve().parents[1]

#: dataset name -> path relative to the data root (folder of PNGs or .npz file)
NAMED_DATASETS: dict[str, str] = {
    "kodak": "kodak",
    "clic": "clic2025_valid",
    "classic": "classic",
    "cifar10-test": "cifar10_test_subset.npz",
    "mnist-test": "mnist_test.npz",
    "fashion-mnist-test": "fashion_mnist_test.npz",
    "omniglot": "omniglot_background_small1.npz",
    "celeba32": "celeba_32x32.npz",
}

#: grey versions of colour sets, converted as Pillow's "L" (ITU-R 601-2 luma): natural grey photos
GREY_DATASETS: dict[str, str] = {"kodak-gray": "kodak", "clic-gray": "clic"}

IMAGE_SUFFIXES = (".png", ".bmp", ".tif", ".tiff", ".ppm", ".pgm", ".pnm", ".webp")


def data_root() -> Path:
    """``$NELLOC_DATA`` or ``../shared/data``, relative paths resolved from the repo root."""
    root = Path(os.environ.get("NELLOC_DATA", "../shared/data")).expanduser()
    return root if root.is_absolute() else (REPO_ROOT / root).resolve()


@dataclass
class Dataset:
    """An ordered list of images, loaded lazily one at a time."""

    name: str
    source: str
    ids: list[str]
    _load: Callable[[int], np.ndarray] = field(repr=False)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> np.ndarray:
        return self._load(index)

    def __iter__(self) -> Iterator[tuple[str, np.ndarray]]:
        for i, image_id in enumerate(self.ids):
            yield image_id, self._load(i)

    @classmethod
    def from_arrays(
        cls, name: str, arrays: Sequence[np.ndarray], ids: Sequence[str] | None = None
    ) -> "Dataset":
        """Wrap in-memory arrays (used by tests and for ``.npz`` files)."""
        checked = [_check_array(a) for a in arrays]
        names = list(ids) if ids is not None else [f"{name}[{i}]" for i in range(len(checked))]
        return cls(name=name, source="<memory>", ids=names, _load=checked.__getitem__)


def _check_array(array: np.ndarray) -> np.ndarray:
    array = np.asarray(array)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.dtype != np.uint8:
        raise ValueError(f"images must be uint8, got {array.dtype}")
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (3, 4)):
        raise ValueError(f"unsupported image shape {array.shape}")
    return np.ascontiguousarray(array)


def load_image(path: Path) -> np.ndarray:
    """Read an image file as uint8 (H,W), (H,W,3) or (H,W,4), keeping its native mode."""
    with Image.open(path) as im:
        if im.mode == "1":
            im = im.convert("L")
        elif im.mode == "LA" or (im.mode == "P" and "transparency" in im.info):
            im = im.convert("RGBA")
        elif im.mode not in ("L", "RGB", "RGBA"):
            im = im.convert("RGB")
        return _check_array(np.asarray(im))


def _as_grey(image: np.ndarray) -> np.ndarray:
    return np.asarray(Image.fromarray(image).convert("L"))


def _folder(name: str, folder: Path, limit: int | None) -> Dataset:
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise FileNotFoundError(f"no images in {folder}")
    files = files[:limit] if limit is not None else files
    return Dataset(name, str(folder), [p.name for p in files], lambda i: load_image(files[i]))


def _npz(name: str, path: Path, limit: int | None) -> Dataset:
    with np.load(path) as archive:
        key = "images" if "images" in archive.files else archive.files[0]
        images = archive[key]
    images = images[:limit] if limit is not None else images
    ids = [f"{key}[{i}]" for i in range(len(images))]
    ds = Dataset.from_arrays(name, list(images), ids)
    ds.source = str(path)
    return ds


def load_dataset(name_or_path: str, limit: int | None = None) -> Dataset:
    """Load a named dataset (see ``NAMED_DATASETS``), an image folder or an ``.npz`` file.

    ``limit`` keeps the first ``limit`` images (in sorted-file or array order).
    """
    if name_or_path in GREY_DATASETS:
        colour = load_dataset(GREY_DATASETS[name_or_path], limit)
        return Dataset(name_or_path, f"{colour.source} (as L)", colour.ids, lambda i: _as_grey(colour[i]))
    if name_or_path in NAMED_DATASETS:
        name, path = name_or_path, data_root() / NAMED_DATASETS[name_or_path]
    else:
        path = Path(name_or_path).expanduser()
        name = path.stem if path.suffix.lower() == ".npz" else path.name
    if not path.exists():
        raise FileNotFoundError(
            f"dataset {name_or_path!r}: {path} does not exist "
            f"(known names: {', '.join(NAMED_DATASETS)}; data root {data_root()})"
        )
    if path.is_dir():
        return _folder(name, path, limit)
    if path.suffix.lower() == ".npz":
        return _npz(name, path, limit)
    return Dataset(name, str(path), [path.name], lambda i: load_image(path))
