"""Likelihood of a model's training snapshots on an evaluation set, against cumulative training steps,
and what a log-linear trend says about the steps a target needs:

    python scripts/learning_curve.py --dataset kodak --limit 8 --target 2.80 \
        runs/rgb-c128@2000:2000 runs/rgb-c128@8000:8000 runs/rgb-skip@4500:12500 ...

Each snapshot is ``RUN_DIR:CUMULATIVE_STEPS`` (a run folder with ``last.pt``; an extension leg's
steps counted on top of the run it started from).  Prints bits per sub-pixel of the float model and
of the fake-quantised one (what export turns into the exact model; "-" if the snapshot never
quantised), then fits ``bpsp = a + b * log2(steps)`` to the model's likelihood (the fake-quantised one
where there is one: a snapshot trained with fake quantisation is that model, and its weights without
the rounding score worse) through the points marked as leg ends (``--ends``, default: all) and solves
for ``--target``.  A log-linear fit is a rough guide over a few doublings;
the script says so beside the number.  Writes JSON to ``--out``; snapshots already measured in an
existing ``--out`` (same set and image count) are taken from it, not evaluated again.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np
import torch

from nelloc import data
from nelloc.ood import images_bits
from nelloc.train import load_float_model


def snapshot_bits(run: str, imgs: list[np.ndarray]) -> dict:
    model = load_float_model(run, "last")
    sub = sum(im.size for im in imgs)
    row = {}
    if model.quantize:
        row["quantised_bpsp"] = float(images_bits([model], imgs, progress=False)[0].sum()) / sub
    model.quantize = False
    row["float_bpsp"] = float(images_bits([model], imgs, progress=False)[0].sum()) / sub
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("snapshots", nargs="+", help="RUN_DIR:CUMULATIVE_STEPS")
    p.add_argument("--dataset", default="kodak")
    p.add_argument("--limit", type=int, default=8)
    p.add_argument("--channels", type=int, default=3)
    p.add_argument("--target", type=float)
    p.add_argument("--ends", help="comma-separated cumulative steps to fit (default: all snapshots)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    imgs = data.load_images(args.dataset, channels=args.channels, limit=args.limit)
    done = {}
    if args.out and Path(args.out).exists():
        old = json.loads(Path(args.out).read_text())
        if (old["dataset"], old["images"]) == (args.dataset, len(imgs)):
            done = {(r["run"], r["steps"]): r for r in old["rows"]}
    rows = []
    for spec in args.snapshots:
        run, steps = spec.rsplit(":", 1)
        rows.append(done.get((run, int(steps))) or {"run": run, "steps": int(steps), **snapshot_bits(run, imgs)})
        r = rows[-1]
        print(f"{r['run']} ({r['steps']} steps): float {r['float_bpsp']:.4f}, "
              f"quantised {r.get('quantised_bpsp', float('nan')):.4f}", flush=True)
    print(f"\n{args.dataset}, first {len(imgs)} images, bits per sub-pixel of the model's likelihood\n")
    print("| snapshot | cumulative steps | float | fake-quantised |\n|---|---|---|---|")
    for r in rows:
        q = f"{r['quantised_bpsp']:.4f}" if "quantised_bpsp" in r else "-"
        print(f"| `{r['run']}` | {r['steps']} | {r['float_bpsp']:.4f} | {q} |")
    result = {"command": "python " + " ".join(sys.argv), "dataset": args.dataset, "images": len(imgs), "rows": rows}
    ends = {int(s) for s in args.ends.split(",")} if args.ends else {r["steps"] for r in rows}
    fit = [r for r in rows if r["steps"] in ends]
    if len(fit) >= 2:
        x = np.log2([r["steps"] for r in fit])
        y = np.array([r.get("quantised_bpsp", r["float_bpsp"]) for r in fit])
        b, a = np.polyfit(x, y, 1)
        result["fit"] = {"points": [r["steps"] for r in fit], "bpsp_per_doubling": b, "intercept": a}
        print(f"\nlog-linear fit through steps {[r['steps'] for r in fit]}: {b:+.4f} bits/sub-pixel per doubling of steps")
        if args.target is not None and b < 0:
            need = 2 ** ((args.target - a) / b)
            result["fit"].update(target=args.target, steps_needed=need)
            print(f"likelihood {args.target} would need ~{need:,.0f} steps "
                  f"({math.log2(need / fit[-1]['steps']):.1f} more doublings) if the trend held, which it "
                  "need not over that range")
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
