"""Install an exported model as the shipped ``models/NAME``, with its training notes:

    nelloc export runs/p150000-swa --name rgb-photo --out-dir runs/export-photo --eval kodak
    python scripts/install_model.py rgb-photo runs/export-photo NOTES.txt [--models models]

The model it replaces moves with its card to ``models/retired/NAME-ID.*`` (``nelloc.zoo.retire``),
so files made with it keep decoding. The export's card gets ``training_notes`` from NOTES.txt (the
commands and the measurements that chose the model), and its float weights go to
``models/float/NAME.safetensors``. It checks everything before it moves anything: a card that does
not match its model file, a missing float file, empty notes, or the model that is already installed
are a one-line error (exit 1).
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from nelloc import zoo  # noqa: E402
from nelloc.errors import ModelError  # noqa: E402
from nelloc.exact import ExactModel  # noqa: E402


class InstallError(Exception):
    pass


def checked_export(name: str, export_dir: Path) -> tuple[dict, Path, Path]:
    """The export's card, exact model file and float weights, after checking that they belong together."""
    model_file, card_file = export_dir / f"{name}.safetensors", export_dir / f"{name}.json"
    float_file = export_dir / "float" / f"{name}.safetensors"
    for path in (model_file, card_file, float_file):
        if not path.is_file():
            raise InstallError(f"no {path} (export with `nelloc export RUN --name {name} --out-dir {export_dir}`)")
    try:
        sha = ExactModel.load(model_file).sha256
    except ModelError as e:
        raise InstallError(f"{model_file}: {e}") from None
    card = json.loads(card_file.read_text())
    if card.get("name") != name or card.get("sha256") != sha:
        raise InstallError(f"{card_file} is not the card of {model_file} (name {card.get('name')!r}, "
                           f"sha256 {str(card.get('sha256'))[:16]} against {sha[:16]})")
    return card, model_file, float_file


def install(name: str, export_dir: Path, notes: str, models: Path) -> Path | None:
    """Install the export; returns where the replaced model went (None if there was none)."""
    card, model_file, float_file = checked_export(name, export_dir)
    if not notes.strip():
        raise InstallError("the training notes are empty")
    target = models / f"{name}.safetensors"
    if target.is_file() and ExactModel.load(target).sha256 == card["sha256"]:
        raise InstallError(f"{target} is already this model ({card['sha256'][:16]})")
    retired = zoo.retire(target, card["sha256"])
    shutil.copyfile(model_file, target)
    card["training_notes"] = notes.strip()
    target.with_suffix(".json").write_text(json.dumps(card, indent=2) + "\n")
    (models / "float").mkdir(exist_ok=True)
    shutil.copyfile(float_file, models / "float" / f"{name}.safetensors")
    return retired


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("name")
    parser.add_argument("export_dir", type=Path)
    parser.add_argument("notes", type=Path, help="text file: the card's training_notes")
    parser.add_argument("--models", type=Path, default=Path(__file__).resolve().parent.parent / "models")
    args = parser.parse_args()
    try:
        notes = args.notes.read_text()
        retired = install(args.name, args.export_dir, notes, args.models)
    except (InstallError, OSError) as e:
        print(f"install_model.py: {e}", file=sys.stderr)
        return 1
    sha = json.loads((args.models / f"{args.name}.json").read_text())["sha256"]
    print(f"{args.models / args.name}: {sha[:16]}" + (f"; the model it replaced is {retired}" if retired else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
