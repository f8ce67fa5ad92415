"""OOD scores (nelloc.ood): the ratio, the metrics, pair storage / export and the `ood` CLI group."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from nelloc import ood
from nelloc.errors import ModelError
from nelloc.model import ModelConfig, PixelCNN
from nelloc.ood_cli import ood as ood_group


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models: threads only cost time (much of it on a busy machine)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _tiny(channels: int, kind: str, seed: int) -> PixelCNN:
    torch.manual_seed(seed)
    model = PixelCNN(ModelConfig(channels=channels, horizon=1, res_blocks=1, width=8, mixtures=2, kind=kind))
    model.quantize = False  # OOD uses the float models
    return model.eval()


def _install_pair(root: Path, name: str, channels: int) -> None:
    for i, kind in enumerate(("full", "local")):
        ood.save_pair_member(_tiny(channels, kind, seed=channels * 10 + i), root / "ood" / f"{name}-{kind}.safetensors",
                             {"test": True})
    (root / "ood" / f"{name}.json").write_text(json.dumps({"name": name}))


@pytest.fixture(scope="module")
def pair_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ood_models")
    _install_pair(root, "gray", 1)
    _install_pair(root, "rgb", 3)
    return root


@pytest.fixture
def pairs(pair_root, monkeypatch) -> Path:
    monkeypatch.setenv("NELLOC_MODELS", str(pair_root))
    return pair_root


def _images(n: int, shape: tuple, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, shape, dtype=np.uint8) for _ in range(n)]


# -- the score -----------------------------------------------------------------------------------

def test_score_is_log_ratio_of_the_members(pairs):
    pair = ood.load_pair("gray")
    assert pair.channels == 1 and not pair.local.quantize
    imgs = _images(5, (8, 8)) + _images(1, (6, 10), seed=1) + _images(2, (8, 8), seed=2)  # mixed sizes
    s = ood.score_images(imgs, pair, batch=2, progress=False)
    with torch.no_grad():
        for i, im in enumerate(imgs):
            x = torch.from_numpy(im).float()[None, None]
            bf, bl = float(pair.full.bits(x)), float(pair.local.bits(x))
            assert s["bits_full"][i] == pytest.approx(bf, rel=1e-5)
            assert s["bits_local"][i] == pytest.approx(bl, rel=1e-5)
            # log2 p_full - log2 p_local = bits_local - bits_full, bits per image
            assert s["score"][i] == pytest.approx(bl - bf, abs=1e-3 + 1e-5 * bf)
            assert s["bpd_full"][i] == pytest.approx(bf / im.size, rel=1e-5)
    np.testing.assert_array_equal(s["score"], s["bits_local"] - s["bits_full"])
    np.testing.assert_allclose(s["score_bpd"], s["score"] / s["dims"])
    # batching does not change the result
    one = ood.score_images(imgs, pair, batch=1, progress=False)
    np.testing.assert_allclose(one["score"], s["score"], rtol=0, atol=1e-4)  # float32 convolutions


def test_mirror_averages_the_image_and_its_mirror(pairs):
    pair = ood.load_pair("rgb")
    imgs = _images(3, (8, 8, 3)) + _images(1, (6, 10, 3), seed=1)
    mirrors = [im[:, ::-1] for im in imgs]
    plain, flipped = ood.score_images(imgs, pair, progress=False), ood.score_images(mirrors, pair, progress=False)
    both = ood.score_images(imgs, pair, progress=False, mirror=True)
    for key in ("bits_full", "bits_local"):
        np.testing.assert_allclose(both[key], (plain[key] + flipped[key]) / 2, rtol=1e-6)
    assert not np.allclose(plain["bits_full"], flipped["bits_full"])  # the mirror is another image to the model
    np.testing.assert_array_equal(both["score"], both["bits_local"] - both["bits_full"])
    # a mirror-symmetric image scores as it does without the average
    sym = [np.concatenate([im, im[:, ::-1]], axis=1) for im in _images(2, (8, 4, 3), seed=3)]
    np.testing.assert_allclose(ood.score_images(sym, pair, progress=False, mirror=True)["score"],
                               ood.score_images(sym, pair, progress=False)["score"], rtol=1e-6)


def test_grey_images_are_replicated_for_a_colour_pair(pairs):
    grey = _images(2, (8, 8))
    rgb = [np.repeat(g[..., None], 3, axis=2) for g in grey]
    a = ood.score_images(grey, "rgb", progress=False)
    b = ood.score_images(rgb, "rgb", progress=False)
    np.testing.assert_array_equal(a["score"], b["score"])
    assert (a["dims"] == 8 * 8 * 3).all()


def test_missing_pair_is_a_model_error(pairs):
    with pytest.raises(ModelError, match="not installed"):
        ood.load_pair("nope")


# -- metrics -------------------------------------------------------------------------------------

def test_auroc_hand_example_with_a_tie():
    # pairs (in, out): (3,0)=1 (3,2)=1 (1,0)=1 (1,2)=0 (2,0)=1 (2,2)=1/2  -> 4.5 / 6
    assert ood.auroc([3, 1, 2], [0, 2]) == pytest.approx(0.75)


def test_auroc_edges():
    assert ood.auroc([2, 3], [0, 1]) == 1.0
    assert ood.auroc([0, 1], [2, 3]) == 0.0
    assert ood.auroc([1, 1, 1], [1, 1]) == 0.5
    assert ood.auroc([5.0], [5.0]) == 0.5
    with pytest.raises(ValueError):
        ood.auroc([], [1.0])
    with pytest.raises(ValueError):
        ood.auroc([float("nan")], [1.0])


def test_auroc_matches_pairwise_count():
    rng = np.random.default_rng(3)
    a, b = rng.integers(0, 6, 40), rng.integers(0, 6, 30)  # many ties
    wins = (a[:, None] > b[None, :]).sum() + 0.5 * (a[:, None] == b[None, :]).sum()
    assert ood.auroc(a, b) == pytest.approx(wins / (a.size * b.size), abs=1e-12)


def test_fpr_at_tpr_hand_example():
    scores_in = np.arange(1, 21)  # 95% of 20 = 19 accepted -> threshold 2 (accept score >= 2)
    scores_out = [0, 1.5, 2, 3]  # 2 and 3 are accepted -> FPR 0.5
    assert ood.fpr_at_tpr(scores_in, scores_out) == 0.5
    assert ood.fpr_at_tpr(scores_in, scores_out, tpr=1.0) == 0.75  # threshold 1
    assert ood.fpr_at_tpr([5, 6], [0, 1]) == 0.0
    assert ood.fpr_at_tpr([0, 1], [5, 6]) == 1.0


# -- image sets ----------------------------------------------------------------------------------

def test_derived_sets(tmp_path):
    arr = np.arange(2 * 70 * 64, dtype=np.int64).reshape(2, 70, 64) % 256
    path = tmp_path / "big.npz"
    np.savez(path, images=arr.astype(np.uint8))
    crops = ood.load_set(f"{path}-crops32", 3, limit=5)
    assert len(crops.images) == 5 and crops.images[0].shape == (32, 32, 3)
    np.testing.assert_array_equal(crops.images[1][..., 0], arr[0, :32, 32:64])  # row-major grid
    np.testing.assert_array_equal(crops.images[2][..., 0], arr[0, 32:64, :32])  # 70 rows: 2 crop rows
    assert "crops" in crops.label and "replicated to RGB" in crops.label
    small = ood.load_set(f"{path}-28-inv", 1)
    assert small.images[0].shape == (28, 28) and "inverted" in small.label and "resized" in small.label
    with pytest.raises(ood.DatasetError):
        ood.load_set(str(tmp_path / "missing.npz"), 1)


def test_spread_subset_keeps_every_group(tmp_path):
    # stored grouped by class, like the staged Fashion-MNIST: the first N would be one class only
    grouped = np.repeat(np.arange(10, dtype=np.uint8), 7)[:, None, None] * np.ones((1, 4, 4), np.uint8)
    np.savez(tmp_path / "grouped.npz", images=grouped)
    first = ood.load_set(str(tmp_path / "grouped.npz"), 1, limit=10)
    spread = ood.load_set(str(tmp_path / "grouped.npz"), 1, limit=10, spread=True)
    assert {int(im[0, 0]) for im in first.images} == {0, 1}
    assert [int(im[0, 0]) for im in spread.images] == list(range(10))
    assert "10 of 70, evenly spaced" in spread.label
    assert list(ood.spread_indices(5, 2)) == [0, 2] and list(ood.spread_indices(3, 9)) == [0, 1, 2]
    crops = ood.load_set(f"{tmp_path / 'grouped.npz'}-crops2", 1, limit=7, spread=True)  # 4 crops per image
    assert [int(im[0, 0]) for im in crops.images] == [0, 1, 2, 4, 5, 7, 8] and "7 of 280" in crops.label


# -- export from training runs -------------------------------------------------------------------

def test_export_pair_from_runs(tmp_path, monkeypatch):
    from nelloc.train import TrainConfig, Trainer, load_float_model

    np.savez(tmp_path / "train.npz", images=np.stack(_images(20, (8, 8))))
    runs = {}
    for kind in ("full", "local"):
        cfg = TrainConfig(data=[str(tmp_path / "train.npz")],
                          model=ModelConfig(channels=1, horizon=1, res_blocks=1, width=8, mixtures=2, kind=kind),
                          crop=8, batch=2, steps=2, val_every=1, ckpt_every=1, val_crops=2, warmup=1, qat_start=0.5)
        runs[kind] = tmp_path / f"run-{kind}"
        Trainer(cfg, runs[kind]).run(quiet=True)
    res = CliRunner().invoke(ood_group, ["export", str(runs["full"]), str(runs["local"]), "--name", "tiny",
                                         "--out-dir", str(tmp_path / "models")])
    assert res.exit_code == 0, res.output
    card = json.loads((tmp_path / "models" / "ood" / "tiny.json").read_text())
    assert card["full"]["training"]["steps"] == 2 and card["local"]["quantize"] is True
    monkeypatch.setenv("NELLOC_MODELS", str(tmp_path / "models"))
    pair = ood.load_pair("tiny")
    assert pair.local.quantize and not pair.full.quantize and pair.card["name"] == "tiny"
    img = _images(1, (8, 8), seed=5)
    s = ood.score_images(img, pair, progress=False)
    x = torch.from_numpy(img[0]).float()[None, None]
    with torch.no_grad():
        want = float(load_float_model(runs["local"], "last").bits(x) - load_float_model(runs["full"], "last").bits(x))
    assert s["score"][0] == pytest.approx(want, abs=1e-2)
    with pytest.raises(ModelError):
        ood.export_pair(runs["local"], runs["full"], "swapped", out_dir=tmp_path / "models")


# -- CLI -----------------------------------------------------------------------------------------

def test_cli_score(pairs, tmp_path):
    d = tmp_path / "imgs"
    d.mkdir()
    for i, im in enumerate(_images(2, (8, 8))):
        Image.fromarray(im).save(d / f"g{i}.png")
    Image.fromarray(_images(1, (8, 9, 3))[0]).save(d / "c.png")
    np.savez(tmp_path / "set.npz", images=np.stack(_images(3, (8, 8), seed=4)))
    runner = CliRunner()
    res = runner.invoke(ood_group, ["score", str(d), str(tmp_path / "set.npz"), "--json", "--limit", "2"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    rows = {Path(r["name"]).name: r for r in out["images"]}
    assert sorted(rows) == ["c.png", "g0.png", "set.npz[0]", "set.npz[1]"]  # --limit 2 per input
    assert rows["c.png"]["pair"] == "rgb" and rows["g0.png"]["pair"] == "gray"
    assert all(math.isfinite(r["score_bits"]) for r in out["images"])
    res = runner.invoke(ood_group, ["score", str(d / "g0.png"), "--model-pair", "rgb"])
    assert res.exit_code == 0, res.output
    assert "bpd_full" in res.stdout and "g0.png" in res.stdout and " rgb " in res.stdout
    res = runner.invoke(ood_group, ["score", str(d / "g0.png"), "--json", "--mirror"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    want = ood.score_images([np.asarray(Image.open(d / "g0.png"))], "gray", progress=False, mirror=True)
    assert out["mirror"] is True and out["images"][0]["score_bits"] == round(float(want["score"][0]), 3)
    res = runner.invoke(ood_group, ["score", str(d / "g0.png"), "--model-pair", "missing"])
    assert isinstance(res.exception, ModelError)


def test_cli_eval(pairs, tmp_path):
    np.savez(tmp_path / "a.npz", images=np.stack(_images(6, (8, 8))))
    np.savez(tmp_path / "b.npz", images=np.full((5, 8, 8), 7, np.uint8))
    runner = CliRunner()
    args = ["eval", "--in-dist", str(tmp_path / "a.npz"), "--ood", str(tmp_path / "b.npz"), "--ood", str(tmp_path / "a.npz")]
    res = runner.invoke(ood_group, args + ["--json", "--plot-dir", str(tmp_path / "plots")])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["pair"] == "gray"
    same = out["ood"][str(tmp_path / "a.npz")]["metrics"]
    assert {"full_likelihood", "local_likelihood", "nelloc_ratio", "ic_png", "ic_jxl"} <= set(same)
    assert all(m["auroc"] == 0.5 for m in same.values())  # a set against itself
    assert len(out["plots"]) == 2 and all(Path(p).exists() for p in out["plots"])
    res = runner.invoke(ood_group, args + ["--limit", "3", "--no-baselines", "--record"])
    assert res.exit_code == 0, res.output
    assert "| score |" in res.stdout and "NeLLoC ratio" in res.stdout and "Input complexity" not in res.stdout
    card = json.loads((pairs / "ood" / "gray.json").read_text())
    assert card["evaluations"][str(tmp_path / "a.npz")]["images"] == 3
    assert "mirror" not in res.stdout
    res = runner.invoke(ood_group, args + ["--json", "--no-baselines", "--mirror"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    against_b = out["ood"][str(tmp_path / "b.npz")]["metrics"]
    assert set(against_b) == {"full_likelihood", "local_likelihood", "nelloc_ratio", "nelloc_ratio_mirror"}
    assert out["ood"][str(tmp_path / "a.npz")]["metrics"]["nelloc_ratio_mirror"]["auroc"] == 0.5
    # the constant images of b are their own mirrors: the mirror row ranks them as the plain one
    imgs_a = list(np.load(tmp_path / "a.npz")["images"])
    m = ood.score_images(imgs_a, "gray", progress=False, mirror=True)["score_bpd"]
    o = ood.score_images(list(np.load(tmp_path / "b.npz")["images"]), "gray", progress=False)["score_bpd"]
    assert against_b["nelloc_ratio_mirror"]["auroc"] == round(ood.auroc(m, o), 4)
