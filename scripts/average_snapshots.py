"""Average the weights of several snapshots of one training run (stochastic weight averaging):

    python scripts/average_snapshots.py OUT_RUN RUN@400 RUN@600 RUN@800 [--drop-spikes 0.01 [--crops 1024]]

OUT_RUN gets a ``last.pt`` that is the last snapshot's checkpoint with its model weights replaced by
the mean over the snapshots (float tensors; other buffers from the last one), its log, and
``averaged_from.json``. Use it wherever a run folder is expected (``nelloc ood export``, ...).
Snapshots of one run after a warm start stay in one basin, so their mean is a smoother model than
any of them: the OOD ratio of two short-trained models swings from snapshot to snapshot.

``--drop-spikes F`` first scores every snapshot on the run's held-out crops (scripts/val_crops.py,
``--crops`` of them) and leaves out those more than the fraction F above the best one: a snapshot
taken on a loss spike drags the mean with it (stop 44: one of three long-tail snapshots scored
2.9172 against 2.8037 and 2.8098; the mean of all three 2.8064, of the other two 2.7964). The scores
and the snapshots left out go into ``averaged_from.json``.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import torch


def within_spike_tolerance(bits: dict[str, float], fraction: float) -> list[str]:
    """The snapshots whose bits are at most ``fraction`` above the best, in their given order."""
    best = min(bits.values())
    return [name for name, b in bits.items() if b <= best * (1 + fraction)]


def score_snapshots(snapshots: list[str], crops: int) -> dict[str, float]:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from val_crops import val_bits

    scores = {}
    for snapshot in snapshots:
        scores[snapshot] = val_bits(snapshot, crops)
        print(f"{snapshot}: {scores[snapshot]:.4f} on {crops} held-out crops", flush=True)
    return scores


def average(out_run: str, snapshots: list[str], extra: dict | None = None) -> None:
    ckpts = [torch.load(Path(s) / "last.pt", map_location="cpu", weights_only=True) for s in snapshots]
    configs = {json.dumps(json.loads(c["config"])["model"], sort_keys=True) for c in ckpts}
    if len(configs) != 1:
        raise SystemExit("snapshots have different model configurations")
    avg = dict(ckpts[-1])
    avg["model"] = {
        k: (torch.stack([c["model"][k] for c in ckpts]).mean(0) if v.is_floating_point() else v)
        for k, v in ckpts[-1]["model"].items()
    }
    out = Path(out_run)
    out.mkdir(parents=True, exist_ok=True)
    torch.save(avg, out / "last.pt")
    log = Path(snapshots[-1]) / "log.jsonl"
    if log.exists():
        shutil.copy(log, out / "log.jsonl")
    record = {"snapshots": snapshots, "steps": [int(c["step"]) for c in ckpts]} | (extra or {})
    (out / "averaged_from.json").write_text(json.dumps(record) + "\n")
    print(f"{out}: mean of {len(ckpts)} snapshots (steps {', '.join(str(int(c['step'])) for c in ckpts)})")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out_run")
    p.add_argument("snapshots", nargs="+")
    p.add_argument("--drop-spikes", type=float, default=None, metavar="FRACTION",
                   help="leave out snapshots scoring more than FRACTION above the best on held-out crops")
    p.add_argument("--crops", type=int, default=1024, help="held-out crops that --drop-spikes scores on")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_intermixed_args()
    for snapshot in args.snapshots:
        if not (Path(snapshot) / "last.pt").is_file():
            sys.exit(f"average_snapshots.py: no run at {snapshot} (no last.pt)")
    torch.set_num_threads(args.threads)
    snapshots, extra = args.snapshots, None
    if args.drop_spikes is not None:
        scores = score_snapshots(args.snapshots, args.crops)
        snapshots = within_spike_tolerance(scores, args.drop_spikes)
        dropped = [s for s in args.snapshots if s not in snapshots]
        if dropped:
            print(f"left out (more than {args.drop_spikes:g} above the best): {', '.join(dropped)}")
        extra = {"held_out_bits": scores, "crops": args.crops, "drop_spikes": args.drop_spikes, "left_out": dropped}
    average(args.out_run, snapshots, extra)


if __name__ == "__main__":
    main()
