"""Out-of-distribution detection with a full / local likelihood ratio (paper Section 4).

A *pair* is two float PixelCNNs trained on the same in-distribution data: a full model ``p_f``
(``kind="full"``, growing receptive field) and a local model ``p_l`` (``kind="local"``, 7x7 causal
neighbourhood).  Under the product-of-experts view ``p_f(x) = p_l(x) p_nl(x) / Z`` (paper eq. 5) the
non-local expert is known up to a constant, ``p_nl(x) ∝ p_f(x) / p_l(x)`` (eq. 6), and its log is the
OOD score::

    score(x) = log2 p_f(x) - log2 p_l(x) = bits_local(x) - bits_full(x)     [bits per image]

Higher = more in-distribution.  The local expert explains the local statistics (texture, strokes,
smoothness) that every natural image shares and that dominate raw likelihoods; what is left rewards
the semantics the full model learnt from the training data.

Storage: pair ``NAME`` is ``ood/NAME-full.safetensors`` + ``ood/NAME-local.safetensors`` (float state
dict, metadata ``config`` = JSON ``ModelConfig``, ``quantize`` = "0"/"1", ``card`` = JSON extras)
and the card ``ood/NAME.json``, found in the ``ood/`` subfolder of a model folder on the zoo's search
path (``$NELLOC_MODELS``, then ``models/``).
"""

from __future__ import annotations

import json
import math
import re
import shutil
from collections import defaultdict
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from nelloc import data as datasets
from nelloc.errors import ModelError, NellocError, UnsupportedImageError
from nelloc.model import ModelConfig, PixelCNN, count_parameters

PAIR_SUBDIR = "ood"
DEFAULT_PAIRS = {1: "gray", 3: "rgb"}
LN2 = math.log(2.0)
# pixels (H * W) per forward pass when batching; big images go one at a time
DEFAULT_MAX_PIXELS = 1 << 18

PAPER_TABLE3 = {  # AUROC, paper Table 3 (ID FashionMNIST: MNIST, Omniglot; ID CIFAR10: SVHN, CelebA)
    "nelloc_ratio": {"MNIST": 1.000, "Omniglot": 1.000, "SVHN": 0.969, "CelebA": 0.949},
    "full_likelihood": {"MNIST": 0.074, "Omniglot": 0.361, "SVHN": 0.113, "CelebA": 0.602},
    "ic_flif": {"MNIST": 0.967, "Omniglot": 1.000, "SVHN": 0.929, "CelebA": 0.535},  # S, PCNN + FLIF
}


class DatasetError(NellocError):
    """An image set (staged name, folder, .npz or derived spec) that cannot be loaded."""


# ------------------------------------------------------------------------------------------------
# pairs: storage


@dataclass
class ModelPair:
    name: str
    full: PixelCNN
    local: PixelCNN
    card: dict = field(default_factory=dict)
    paths: tuple[Path, Path] | None = None

    @property
    def channels(self) -> int:
        return self.full.cfg.channels


