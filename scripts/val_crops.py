"""Validation bits of training runs on a fixed set of held-out crops of a data mix, to compare runs
whose own ``val_bpd`` used too few crops or other crops:

    python scripts/val_crops.py runs/p120000-swa runs/p110000-swa [--crops 1024] [--seed 28] [--source clic/2]

The trainer draws its validation crops from each data source's held-out images with the run's own
seed (``nelloc.train.build_samplers``), so runs with different seeds are scored on different crops.
``--seed`` scores every run on the crops of that seed (compare runs only on the same crops);
``--source`` scores on one source of the mix alone (e.g. ``clic/4``), with the run's model settings.
Prints bits per sub-pixel, fake-quantised if the run's last step trained so (what export makes exact),
the figure ``Trainer.validate`` gives with these crops. It reads the run and writes nothing, so it
can score a run that is training.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from nelloc.train import build_samplers, crops_bits_per_dim, load_float_model, load_run_config, uses_amp  # noqa: E402


def val_bits(run: str, crops: int, seed: int | None = None, source: str | None = None) -> float:
    # not Trainer(cfg, run).validate(): a Trainer on a run's folder trims its log to the checkpoint
    changes = {"val_crops": crops}
    if seed is not None:
        changes["seed"] = seed
    if source is not None:
        changes["data"] = [source]
    cfg = dataclasses.replace(load_run_config(run), **changes)
    _, val = build_samplers(cfg)
    model = load_float_model(run, "last")
    cpu = torch.device("cpu")
    model.amp = uses_amp(cfg, cpu)
    return crops_bits_per_dim(model, val, cpu)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+")
    p.add_argument("--crops", type=int, default=1024)
    p.add_argument("--seed", type=int, default=None, help="the crops' seed (default: each run's own)")
    p.add_argument("--source", default=None, help="one data source instead of the run's mix")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_intermixed_args()
    torch.set_num_threads(args.threads)
    for run in args.runs:
        if not (Path(run) / "last.pt").is_file():
            sys.exit(f"val_crops.py: no run at {run} (no last.pt)")
        bits = val_bits(run, args.crops, args.seed, args.source)
        print(f"{run}: {bits:.4f}", flush=True)


if __name__ == "__main__":
    main()
