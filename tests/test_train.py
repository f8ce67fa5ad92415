"""Training: loss goes down, resume is exact, export round-trips through the codec."""

import dataclasses
import json
import sys

import numpy as np
import pytest
import torch

from nelloc import codec, exact
from nelloc.errors import ModelError
from nelloc.model import ActQuant, ModelConfig
from nelloc.train import TrainConfig, Trainer, export_run, load_float_model, load_run_config, native_bf16

from conftest import smooth_image


def tiny_config(folder, steps=12, **kw) -> TrainConfig:
    kw.setdefault("data", [str(folder)])
    kw.setdefault("qat_start", 0.5)
    return TrainConfig(model=ModelConfig(width=8, mixtures=2), crop=12, batch=4, lr=3e-3,
                       steps=steps, val_every=6, ckpt_every=3, val_crops=4, warmup=2, **kw)


def test_training_reduces_loss(image_folder, tmp_path):
    trainer = Trainer(tiny_config(image_folder, steps=40), tmp_path / "run")
    first = trainer.validate()
    trainer.run(quiet=True)
    assert trainer.validate() < first
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert len(log) == 40 and any("val_bpd" in r for r in log)


def test_resume_reproduces_the_next_step(image_folder, tmp_path):
    a = Trainer(tiny_config(image_folder), tmp_path / "a")
    a.run(steps=6, quiet=True)
    a.save(tmp_path / "a" / "last.pt")
    next_loss = a.train_step()
    b = Trainer(tiny_config(image_folder), tmp_path / "a")  # resumes from last.pt (step 6)
    assert b.step == 6
    assert b.train_step() == next_loss
    for pa, pb in zip(a.model.parameters(), b.model.parameters()):
        assert torch.equal(pa, pb)


def test_resume_drops_the_log_records_of_steps_lost_with_the_interruption(image_folder, tmp_path):
    a = Trainer(tiny_config(image_folder), tmp_path / "a")
    a.run(steps=6, quiet=True)  # checkpoint at step 6
    for _ in range(2):  # trained and logged, then the process dies before the next checkpoint
        a.log({"step": a.step + 1, "loss_bpd": a.train_step(), "wall_s": 0.0})
    steps = lambda: [json.loads(line)["step"] for line in (tmp_path / "a" / "log.jsonl").read_text().splitlines()]
    assert steps()[-2:] == [7, 8]
    b = Trainer(tiny_config(image_folder), tmp_path / "a")
    assert b.step == 6 and steps() == [1, 2, 3, 4, 5, 6]
    b.run(steps=8, quiet=True)
    assert steps() == list(range(1, 9))
    with open(tmp_path / "a" / "log.jsonl", "a") as f:
        f.write('{"step": 9, "loss_b')  # killed in the middle of a line
    c = Trainer(tiny_config(image_folder), tmp_path / "a")
    assert c.step == 8 and steps() == list(range(1, 9))


def test_the_card_names_the_machine_the_run_trained_on_not_the_one_exporting_it(image_folder, tmp_path):
    from nelloc.train import run_summary

    trainer = Trainer(tiny_config(image_folder), tmp_path / "run")
    trainer.run(steps=2, quiet=True)
    st = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    assert "device cpu" in st["hardware"] and run_summary(tmp_path / "run")["hardware"] == st["hardware"]
    st["hardware"] = "x86_64, 16 cores, device cuda (NVIDIA H100 80GB HBM3), 2 torch threads"  # a lent GPU's leg
    torch.save(st, tmp_path / "run" / "last.pt")
    assert run_summary(tmp_path / "run")["hardware"] == st["hardware"]
    resumed = Trainer(tiny_config(image_folder), tmp_path / "run")  # the next leg, here: its machine
    assert "device cpu" in resumed.state()["hardware"]


def test_the_card_of_a_run_that_never_fake_quantised_is_strict_json(image_folder, tmp_path):
    from nelloc.train import run_summary

    trainer = Trainer(tiny_config(image_folder, qat_start=1.0), tmp_path / "run")  # float only: OOD full models
    trainer.run(steps=7, quiet=True)
    summary = run_summary(tmp_path / "run")
    assert summary["best_val_bpd"] is None and summary["final_val_bpd"] is not None

    def refuse(constant):
        raise ValueError(f"{constant} is not JSON")

    json.loads(json.dumps(summary), parse_constant=refuse)


