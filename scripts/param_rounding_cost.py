"""What rounding each kind of mixture parameter to its integer unit still costs a run after its
fake-quantised training, on held-out crops of the run's training mix (``val_crops.py``):

    python scripts/param_rounding_cost.py runs/p195000bf-swa [...] [--crops 1024] [--seed 28] [--out F.json]

For each run: bits per sub-pixel as the run scores (fake-quantised if it trained so), then the change
when one kind of parameter (logit, mean, log-scale, colour coefficient) is left unrounded, everything
else as before. Stop 47 found the colour coefficients' 1/256 grid cost ~0.013 bits/sub-pixel after
fake-quantised training (docs/ablations.md, "Stop 47"); ``weight_rounding_cost.py --params`` measures
the same on float snapshots, before it.
"""
from __future__ import annotations

import argparse
import json

import torch

from nelloc import model as nm
from nelloc.train import load_float_model
from val_crops import val_bits  # this folder is on sys.path when run as a script


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+")
    p.add_argument("--crops", type=int, default=1024)
    p.add_argument("--seed", type=int, default=28, help="crops of this seed for every run (val_crops.py --seed)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    rounded = nm.quantize_param
    results = {}
    for run in args.runs:
        kinds = [kind for kind, _ in nm.output_layout(load_float_model(run, "last").cfg)]
        row = {"as trained": val_bits(run, args.crops, args.seed)}
        for kind in kinds:
            nm.quantize_param = (lambda raw, k, quantize, cfg=nm.ModelConfig(), float_kind=kind:
                                 rounded(raw, k, quantize and k != float_kind, cfg))
            try:
                row[f"{kind} unrounded"] = val_bits(run, args.crops, args.seed) - row["as trained"]
            finally:
                nm.quantize_param = rounded
        results[run] = row
        print(run, f"{row['as trained']:.4f}", " ".join(f"{k}: {v:+.4f}" for k, v in row.items() if k != "as trained"),
              flush=True)
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"crops": args.crops, "seed": args.seed, "bits_per_subpixel_and_change": results}, f, indent=1)


if __name__ == "__main__":
    main()
