"""Likelihood of grey models, and of colour models turned into grey ones (``greyscale_from_colour``),
on grey images: the measurement behind ``gray-photo`` (docs/ablations.md, stop 25).

    python scripts/grey_from_colour_bits.py models/float/gray.safetensors rgb:models/float/rgb.safetensors \
        rgb:models/float/rgb-photo.safetensors models/float/gray-photo.safetensors

A plain argument is a grey run or float model file; ``rgb:PATH`` is a colour one, converted first.
Prints bits per sub-pixel (fake-quantised where the model was) on the first 4 Kodak images as grey,
the first 200 MNIST test digits and the first 4 grey classic images.
"""
from __future__ import annotations

import dataclasses
import sys

import torch

from learning_curve import images_bits  # this folder is on sys.path when run as a script
from nelloc import data
from nelloc.model import PixelCNN
from nelloc.train import load_float_model, warm_start


def grey_model(spec: str) -> PixelCNN:
    if not spec.startswith("rgb:"):
        return load_float_model(spec, "last")
    colour = load_float_model(spec[4:], "last")
    grey = PixelCNN(dataclasses.replace(colour.cfg, channels=1))
    warm_start(grey, colour)
    grey.quantize = colour.quantize
    return grey.eval()


def main() -> None:
    torch.set_num_threads(1)
    sets = {
        "kodak-4 grey": data.load_images("kodak", channels=1, limit=4),
        "mnist-test-200": data.load_images("mnist-test", channels=1, limit=200),
        "classic-4 grey": [im for im in data.load_images("classic") if im.ndim == 2][:4],
    }
    for spec in sys.argv[1:]:
        model = grey_model(spec)
        row = [f"{name} {float(images_bits([model], imgs, progress=False)[0].sum()) / sum(im.size for im in imgs):.4f}"
               for name, imgs in sets.items()]
        print(spec, " | ".join(row), flush=True)


if __name__ == "__main__":
    main()