def test_an_extension_leg_forgets_the_best_model_of_the_previous_leg(image_folder, tmp_path):
    trainer = Trainer(tiny_config(image_folder, steps=12), tmp_path / "run")
    trainer.run(quiet=True)  # quantising from step 6: best_model.pt from this leg's validations
    assert (tmp_path / "run" / "best_model.pt").exists() and trainer.best_val < float("inf")
    cfg = tiny_config(image_folder, steps=24)  # leg 2
    cfg.qat_start = 0.75  # -> from step 18; steps 12-17 train in float
    leg2 = Trainer(cfg, tmp_path / "run")
    leg2.run(steps=18, quiet=True)
    assert (tmp_path / "run" / "best_model.pt").exists()  # still the best quantised model so far
    leg2.train_step()  # step 18: the first quantised step of leg 2
    assert not (tmp_path / "run" / "best_model.pt").exists() and leg2.best_val == float("inf")
    leg2.run(quiet=True)
    assert (tmp_path / "run" / "best_model.pt").exists() and leg2.best_val < float("inf")


def test_a_run_loads_as_it_trained_last_quantised_or_float(image_folder, tmp_path):
    Trainer(tiny_config(image_folder), tmp_path / "qat").run(quiet=True)  # fake-quantised from step 6
    assert load_float_model(tmp_path / "qat", "last").quantize
    # continued in float from the quantised model (an OOD local expert): calibrated, but a float model
    Trainer(tiny_config(image_folder, init_from=str(tmp_path / "qat"), qat_start=1.0), tmp_path / "float").run(quiet=True)
    model = load_float_model(tmp_path / "float", "last")
    assert model.is_calibrated() and not model.quantize


def test_export_of_an_unsafe_model_writes_and_retires_nothing(image_folder, tmp_path, monkeypatch):
    Trainer(tiny_config(image_folder), tmp_path / "run").run(quiet=True)
    export_run(tmp_path / "run", "t", tmp_path / "models", evaluate=[])
    before = sorted(p.relative_to(tmp_path) for p in (tmp_path / "models").rglob("*"))
    real = exact.export

    def unsafe(model):
        tensors = real(model)
        tensors["head.weight"] = np.full((70000, tensors["head.weight"].shape[1]), 127, np.int8)
        return tensors

    monkeypatch.setattr(exact, "export", unsafe)
    with pytest.raises(ModelError, match="2\\*\\*24"):
        export_run(tmp_path / "run", "t", tmp_path / "models", evaluate=[])
    assert sorted(p.relative_to(tmp_path) for p in (tmp_path / "models").rglob("*")) == before


@pytest.mark.parametrize("act_bits", [8, 10])
def test_export_round_trips_through_the_codec(image_folder, tmp_path, act_bits):
    cfg = tiny_config(image_folder)
    cfg.model = dataclasses.replace(cfg.model, act_bits=act_bits)
    Trainer(cfg, tmp_path / "run").run(quiet=True)
    card = export_run(tmp_path / "run", "t", tmp_path / "models", evaluate=[])
    model = exact.ExactModel.load(tmp_path / "models" / "t.safetensors")
    assert card["sha256"] == model.sha256 and card["file_bytes"] > 0
    assert model.cfg.act_bits == act_bits
    img = smooth_image(19, 23, 3, seed=9)
    payload = codec.encode_plane(model, img, 8)
    assert np.array_equal(codec.decode_plane(model, payload, 19, 23, 8), img)
    # the exact model codes at the float model's likelihood, within 1%
    float_model = load_float_model(tmp_path / "run")
    with torch.no_grad():
        fbits = float(float_model.bits(torch.from_numpy(img).permute(2, 0, 1)[None].float()))
    assert abs(8 * len(payload) - fbits) / fbits < 0.02


def test_export_card_evaluates_the_exported_file_not_an_installed_namesake(image_folder, tmp_path, tiny_models):
    from PIL import Image

    import nelloc

    Trainer(tiny_config(image_folder), tmp_path / "run").run(quiet=True)
    card = export_run(tmp_path / "run", "rgb", tmp_path / "models", evaluate=[str(image_folder)])
    new = tmp_path / "models" / "rgb.safetensors"
    imgs = [np.asarray(Image.open(p)) for p in sorted(image_folder.glob("*.png"))]
    bits = sum(8 * len(nelloc.compress(im, model=str(new))) for im in imgs) / sum(im.size for im in imgs)
    installed = sum(8 * len(nelloc.compress(im, model="rgb")) for im in imgs) / sum(im.size for im in imgs)
    assert bits != installed  # the tiny installed "rgb" is a different model
    assert card["evaluation"]["bits_per_subpixel_actual_files"][str(image_folder)]["bits_per_subpixel"] == round(bits, 4)


