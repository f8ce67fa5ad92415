"""Extend a training run and keep snapshots: python scripts/train_extend.py RUN_DIR STEPS[,STEPS...] [--lr LR]

Trains RUN_DIR on to each listed step count in turn (the cosine schedule spans the last one) and
copies the checkpoint to RUN_DIR@STEP/last.pt (with the log) after each, so that every snapshot can
be exported and evaluated (e.g. an OOD AUROC-against-steps curve).
"""
import argparse
import shutil
from pathlib import Path

from nelloc.train import Trainer, load_run_config

p = argparse.ArgumentParser()
p.add_argument("run_dir")
p.add_argument("steps")
p.add_argument("--lr", type=float)
args = p.parse_args()
targets = [int(s) for s in args.steps.split(",")]
cfg = load_run_config(args.run_dir)
cfg.steps = max(cfg.steps, targets[-1])
if args.lr:
    cfg.lr = args.lr
trainer = Trainer(cfg, args.run_dir)
run = Path(args.run_dir)
for target in targets:
    trainer.run(steps=target, quiet=True)
    snap = run.parent / f"{run.name}@{target}"
    snap.mkdir(exist_ok=True)
    shutil.copy(run / "last.pt", snap / "last.pt")
    shutil.copy(run / "log.jsonl", snap / "log.jsonl")
