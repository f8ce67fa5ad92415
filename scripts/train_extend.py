"""Train or extend a run, keeping snapshots:
    python scripts/train_extend.py RUN_DIR STEPS[,STEPS...] [--lr LR] [--qat-start F] [--total N]
                                   [--model-set 'JSON model overrides'] [--set 'JSON overrides']
                                   [--new 'JSON overrides']

Trains RUN_DIR on to each listed step count in turn (the cosine schedule spans the last one) and
copies the checkpoint to RUN_DIR@STEP/last.pt (with the log) after each, so that every snapshot can
be exported and evaluated (e.g. an OOD AUROC-against-steps curve).  ``--total`` lets the schedule
span more steps than this call trains (stop before the fake-quantisation phase, change the model's
quantisation with ``--model-set``, go on).
"""
import argparse
import dataclasses
import json
import shutil
from pathlib import Path

from nelloc.train import TrainConfig, Trainer, load_run_config

p = argparse.ArgumentParser()
p.add_argument("run_dir")
p.add_argument("steps")
p.add_argument("--lr", type=float)
p.add_argument("--qat-start", type=float, help="fraction of the (new) total steps trained before fake quantisation")
p.add_argument("--total", type=int, help="steps the cosine schedule spans (default: the last target)")
p.add_argument("--model-set", help='JSON ModelConfig overrides for an existing run, e.g. \'{"act_bits": 10}\'')
p.add_argument("--set", action="append", default=[],
               help='JSON TrainConfig overrides for an existing run, e.g. \'{"calib_quantile": 1.0}\' (repeatable)')
p.add_argument("--new", help="JSON TrainConfig overrides for a run that does not exist yet")
args = p.parse_args()
targets = [int(s) for s in args.steps.split(",")]
if (Path(args.run_dir) / "last.pt").exists() or not args.new:
    cfg = load_run_config(args.run_dir)
else:
    cfg = TrainConfig.from_overrides(json.loads(args.new))
cfg.steps = max(cfg.steps, targets[-1], args.total or 0)
if args.model_set:
    cfg.model = dataclasses.replace(cfg.model, **json.loads(args.model_set))
overrides = {k: v for text in args.set for k, v in json.loads(text).items()}
for key, value in overrides.items():
    if key == "model" or not hasattr(cfg, key):
        raise SystemExit(f"--set: no TrainConfig field {key!r} (model fields: --model-set)")
    setattr(cfg, key, value)
if args.lr:
    cfg.lr = args.lr
if args.qat_start is not None:
    cfg.qat_start = args.qat_start
trainer = Trainer(cfg, args.run_dir)
run = Path(args.run_dir)
for target in targets:
    if trainer.step > target:  # resumed past this snapshot: it was taken before
        continue
    trainer.run(steps=target, quiet=True)
    snap = run.parent / f"{run.name}@{target}"
    snap.mkdir(exist_ok=True)
    shutil.copy(run / "last.pt", snap / "last.pt")
    shutil.copy(run / "log.jsonl", snap / "log.jsonl")