@pytest.mark.parametrize("source", ["kodak", "kodak/2:0.5", "cifar10-test:1"])
def test_evaluation_sets_are_refused(tmp_path, source):
    with pytest.raises(ValueError, match="evaluation set"):
        Trainer(TrainConfig(data=[source], steps=1), tmp_path / "run")


def test_a_downscaled_source_trains_on_the_shrunk_images(image_folder, tmp_path):
    trainer = Trainer(tiny_config(image_folder, data=[f"{image_folder}/2:0.5", str(image_folder)]), tmp_path / "run")
    shrunk, full = trainer.sampler.sources
    assert [im.shape for im in shrunk] == [(20, 24, 3)] * 2 and [im.shape for im in full] == [(40, 48, 3)] * 2
    np.testing.assert_allclose(trainer.sampler.weights, [1 / 3, 2 / 3])
    block_means = full[0].reshape(20, 2, 24, 2, 3).astype(np.float64).mean(axis=(1, 3))
    np.testing.assert_array_equal(shrunk[0], np.floor(block_means + 0.5))


@pytest.mark.parametrize("skip", [False, True])
def test_cli_train_then_export(image_folder, tmp_path, skip):
    from click.testing import CliRunner

    from nelloc import exact
    from nelloc.cli import main

    run = tmp_path / "run"
    r = CliRunner().invoke(main, ["train", str(run), "--data", str(image_folder), "--width", "8", "--mixtures", "2",
                                  "--crop", "12", "--batch", "2", "--steps", "4", "-q"]
                           + (["--skip", "--act-bits", "10", "--skip-bits", "11", "--first-bits", "12", "--coeff-bits", "12",
                               "--calib-quantile", "1"]
                              if skip else []))
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(main, ["export", str(run), "--name", "cli-model", "--out-dir", str(tmp_path / "m")])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "m" / "cli-model.safetensors").exists() and (tmp_path / "m" / "cli-model.json").exists()
    model = exact.ExactModel.load(tmp_path / "m" / "cli-model.safetensors")
    assert model.cfg.skip is skip and model.cfg.act_bits == (10 if skip else 8)
    assert model.cfg.skip_bits == (11 if skip else 8) and model.cfg.first_bits == (12 if skip else 8)
    assert model.cfg.coeff_bits == (12 if skip else 8)
    assert model.tensors["first.weight"].dtype == (np.int16 if skip else np.int8)
    r = CliRunner().invoke(main, ["train", str(tmp_path / "bad"), "--act-bits", "16"])
    assert r.exit_code != 0 and "16" in r.output and "Traceback" not in r.output


@pytest.mark.parametrize("skip", [False, True])
def test_warm_started_full_model_starts_as_the_local_model(skip):
    from nelloc.model import ModelConfig, PixelCNN
    from nelloc.train import warm_start

    torch.manual_seed(0)
    local = PixelCNN(ModelConfig(channels=3, width=16, mixtures=4, res_blocks=1, kind="local", skip=skip))
    with torch.no_grad():  # a "trained" local model: weights well away from their init
        for p in local.parameters():
            p.add_(0.05 * torch.randn_like(p))
    x = torch.randint(0, 256, (2, 3, 12, 12)).float()
    for blocks, rtol in ((1, 1e-5), (3, 1e-3)):  # one block: the same function; added blocks: ~identity
        full = PixelCNN(ModelConfig(channels=3, width=16, mixtures=4, res_blocks=blocks, kind="full", skip=skip))
        local.quantize = full.quantize = False
        assert (full.bits(x) - local.bits(x)).abs().max() > 1.0  # different before
        warm_start(full, local)
        assert torch.allclose(full.bits(x), local.bits(x), rtol=rtol)
    with pytest.raises(ValueError):
        warm_start(full, PixelCNN(ModelConfig(channels=1, width=16, mixtures=4, kind="local")))
    with pytest.raises(ValueError):  # a full model cannot start from a local model of the other skip setting
        warm_start(full, PixelCNN(ModelConfig(channels=3, width=16, mixtures=4, kind="local", skip=not skip)))


