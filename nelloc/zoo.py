"""Installed models, by name: ``models/NAME.safetensors`` (+ ``NAME.json`` model card).

Search path: ``$NELLOC_MODELS`` (``os.pathsep``-separated), then the repository's ``models/``
folder, then the copy installed with the package.  A model name may also be a path to a file.

A model that is replaced (a better ``rgb``) is not deleted: it moves to ``retired/NAME-ID.safetensors``
(ID: the first 16 hex digits of its SHA-256) in the same folder, where the decoder still finds it by
a stream's model id, so files made with any shipped model keep decoding.  Retired models have no
name: nothing new is encoded with them.
"""

from __future__ import annotations

import json
import os
from functools import lru_cache
from pathlib import Path

from nelloc.errors import ModelError
from nelloc.exact import ExactModel

DEFAULT_MODELS = {1: "gray", 3: "rgb"}
DEFAULT_MODEL = DEFAULT_MODELS[3]
# The model fine-tuned on photographs: for colour planes of PHOTO_MIN_PIXELS and more the encoder
# estimates the code length under it and under `rgb` and takes the smaller (codec.choose_model);
# smaller planes (thumbnails) get `rgb`.  On Kodak photos it codes 0.74% smaller than `rgb`, on
# CIFAR-10 thumbnails 0.9% larger; choosing per 32x32 thumbnail would save 0.16% there but double
# its encoding time (17 -> 33 ms), hence the threshold (docs/models.md).
# `gray-photo` plays the same part for grey planes against `gray` (digits, alpha): docs/models.md.
PHOTO_MODELS = {3: "rgb-photo", 1: "gray-photo"}
PHOTO_MIN_PIXELS = 1 << 14
RETIRED = "retired"
ID_HEX = 16  # hex digits of the SHA-256 in a retired model's file name


def model_dirs() -> list[Path]:
    dirs = [Path(p) for p in os.environ.get("NELLOC_MODELS", "").split(os.pathsep) if p]
    here = Path(__file__).resolve().parent
    return dirs + [here.parent / "models", here / "models"]


def list_models() -> dict[str, Path]:
    """name -> file of every installed model (the first found on the search path wins)."""
    found: dict[str, Path] = {}
    for d in model_dirs():
        if d.is_dir():
            for p in sorted(d.glob("*.safetensors")):
                found.setdefault(p.stem, p)
    return found


def model_path(name: str) -> Path:
    if name.endswith(".safetensors") and Path(name).is_file():
        return Path(name)
    models = list_models()
    if name not in models:
        have = ", ".join(sorted(models)) or "none"
        raise ModelError(f"model {name!r} is not installed (installed: {have})")
    return models[name]


@lru_cache(maxsize=16)
def _load(path: str, mtime: float) -> ExactModel:
    return ExactModel.load(path)


def load(name: str) -> ExactModel:
    path = model_path(name)
    return _load(str(path), path.stat().st_mtime)


def installed_hashes() -> dict[str, str]:
    """Name -> SHA-256 of every installed model that loads (unusable files are left out)."""
    hashes = {}
    for name in list_models():
        try:
            hashes[name] = load(name).sha256
        except ModelError:
            continue
    return hashes


def name_of_id(prefix: str) -> str | None:
    """The name of the installed model whose SHA-256 starts with ``prefix`` (a stream's model id)."""
    return next((name for name, sha in installed_hashes().items() if sha.startswith(prefix)), None)


def retired_models() -> list[Path]:
    """Files of the retired models on the search path."""
    return [p for d in model_dirs() if (d / RETIRED).is_dir() for p in sorted((d / RETIRED).glob("*.safetensors"))]


def find_by_id(prefix: str) -> ExactModel | None:
    """The installed or retired model whose SHA-256 starts with ``prefix`` (a stream's model id)."""
    name = name_of_id(prefix)
    if name is not None:
        return load(name)
    for path in retired_models():
        file_id = path.stem.rsplit("-", 1)[-1]
        if not (file_id.startswith(prefix) or prefix.startswith(file_id)):
            continue
        try:
            model = _load(str(path), path.stat().st_mtime)
        except ModelError:
            continue
        if model.sha256.startswith(prefix):
            return model
    return None


def retire(path: Path, replacement_sha: str | None = None) -> Path | None:
    """Move the model file ``path`` (and its card) to ``retired/`` beside it; returns the new path.
    None, and nothing moved, if there is no loadable model there (nothing a stream could need) or it
    is the replacement itself (``replacement_sha``)."""
    try:
        sha = ExactModel.load(path).sha256
    except (ModelError, OSError):
        return None
    if sha == replacement_sha:
        return None
    dest = path.parent / RETIRED / f"{path.stem}-{sha[:ID_HEX]}.safetensors"
    dest.parent.mkdir(exist_ok=True)
    path.replace(dest)
    card = path.with_suffix(".json")
    if card.exists():
        card.replace(dest.with_suffix(".json"))
    return dest


def default_candidates(channels: int) -> list[str]:
    """The models the encoder chooses from for a plane of ``channels`` channels when none is named:
    ``rgb`` and ``rgb-photo`` for colour, ``gray`` and ``gray-photo`` for grey.  A photo model only
    where it is installed in the same folder as the plain model in use, so a folder on
    ``$NELLOC_MODELS`` with its own ``rgb`` does not get the repository's photo model."""
    plain, photo = DEFAULT_MODELS[channels], PHOTO_MODELS.get(channels)
    if photo:
        models = list_models()
        if photo in models and (plain not in models or models[photo].parent == models[plain].parent):
            return [plain, photo]
    return [plain]


def default_model(channels: int, pixels: int = 0) -> str:
    """One default without looking at the pixels (the float likelihood's): the photo model (if a
    candidate) for planes of ``PHOTO_MIN_PIXELS`` or more, otherwise ``rgb`` or ``gray``."""
    names = default_candidates(channels)
    return names[-1] if pixels >= PHOTO_MIN_PIXELS else names[0]


def model_size_bytes(name: str) -> int:
    return model_path(name).stat().st_size


def model_card(name: str) -> dict:
    card = model_path(name).with_suffix(".json")
    return json.loads(card.read_text()) if card.exists() else {}


def load_float(name: str):
    """The float (training) weights shipped beside a model, ``models/float/NAME.safetensors``, as a
    ``PixelCNN``; None if absent.  Used to measure the likelihood the exact model is compared to."""
    path = model_path(name)
    fpath = path.parent / "float" / path.name
    return load_float_file(fpath) if fpath.exists() else None


def load_float_file(fpath: str | Path):
    """A float model file (``models/float/*.safetensors``: weights, config in the metadata) as a
    ``PixelCNN`` in eval mode, fake-quantised if it was calibrated."""
    from safetensors import safe_open

    from nelloc.model import ModelConfig, PixelCNN

    with safe_open(str(fpath), framework="pt") as f:
        cfg = ModelConfig(**json.loads(f.metadata()["config"]))
        state = {k: f.get_tensor(k) for k in f.keys()}
    model = PixelCNN(cfg)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or any(not k.endswith(".mask") for k in missing):
        raise ModelError(f"{fpath}: float weights do not match the model configuration")
    model.quantize = model.is_calibrated()
    return model.eval()
