"""Likelihood of training runs on *all* the images the trainer holds out of a training set (every
20th, ``nelloc.train._split``), to choose between candidate models without touching an evaluation set:

    python scripts/heldout_bits.py runs/c17-A2-swa runs/c17-A-swa [--dataset cifar10-train] [--channels 3]

Prints bits per sub-pixel of the float weights and, for a snapshot trained with fake quantisation,
of the fake-quantised model (what export makes exact).  The trainer's own ``val_bpd`` uses a few
dozen random crops and swings by ~0.05 from one evaluation to the next; this uses every held-out image.
``--split train`` scores as many images of the training split instead (evenly spaced over it): a model
whose training images score much better than its held-out ones is overfitting; one that scores them
alike is limited by capacity or training, not by the number of images.
"""
from __future__ import annotations

import argparse

import torch

from learning_curve import snapshot_bits  # this folder is on sys.path when run as a script
from nelloc import data
from nelloc.train import _split

p = argparse.ArgumentParser()
p.add_argument("runs", nargs="+")
p.add_argument("--dataset", default="cifar10-train")
p.add_argument("--channels", type=int, default=3)
p.add_argument("--threads", type=int, default=1)
p.add_argument("--split", choices=["held-out", "train"], default="held-out")
args = p.parse_args()
torch.set_num_threads(args.threads)
train, held_out = _split(data.load_images(args.dataset, channels=args.channels))
images = held_out
if args.split == "train":
    images = [train[i * len(train) // len(held_out)] for i in range(len(held_out))]
print(f"{args.dataset}: {len(images)} {args.split} images")
for run in args.runs:
    row = snapshot_bits(run, images)
    quantised = f", fake-quantised {row['quantised_bpsp']:.4f}" if "quantised_bpsp" in row else ""
    print(f"{run}: float {row['float_bpsp']:.4f}{quantised}", flush=True)
