"""The model zoo: names, and the retired models that keep files of every shipped release decodable."""

import json

import numpy as np
import pytest
from PIL import Image

from nelloc import api, zoo
from nelloc.exact import ExactModel
from nelloc.model import ModelConfig
from nelloc.train import TrainConfig, Trainer, export_run

from conftest import TEST_DATA, smooth_image

SHIPPED = TEST_DATA / "shipped"  # kodim23 crops compressed by each release that shipped new models
RELEASES = ["f506a2a", "2b8f5f9", "097b158", "f5ac6c5", "20fdba1", "dc0a3f1", "e41e29a", "96ae739", "89f83e1", "9e4e79a", "2432ce9"]  # commits; see tests/data/shipped/README.md
# Releases that shipped only a new `rgb`: their grey file would be byte-identical to an earlier one.
RGB_ONLY_RELEASES = ["b1637d6", "875e860", "35ccc3a", "667954c", "3dbf86a", "470dc36", "8180b40", "9427883", "2c45ae8", "e377765", "c79e3fe", "d50e929", "8e39c87", "2292452", "2dd23ae", "e55baf3", "ecf7ed7", "53be0a9", "aa52b6f"]
RELEASE_FILES = [(r, kind) for r in RELEASES for kind in ("rgb", "gray")] + [(r, "rgb") for r in RGB_ONLY_RELEASES]


@pytest.fixture
def repo_models(monkeypatch):
    monkeypatch.delenv("NELLOC_MODELS", raising=False)


@pytest.mark.parametrize("release,kind", RELEASE_FILES)
def test_files_of_every_shipped_release_still_decode(repo_models, release, kind):
    png = SHIPPED / ("kodim23-crop.png" if kind == "rgb" else "kodim23-crop-gray.png")
    out = api.decompress((SHIPPED / f"{release}-{kind}.nlc").read_bytes())
    assert np.array_equal(np.asarray(out), np.asarray(Image.open(png)))


# Releases from format version 5 on also code the 128x128 crops, large enough for the per-image bias.
BIAS_RELEASES = ["61370ee"]


@pytest.mark.parametrize("release", BIAS_RELEASES)
@pytest.mark.parametrize("kind", ["rgb128", "gray128"])
def test_biased_files_of_every_release_still_decode(repo_models, release, kind):
    png = SHIPPED / ("kodim23-crop128.png" if kind == "rgb128" else "kodim23-crop128-gray.png")
    data = (SHIPPED / f"{release}-{kind}.nlc").read_bytes()
    assert api.info(data)["format_version"] == 5 and api.info(data)["segments"][0]["bias"]
    out = api.decompress(data)
    assert np.array_equal(np.asarray(out), np.asarray(Image.open(png)))


def mirror256(crop128: np.ndarray) -> np.ndarray:
    """kodim23-crop128 and its mirror images, 2 x 2: a 256x256 photo-like image (65,536 pixels: large
    enough for the per-image bias and, from stop 21, for the `rgb-photo` default) with no new PNG."""
    top = np.concatenate([crop128, crop128[:, ::-1]], axis=1)
    return np.ascontiguousarray(np.concatenate([top, top[::-1]], axis=0))


# Releases from stop 21 on also code mirror256(kodim23-crop128.png) with the default models, which
# give it to `rgb-photo`: release -> that model's id.
PHOTO_RELEASES = {"e370d87": "a3c1bd1f", "0598cbd": "3c671dfd", "23aacdc": "2def6d4d", "af78895": "fddf7d3a", "203aaa5": "fa3f4800", "8330248": "b6541341", "8d7616d": "a7b72b9c", "6498dec": "759c3fc0", "0bc22dd": "5cb75c0e", "ed84000": "b4d8b6f0", "cb42786": "2e63f80e", "09fcfd8": "54204efd", "286e43e": "ead37b76", "2b11d4a": "429e5133", "7b603c1": "e921b959", "c79e3fe": "ce70e421", "d50e929": "9747f3ed", "9883a56": "1c80fa1b", "0afb6bf": "949fa7da", "411661d": "fc681bfa", "e55baf3": "5b427395", "3fdf0a5": "e8be560e", "1c4e067": "0501612a"}