@pytest.mark.parametrize("kind,blocks", [("local", 1), ("full", 3)])
def test_warm_start_from_a_model_of_the_same_configuration_is_a_copy(kind, blocks):
    from nelloc.model import ModelConfig, PixelCNN
    from nelloc.train import warm_start

    torch.manual_seed(1)
    cfg = ModelConfig(channels=1, width=16, mixtures=4, res_blocks=blocks, kind=kind)
    a, b = PixelCNN(cfg), PixelCNN(cfg)
    assert not all(torch.equal(a.state_dict()[k], v) for k, v in b.state_dict().items())
    warm_start(b, a)
    assert all(torch.equal(a.state_dict()[k], v) for k, v in b.state_dict().items())


def test_a_finer_first_layer_grid_rounds_its_weights_less():
    from nelloc.model import ModelConfig, PixelCNN

    torch.manual_seed(5)
    cfg = ModelConfig(channels=3, width=16, mixtures=4, skip=True, act_bits=10)
    a, b = PixelCNN(cfg), PixelCNN(ModelConfig(**{**cfg.to_dict(), "first_bits": 12}))
    b.load_state_dict(a.state_dict())
    x = torch.randint(0, 256, (2, 3, 9, 9)).float()
    a.train(), b.train()
    a.bits(x), b.bits(x)  # calibrates the activation ranges (the same batch, the same float weights)
    a.eval(), b.eval()
    reference = PixelCNN(cfg)
    reference.load_state_dict(a.state_dict())
    reference.quantize = False
    with torch.no_grad():
        errors = [float((m.bits(x) - reference.bits(x)).abs().sum()) for m in (a, b)]
    assert errors[1] < errors[0]  # equal if the model ignored first_bits


def test_the_coefficients_are_fake_quantised_to_the_models_grid():
    from nelloc.model import ModelConfig, quantize_param

    raw = torch.randn(4000, generator=torch.Generator().manual_seed(6)) * 0.8
    errors = []
    for bits in (8, 12):
        cfg = ModelConfig(coeff_bits=bits)
        fake, real = (quantize_param(raw, "coeff", q, cfg) for q in (True, False))
        assert torch.equal(fake * 2**bits, torch.round(fake * 2**bits))  # on the grid
        errors.append(float((fake - real).abs().max()))
        assert errors[-1] <= 2.0 ** -(bits + 1) + 1e-7  # round to nearest
    assert errors[1] < errors[0] / 8


@pytest.mark.parametrize("grid", [{"skip_bits": 11}, {"first_bits": 12}, {"skip_bits": 11, "first_bits": 12},
                                  {"first_bits": 12, "coeff_bits": 12}])
def test_a_model_warm_started_with_a_finer_grid_is_a_copy(grid):
    from nelloc.model import ModelConfig, PixelCNN
    from nelloc.train import warm_start

    torch.manual_seed(4)
    cfg = ModelConfig(channels=3, width=16, mixtures=4, skip=True, act_bits=10)
    a, b = PixelCNN(cfg), PixelCNN(ModelConfig(**{**cfg.to_dict(), **grid}))
    with torch.no_grad():
        a.skip.normal_(0, 0.05)
    warm_start(b, a)
    assert all(torch.equal(a.state_dict()[k], v) for k, v in b.state_dict().items())
    a.quantize = b.quantize = False  # the same float model; only its fake-quantised grid is finer
    x = torch.randint(0, 256, (2, 3, 9, 9)).float()
    assert torch.equal(a.bits(x), b.bits(x))


@pytest.mark.parametrize("skip,coeff_bits", [(False, 8), (True, 8), (True, 12)])
def test_a_grey_model_warm_started_from_a_colour_one_predicts_a_grey_image_as_its_red_channel(skip, coeff_bits):
    from nelloc.model import ModelConfig, PixelCNN
    from nelloc.train import warm_start

    torch.manual_seed(3)
    colour = PixelCNN(ModelConfig(channels=3, width=16, mixtures=4, skip=skip, coeff_bits=coeff_bits))
    with torch.no_grad():  # a trained model's output layer and skip are not near zero
        colour.out.weight.normal_(0, 0.3)
        colour.out.bias.normal_(0, 0.3)
        if skip:
            colour.skip.normal_(0, 0.05)
    grey = PixelCNN(ModelConfig(channels=1, width=16, mixtures=4, skip=skip))
    warm_start(grey, colour)
    colour.quantize = grey.quantize = False  # in float the two are the same function
    v = torch.randint(0, 256, (2, 1, 9, 11)).float()
    red = colour.log_prob(v.expand(-1, 3, -1, -1))[:, :1]
    assert torch.allclose(grey.log_prob(v), red, atol=1e-4)
    with pytest.raises(ValueError):  # only a colour model of the same width and so on
        warm_start(PixelCNN(ModelConfig(channels=1, width=8, mixtures=4, skip=skip)), colour)


