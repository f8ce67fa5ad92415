"""Train a run for a wall-clock budget (a lent GPU's 10-minute call), with the schedule sized to fit:

    python scripts/train_timed.py RUN SECONDS [--new 'JSON overrides'] [--set 'JSON overrides']
                                  [--qat-start F] [--snapshots K] [--every F]

The first ``--probe`` steps (inside the learning-rate warm-up, so the schedule does not depend on
them) time a step; the run's ``steps`` is then set so that the rest fits in SECONDS with a margin for
the slower fake-quantised steps and validation.  The last K snapshots (``--every`` of this leg's steps
apart) are kept as RUN@STEP and averaged into RUN-swa.  If the clock still runs out, training stops
at the deadline and says so; ``summary.json`` in RUN records steps, step time and wall time.
"""
import argparse
import dataclasses
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

from nelloc.train import TrainConfig, Trainer, load_run_config

p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
p.add_argument("run_dir")
p.add_argument("seconds", type=float)
p.add_argument("--new", help="JSON TrainConfig overrides for a run that does not exist yet")
p.add_argument("--set", action="append", default=[], help="JSON TrainConfig overrides (repeatable)")
p.add_argument("--model-set", help="JSON ModelConfig overrides")
p.add_argument("--qat-start", type=float, default=0.94)
p.add_argument("--snapshots", type=int, default=4)
p.add_argument("--every", type=float, default=0.015, help="snapshot spacing as a fraction of the steps")
p.add_argument("--probe", type=int, default=60)
p.add_argument("--reserve", type=float, default=30, help="seconds kept back for averaging and packing")
p.add_argument("--margin", type=float, default=0.82, help="fraction of the float-step estimate planned")
p.add_argument("--steps", type=int, help="train exactly this many steps (the clock only stops it at the deadline)")
p.add_argument("--steps-like", metavar="RUN",
               help="train as many steps as RUN plans (waits for its plan.json): equal budget for an OOD pair")
args = p.parse_args()
if args.probe <= 10:  # the first 10 steps are warm-up, not timed
    p.error(f"--probe must be more than 10 steps, not {args.probe}")

t_start = time.perf_counter()
deadline = t_start + args.seconds
run = Path(args.run_dir)
if (run / "last.pt").exists() or not args.new:
    cfg = load_run_config(run)
else:
    cfg = TrainConfig.from_overrides(json.loads(args.new))
for text in args.set:
    for key, value in json.loads(text).items():
        setattr(cfg, key, value)
if args.model_set:
    cfg.model = dataclasses.replace(cfg.model, **json.loads(args.model_set))
cfg.qat_start = args.qat_start
cfg.steps = args.steps or 10**9  # probing without --steps: at the peak rate, never fake-quantised
trainer = Trainer(cfg, run)
first = trainer.step
if trainer.step + args.probe > cfg.warmup and first == 0:
    cfg.warmup = args.probe + 10
trainer.run(steps=first + 10, quiet=True)  # first steps: allocation, autotuning
t0 = time.perf_counter()
trainer.run(steps=first + args.probe, quiet=True)
step_s = (time.perf_counter() - t0) / (args.probe - 10)
left = deadline - time.perf_counter() - args.reserve  # averaging and packing
total = trainer.step + int(left / step_s * args.margin)
if args.steps_like:
    plan = Path(args.steps_like) / "plan.json"
    while not plan.exists() and time.perf_counter() < deadline - 60:
        time.sleep(2)
    if not plan.exists():
        raise SystemExit(f"train_timed: {plan} did not appear in time")
    total = json.loads(plan.read_text())["steps"]
if args.steps:
    total = args.steps
if total <= trainer.step + args.snapshots:
    raise SystemExit(f"train_timed: {args.seconds:.0f} s leave no time to train after the probe ({step_s:.3f} s/step)")
cfg.steps = total
(run / "plan.json").write_text(json.dumps({"steps": total}) + "\n")
gap = max(1, int(args.every * (total - first)))  # a fraction of this leg's steps (a resumed run has had others)
snaps = [s for s in (total - gap * k for k in reversed(range(args.snapshots))) if s > trainer.step]
print(f"{run}: {step_s * 1000:.1f} ms/step after {args.probe} steps; planned {total} steps "
      f"(fake-quantised from {int(cfg.qat_start * total)}), snapshots {snaps}", flush=True)
stopped_early = False
for target in snaps:
    while trainer.step < target:
        trainer.run(steps=min(target, trainer.step + 500), quiet=True)
        if time.perf_counter() > deadline - min(20, args.reserve):
            stopped_early = True
            break
    if stopped_early:
        trainer.save(run / "last.pt")
        break
    snap = run.parent / f"{run.name}@{target}"
    snap.mkdir(exist_ok=True)
    shutil.copy(run / "last.pt", snap / "last.pt")
    shutil.copy(run / "log.jsonl", snap / "log.jsonl")  # the averaged run's card shows the curve
made = [str(run.parent / f"{run.name}@{s}") for s in snaps if (run.parent / f"{run.name}@{s}" / "last.pt").exists()]
if len(made) >= 2:
    subprocess.run([sys.executable, str(Path(__file__).with_name("average_snapshots.py")), f"{run}-swa", *made], check=True)
summary = {"run": str(run), "steps": trainer.step, "planned_steps": total, "first_step": first,
           "step_ms_float": round(step_s * 1000, 2), "wall_s": round(time.perf_counter() - t_start, 1),
           "snapshots": made, "stopped_at_deadline": stopped_early, "config": dataclasses.asdict(cfg)}
(run / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
print(json.dumps({k: v for k, v in summary.items() if k != "config"}), flush=True)
