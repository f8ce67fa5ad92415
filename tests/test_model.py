"""The float PixelCNN: causality of the masks, locality of the local model, the colour coupling."""

import torch

from nelloc.model import ModelConfig, PixelCNN, causal_offsets, count_parameters


def grad_footprint(model, size=15, at=(7, 7), out_channel=None):
    x = (torch.rand(1, model.cfg.channels, size, size) * 255).requires_grad_(True)
    out = model.raw_outputs(x)
    sel = out[0, at[0], at[1]] if out_channel is None else out[0, at[0], at[1], out_channel]
    sel.sum().backward()
    return x.grad[0].abs().sum(0) > 0


def test_local_model_sees_exactly_its_causal_window():
    torch.manual_seed(0)
    model = PixelCNN(ModelConfig(width=16, mixtures=2))
    model.quantize = False  # straight-through rounding would hide gradients
    seen = grad_footprint(model)
    expected = torch.zeros(15, 15, dtype=torch.bool)
    for dy, dx in causal_offsets(3):
        expected[7 + dy, 7 + dx] = True
    assert torch.equal(seen, expected)


def test_full_model_sees_further_but_stays_causal():
    torch.manual_seed(0)
    model = PixelCNN(ModelConfig(width=16, mixtures=2, res_blocks=3, kind="full", channels=1))
    seen = grad_footprint(model)
    assert seen.sum() > 24  # receptive field grows with the 3x3 layers
    assert not seen[7, 7:].any() and not seen[8:].any()  # nothing from the current or later pixels


def test_paper_size_parameter_count():
    # paper: r = 1 model is 1.34 MB in float32, i.e. about 335k parameters
    n = count_parameters(PixelCNN(ModelConfig(width=256)))
    assert 330_000 < n < 345_000


def test_green_mean_depends_on_red_value():
    torch.manual_seed(0)
    model = PixelCNN(ModelConfig(width=8, mixtures=2)).eval()
    x = torch.full((1, 3, 5, 5), 100.0)
    with torch.no_grad():
        torch.nn.init.constant_(model.out.bias, 0.0)
        layout_start = 2 + 2 * 3 + 2 * 3  # logits, means, log-scales; coefficients follow
        model.out.bias[layout_start : layout_start + 2] = 0.5  # red -> green coefficient
        a = model.mixture_params(x)["means"][0, 2, 2, 1]
        x[0, 0, 2, 2] = 200.0
        b = model.mixture_params(x)["means"][0, 2, 2, 1]
    assert torch.all(b - a > 40)  # ~0.5 * 100 grey levels


def test_activation_quantile_sees_the_whole_batch():
    from nelloc.model import CALIB_SAMPLE, activation_quantile

    a = torch.zeros(4, CALIB_SAMPLE)
    a[3, -5:] = 2.0  # the largest values sit in the last image of the batch
    assert float(activation_quantile(a, 1.0)) == 2.0
    a = torch.arange(3 * CALIB_SAMPLE, dtype=torch.float32)
    assert abs(float(activation_quantile(a, 0.5)) / (1.5 * CALIB_SAMPLE) - 1) < 1e-3  # not the first million's median