def test_a_skip_model_warm_started_from_the_same_model_without_skip_starts_equal():
    from nelloc.model import ModelConfig, PixelCNN
    from nelloc.train import warm_start

    torch.manual_seed(2)
    cfg = ModelConfig(channels=3, width=16, mixtures=4, res_blocks=1, kind="local")
    plain, with_skip = PixelCNN(cfg), PixelCNN(ModelConfig(**{**cfg.to_dict(), "skip": True}))
    x = torch.randint(0, 256, (2, 3, 12, 12)).float()
    warm_start(with_skip, plain)
    assert torch.equal(with_skip.skip, torch.zeros_like(with_skip.skip))
    assert torch.equal(with_skip.bits(x), plain.bits(x))
    with_skip.bits(x).sum().backward()
    assert with_skip.skip.grad.abs().sum() > 0  # and it learns from the first step


def test_a_wider_local_model_warm_started_from_a_narrow_one_starts_equal_and_learns_with_its_new_units():
    from nelloc.model import ModelConfig, PixelCNN
    from nelloc.train import warm_start

    torch.manual_seed(3)
    cfg = ModelConfig(channels=3, width=12, mixtures=4, res_blocks=2, kind="local", skip=True)
    narrow, wide = PixelCNN(cfg), PixelCNN(ModelConfig(**{**cfg.to_dict(), "width": 20}))
    with torch.no_grad():  # a "trained" narrow model: weights well away from their init
        for p in narrow.parameters():
            p.add_(0.05 * torch.randn_like(p))
    narrow.quantize = wide.quantize = False
    x = torch.randint(0, 256, (2, 3, 12, 12)).float()
    warm_start(wide, narrow)
    assert torch.allclose(wide.bits(x), narrow.bits(x), rtol=1e-5)
    assert torch.equal(wide.blocks[0].convs[0].mask, torch.ones_like(wide.blocks[0].convs[0].mask))
    wide.bits(x).sum().backward()
    assert wide.out.weight.grad[:, 12:].abs().sum() > 0  # the added units feed the output from step one
    with pytest.raises(ValueError):  # narrower is no warm start
        warm_start(narrow, wide)


def test_widening_to_fewer_activation_bits_keeps_each_layers_range():
    from nelloc.model import ActQuant, ModelConfig, PixelCNN
    from nelloc.train import calibrate_activations, warm_start

    torch.manual_seed(4)
    cfg = ModelConfig(channels=3, width=12, mixtures=4, kind="local", skip=True, act_bits=10)
    narrow = PixelCNN(cfg)
    calibrate_activations(narrow, torch.randint(0, 256, (2, 3, 12, 12)).float())
    wide = PixelCNN(ModelConfig(**{**cfg.to_dict(), "width": 20, "act_bits": 9}))
    warm_start(wide, narrow)
    acts = lambda m: [a for a in m.modules() if isinstance(a, ActQuant)]
    for a9, a10 in zip(acts(wide), acts(narrow)):  # range = step * levels: the same clamp, a coarser grid
        assert (a9.qmax, a10.qmax) == (511, 1023)
        assert torch.allclose(a9.log_scale.exp() * 511, a10.log_scale.exp() * 1023)
    narrow.quantize = wide.quantize = False
    x = torch.randint(0, 256, (2, 3, 12, 12)).float()
    assert torch.allclose(wide.bits(x), narrow.bits(x), rtol=1e-5)


def _sources(rng):
    same = [rng.integers(0, 256, (6, 7, 3), dtype=np.uint8) for _ in range(5)]  # stacked: one gather
    mixed = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in [(9, 12), (20, 5), (5, 5)]]
    return same, mixed


def _is_window(crop: np.ndarray, images: list[np.ndarray], mirrored: bool = False) -> bool:
    c = crop.shape[0]
    for img in images:
        view = img[:, ::-1] if mirrored else img
        win = np.moveaxis(np.lib.stride_tricks.sliding_window_view(view, (c, c), axis=(0, 1)), (-2, -1), (2, 3))
        if (win == crop).all(axis=(2, 3, 4)).any():
            return True
    return False


