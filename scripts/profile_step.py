"""Where a training step's time goes: the sampler, then a torch.profiler table of a few steps.

    python scripts/profile_step.py RUN_DIR 'JSON TrainConfig overrides' [--steps 10] [--out FILE]

RUN_DIR is scratch (a fresh run is made there).  Prints the mean sampler time per batch and the
profiler's table sorted by device time (CUDA) or CPU time, so that a GPU session can see whether the
network, the mixture's elementwise work or the host holds a step back.
"""
import argparse
import json
import time

import torch
from torch.profiler import ProfilerActivity, profile

from nelloc.train import TrainConfig, Trainer

p = argparse.ArgumentParser()
p.add_argument("run_dir")
p.add_argument("config")
p.add_argument("--steps", type=int, default=10)
p.add_argument("--out")
args = p.parse_args()
trainer = Trainer(TrainConfig.from_overrides(json.loads(args.config)), args.run_dir)
cuda = trainer.device.type == "cuda"
for _ in range(3):
    trainer.train_step()
t0 = time.perf_counter()
for _ in range(args.steps):
    trainer.sampler.batch(trainer.cfg.batch)
sample_ms = (time.perf_counter() - t0) / args.steps * 1000
if cuda:
    torch.cuda.synchronize()
t0 = time.perf_counter()
for _ in range(args.steps):
    trainer.train_step()
step_ms = (time.perf_counter() - t0) / args.steps * 1000
activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
with profile(activities=activities) as prof:
    for _ in range(args.steps):
        trainer.train_step()
table = prof.key_averages().table(sort_by="cuda_time_total" if cuda else "cpu_time_total", row_limit=25)
head = f"batch {trainer.cfg.batch}: step {step_ms:.1f} ms, of which sampling {sample_ms:.1f} ms\n"
print(head + table)
if args.out:
    with open(args.out, "w") as f:
        f.write(head + table)
