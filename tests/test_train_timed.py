"""scripts/train_timed.py: a run sized to a time budget, its snapshots and their mean; equal budgets."""
import json
import subprocess
import sys
from pathlib import Path

import torch

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "train_timed.py"


def _run(run_dir, seconds, *extra, new=None):
    args = [sys.executable, str(SCRIPT), str(run_dir), str(seconds), "--probe", "12", "--reserve", "2",
            "--qat-start", "0.9", "--every", "0.05", *extra]
    if new:
        args += ["--new", json.dumps(new)]
    return subprocess.run(args, capture_output=True, text=True, timeout=300)


def test_a_timed_run_fills_its_budget_keeps_snapshots_and_averages_them(image_folder, tmp_path):
    new = {"data": [str(image_folder)], "model": {"width": 8, "mixtures": 2}, "crop": 12, "batch": 4,
           "val_every": 50, "val_crops": 4, "warmup": 20, "sampler": "vector", "threads": 1}
    # plan 40% of the probe's estimate, so that the run ends by plan even if the machine slows to
    # less than half the speed it probed at (a CI machine or a training job beside the tests)
    done = _run(tmp_path / "a", 8, "--margin", "0.4", new=new)
    assert done.returncode == 0, done.stderr
    summary = json.loads((tmp_path / "a" / "summary.json").read_text())
    assert summary["steps"] == summary["planned_steps"] > 12 and not summary["stopped_at_deadline"]
    assert summary["wall_s"] < 3 * 8  # the budget, loosely (a loaded CI machine runs a little late)
    assert len(summary["snapshots"]) == 4
    for snap in summary["snapshots"]:
        assert (Path(snap) / "log.jsonl").exists()  # the mean's card shows the training curve
    mean = torch.load(tmp_path / "a-swa" / "last.pt", weights_only=True)
    snaps = [torch.load(Path(s) / "last.pt", weights_only=True) for s in summary["snapshots"]]
    key = "first.weight"
    assert torch.allclose(mean["model"][key], torch.stack([s["model"][key] for s in snaps]).mean(0))
    # an equal-budget partner trains exactly as many steps, however fast its steps are
    partner = _run(tmp_path / "b", 20, "--steps-like", str(tmp_path / "a"), new=new)
    assert partner.returncode == 0, partner.stderr
    assert json.loads((tmp_path / "b" / "summary.json").read_text())["steps"] == summary["steps"]


def test_too_small_a_budget_is_a_clear_error(image_folder, tmp_path):
    new = {"data": [str(image_folder)], "model": {"width": 8, "mixtures": 2}, "crop": 12, "batch": 4,
           "val_crops": 4, "threads": 1}
    done = _run(tmp_path / "a", 0.5, new=new)
    assert done.returncode != 0 and "leave no time to train" in done.stderr


def test_a_probe_of_ten_steps_or_fewer_is_a_clear_error(tmp_path):
    # the first 10 steps are not timed: a probe of 10 timed nothing (it divided by zero before)
    done = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path / "a"), "60", "--probe", "10"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "--probe must be more than 10 steps" in done.stderr
    assert "Traceback" not in done.stderr and not (tmp_path / "a").exists()
