"""scripts/val_crops.py: a run's validation bits on chosen crops, without touching the run."""
import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from nelloc.train import Trainer

from test_train import tiny_config

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "val_crops.py"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from conftest import smooth_image
    from PIL import Image

    folder = tmp_path_factory.mktemp("images")
    for i in range(40):  # the trainer holds out every 20th image: two held-out ones
        Image.fromarray(smooth_image(20, 24, 3, seed=i)).save(folder / f"{i:02d}.png")
    run_dir = tmp_path_factory.mktemp("run") / "run"
    trainer = Trainer(tiny_config(folder, steps=12, seed=5), run_dir)
    trainer.run(quiet=True)
    return run_dir, trainer


def _script(*args):
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True, timeout=120)


def test_it_prints_what_the_trainer_validates_and_leaves_the_run_as_it_was(run):
    run_dir, trainer = run
    log, checkpoint = (run_dir / "log.jsonl").read_text(), (run_dir / "last.pt").read_bytes()
    with open(run_dir / "log.jsonl", "a") as f:  # a step logged after the checkpoint, as while training
        f.write('{"step": 13, "loss_bpd": 1.0}\n')
    done = _script(run_dir, "--crops", 16, "--seed", 9)
    assert done.returncode == 0, done.stderr
    scored = Trainer(dataclasses.replace(trainer.cfg, val_crops=16, seed=9), run_dir / ".." / "copy")
    scored.model.load_state_dict(trainer.model.state_dict())
    scored.step = trainer.step
    assert done.stdout == f"{run_dir}: {scored.validate():.4f}\n"
    assert (run_dir / "log.jsonl").read_text() == log + '{"step": 13, "loss_bpd": 1.0}\n'
    assert (run_dir / "last.pt").read_bytes() == checkpoint


def test_the_seed_chooses_the_crops(run):
    run_dir, _ = run
    outputs = {_script(run_dir, "--crops", 8, "--seed", seed).stdout for seed in (1, 2)}
    assert len(outputs) == 2


def test_a_missing_run_is_a_one_line_error(tmp_path):
    done = _script(tmp_path / "nope")
    assert done.returncode == 1
    assert done.stderr.strip() == f"val_crops.py: no run at {tmp_path / 'nope'} (no last.pt)"
