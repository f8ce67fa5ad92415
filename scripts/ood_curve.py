"""AUROC against training steps for an OOD pair (the full model's snapshots, one local model):

    python scripts/ood_curve.py --local runs/ood-fmnist-local --full 'runs/ood-fmnist-fullw@*' \
        --in-dist fashion-mnist-test --ood mnist-test --ood omniglot-28-inv --limit 1000 \
        --out docs/results/ood-curve-fmnist.json

Snapshots come from ``scripts/train_extend.py`` (RUN@STEP folders). ``--local`` may also be a glob of
local snapshots (a local expert continued alongside the full model, ``init_from`` the same local run):
each full snapshot is then paired with the local one of the same step. Prints a Markdown table (AUROC of
the full likelihood, the local likelihood and the NeLLoC ratio per OOD set, and both models' mean
bits/dim on the in-distribution set) and writes the JSON with the command.
"""
import argparse
import glob
import json
import os
import sys
import tempfile
from pathlib import Path

p = argparse.ArgumentParser()
p.add_argument("--local", required=True,
               help="local run folder, or a glob of local snapshots: each full snapshot is then paired with "
                    "the local snapshot of the same step (equal training budget)")
p.add_argument("--full", required=True, help="glob of full-model run folders (snapshots)")
p.add_argument("--in-dist", required=True)
p.add_argument("--ood", action="append", required=True)
p.add_argument("--limit", type=int, default=1000)
p.add_argument("--out")
args = p.parse_args()

tmp = Path(tempfile.mkdtemp())
os.environ["NELLOC_MODELS"] = str(tmp)  # the snapshots' pairs are exported here, not into models/
from nelloc import ood  # noqa: E402
from nelloc.train import load_run_config  # noqa: E402
import torch  # noqa: E402

def run_step(run: str) -> int:
    return int(torch.load(Path(run) / "last.pt", weights_only=True)["step"])


locals_by_step = {run_step(r): r for r in glob.glob(args.local)}
rows = []
fulls_by_step = {run_step(r): r for r in glob.glob(args.full)}
for step, run in sorted(fulls_by_step.items()):
    local = args.local if len(locals_by_step) == 1 else locals_by_step.get(step)
    if local is None:
        sys.exit(f"no local snapshot at step {step} in {args.local}")
    name = f"curve{step}"
    ood.export_pair(run, local, name, tmp)
    res = ood.evaluate(args.in_dist, args.ood, name, limit=args.limit, baselines=False, progress=False)
    row = {"run": run, "local": local, "step": step, "lr": load_run_config(run).lr, "in_dist": res["in_dist"],
           "ood": {k: {**v["metrics"], "bpd_full_mean": v["bpd_full_mean"], "bpd_local_mean": v["bpd_local_mean"]}
                   for k, v in res["ood"].items()}}
    rows.append(row)
    print(json.dumps({"step": step, **{k: v["nelloc_ratio"]["auroc"] for k, v in row["ood"].items()}}), file=sys.stderr)

sets = args.ood
print("\n| full-model steps | ID bits/dim full / local | " + " | ".join(f"{s}: AUROC ratio / full / local" for s in sets) + " |")
print("|---|---|" + "---|" * len(sets))
for r in rows:
    keys = ("nelloc_ratio", "full_likelihood", "local_likelihood")
    cells = [" / ".join(f"{r['ood'][s][k]['auroc']:.3f}" for k in keys) for s in sets]
    idb = f"{r['in_dist']['bpd_full_mean']:.3f} / {r['in_dist']['bpd_local_mean']:.3f}"
    print(f"| {r['step']} | {idb} | " + " | ".join(cells) + " |")
if args.out:
    Path(args.out).write_text(json.dumps({"command": "python " + " ".join(sys.argv), "rows": rows}, indent=2) + "\n")
    print(f"\nwrote {args.out}")
