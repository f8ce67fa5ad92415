"""Keep an open-ended training run in the repository, so that a new checkout can resume it:
    python scripts/keep_run.py save RUN_DIR [--to models/train/NAME]
    python scripts/keep_run.py restore models/train/NAME [--to runs/NAME]

``runs/`` is git-ignored and does not survive a new checkout (stops 15, 25 and 34 each started
without it). ``save`` copies the run's ``last.pt`` (model, Adam state, step, RNG: everything the
trainer resumes from; it loads with ``torch.load(weights_only=True)``) and its log, gzipped, to a
folder that is committed; ``restore`` puts them back as a run folder that ``train_extend.py`` or
``nelloc train`` resumes exactly where the saved run stopped.
"""
import argparse
import gzip
import json
import shutil
from pathlib import Path

import torch

from nelloc.train import log_up_to


def save(run_dir: Path, dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    state = torch.load(run_dir / "last.pt", map_location="cpu", weights_only=True)
    step = int(state["step"])
    shutil.copy(run_dir / "last.pt", dest / "last.pt")
    # a run still training has logged steps after its last checkpoint: they are not in last.pt
    with gzip.GzipFile(dest / "log.jsonl.gz", "wb", mtime=0) as out:
        out.write(log_up_to((run_dir / "log.jsonl").read_text(), step).encode())
    print(f"saved {run_dir} at step {step} to {dest}")


def restore(src: Path, run_dir: Path) -> None:
    if (run_dir / "last.pt").exists():
        raise SystemExit(f"{run_dir} already holds a run; move it away first")
    run_dir.mkdir(parents=True, exist_ok=True)
    shutil.copy(src / "last.pt", run_dir / "last.pt")
    with gzip.open(src / "log.jsonl.gz", "rb") as log, open(run_dir / "log.jsonl", "wb") as out:
        shutil.copyfileobj(log, out)
    state = torch.load(run_dir / "last.pt", map_location="cpu", weights_only=True)
    cfg = json.loads(state["config"])
    print(f"restored {run_dir} at step {int(state['step'])} (schedule {cfg['schedule']}, lr {cfg['lr']})")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("action", choices=["save", "restore"])
    p.add_argument("path", type=Path, help="the run folder (save) or the kept folder (restore)")
    p.add_argument("--to", type=Path, help="default: models/train/NAME (save), runs/NAME (restore)")
    args = p.parse_args()
    if args.action == "save":
        save(args.path, args.to or Path("models/train") / args.path.name)
    else:
        restore(args.path, args.to or Path("runs") / args.path.name)


if __name__ == "__main__":
    main()