def save_pair_member(model: PixelCNN, path: str | Path, card_extra: dict | None = None) -> Path:
    """Write one member of a pair: float state dict + metadata (config, quantize flag, extras)."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "config": json.dumps(model.cfg.to_dict()),
        "quantize": "1" if model.quantize else "0",
        "card": json.dumps(card_extra or {}),
    }
    tmp = path.with_name(path.name + ".part")
    save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, str(tmp), metadata=meta)
    tmp.replace(path)
    return path


def load_pair_member(path: str | Path) -> PixelCNN:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            cfg = ModelConfig(**json.loads(meta["config"]))
            state = {k: f.get_tensor(k) for k in f.keys()}
        model = PixelCNN(cfg)
        model.load_state_dict(state)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is one clear error
        raise ModelError(f"{path}: not a readable OOD pair member ({type(exc).__name__}: {exc})") from None
    model.quantize = meta.get("quantize", "0") == "1"
    return model.eval()


def pair_dirs() -> list[Path]:
    from nelloc import zoo

    return [d / PAIR_SUBDIR for d in zoo.model_dirs()]


def list_pairs() -> dict[str, Path]:
    """name -> folder of every installed pair (the first found on the search path wins)."""
    found: dict[str, Path] = {}
    for d in pair_dirs():
        if d.is_dir():
            for p in sorted(d.glob("*-full.safetensors")):
                name = p.name[: -len("-full.safetensors")]
                if (d / f"{name}-local.safetensors").exists():
                    found.setdefault(name, d)
    return found


def pair_files(name: str) -> tuple[Path, Path, Path]:
    """(full, local, card) files of pair ``name``; ``name`` may also be a path prefix ``DIR/NAME``."""
    prefix = Path(name)
    if prefix.parent != Path(".") and Path(f"{prefix}-full.safetensors").exists():
        d, stem = prefix.parent, prefix.name
    else:
        pairs = list_pairs()
        if name not in pairs:
            have = ", ".join(sorted(pairs)) or "none"
            where = ", ".join(str(d) for d in pair_dirs())
            raise ModelError(f"OOD model pair {name!r} is not installed (installed: {have}; searched {where}); "
                             f"export one with nelloc.ood.export_pair")
        d, stem = pairs[name], name
    return d / f"{stem}-full.safetensors", d / f"{stem}-local.safetensors", d / f"{stem}.json"


@lru_cache(maxsize=8)
def _load_pair_cached(full: str, local: str, card: str, stamp: tuple) -> ModelPair:
    name = Path(card).stem
    f, l = load_pair_member(full), load_pair_member(local)
    if f.cfg.channels != l.cfg.channels:
        raise ModelError(f"OOD pair {name!r}: full model has {f.cfg.channels} channels, local {l.cfg.channels}")
    info = json.loads(Path(card).read_text()) if Path(card).exists() else {}
    return ModelPair(name, f, l, info, (Path(full), Path(local)))


def load_pair(name: str) -> ModelPair:
    """The installed pair ``name`` (``ModelError`` if missing or unreadable)."""
    full, local, card = pair_files(name)
    stamp = tuple(p.stat().st_mtime_ns if p.exists() else 0 for p in (full, local, card))
    return _load_pair_cached(str(full), str(local), str(card), stamp)


def default_pair(channels: int) -> str:
    return DEFAULT_PAIRS[3 if channels >= 3 else 1]


def _run_summary(run_dir: Path) -> dict:
    from nelloc.train import run_summary

    return {"run_dir": str(run_dir), **run_summary(run_dir)}


def export_pair(full_run_dir: str | Path, local_run_dir: str | Path, name: str, out_dir: str | Path = "models") -> dict:
    """Export two training runs (last checkpoints) as pair ``name`` into ``out_dir/ood/``; returns the card."""
    from nelloc.train import load_float_model

    full_run_dir, local_run_dir = Path(full_run_dir), Path(local_run_dir)
    members = {}
    for role, run in (("full", full_run_dir), ("local", local_run_dir)):
        if not (run / "last.pt").exists():
            raise ModelError(f"{run}: not a training run (no last.pt)")
        model = load_float_model(run, "last")  # local runs: quantize as in the run's final phase
        members[role] = (model, _run_summary(run))
    full, local = members["full"][0], members["local"][0]
    if full.cfg.channels != local.cfg.channels:
        raise ModelError(f"full run has {full.cfg.channels} channels, local run {local.cfg.channels}")
    if full.cfg.kind != "full" or local.cfg.kind != "local":
        raise ModelError(f"expected a full and a local run, got kinds {full.cfg.kind!r} and {local.cfg.kind!r}")
    d = Path(out_dir) / PAIR_SUBDIR
    card = {"name": name, "channels": full.cfg.channels, "score": "log2 p_full(x) - log2 p_local(x), bits per image"}
    for role, (model, summary) in members.items():
        extra = {"architecture": model.cfg.to_dict(), "parameters": count_parameters(model),
                 "quantize": bool(model.quantize), "training": summary}
        save_pair_member(model, d / f"{name}-{role}.safetensors", extra)
        card[role] = extra
    card["evaluations"] = {}  # new weights: earlier measurements no longer apply
    (d / f"{name}.json").write_text(json.dumps(card, indent=2) + "\n")
    return card


def record_evaluation(pair: ModelPair | str, result: dict) -> Path:
    """Store an ``evaluate`` result's AUROC / FPR95 in the pair's card (under ``evaluations``)."""
    name = pair.name if isinstance(pair, ModelPair) else pair
    _, _, card_path = pair_files(name)
    card = json.loads(card_path.read_text()) if card_path.exists() else {"name": name}
    entry = {
        "limit_per_set": result.get("limit"),
        "images": result["in_dist"]["images"],
        "ood": {s: {"label": r["label"], "images": r["images"], "metrics": r["metrics"]}
                for s, r in result["ood"].items()},
    }
    card.setdefault("evaluations", {})[result["in_dist"]["set"]] = entry
    card_path.write_text(json.dumps(card, indent=2) + "\n")
    _load_pair_cached.cache_clear()
    return card_path


# ------------------------------------------------------------------------------------------------
# images


def to_channels(img: np.ndarray, channels: int | None) -> np.ndarray:
    """uint8 (H, W) or (H, W, C) -> (H, W) for channels 1, (H, W, 3) for 3 (grey is replicated);
    None keeps grey grey and colour colour (alpha dropped)."""
    img = np.asarray(img)
    if img.dtype != np.uint8:
        raise UnsupportedImageError(f"OOD scoring takes 8-bit images, got dtype {img.dtype}")
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[..., 0]
    if img.ndim == 3 and img.shape[2] == 2:  # grey + alpha
        img = img[..., 0]
    if img.ndim == 3 and img.shape[2] >= 3:
        img = img[..., :3]
    if img.ndim not in (2, 3):
        raise UnsupportedImageError(f"not an image: shape {img.shape}")
    if channels == 1 and img.ndim == 3:
        return np.asarray(Image.fromarray(np.ascontiguousarray(img)).convert("L"))
    if channels == 3 and img.ndim == 2:
        return np.repeat(img[..., None], 3, axis=2)
    return img


def image_channels(img: np.ndarray) -> int:
    return 3 if img.ndim == 3 and img.shape[2] >= 3 else 1


def _to_tensor(imgs: Sequence[np.ndarray]) -> torch.Tensor:
    arr = np.stack(imgs)
    if arr.ndim == 3:
        arr = arr[..., None]
    return torch.from_numpy(np.ascontiguousarray(arr)).permute(0, 3, 1, 2).float()


@torch.inference_mode()
def _bits(model: PixelCNN, x: torch.Tensor) -> np.ndarray:
    """Code length in bits per image, summed in float64."""
    return (-model.log_prob(x).double().flatten(1).sum(1) / LN2).cpu().numpy()


def images_bits(models: Sequence[PixelCNN], imgs: Sequence[np.ndarray], batch: int = 256, device: str = "cpu",
                progress: bool = True, max_pixels: int = DEFAULT_MAX_PIXELS, desc: str = "bits") -> list[np.ndarray]:
    """Code length in bits of every image (uint8, in the models' channels) under each model, in
    input order.  Images of one size are batched (at most ``batch`` images and ``max_pixels`` pixels
    per forward pass) and only per-image sums are kept, so memory is bounded by one batch."""
    groups: dict[tuple, list[int]] = defaultdict(list)
    for i, im in enumerate(imgs):
        groups[im.shape].append(i)
    dev = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else "cpu" if device == "auto" else device)
    models = [m.to(dev) for m in models]
    bits = [np.empty(len(imgs)) for _ in models]
    bar = tqdm(total=len(imgs), desc=desc, unit="img", disable=not progress or None, leave=False)
    for shape, idx in groups.items():
        per = max(1, min(batch, max_pixels // (shape[0] * shape[1])))
        for s in range(0, len(idx), per):
            chunk = idx[s : s + per]
            x = _to_tensor([imgs[i] for i in chunk]).to(dev)
            for model, out in zip(models, bits):
                out[chunk] = _bits(model, x)
            bar.update(len(chunk))
    bar.close()
    return bits


def score_images(images: Iterable[np.ndarray] | np.ndarray, pair: ModelPair | str, batch: int = 256,
                 device: str = "cpu", progress: bool = True, max_pixels: int = DEFAULT_MAX_PIXELS,
                 mirror: bool = False) -> dict[str, np.ndarray]:
    """Score every image under both members of ``pair``.

    Images are uint8 (H, W) / (H, W, 3) (converted to the pair's channels: grey is replicated to
    RGB, RGB converted to grey).  Images of one size are batched (at most ``batch`` images and
    ``max_pixels`` pixels per forward pass); only per-image sums are kept, so memory is bounded by
    one batch (a large image still goes through the network whole: the full model's receptive field
    grows with depth, so tiling would change its likelihood).  ``device``: torch device or "auto".
    Returns float64 arrays, in input order:

    * ``bits_full``, ``bits_local``: code length (-log2 p) of the whole image;
    * ``bpd_full``, ``bpd_local``: the same per dimension (sub-pixel);
    * ``score``: log2 p_full(x) - log2 p_local(x) = bits_local - bits_full, in bits per image
      (higher = more in-distribution); ``score_bpd`` is it per dimension;
    * ``dims``: sub-pixels per image.

    ``mirror``: every code length is the mean over the image and its left-right mirror (the
    symmetry the pairs were trained with), so the score is the mean of the two images' scores.
    """
    if isinstance(pair, str):
        pair = load_pair(pair)
    imgs = [to_channels(im, pair.channels) for im in images]
    bits_f, bits_l = pair_bits(imgs, pair, batch, device, progress, max_pixels, mirror)
    return scores_from_bits(bits_f.mean(0), bits_l.mean(0), image_dims(imgs))


def pair_bits(imgs: Sequence[np.ndarray], pair: ModelPair, batch: int = 256, device: str = "cpu",
              progress: bool = True, max_pixels: int = DEFAULT_MAX_PIXELS,
              mirror: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Code lengths (bits per image) under the full and the local member, images already in the
    pair's channels: arrays of shape (V, N), row 0 the images and, with ``mirror``, row 1 their
    mirrors."""
    views = [list(imgs)] + ([[np.ascontiguousarray(im[:, ::-1]) for im in imgs]] if mirror else [])
    bits_f, bits_l = images_bits([pair.full, pair.local], [im for v in views for im in v], batch, device,
                                 progress, max_pixels, desc=f"ood {pair.name}")
    return bits_f.reshape(len(views), len(imgs)), bits_l.reshape(len(views), len(imgs))


def image_dims(imgs: Sequence[np.ndarray]) -> np.ndarray:
    """Sub-pixels of each image."""
    return np.array([im.size for im in imgs], dtype=np.int64)


def scores_from_bits(bits_f: np.ndarray, bits_l: np.ndarray, dims: np.ndarray) -> dict[str, np.ndarray]:
    score = bits_l - bits_f
    return {"bits_full": bits_f, "bits_local": bits_l, "bpd_full": bits_f / dims, "bpd_local": bits_l / dims,
            "score": score, "score_bpd": score / dims, "dims": dims}


# ------------------------------------------------------------------------------------------------
# metrics


def _check(a: np.ndarray, what: str) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64).ravel()
    if a.size == 0:
        raise ValueError(f"{what}: no scores")
    if not np.isfinite(a).all():
        raise ValueError(f"{what}: scores must be finite")
    return a


