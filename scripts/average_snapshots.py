"""Average the weights of several snapshots of one training run (stochastic weight averaging):

    python scripts/average_snapshots.py OUT_RUN RUN@400 RUN@600 RUN@800

OUT_RUN gets a ``last.pt`` that is the last snapshot's checkpoint with its model weights replaced by
the mean over the snapshots (float tensors; other buffers from the last one), its log, and
``averaged_from.json``. Use it wherever a run folder is expected (``nelloc ood export``, ...).
Snapshots of one run after a warm start stay in one basin, so their mean is a smoother model than
any of them: the OOD ratio of two short-trained models swings from snapshot to snapshot.
"""
import argparse
import json
import shutil
from pathlib import Path

import torch

p = argparse.ArgumentParser()
p.add_argument("out_run")
p.add_argument("snapshots", nargs="+")
args = p.parse_args()

ckpts = [torch.load(Path(s) / "last.pt", map_location="cpu", weights_only=True) for s in args.snapshots]
configs = {json.dumps(json.loads(c["config"])["model"], sort_keys=True) for c in ckpts}
if len(configs) != 1:
    raise SystemExit("snapshots have different model configurations")
avg = dict(ckpts[-1])
avg["model"] = {
    k: (torch.stack([c["model"][k] for c in ckpts]).mean(0) if v.is_floating_point() else v)
    for k, v in ckpts[-1]["model"].items()
}
out = Path(args.out_run)
out.mkdir(parents=True, exist_ok=True)
torch.save(avg, out / "last.pt")
log = Path(args.snapshots[-1]) / "log.jsonl"
if log.exists():
    shutil.copy(log, out / "log.jsonl")
(out / "averaged_from.json").write_text(json.dumps({"snapshots": args.snapshots, "steps": [int(c["step"]) for c in ckpts]}) + "\n")
print(f"{out}: mean of {len(ckpts)} snapshots (steps {', '.join(str(int(c['step'])) for c in ckpts)})")
