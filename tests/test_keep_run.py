"""scripts/keep_run.py: a run kept in the repository resumes exactly in a new checkout; the kept
base run of the colour models loads without running code and is the run its log describes."""
import gzip
import json
import subprocess
import sys
from pathlib import Path

import torch

from nelloc.train import TrainConfig, Trainer

from test_train import tiny_config

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "keep_run.py"
KEPT_BASE = ROOT / "models" / "train" / "rgb-base"


def _keep(*args):
    done = subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


def _config(folder) -> TrainConfig:
    return tiny_config(folder, steps=20, qat_start=1.0, schedule="constant")


def test_a_kept_run_restored_elsewhere_takes_the_same_next_step(image_folder, tmp_path):
    first = Trainer(_config(image_folder), tmp_path / "runs" / "base")
    first.run(steps=6, quiet=True)
    expected = first.train_step()
    assert "saved" in _keep("save", tmp_path / "runs" / "base", "--to", tmp_path / "kept")
    assert "at step 6" in _keep("restore", tmp_path / "kept", "--to", tmp_path / "fresh" / "base")
    resumed = Trainer(_config(image_folder), tmp_path / "fresh" / "base")
    assert resumed.step == 6
    assert resumed.train_step() == expected
    log = (tmp_path / "fresh" / "base" / "log.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in log] == list(range(1, 7))


def test_a_run_saved_while_training_keeps_the_log_only_up_to_its_checkpoint(image_folder, tmp_path):
    Trainer(_config(image_folder), tmp_path / "base").run(steps=7, quiet=True)  # checkpoint at 6, log to 7
    assert "at step 7" in _keep("save", tmp_path / "base", "--to", tmp_path / "kept")
    (tmp_path / "base" / "log.jsonl").open("a").write('{"step": 8, "loss_bpd": 3.0}\n{"step": 9, "lo')
    torch.save({**torch.load(tmp_path / "base" / "last.pt", weights_only=True), "step": 6}, tmp_path / "base" / "last.pt")
    assert "at step 6" in _keep("save", tmp_path / "base", "--to", tmp_path / "kept6")
    with gzip.open(tmp_path / "kept6" / "log.jsonl.gz", "rt") as log:
        assert [json.loads(line)["step"] for line in log] == list(range(1, 7))


def test_restore_never_overwrites_a_run(image_folder, tmp_path):
    Trainer(_config(image_folder), tmp_path / "base").run(steps=3, quiet=True)
    _keep("save", tmp_path / "base", "--to", tmp_path / "kept")
    done = subprocess.run([sys.executable, str(SCRIPT), "restore", str(tmp_path / "kept"), "--to", str(tmp_path / "base")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and "already holds a run" in done.stderr


def test_the_kept_base_run_loads_without_code_and_matches_its_log():
    state = torch.load(KEPT_BASE / "last.pt", map_location="cpu", weights_only=True)
    cfg = json.loads(state["config"])
    assert cfg["schedule"] == "constant" and cfg["qat_start"] == 1.0 and cfg["model"]["width"] == 256
    assert "cifar10-test" not in " ".join(cfg["data"])
    with gzip.open(KEPT_BASE / "log.jsonl.gz", "rt") as log:
        steps = [json.loads(line)["step"] for line in log]
    assert steps == list(range(1, int(state["step"]) + 1))
