"""Paper Table 5 analogue: local models with horizon h = 2..5 (r = 1) trained with one equal budget.

    python scripts/ablation_horizon.py [--horizons 2,3,4,5] [--steps 1000] [--runs runs/ablate]
                                        [--out docs/results/ablation-horizon.json]

Trains (or resumes) RUNS/h{H} for each horizon on the CIFAR-10 train set (as the paper's Table 5),
then measures the float likelihood in bits per sub-pixel on the CIFAR-10 test subset, CelebA 32x32
(first 1000) and Kodak (full images), and prints a table.  Every run gets the same steps, batch,
crop, learning rate and seed; only the horizon differs.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import time
from pathlib import Path

import numpy as np
import torch

from nelloc import data, ood
from nelloc.model import count_parameters
from nelloc.train import TrainConfig, Trainer, load_float_model

EVAL_SETS = {"cifar10-test": 1000, "celeba": 1000, "kodak": None}
PAPER = {2: (1.18, 3.38, 3.42), 3: (1.25, 3.28, 3.37), 4: (1.34, 3.26, 3.37), 5: (1.46, 3.25, 3.37)}


def float_bits_per_subpixel(model, images: list[np.ndarray]) -> float:
    (bits,) = ood.images_bits([model], images, max_pixels=2**16, progress=False)
    return float(bits.sum()) / sum(im.size for im in images)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--horizons", default="2,3,4,5")
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--width", type=int, default=128)
    p.add_argument("--runs", default="runs/ablate")
    p.add_argument("--out", default="docs/results/ablation-horizon.json")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    horizons = [int(h) for h in args.horizons.split(",")]
    sets = {name: data.load_images(name, channels=3, limit=limit) for name, limit in EVAL_SETS.items()}
    rows = []
    for h in horizons:
        run = Path(args.runs) / f"h{h}"
        cfg = TrainConfig.from_overrides({
            "data": ["cifar10-train"], "crop": 32, "batch": 32, "lr": 1e-3, "steps": args.steps,
            "qat_start": 1.0, "val_every": 250, "val_crops": 256, "threads": args.threads, "seed": 0,
            "model": {"horizon": h, "width": args.width, "res_blocks": 1}})
        trainer = Trainer(cfg, run)
        trainer.run(quiet=True)
        model = load_float_model(run, "last")
        model.quantize = False
        t0 = time.perf_counter()
        row = {"horizon": h, "parameters": count_parameters(model),
               "float32_mb": round(count_parameters(model) * 4 / 1e6, 3),
               "steps": trainer.step, "train_wall_s": round(trainer.wall),
               **{s: round(float_bits_per_subpixel(model, imgs), 4) for s, imgs in sets.items()}}
        row["eval_wall_s"] = round(time.perf_counter() - t0)
        rows.append(row)
        print(json.dumps(row), flush=True)
    result = {
        "command": "python scripts/ablation_horizon.py " + " ".join(
            f"--{k} {v}" for k, v in vars(args).items()),
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads",
        "date": time.strftime("%Y-%m-%d"),
        "budget": f"{args.steps} steps x 32 crops of 32x32 from CIFAR-10 train, lr 1e-3 cosine, float "
                  f"(no quantisation), width {args.width}, r = 1, K = 10",
        "metric": "float likelihood, bits per sub-pixel (not file sizes)",
        "sets": {s: len(imgs) for s, imgs in sets.items()},
        "rows": rows,
    }
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print("| h | parameters | MB (float32) | CIFAR-10 test | CelebA | Kodak | paper: MB, CIFAR, CelebA |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        mb, c, ce = PAPER.get(r["horizon"], (math.nan,) * 3)
        print(f"| {r['horizon']} | {r['parameters']:,} | {r['float32_mb']} | {r['cifar10-test']} | "
              f"{r['celeba']} | {r['kodak']} | {mb}, {c}, {ce} |")


if __name__ == "__main__":
    main()