def test_vector_sampler_draws_real_crops_of_each_source_by_weight_half_of_them_mirrored():
    from nelloc.train import VectorCropSampler

    same, mixed = _sources(np.random.default_rng(0))
    sources = [(same, 3.0), (mixed, 1.0)]
    batch = VectorCropSampler(sources, crop=5, seed=1).batch(400).permute(0, 2, 3, 1).numpy().astype(np.uint8)
    assert batch.shape == (400, 5, 5, 3)
    # random pixels: a 5x5 window (or its mirror) matches nothing else by chance
    direct = np.array([_is_window(b, same + mixed) for b in batch])
    mirrored = np.array([_is_window(b, same + mixed, mirrored=True) for b in batch])
    assert (direct ^ mirrored).all()  # every crop is a window of a source image, flipped or not
    assert 0.4 < mirrored.mean() < 0.6
    from_same = np.array([_is_window(b, same) or _is_window(b, same, mirrored=True) for b in batch])
    assert 0.68 < from_same.mean() < 0.82  # weights 3 : 1
    for img in mixed:  # every image of the unequal-sized source is drawn
        assert any(_is_window(b, [img]) or _is_window(b, [img], mirrored=True) for b in batch)
    again = VectorCropSampler(sources, crop=5, seed=1).batch(400)
    assert torch.equal(again, torch.from_numpy(batch).permute(0, 3, 1, 2).float())  # seeded: reproducible


def test_vector_sampler_pads_images_smaller_than_the_crop():
    from nelloc.train import VectorCropSampler

    tiny = [np.arange(12, dtype=np.uint8).reshape(3, 4)]  # grey, smaller than the crop
    batch = VectorCropSampler([(tiny, 1.0)], crop=6, seed=0).batch(8)
    assert batch.shape == (8, 1, 6, 6)
    assert set(batch.unique().tolist()) <= set(range(12))


def _symmetry_of(crop: np.ndarray, images: list[np.ndarray]) -> list[int]:
    """Which of the square's 8 symmetries (index: 4 transposed + 2 upside down + mirrored) turn
    ``crop`` back into a window of one of ``images``."""
    found = []
    for k in range(8):
        view = crop.swapaxes(0, 1) if k & 4 else crop
        view = view[::-1] if k & 2 else view
        view = view[:, ::-1] if k & 1 else view
        if _is_window(np.ascontiguousarray(view), images):
            found.append(k)
    return found


@pytest.mark.parametrize("sampler", ["loop", "vector"])
def test_dihedral_augment_gives_every_symmetry_of_a_real_crop_equally_often(sampler):
    from nelloc.train import SAMPLERS

    images = [np.random.default_rng(5).integers(0, 256, (30, 26, 3), dtype=np.uint8)]
    batch = SAMPLERS[sampler]([(images, 1.0)], crop=6, seed=2, augment="dihedral").batch(800)
    crops = batch.permute(0, 2, 3, 1).numpy().astype(np.uint8)
    found = [_symmetry_of(c, images) for c in crops]
    assert all(len(f) == 1 for f in found)  # random pixels: exactly one symmetry fits
    counts = np.bincount([f[0] for f in found], minlength=8)
    assert counts.min() > 60 and counts.max() < 140, counts  # 100 expected each; binomial s.d. ~9.4


@pytest.mark.parametrize("sampler", ["loop", "vector"])
def test_flip_augment_is_the_default_stream_and_unknown_augments_are_refused(sampler):
    from nelloc.train import SAMPLERS

    same, mixed = _sources(np.random.default_rng(0))
    cls = SAMPLERS[sampler]
    plain = cls([(same, 1.0), (mixed, 1.0)], crop=5, seed=4).batch(64)
    assert torch.equal(plain, cls([(same, 1.0), (mixed, 1.0)], crop=5, seed=4, augment="flip").batch(64))
    with pytest.raises(ValueError, match="augment"):
        cls([(same, 1.0)], crop=5, seed=4, augment="rotate")


