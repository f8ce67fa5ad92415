"""Likelihood of training runs on *all* the images the trainer holds out of a training set (every
20th, ``nelloc.train._split``), to choose between candidate models without touching an evaluation set:

    python scripts/heldout_bits.py runs/c17-A2-swa runs/c17-A-swa [--dataset cifar10-train] [--channels 3]

Prints bits per sub-pixel of the float weights and, for a snapshot trained with fake quantisation,
of the fake-quantised model (what export makes exact).  The trainer's own ``val_bpd`` uses a few
dozen random crops and swings by ~0.05 from one evaluation to the next; this uses every held-out image.
"""
from __future__ import annotations

import argparse

import torch

from nelloc import data
from nelloc.ood import images_bits
from nelloc.train import _split, load_float_model

p = argparse.ArgumentParser()
p.add_argument("runs", nargs="+")
p.add_argument("--dataset", default="cifar10-train")
p.add_argument("--channels", type=int, default=3)
p.add_argument("--threads", type=int, default=1)
args = p.parse_args()
torch.set_num_threads(args.threads)
held_out = _split(data.load_images(args.dataset, channels=args.channels))[1]
subpixels = sum(im.size for im in held_out)
print(f"{args.dataset}: {len(held_out)} held-out images")
for run in args.runs:
    model = load_float_model(run, "last")
    quantised = float(images_bits([model], held_out, progress=False)[0].sum()) / subpixels if model.quantize else None
    model.quantize = False
    plain = float(images_bits([model], held_out, progress=False)[0].sum()) / subpixels
    print(f"{run}: float {plain:.4f}" + (f", fake-quantised {quantised:.4f}" if quantised is not None else ""), flush=True)
