"""scripts/average_snapshots.py: the mean of a run's snapshots, less the ones that spiked."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from nelloc.train import Trainer

from test_train import tiny_config

SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"
sys.path.insert(0, str(SCRIPTS))
from average_snapshots import within_spike_tolerance  # noqa: E402


def _script(*args):
    return subprocess.run([sys.executable, str(SCRIPTS / "average_snapshots.py"), *map(str, args)],
                          capture_output=True, text=True, timeout=120)


def _snapshot(run_dir: Path, name: str) -> Path:
    snap = run_dir.parent / name
    snap.mkdir()
    shutil.copy(run_dir / "last.pt", snap / "last.pt")
    return snap


@pytest.fixture(scope="module")
def snapshots(tmp_path_factory):
    """Two snapshots of a tiny run (at 6 steps ~10% above the one at 12 on held-out crops), and a copy
    of the second with noise on its weights (a spike: ~35% above)."""
    from conftest import smooth_image
    from PIL import Image

    folder = tmp_path_factory.mktemp("images")
    for i in range(40):  # the trainer holds out every 20th image: two held-out ones
        Image.fromarray(smooth_image(20, 24, 3, seed=i)).save(folder / f"{i:02d}.png")
    run_dir = tmp_path_factory.mktemp("runs") / "run"
    trainer = Trainer(tiny_config(folder, steps=12, seed=5), run_dir)
    trainer.run(steps=6, quiet=True)
    first = _snapshot(run_dir, "run@6")
    trainer.run(quiet=True)
    second = _snapshot(run_dir, "run@12")
    spiked = run_dir.parent / "run@12-spiked"
    spiked.mkdir()
    ckpt = torch.load(second / "last.pt", weights_only=True)
    noise = torch.Generator().manual_seed(0)
    ckpt["model"] = {k: v + torch.randn(v.shape, generator=noise) if v.is_floating_point() else v
                     for k, v in ckpt["model"].items()}
    torch.save(ckpt, spiked / "last.pt")
    return first, second, spiked


def test_only_snapshots_within_the_fraction_of_the_best_are_kept():
    # stop 44's long tail: snapshot 11,800 had spiked
    bits = {"@11600": 2.8037, "@11800": 2.9172, "@12000": 2.8098}
    assert within_spike_tolerance(bits, 0.01) == ["@11600", "@12000"]
    assert within_spike_tolerance(bits, 0.05) == ["@11600", "@11800", "@12000"]
    assert within_spike_tolerance({"a": 3.0}, 0.0) == ["a"]


def _weights(run: Path) -> dict:
    return torch.load(run / "last.pt", weights_only=True)["model"]


def test_a_spiked_snapshot_is_left_out_of_the_mean(snapshots, tmp_path):
    first, second, spiked = snapshots
    done = _script(tmp_path / "swa", first, spiked, second, "--drop-spikes", 0.2, "--crops", 8)
    assert done.returncode == 0, done.stderr
    record = json.loads((tmp_path / "swa" / "averaged_from.json").read_text())
    assert record["snapshots"] == [str(first), str(second)] and record["left_out"] == [str(spiked)]
    assert record["steps"] == [6, 12] and set(record["held_out_bits"]) == {str(first), str(second), str(spiked)}
    for name, mean in _weights(tmp_path / "swa").items():
        if mean.is_floating_point():
            assert torch.equal(mean, torch.stack([_weights(first)[name], _weights(second)[name]]).mean(0))


def test_without_the_option_every_snapshot_is_averaged(snapshots, tmp_path):
    first, second, spiked = snapshots
    done = _script(tmp_path / "swa", first, spiked, second)
    assert done.returncode == 0, done.stderr
    record = json.loads((tmp_path / "swa" / "averaged_from.json").read_text())
    assert record == {"snapshots": [str(first), str(spiked), str(second)], "steps": [6, 12, 12]}


def test_a_missing_snapshot_is_a_one_line_error(snapshots, tmp_path):
    done = _script(tmp_path / "swa", snapshots[0], tmp_path / "nope")
    assert done.returncode == 1 and not (tmp_path / "swa").exists()
    assert done.stderr.strip() == f"average_snapshots.py: no run at {tmp_path / 'nope'} (no last.pt)"