def test_cli_train_takes_the_augment_option(image_folder, tmp_path):
    from click.testing import CliRunner

    from nelloc.cli import main
    from nelloc.train import load_run_config

    run = tmp_path / "run"
    r = CliRunner().invoke(main, ["train", str(run), "--data", str(image_folder), "--width", "8", "--mixtures", "2",
                                  "--crop", "12", "--batch", "2", "--steps", "2", "--augment", "dihedral", "-q"])
    assert r.exit_code == 0, r.output
    assert load_run_config(run).augment == "dihedral"


@pytest.mark.parametrize("kind", ["local", "full"])
def test_mixed_precision_trunk_is_close_to_float_and_off_under_fake_quantisation(kind):
    from nelloc.model import PixelCNN

    torch.manual_seed(3)
    model = PixelCNN(ModelConfig(width=16, mixtures=3, res_blocks=2, kind=kind, skip=kind == "local"))
    x = torch.from_numpy(smooth_image(12, 14, 3, seed=1)).permute(2, 0, 1)[None].float()
    model.quantize = False
    exact_float = model.bits(x)
    model.amp = True
    mixed = model.bits(x)
    assert mixed.dtype == torch.float32 and torch.allclose(mixed, exact_float, rtol=0.02)
    if kind == "local":  # fake quantisation ignores amp: the integer grid needs float32
        model.train()
        model.quantize = True
        with_amp = model.bits(x)
        model.amp = False
        assert torch.equal(with_amp, model.bits(x))


def test_training_with_mixed_precision_reduces_loss(image_folder, tmp_path):
    trainer = Trainer(tiny_config(image_folder, steps=20, amp="on"), tmp_path / "run")
    assert trainer.model.amp
    first = trainer.validate()
    trainer.run(quiet=True)
    assert trainer.validate() < first
    auto = Trainer(tiny_config(image_folder, amp="auto"), tmp_path / "cpu").model.amp
    assert auto == native_bf16(torch.device("cpu"))  # auto: CUDA, or a CPU with native bfloat16
    with pytest.raises(ValueError):
        Trainer(tiny_config(image_folder, amp="maybe"), tmp_path / "bad")


@pytest.mark.parametrize("flags, native", [
    ("fpu sse2 avx2 fma avx512f avx512bw", False),  # AVX-512 without BF16: bfloat16 would be emulated
    ("fpu sse2 avx512f avx512_bf16 avx512_vnni", True),  # e.g. AMD Zen 4
    ("fpu sse2 avx512f amx_tile amx_bf16", True),  # Intel Sapphire Rapids
])
def test_native_bf16_reads_the_cpu_flags(tmp_path, flags, native):
    info = tmp_path / "cpuinfo"
    info.write_text(f"processor\t: 0\nflags\t\t: {flags}\n\nprocessor\t: 1\nflags\t\t: {flags}\n")
    assert native_bf16(torch.device("cpu"), str(info)) is native
    assert native_bf16(torch.device("cpu"), str(tmp_path / "missing")) is False  # not Linux: float32
    assert native_bf16(torch.device("cuda")) is True


def test_an_extension_leg_can_widen_the_activations_keeping_their_ranges(image_folder, tmp_path):
    trainer = Trainer(tiny_config(image_folder, steps=12), tmp_path / "run")
    trainer.run(quiet=True)  # 8-bit activations, scales learned in the fake-quantised phase
    ranges8 = [a.scale * 255 for a in trainer.model.modules() if isinstance(a, ActQuant)]
    cfg = tiny_config(image_folder, steps=12)
    cfg.model = dataclasses.replace(cfg.model, act_bits=10)
    wide = Trainer(cfg, tmp_path / "run")
    ranges10 = [a.scale * 1023 for a in wide.model.modules() if isinstance(a, ActQuant)]
    assert all(a.qmax == 1023 for a in wide.model.modules() if isinstance(a, ActQuant))
    assert np.allclose(ranges8, ranges10, rtol=1e-5)
    wide.run(steps=14, quiet=True)
    assert load_run_config(tmp_path / "run").model.act_bits == 10


def test_each_fake_quantised_phase_sets_the_activation_ranges_afresh(image_folder, tmp_path):
    Trainer(tiny_config(image_folder, steps=12), tmp_path / "run").run(quiet=True)
    cfg = tiny_config(image_folder, steps=24)  # leg 2: float from step 12, quantised from 18
    cfg.qat_start, cfg.calib_quantile = 0.75, 1.0
    leg2 = Trainer(cfg, tmp_path / "run")
    acts = [a for a in leg2.model.modules() if isinstance(a, ActQuant)]
    for a in acts:  # stale, far too narrow ranges from "an earlier leg"
        a.log_scale.data.fill_(-20.0)
    leg2.run(steps=18, quiet=True)
    assert all(float(a.log_scale.detach()) == -20.0 for a in acts)  # float steps leave them alone
    leg2.train_step()  # the first quantised step calibrates (to the batch maximum), then trains
    assert all(float(a.log_scale.detach()) > -10.0 for a in acts)