@pytest.mark.parametrize("release", sorted(PHOTO_RELEASES))
def test_photo_model_files_of_every_release_still_decode(repo_models, release):
    image = mirror256(np.asarray(Image.open(SHIPPED / "kodim23-crop128.png")))
    data = (SHIPPED / f"{release}-rgb256.nlc").read_bytes()
    assert [seg["model_id"] for seg in api.info(data)["segments"]] == [PHOTO_RELEASES[release]]
    assert np.array_equal(api.decompress(data, as_array=True), image)


# Releases from stop 25 on also code kodim01-crop128-gray.png (a grey Kodak crop that the encoder's
# estimate gives to `gray-photo`) with the default models: release -> that model's id.
GREY_PHOTO_RELEASES = {"b01d471": "2d33f723", "8378db4": "8198d090", "cf517e5": "f04515d6", "e674dcb": "5bb058d8", "8f89a70": "1d7390b9", "aaa2e09": "7d99d9e3", "5ccd2bf": "fbe08172", "2063184": "7033cbb5", "52a8e70": "d4ce492c", "b85196b": "32f89d3e"}


@pytest.mark.parametrize("release", sorted(GREY_PHOTO_RELEASES))
def test_grey_photo_model_files_of_every_release_still_decode(repo_models, release):
    image = np.asarray(Image.open(SHIPPED / "kodim01-crop128-gray.png"))
    data = (SHIPPED / f"{release}-gray-photo128.nlc").read_bytes()
    assert [seg["model_id"] for seg in api.info(data)["segments"]] == [GREY_PHOTO_RELEASES[release]]
    assert np.array_equal(api.decompress(data, as_array=True), image)


def test_retired_models_are_named_by_their_hash_and_have_cards(repo_models):
    retired = zoo.retired_models()
    assert retired, "models/retired/ holds every model that was ever shipped and replaced"
    for path in retired:
        model = ExactModel.load(path)
        assert path.stem.endswith("-" + model.sha256[: zoo.ID_HEX])
        assert json.loads(path.with_suffix(".json").read_text())["sha256"] == model.sha256
    assert not set(p.stem for p in retired) & set(zoo.list_models())  # no name: never encoded with


def test_export_over_a_model_retires_it(tmp_path, monkeypatch):
    folder = tmp_path / "imgs"
    folder.mkdir()
    Image.fromarray(smooth_image(40, 48, 3)).save(folder / "0.png")
    cfg = TrainConfig(data=[str(folder)], model=ModelConfig(width=8, mixtures=2), crop=12, batch=4, steps=4,
                      val_every=4, ckpt_every=4, val_crops=4, qat_start=0.5, warmup=1)
    models = tmp_path / "models"
    Trainer(cfg, tmp_path / "run").run(quiet=True)
    export_run(tmp_path / "run", "m", models, evaluate=[])
    monkeypatch.setenv("NELLOC_MODELS", str(models))
    img = smooth_image(9, 11, 3, seed=1)
    old_file = api.compress(img, model="m")
    old_sha = zoo.load("m").sha256
    Trainer(cfg, tmp_path / "run").run(steps=8, quiet=True)  # trained on: a different model
    export_run(tmp_path / "run", "m", models, evaluate=[])
    assert zoo.load("m").sha256 != old_sha
    assert (models / "retired" / f"m-{old_sha[:zoo.ID_HEX]}.safetensors").exists()
    assert np.array_equal(np.asarray(api.decompress(old_file)), img)
    export_run(tmp_path / "run", "m", models, evaluate=[])  # the same model again: nothing to retire
    assert len(list((models / "retired").glob("*.safetensors"))) == 1
