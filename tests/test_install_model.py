"""scripts/install_model.py: an export becomes the shipped model, and the one it replaces is retired."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from nelloc import api, zoo
from nelloc.model import ModelConfig
from nelloc.train import TrainConfig, Trainer, export_run

from conftest import smooth_image

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "install_model.py"


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    """Two exports of model "m" from the same run, 4 and 8 steps."""
    root = tmp_path_factory.mktemp("install")
    (root / "imgs").mkdir()
    Image.fromarray(smooth_image(40, 48, 3)).save(root / "imgs" / "0.png")
    cfg = TrainConfig(data=[str(root / "imgs")], model=ModelConfig(width=8, mixtures=2), crop=12, batch=4, steps=4,
                      val_every=4, ckpt_every=4, val_crops=4, qat_start=0.5, warmup=1)
    Trainer(cfg, root / "run").run(quiet=True)
    export_run(root / "run", "m", root / "first", evaluate=[])
    Trainer(cfg, root / "run").run(steps=8, quiet=True)
    export_run(root / "run", "m", root / "second", evaluate=[])
    return root


def _install(export_dir, notes_text, models, name="m"):
    notes = models.parent / f"notes-{export_dir.name}.txt"
    notes.write_text(notes_text)
    return subprocess.run([sys.executable, str(SCRIPT), name, str(export_dir), str(notes), "--models", str(models)],
                          capture_output=True, text=True, timeout=120)


def test_the_replaced_model_is_retired_with_its_card_and_its_files_still_decode(exports, tmp_path, monkeypatch):
    models = tmp_path / "models"
    models.mkdir()
    done = _install(exports / "first", "first notes\n", models)
    assert done.returncode == 0, done.stderr
    first = json.loads((models / "m.json").read_text())
    assert first["training_notes"] == "first notes"
    assert (models / "float" / "m.safetensors").read_bytes() == (exports / "first" / "float" / "m.safetensors").read_bytes()
    monkeypatch.setenv("NELLOC_MODELS", str(models))
    img = smooth_image(9, 11, 3, seed=1)
    old_file = api.compress(img, model="m")

    done = _install(exports / "second", "second notes", models)
    assert done.returncode == 0, done.stderr
    second = json.loads((models / "m.json").read_text())
    assert second["sha256"] != first["sha256"] and second["training_notes"] == "second notes"
    assert (models / "m.safetensors").read_bytes() == (exports / "second" / "m.safetensors").read_bytes()
    retired = models / "retired" / f"m-{first['sha256'][:zoo.ID_HEX]}"
    assert json.loads(retired.with_suffix(".json").read_text()) == first
    assert (retired.with_suffix(".safetensors")).read_bytes() == (exports / "first" / "m.safetensors").read_bytes()
    assert str(retired.with_suffix(".safetensors")) in done.stdout
    assert np.array_equal(np.asarray(api.decompress(old_file)), img)


def _snapshot(folder: Path) -> dict:
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("case", ["same model", "empty notes", "card of another model", "no export"])
def test_refusals_are_one_line_and_move_nothing(exports, tmp_path, case):
    models = tmp_path / "models"
    models.mkdir()
    assert _install(exports / "first", "notes", models).returncode == 0
    export_dir, notes = exports / "second", "notes"
    if case == "same model":
        export_dir = exports / "first"
    elif case == "empty notes":
        notes = " \n"
    elif case == "card of another model":
        export_dir = tmp_path / "mixed"
        (export_dir / "float").mkdir(parents=True)
        for f in ("m.safetensors", "float/m.safetensors"):
            (export_dir / f).write_bytes((exports / "second" / f).read_bytes())
        (export_dir / "m.json").write_text((exports / "first" / "m.json").read_text())
    else:
        export_dir = tmp_path / "nothing"
    before = _snapshot(models)
    done = _install(export_dir, notes, models)
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("install_model.py: ") and not done.stdout
    assert _snapshot(models) == before
