"""Write the release file that tests/test_zoo.py checks for a commit that shipped new default models.

    python scripts/release_file.py rgb|photo|gray-photo [--out-dir tests/data/shipped]

Codes the kind's fixed crop with the installed default models and names the file after HEAD's short
commit (``<sha7>-rgb.nlc``, ``-rgb256.nlc``, ``-gray-photo128.nlc``); then add that commit to the
matching list in tests/test_zoo.py and a row to tests/data/shipped/README.md.
"""
import argparse
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from test_zoo import SHIPPED, mirror256  # noqa: E402  (the tests' own crops and mirroring)

from nelloc import api  # noqa: E402


def release_input(kind: str) -> tuple[object, str]:
    """What a release of ``kind`` codes, and its file-name suffix."""
    if kind == "rgb":
        return str(SHIPPED / "kodim23-crop.png"), "rgb"
    if kind == "photo":
        return mirror256(np.asarray(Image.open(SHIPPED / "kodim23-crop128.png"))), "rgb256"
    return str(SHIPPED / "kodim01-crop128-gray.png"), "gray-photo128"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kind", choices=["rgb", "photo", "gray-photo"])
    parser.add_argument("--out-dir", type=Path, default=SHIPPED)
    args = parser.parse_args()
    sha7 = subprocess.check_output(["git", "rev-parse", "--short=7", "HEAD"], cwd=ROOT, text=True).strip()
    image, suffix = release_input(args.kind)
    data = api.compress(image)
    path = args.out_dir / f"{sha7}-{suffix}.nlc"
    path.write_bytes(data)
    print(path, [seg["model_id"] for seg in api.info(data)["segments"]], len(data))


if __name__ == "__main__":
    main()
