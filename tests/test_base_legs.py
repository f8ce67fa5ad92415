"""scripts/base_legs.sh: its dry run prints the legs that made the shipped photo/thumbnail models,
with the training settings their cards record (so the script cannot drift from what shipped)."""
import json
import re
import shlex
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "base_legs.sh"
RECORDED = ("data", "crop", "batch", "lr", "steps")


def _card(name: str) -> dict:
    return json.loads((ROOT / "models" / f"{name}.json").read_text())


def _base_step() -> int:
    """The base-run step the shipped rgb-photo's tail started from."""
    return int(re.fullmatch(r"runs/rgb-base@(\d+)", _card("rgb-photo")["training"]["init_from"]).group(1))


def _dry_run(step: int, *options: str) -> list[list[str]]:
    done = subprocess.run(["bash", str(SCRIPT), str(step), "--dry-run", *options], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return [shlex.split(line[2:]) for line in done.stdout.splitlines() if line.startswith("+ ")]


def _new_config(commands: list[list[str]], run: str) -> dict:
    [cmd] = [c for c in commands if c[1:3] == ["scripts/train_extend.py", run] and "--new" in c]
    return json.loads(cmd[cmd.index("--new") + 1])


def _average_command(commands: list[list[str]], run: str) -> list[str]:
    [cmd] = [c for c in commands if c[1:3] == ["scripts/average_snapshots.py", run]]
    return cmd


def _averaged(commands: list[list[str]], run: str) -> list[str]:
    """The snapshots the command averages (its arguments after OUT_RUN, options left out)."""
    snapshots = _average_command(commands, run)[3:]
    if "--drop-spikes" in snapshots:
        at = snapshots.index("--drop-spikes")
        del snapshots[at : at + 2]
    return snapshots


def _averaged_steps(commands: list[list[str]], run: str) -> list[int]:
    """The steps of the snapshots the command averages (RUN@STEP)."""
    return [int(s.split("@")[1]) for s in _averaged(commands, run)]


def test_the_tails_leave_spiked_snapshots_out_of_their_means(commands):
    step = _base_step()
    for run in (f"runs/p{step}-swa", f"runs/p{step}b-swa", f"runs/gp{step}-swa"):
        cmd = _average_command(commands, run)
        assert cmd[cmd.index("--drop-spikes") + 1] == "0.01"


@pytest.fixture(scope="module")
def commands():
    return _dry_run(_base_step())


def test_the_photo_tails_are_the_shipped_rgb_photo_recipe(commands):
    # since stop 42 rgb-photo is the 6,000-step tail trained on to 12,000 steps from its last float step
    step, training = _base_step(), _card("rgb-photo")["training"]
    config = _new_config(commands, f"runs/p{step}")
    [tail] = [c for c in commands if c[1:3] == ["scripts/train_extend.py", f"runs/p{step}"]]
    assert config["steps"] == 6000 and "5700" in tail[3].split(",")  # the snapshot the long tail starts from
    assert ["cp", "-r", f"runs/p{step}@5700", f"runs/p{step}b"] in commands
    # the long tail, then (since stop 48) its constant-rate fake-quantised ending, in that order
    for extend in [c for c in commands if c[1:3] == ["scripts/train_extend.py", f"runs/p{step}b"]]:
        lr = {"lr": float(extend[extend.index("--lr") + 1])} if "--lr" in extend else {}
        config |= json.loads(extend[extend.index("--set") + 1]) | lr  # --lr wins over --set, as in train_extend.py
    # a card records the steps of the last snapshot in its mean: fewer than the recipe's when that
    # snapshot spiked and was left out (stop 50: the mean of 12,200 and 12,400 of 12,600)
    same = [k for k in RECORDED if k != "steps"]
    assert {k: config[k] for k in same} == {k: training[k] for k in same}
    recipe_steps = _averaged_steps(commands, f"runs/p{step}b-swa")
    averaged = training["weights_averaged_over"]["steps"]
    assert config["steps"] == max(recipe_steps)
    assert training["steps"] == max(averaged)
    assert config["init_from"] == training["init_from"]
    architecture = _card("rgb-photo")["architecture"]
    grids = ("act_bits", "skip_bits", "first_bits", "coeff_bits")
    assert {k: config["model"][k] for k in grids} == {k: architecture[k] for k in grids}
    # stop 44 left one spiked fake-quantised snapshot out of the mean (the card says why); stop 46 ran the
    # fake-quantised steps on a copy of the run (runs/p195000bf), so compare steps, not run names
    assert len(averaged) >= 2 and set(averaged) <= set(recipe_steps)


def test_the_anneal_ends_in_the_snapshots_the_shipped_rgb_averages():
    card = _card("rgb")
    training = card["training"]
    step = training["steps"] - 4400  # its base snapshot (the rgb leg can ship without the photo legs)
    commands = _dry_run(step)
    assert _averaged_steps(commands, f"runs/rgb-q{step}-swa") == training["weights_averaged_over"]["steps"]
    [qat] = [c for c in commands if c[1:3] == ["scripts/train_extend.py", f"runs/rgb-q{step}"]]
    grids = json.loads(qat[qat.index("--model-set") + 1])  # the integer grids the card's model has
    assert grids == {k: card["architecture"][k] for k in grids} and {"first_bits", "coeff_bits"} <= set(grids)


def test_the_grey_leg_is_the_shipped_gray_photo_recipe_from_the_new_photo_weights(commands):
    step, training = _base_step(), _card("gray-photo")["training"]
    config = _new_config(commands, f"runs/gp{step}")
    assert {k: config[k] for k in RECORDED} == {k: training[k] for k in RECORDED}
    assert config["model"]["channels"] == 1
    assert config["init_from"] == f"runs/init/p{step}-float.safetensors"
    export = [c for c in commands if c[:2] == ["nelloc", "export"]]
    assert export and export[0][2] == f"runs/p{step}-swa"
    assert _averaged_steps(commands, f"runs/gp{step}-swa") == training["weights_averaged_over"]["steps"]


def test_a_missing_snapshot_is_a_one_line_error(tmp_path):
    done = subprocess.run(["bash", str(SCRIPT), "123"], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert done.returncode == 1
    assert done.stderr.strip() == "no runs/rgb-base@123/last.pt"


def test_a_step_that_is_not_a_number_is_a_one_line_error():
    done = subprocess.run(["bash", str(SCRIPT), "70k", "--dry-run"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr.strip() == "base_legs.sh: N must be a step count, not '70k'"


def test_no_grey_leaves_out_only_the_grey_leg(commands):
    without = _dry_run(_base_step(), "--no-grey")
    assert without == [c for c in commands if c[:2] != ["nelloc", "export"] and not any("gp" in a or "runs/init" in a for a in c)]
    assert without and not any(c[0] == "mkdir" for c in without)


def test_an_unknown_option_is_a_one_line_error():
    done = subprocess.run(["bash", str(SCRIPT), "70000", "--no-gray"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr.strip() == "base_legs.sh: unknown option '--no-gray'"


def test_a_python_without_nelloc_is_a_one_line_error(tmp_path):
    # stop 41: started from a shell without the environment, both legs died at their first import
    (tmp_path / "python").write_text("#!/bin/sh\nexit 1\n")
    (tmp_path / "python").chmod(0o755)
    done = subprocess.run(["bash", str(SCRIPT), "120000"], capture_output=True, text=True, timeout=60,
                          env={"PATH": f"{tmp_path}:/usr/bin:/bin"})
    assert done.returncode == 1
    assert done.stderr.strip() == ("base_legs.sh: python cannot import nelloc "
                                   "(activate the environment: . .venv/bin/activate)")