def _midranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks, tied values sharing the mean of their ranks."""
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    starts = np.flatnonzero(np.r_[True, xs[1:] != xs[:-1]])
    ends = np.r_[starts[1:], xs.size]
    mean_rank = (starts + ends + 1) / 2.0  # ranks starts+1 .. ends, averaged
    ranks = np.empty(x.size)
    ranks[order] = np.repeat(mean_rank, ends - starts)
    return ranks


def auroc(scores_in: Sequence[float], scores_out: Sequence[float]) -> float:
    """P(score_in > score_out) + 1/2 P(equal): area under the ROC curve, in-distribution = positive.

    Mann-Whitney U from mid-ranks, O(n log n)."""
    a, b = _check(scores_in, "in-distribution"), _check(scores_out, "out-of-distribution")
    ranks = _midranks(np.concatenate([a, b]))
    u = ranks[: a.size].sum() - a.size * (a.size + 1) / 2.0
    return float(u / (a.size * b.size))


def fpr_at_tpr(scores_in: Sequence[float], scores_out: Sequence[float], tpr: float = 0.95) -> float:
    """False-positive rate at the highest threshold t that accepts (score >= t) at least ``tpr`` of
    the in-distribution scores: the fraction of OOD scores >= t."""
    if not 0.0 < tpr <= 1.0:
        raise ValueError("tpr must be in (0, 1]")
    a, b = _check(scores_in, "in-distribution"), _check(scores_out, "out-of-distribution")
    k = max(1, math.ceil(tpr * a.size - 1e-9))  # in-scores that must be accepted
    t = np.sort(a)[::-1][k - 1]
    return float(np.mean(b >= t))


# ------------------------------------------------------------------------------------------------
# image sets

_DERIVED = re.compile(r"^(?P<base>.+?)(?:-crops(?P<crop>\d+))?(?:-(?P<size>\d+))?(?P<inv>-inv)?$")
SET_TITLES = {
    "mnist-test": "MNIST", "mnist-train": "MNIST", "fashion-mnist-test": "FashionMNIST",
    "fashion-mnist-train": "FashionMNIST", "omniglot": "Omniglot", "omniglot2": "Omniglot",
    "cifar10-test": "CIFAR10", "cifar10-train": "CIFAR10", "celeba": "CelebA",
    "kodak": "Kodak", "classic": "classic", "clic": "CLIC",
}


@dataclass
class ImageSet:
    spec: str
    images: list[np.ndarray]
    label: str  # human description, including every conversion applied
    title: str  # short column title


def _exists(name: str) -> bool:
    return name in datasets.DATASETS or Path(name).exists()


def _grid_crops(imgs: list[np.ndarray], k: int, limit: int | None) -> list[np.ndarray]:
    out = []
    for im in imgs:
        h, w = im.shape[:2]
        for y in range(0, h - k + 1, k):
            for x in range(0, w - k + 1, k):
                out.append(np.ascontiguousarray(im[y : y + k, x : x + k]))
                if limit is not None and len(out) >= limit:
                    return out
    return out


def spread_indices(total: int, limit: int | None) -> np.ndarray:
    """``limit`` indices evenly spaced over ``range(total)``, starting at 0 (all if limit is None or
    larger): a subset that keeps every part of a set that is stored grouped by class."""
    if limit is None or limit >= total:
        return np.arange(total)
    return np.arange(limit) * total // limit


def load_set(spec: str, channels: int | None, limit: int | None = None, spread: bool = False) -> ImageSet:
    """Images of a staged name, folder or .npz, optionally derived with suffixes (in this order):
    ``-cropsK`` (non-overlapping KxK grid crops, row-major, image by image: ``kodak-crops32``),
    ``-S`` (resize to SxS, box filter: ``omniglot-28``), ``-inv`` (255 - x).  Converted to
    ``channels`` (grey replicated to RGB; None: as stored); the label says which conversions were made.

    ``limit`` keeps the first N images (crops), or with ``spread`` N evenly spaced over the whole set:
    some staged sets are grouped by class (Fashion-MNIST's first 1,000 test images are all T-shirts)."""
    base, crop, size, inv = spec, None, None, False
    if not _exists(spec):
        m = _DERIVED.match(spec)
        if m and _exists(m["base"]) and (m["crop"] or m["size"] or m["inv"]):
            base, inv = m["base"], bool(m["inv"])
            crop = int(m["crop"]) if m["crop"] else None
            size = int(m["size"]) if m["size"] else None
        else:
            have = ", ".join(sorted(datasets.DATASETS))
            raise DatasetError(f"image set {spec!r}: not a staged set ({have}), an existing folder or .npz, "
                               f"or one of those with -cropsK / -S / -inv")
    try:
        raw = datasets.load_images(base, channels=None, limit=None if crop or spread else limit)
    except (FileNotFoundError, KeyError, OSError, ValueError) as exc:
        raise DatasetError(f"image set {spec!r}: {exc}") from None
    if not raw:
        raise DatasetError(f"image set {spec!r}: no images")
    notes = []
    src_ch = {image_channels(im) for im in raw}
    total = None
    if crop:
        raw = _grid_crops(raw, crop, None if spread else limit)
        if not raw:
            raise DatasetError(f"image set {spec!r}: images smaller than {crop}x{crop}")
    if spread and limit is not None and limit < len(raw):
        total = len(raw)
        raw = [raw[i] for i in spread_indices(total, limit)]
    if crop:
        which = f"{len(raw)} of {total} evenly spaced" if total else f"first {len(raw)}"
        notes.append(f"{crop}x{crop} crops (non-overlapping grid, row-major, {which})")
    if size:
        h0, w0 = raw[0].shape[:2]
        raw = [np.asarray(Image.fromarray(im).resize((size, size), Image.BOX)) for im in raw]
        notes.append(f"resized {w0}x{h0}->{size}x{size} (box filter)")
    if inv:
        raw = [255 - im for im in raw]
        notes.append("inverted (255 - x)")
    if channels == 3 and 1 in src_ch:
        notes.append("grey replicated to RGB" if src_ch == {1} else "grey images replicated to RGB")
    if channels == 1 and 3 in src_ch:
        notes.append("converted RGB to grey")
    imgs = [to_channels(im, channels) for im in raw]
    title = SET_TITLES.get(base, Path(base).stem)
    if crop:
        title += f" crops{crop}"
    if size:
        title += f"@{size}"
    if inv:
        title += " inv"
    n = len(imgs)
    if crop:
        label = f"{spec}: {n} images"
    elif total:
        label = f"{spec}: {n} images ({n} of {total}, evenly spaced)"
    else:
        label = f"{spec}: {n} images" + (f" (first {limit})" if limit else "")
    if notes:
        label += "; " + "; ".join(notes)
    return ImageSet(spec, imgs, label, title)


# ------------------------------------------------------------------------------------------------
# input complexity (Serra et al. 2020)


def classical_codecs() -> dict[str, object]:
    """name -> codec of the input-complexity baselines available here (PNG, JPEG XL e7, FLIF)."""
    from codec_bench.codecs import FLIFCodec, JpegXLCodec, PNGCodec

    codecs: dict[str, object] = {"png": PNGCodec()}
    jxl = JpegXLCodec(effort=7)
    if jxl.available()[0]:
        codecs["jxl"] = jxl
    if shutil.which("flif"):
        codecs["flif"] = FLIFCodec()
    return codecs


def classical_bits(images: Sequence[np.ndarray], codec, progress: bool = True) -> np.ndarray:
    """Whole-file size in bits of every image under a classical lossless codec."""
    out = np.empty(len(images))
    for i, im in enumerate(tqdm(images, desc=f"{getattr(codec, 'name', 'codec')}", unit="img",
                                disable=not progress or None, leave=False)):
        out[i] = 8 * len(codec.encode(np.ascontiguousarray(im)))
    return out


METHODS = {  # key: (row title, how the in-distribution score is computed)
    "full_likelihood": ("Full PixelCNN likelihood", "-bpd_full"),
    "local_likelihood": ("Local PixelCNN likelihood", "-bpd_local"),
    "nelloc_ratio": ("NeLLoC ratio log p_full - log p_local", "(bits_local - bits_full) / dims"),
    "nelloc_ratio_mirror": ("NeLLoC ratio, mean over the image and its mirror",
                            "mean of (bits_local - bits_full) / dims over x and its left-right mirror"),
    "ic_png": ("Input complexity S, full PCNN + PNG", "(bits_png - bits_full) / dims"),
    "ic_jxl": ("Input complexity S, full PCNN + JPEG XL e7", "(bits_jxl - bits_full) / dims"),
    "ic_flif": ("Input complexity S, full PCNN + FLIF", "(bits_flif - bits_full) / dims"),
}


def method_scores(s: dict[str, np.ndarray], classical: dict[str, np.ndarray],
                  mirrored: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """Every method's in-distribution score (higher = more in-distribution), per dimension;
    ``mirrored``: the scores averaged over each image and its mirror, for the mirror row."""
    out = {"full_likelihood": -s["bpd_full"], "local_likelihood": -s["bpd_local"], "nelloc_ratio": s["score_bpd"]}
    if mirrored is not None:
        out["nelloc_ratio_mirror"] = mirrored["score_bpd"]
    for name, bits in classical.items():
        out[f"ic_{name}"] = (bits - s["bits_full"]) / s["dims"]
    return out


def _summary(s: dict[str, np.ndarray], classical: dict[str, np.ndarray]) -> dict:
    d = {"bpd_full_mean": float(s["bpd_full"].mean()), "bpd_local_mean": float(s["bpd_local"].mean()),
         "score_bpd_mean": float(s["score_bpd"].mean())}
    for name, bits in classical.items():
        d[f"bpd_{name}_mean"] = float((bits / s["dims"]).mean())
    return {k: round(v, 5) for k, v in d.items()}


def evaluate(in_dist: str, ood_sets: Sequence[str], pair: ModelPair | str, limit: int | None = None,
             batch: int = 256, device: str = "cpu", plot_dir: str | Path | None = None,
             baselines: bool = True, progress: bool = True, mirror: bool = False) -> dict:
    """AUROC and FPR at 95% TPR of every method, ID set ``in_dist`` against each of ``ood_sets``.

    All scores are per dimension (identical ranking to per image when the sets share one image
    size).  ``mirror`` adds the row of the ratio averaged over each image and its left-right mirror
    (twice the network work).  Returns a JSON-ready dict; with ``plot_dir``, also writes one
    histogram PNG per OOD set."""
    if isinstance(pair, str):
        pair = load_pair(pair)
    ch = pair.channels
    codecs = classical_codecs() if baselines else {}

    def measure(spec: str):
        iset = load_set(spec, ch, limit, spread=True)
        dims = image_dims(iset.images)
        bits_f, bits_l = pair_bits(iset.images, pair, batch, device, progress, mirror=mirror)
        s = scores_from_bits(bits_f[0], bits_l[0], dims)
        m = scores_from_bits(bits_f.mean(0), bits_l.mean(0), dims) if mirror else None
        cl = {name: classical_bits(iset.images, c, progress) for name, c in codecs.items()}
        return iset, s, cl, method_scores(s, cl, m)

    in_set, in_s, in_cl, in_m = measure(in_dist)
    result = {
        "pair": pair.name,
        "pair_channels": ch,
        "limit": limit,
        "methods": {k: {"title": METHODS[k][0], "score": METHODS[k][1]} for k in in_m},
        "in_dist": {"set": in_dist, "label": in_set.label, "title": in_set.title, "images": len(in_set.images),
                    **_summary(in_s, in_cl)},
        "ood": {},
        "plots": [],
        "notes": ["higher score = in-distribution; AUROC counts ties as 1/2; FPR95 = fraction of OOD "
                  "images scoring >= the threshold that keeps 95% of the in-distribution images"],
    }
    if baselines and "flif" not in codecs:
        result["notes"].append("FLIF: no `flif` binary on PATH, so no FLIF row")
    for spec in ood_sets:
        o_set, o_s, o_cl, o_m = measure(spec)
        metrics = {k: {"auroc": round(auroc(in_m[k], o_m[k]), 4), "fpr95": round(fpr_at_tpr(in_m[k], o_m[k]), 4)}
                   for k in in_m}
        result["ood"][spec] = {"label": o_set.label, "title": o_set.title, "images": len(o_set.images),
                               **_summary(o_s, o_cl), "metrics": metrics}
        if plot_dir is not None:
            path = plot_histograms(in_m, o_m, in_set.title, o_set.title, Path(plot_dir), pair.name)
            result["plots"].append(str(path))
    return result


def _slug(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", s).strip("_") or "set"


def plot_histograms(in_m: dict[str, np.ndarray], out_m: dict[str, np.ndarray], in_title: str, out_title: str,
                    plot_dir: Path, pair_name: str = "") -> Path:
    """Like the paper's Figures 1 and 3: full-model likelihood (-bpd) and NeLLoC ratio histograms."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plot_dir.mkdir(parents=True, exist_ok=True)
    panels = [("full_likelihood", "full PixelCNN: -bits per dim"),
              ("nelloc_ratio", "log2 p_full - log2 p_local, bits per dim")]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for ax, (key, xlabel) in zip(axes, panels):
        a, b = in_m[key], out_m[key]
        lo, hi = float(min(a.min(), b.min())), float(max(a.max(), b.max()))
        bins = np.linspace(lo, hi if hi > lo else lo + 1e-6, 50)
        ax.hist(a, bins=bins, alpha=0.6, density=True, label=f"{in_title} (ID)")
        ax.hist(b, bins=bins, alpha=0.6, density=True, label=f"{out_title} (OOD)")
        ax.set_xlabel(xlabel)
        ax.set_title(f"AUROC {auroc(a, b):.3f}")
        ax.legend(fontsize=8)
    axes[0].set_ylabel("density")
    fig.suptitle(f"pair {pair_name}: {in_title} vs {out_title}", fontsize=10)
    fig.tight_layout()
    path = plot_dir / f"ood_{_slug(pair_name)}_{_slug(in_title)}_vs_{_slug(out_title)}.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def format_markdown(result: dict) -> str:
    """The ``evaluate`` result as Markdown: set descriptions, then one row per method."""
    ood = result["ood"]
    lines = [f"OOD detection, pair `{result['pair']}` ({result['pair_channels']} channel(s)); "
             f"in-distribution: {result['in_dist']['label']}", ""]
    for spec, r in ood.items():
        lines.append(f"- OOD `{spec}`: {r['label']}")
    lines.append("")
    head = ["score"] + [f"{r['title']} {m}" for r in ood.values() for m in ("AUROC", "FPR95")]
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|" + "---|" * len(head))
    for key, meta in result["methods"].items():
        cells = [meta["title"]]
        for r in ood.values():
            cells += [f"{r['metrics'][key]['auroc']:.3f}", f"{r['metrics'][key]['fpr95']:.3f}"]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    bpd = [f"{result['in_dist']['title']} (ID) {result['in_dist']['bpd_full_mean']:.3f} / "
           f"{result['in_dist']['bpd_local_mean']:.3f}"]
    bpd += [f"{r['title']} {r['bpd_full_mean']:.3f} / {r['bpd_local_mean']:.3f}" for r in ood.values()]
    lines.append("Mean bits per dim, full / local: " + "; ".join(bpd) + ".")
    lines += [f"{n}." if not n.endswith(".") else n for n in result["notes"]]
    for p in result["plots"]:
        lines.append(f"Histogram: {p}")
    return "\n".join(lines)
