"""Round trips of real staged images with the shipped default models (not the tiny test models)."""

import numpy as np
import pytest

import nelloc
from nelloc import zoo
from nelloc.data import load_images


@pytest.fixture(autouse=True)
def shipped_models(monkeypatch):
    monkeypatch.delenv("NELLOC_MODELS", raising=False)
    assert {"rgb", "gray"} <= set(zoo.list_models()), "the default models must be shipped in models/"


@pytest.mark.parametrize("name,box", [("kodim01.png", (0, 0, 96, 64)), ("kodim23.png", (300, 200, 400, 280))])
def test_kodak_crops_round_trip(staged_data, name, box):
    from PIL import Image

    crop = Image.open(staged_data / "kodak" / name).crop(box)
    data = nelloc.compress(crop)
    back = nelloc.decompress(data)
    assert back.mode == "RGB" and np.array_equal(np.asarray(back), np.asarray(crop))
    assert 8 * len(data) / np.asarray(crop).size < 8  # it actually compresses


def test_cifar_images_round_trip(staged_data):
    for img in load_images("cifar10-test", limit=3):
        assert np.array_equal(nelloc.decompress(nelloc.compress(img), as_array=True), img)


def test_grey_images_round_trip(staged_data):
    for img in load_images("mnist-test", limit=2) + [load_images("classic", channels=1, limit=1)[0][:40, :50]]:
        data = nelloc.compress(img)
        assert np.array_equal(nelloc.decompress(data, as_array=True), img)


def test_shipped_models_match_their_cards():
    for name in ("rgb", "gray", "rgb-photo"):
        card = zoo.model_card(name)
        model = zoo.load(name)
        assert card["sha256"] == model.sha256
        assert card["file_bytes"] == zoo.model_size_bytes(name)