def test_a_float_run_resumed_inside_its_quantised_phase_calibrates_as_configured(image_folder, tmp_path, monkeypatch):
    import nelloc.train as train_mod

    Trainer(tiny_config(image_folder, steps=6, qat_start=1.0), tmp_path / "run").run(quiet=True)  # float only
    cfg = tiny_config(image_folder, steps=12, qat_start=0.25)  # the schedule moved: quantised from step 3
    cfg.calib_quantile = 1.0
    leg2 = Trainer(cfg, tmp_path / "run")
    assert leg2.quantizing(leg2.step - 1) and not leg2.model.is_calibrated()
    seen = []
    real = train_mod.calibrate_activations
    monkeypatch.setattr(train_mod, "calibrate_activations", lambda m, x, q: (seen.append(q), real(m, x, q)))
    leg2.train_step()
    assert seen == [1.0] and leg2.model.is_calibrated()
    leg2.train_step()
    assert seen == [1.0]  # once


def test_calib_quantile_zero_keeps_the_learned_ranges(image_folder, tmp_path):
    Trainer(tiny_config(image_folder, steps=12), tmp_path / "run").run(quiet=True)  # ends fake-quantised
    cfg = tiny_config(image_folder, steps=24)
    cfg.qat_start, cfg.calib_quantile, cfg.lr = 0.75, 0.0, 0.0  # lr 0: only calibration could move them
    leg2 = Trainer(cfg, tmp_path / "run")
    leg2.run(steps=18, quiet=True)
    before = [float(a.log_scale.detach()) for a in leg2.model.modules() if isinstance(a, ActQuant)]
    leg2.train_step()
    after = [float(a.log_scale.detach()) for a in leg2.model.modules() if isinstance(a, ActQuant)]
    assert before == after


def test_a_run_can_start_from_a_shipped_float_model_file():
    """--init-from also takes models/float/NAME.safetensors (the float weights beside a shipped
    model), so a later leg can start from the shipped model when its run folder is not at hand."""
    from nelloc import zoo
    from nelloc.train import load_float_model

    path = zoo.model_path("gray").parent / "float" / "gray.safetensors"
    model, shipped = load_float_model(str(path)), zoo.load_float("gray")
    assert model.cfg == shipped.cfg and model.quantize == shipped.quantize
    for (k, a), (_, b) in zip(model.state_dict().items(), shipped.state_dict().items()):
        assert torch.equal(a, b), k


def test_training_keeps_freed_memory_in_the_heap_on_glibc():
    import platform

    from nelloc.train import keep_freed_memory

    on_glibc = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"
    assert keep_freed_memory() is on_glibc


def test_learning_rate_schedules(image_folder, tmp_path):
    cosine = Trainer(tiny_config(image_folder, steps=102), tmp_path / "c")
    assert cosine.lr_at(0) == pytest.approx(3e-3 / 2) and cosine.lr_at(2) == pytest.approx(3e-3)
    assert cosine.lr_at(52) == pytest.approx(3e-3 * 0.55) and cosine.lr_at(102) == pytest.approx(3e-4)
    constant = Trainer(tiny_config(image_folder, steps=102, schedule="constant"), tmp_path / "k")
    assert constant.lr_at(0) == pytest.approx(3e-3 / 2)
    assert [constant.lr_at(s) for s in (2, 52, 102, 10**6)] == [3e-3] * 4
    with pytest.raises(ValueError, match="schedule"):
        Trainer(tiny_config(image_folder, schedule="step"), tmp_path / "x")


def test_a_run_saved_before_schedules_existed_resumes_on_the_cosine(image_folder, tmp_path):
    Trainer(tiny_config(image_folder), tmp_path / "run").run(steps=3, quiet=True)
    st = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    raw = json.loads(st["config"])
    del raw["schedule"]
    st["config"] = json.dumps(raw)
    torch.save(st, tmp_path / "run" / "last.pt")
    assert load_run_config(tmp_path / "run").schedule == "cosine"
