"""The local PixelCNN of the paper (Appendix A.3) as a float, trainable torch model.

Trained with fake quantisation (straight-through rounding) so that ``nelloc.exact`` can export it
to an integer network whose arithmetic is exact on any machine:

* weights: symmetric int8 per output channel (|w| <= 127);
* activations: unsigned ``act_bits``-bit integers (8 by default, 10 for newer models) with a learned
  scale per layer (LSQ-style), ReLU fused into the clamp;
* inputs: grey levels minus 128 plus a validity plane (128 inside the image, 0 in the padding), both
  at scale 1/128;
* outputs: mixture parameters rounded to the fixed-point grids of ``nelloc.mixture``.

``kind="full"`` gives the full PixelCNN of the paper's OOD experiments (3x3 masked convolution in
the middle of each residual block, so the receptive field grows); it is float only.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from nelloc import mixture as mx

WEIGHT_QMAX = 127
INPUT_CENTRE = 128.0  # the network sees (v - 128) / 128 and a validity plane of 1 (integer: 128)
ACT_QMAX = 255  # hidden activations of 8-bit models (ModelConfig.act_bits = 8)
ACT_BITS_RANGE = (4, 12)  # a float32 holds these integers exactly; fan-in sums are checked on export
SKIP_BITS_RANGE = (8, 12)  # signed skip weights |w| <= 2**(bits-1) - 1; 12 bits (2047) x 96 inputs x 128
#                            can pass 2**24, so the loader checks each output's actual sum
FIRST_BITS_RANGE = SKIP_BITS_RANGE  # the first layer's weights: the same inputs, the same bound
COEFF_BITS_RANGE = (8, 12)  # the colour coefficients' unit is 2**-coeff_bits (mixture.coeff_grid)


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of a (local or full) PixelCNN."""

    channels: int = 3  # image channels: 1 (grey / alpha) or 3 (RGB)
    horizon: int = 3  # first-layer kernel 2h+1, mask A
    res_blocks: int = 1
    width: int = 256
    mixtures: int = 10
    kind: str = "local"  # "local" (1x1 residual blocks) or "full" (3x3 middle convolution)
    skip: bool = False  # a linear layer from the causal neighbourhood to the outputs (full: a mask-A conv)
    act_bits: int = 8  # hidden activations are integers 0 .. 2**act_bits - 1 in the exact model
    joint: bool = False  # colour: components shared across a pixel's channels (mixture.log_prob_joint)
    skip_bits: int = 8  # the skip's integer weights span +-(2**(skip_bits-1) - 1): it maps grey levels
    #                     straight to the means, so int8 rounding there costs most (docs/ablations.md)
    first_bits: int = 8  # likewise for the first layer's weights; its 96 inputs are far from the 2**24
    #                      bound at 8 bits, and int8 rounding there grows with training (ablations, stop 46)
    coeff_bits: int = 8  # colour coefficients are integers in units of 2**-coeff_bits: at 8 bits (1/256)
    #                      their rounding costs ~0.013 bits/sub-pixel after training (ablations, stop 47)

    def __post_init__(self) -> None:
        for field, (lo, hi) in (("act_bits", ACT_BITS_RANGE), ("skip_bits", SKIP_BITS_RANGE),
                                ("first_bits", FIRST_BITS_RANGE), ("coeff_bits", COEFF_BITS_RANGE)):
            value = getattr(self, field)
            if not (isinstance(value, int) and lo <= value <= hi):
                raise ValueError(f"{field} must be an integer in {lo}..{hi}, not {value!r}")
        if self.first_bits != 8 and self.kind != "local":
            raise ValueError("first_bits is for local models (the exact codec's first layer)")
        if self.coeff_bits != 8 and self.channels != 3:
            raise ValueError("coeff_bits is for colour (3-channel) models")
        if self.joint and self.channels != 3:
            raise ValueError("joint mixtures are for colour (3-channel) models")

    @property
    def act_qmax(self) -> int:
        return 2**self.act_bits - 1

    @property
    def skip_qmax(self) -> int:
        return 2 ** (self.skip_bits - 1) - 1

    @property
    def first_qmax(self) -> int:
        return 2 ** (self.first_bits - 1) - 1

    @property
    def params_per_component(self) -> int:
        c = self.channels
        return 1 + 2 * c + (3 if c == 3 else 0)

    @property
    def fan_in(self) -> int:
        """Inputs of the first layer of a local model: (channels + 1) values per causal position."""
        return len(causal_offsets(self.horizon)) * (self.channels + 1)

    @property
    def out_channels(self) -> int:
        return self.mixtures * self.params_per_component

    def to_dict(self) -> dict:
        d = asdict(self)
        if not d["skip"]:  # absent when off, so that older models keep their hash (= their id)
            del d["skip"]
        if d["act_bits"] == 8:  # likewise
            del d["act_bits"]
        if not d["joint"]:
            del d["joint"]
        if d["skip_bits"] == 8:
            del d["skip_bits"]
        if d["first_bits"] == 8:
            del d["first_bits"]
        if d["coeff_bits"] == 8:
            del d["coeff_bits"]
        return d


def causal_offsets(horizon: int) -> list[tuple[int, int]]:
    """(dy, dx) of the pixels a local model sees, in the order the exact model gathers them."""
    rows = [(dy, dx) for dy in range(-horizon, 0) for dx in range(-horizon, horizon + 1)]
    return rows + [(0, dx) for dx in range(-horizon, 0)]


def round_ste(x: torch.Tensor) -> torch.Tensor:
    return x + (torch.round(x) - x).detach()


def floor_ste(x: torch.Tensor) -> torch.Tensor:
    return x + (torch.floor(x) - x).detach()


def quantize_weight(w: torch.Tensor, qmax: int = WEIGHT_QMAX, in_max: float | None = None) -> torch.Tensor:
    """Fake-quantise to integers in [-qmax, qmax] (int8 by default) with one scale per output channel
    (dim 0), as ``weight_scale`` sets it."""
    scale = weight_scale(w, qmax, in_max).view(-1, *([1] * (w.dim() - 1)))
    return round_ste(w / scale).clamp(-qmax, qmax) * scale


EXACT_SUM = 2**24 - 1  # float32 adds integers exactly up to here


def weight_scale(w: torch.Tensor, qmax: int = WEIGHT_QMAX, in_max: float | None = None) -> torch.Tensor:
    """Each output channel's step: its largest weight becomes ``qmax``; with ``in_max`` (the largest
    input), coarser where needed so that sum |integer weight| * in_max stays within EXACT_SUM
    (rounding adds at most 1/2 per weight), the exact model's float32 bound.  Only wide layers with
    10-bit inputs need it (width 256: a few channels); narrower ones never reach it."""
    flat = w.detach().flatten(1)
    scale = flat.abs().amax(1).clamp_min(1e-8) / qmax
    if in_max is not None:
        room = EXACT_SUM / in_max - flat.shape[1] / 2
        scale = torch.maximum(scale, flat.abs().sum(1) / room)
    return scale


CALIB_SAMPLE = 1_000_000  # torch.quantile refuses inputs above 2**24 elements


def activation_quantile(a: torch.Tensor, q: float) -> torch.Tensor:
    """The ``q`` quantile of every value in ``a`` (q = 1: the maximum); above CALIB_SAMPLE values,
    of an evenly strided sample spanning the whole batch (its first million values would be its
    first few images only, whose maximum clips the others: measured in docs/ablations.md, stop 30)."""
    flat = a.detach().flatten().float()
    if q >= 1.0:
        return flat.max()
    if flat.numel() > CALIB_SAMPLE:
        flat = flat[:: -(-flat.numel() // CALIB_SAMPLE)]
    return torch.quantile(flat, q)


class ActQuant(nn.Module):
    """ReLU + unsigned fake quantisation to 0..qmax with a learned scale (LSQ)."""

    def __init__(self, qmax: int = ACT_QMAX, calib_quantile: float = 1.0) -> None:
        super().__init__()
        self.qmax = qmax
        self.calib_quantile = calib_quantile
        self.log_scale = nn.Parameter(torch.tensor(math.log(4.0 / qmax)))
        self.register_buffer("initialised", torch.tensor(False))

    def forward(self, x: torch.Tensor, quantize: bool = True) -> torch.Tensor:
        if not quantize:
            return F.relu(x)
        if self.training and not bool(self.initialised):
            with torch.no_grad():  # calibrate on the first batch (to its maximum by default)
                top = activation_quantile(F.relu(x), self.calib_quantile).clamp_min(1e-3)
                self.log_scale.fill_(math.log(float(top) / self.qmax))
                self.initialised.fill_(True)
        scale = self.log_scale.exp()
        return round_ste(x / scale).clamp(0, self.qmax) * scale

    @property
    def scale(self) -> float:
        return float(self.log_scale.detach().exp())


class MaskedConv(nn.Conv2d):
    """Convolution over the causal half-plane; mask "A" hides the centre, mask "B" keeps it."""

    def __init__(self, cin: int, cout: int, k: int, mask: str) -> None:
        super().__init__(cin, cout, k, padding=k // 2)
        m = torch.zeros(k, k)
        c = k // 2
        m[:c, :] = 1
        m[c, : c + (1 if mask == "B" else 0)] = 1
        self.register_buffer("mask", m.expand(cout, cin, k, k).clone())

    def forward(self, x: torch.Tensor, quantize: bool = True) -> torch.Tensor:
        w = self.weight * self.mask
        if quantize:
            w = quantize_weight(w)
        return F.conv2d(x, w, self.bias, padding=self.padding)


class ResBlock(nn.Module):
    """Algorithm 1: three masked convolutions with ReLU, added to the input."""

    def __init__(self, width: int, middle_kernel: int, act_qmax: int = ACT_QMAX) -> None:
        super().__init__()
        self.convs = nn.ModuleList(
            [MaskedConv(width, width, 1, "B"), MaskedConv(width, width, middle_kernel, "B"),
             MaskedConv(width, width, 1, "B")]
        )
        self.acts = nn.ModuleList([ActQuant(act_qmax) for _ in range(3)])
        self.out_act = ActQuant(act_qmax)  # re-quantises the residual sum
        with torch.no_grad():  # small residual branches at init: each block starts near the identity
            self.convs[2].weight.mul_(0.1)
            self.convs[2].bias.zero_()

    def forward(self, x: torch.Tensor, quantize: bool = True) -> torch.Tensor:
        h = x
        for conv, act in zip(self.convs, self.acts):
            h = act(conv(h, quantize), quantize)
        return self.out_act(x + h, quantize)


# Output parameter = GAIN * raw + OFFSET, then rounded to the mixture's fixed-point grid.  The gains
# let Adam move means (grey levels) as fast as logits; the exporter folds them into the last layer.
PARAM_SPECS = {  # name: (gain, offset, unit, lo, hi)
    "logit": (1.0, 0.0, mx.LOGIT_UNIT, mx.LOGIT_MIN, mx.LOGIT_MAX),
    "mean": (127.5, 127.5, mx.MEAN_UNIT, mx.MEAN_MIN, mx.MEAN_MAX),
    "logscale": (1.0, 2.0, mx.LOGSCALE_UNIT, mx.LOGSCALE_MIN, mx.LOGSCALE_MAX),
}  # and "coeff", whose grid depends on the model (param_spec)


def param_spec(kind: str, cfg: ModelConfig) -> tuple[float, float, float, int, int]:
    """(gain, offset, unit, lo, hi) of a kind of mixture parameter in models of ``cfg``."""
    if kind == "coeff":  # gain 1, offset 0: the network outputs the coefficient itself
        return (1.0, 0.0, *mx.coeff_grid(cfg.coeff_bits))
    return PARAM_SPECS[kind]


def output_layout(cfg: ModelConfig) -> list[tuple[str, int]]:
    """(parameter kind, count) in the order of the last layer's output channels."""
    k, c = cfg.mixtures, cfg.channels
    layout = [("logit", k), ("mean", k * c), ("logscale", k * c)]
    if c == 3:
        layout.append(("coeff", k * 3))
    return layout


def quantize_param(raw: torch.Tensor, kind: str, quantize: bool, cfg: ModelConfig = ModelConfig()) -> torch.Tensor:
    gain, offset, unit, lo, hi = param_spec(kind, cfg)
    value = raw * gain + offset
    if not quantize:
        return value.clamp(lo * unit, hi * unit)
    return round_ste(value / unit).clamp(lo, hi) * unit


class PixelCNN(nn.Module):
    """Algorithm 2 with a PixelCNN++ colour head: one pass per pixel gives all its parameters."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        k = 2 * cfg.horizon + 1
        self.first = MaskedConv(cfg.channels + 1, cfg.width, k, "A")
        self.first_act = ActQuant(cfg.act_qmax)
        middle = 1 if cfg.kind == "local" else 3
        self.blocks = nn.ModuleList([ResBlock(cfg.width, middle, cfg.act_qmax) for _ in range(cfg.res_blocks)])
        self.head = MaskedConv(cfg.width, cfg.width, 1, "B")
        self.head_act = ActQuant(cfg.act_qmax)
        self.out = MaskedConv(cfg.width, cfg.out_channels, 1, "B")
        with torch.no_grad():
            self.out.weight.mul_(0.1)
            self.out.bias.zero_()
        if cfg.skip:  # full models too, so that one can start as exactly a local model with a skip
            self.skip = nn.Parameter(torch.zeros(cfg.out_channels, cfg.fan_in))
        self.quantize = cfg.kind == "local"
        self.amp = False  # bfloat16 autocast for the trunk (training on CUDA); see raw_outputs

    def _autocast(self, x: torch.Tensor, enabled: bool):
        return torch.autocast(device_type=x.device.type, dtype=torch.bfloat16, enabled=enabled)

    def raw_outputs(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, C, H, W) grey levels 0..255 (float) -> (B, H, W, out_channels) raw outputs."""
        q = self.quantize
        valid = torch.ones_like(x[:, :1])
        # centred inputs (measured: ~0.3 bpd better early in training); zero padding => validity 0
        h = torch.cat([(x - INPUT_CENTRE) / INPUT_CENTRE, valid], dim=1)
        # Mixed precision only for the trunk and never with fake quantisation (bfloat16 cannot hold
        # the integer grid the exact model reproduces); the last layer stays float32 because a mean
        # of ~200 grey levels needs more than bfloat16's 8 significant bits.
        amp = self.amp and not q
        if self.cfg.kind == "local":
            return self._local_outputs(h, q, amp)
        x_in = h
        with self._autocast(h, amp):
            h = self.first_act(self.first(h, q), q)
            for block in self.blocks:
                h = block(h, q)
            h = self.head_act(self.head(h, q), q)
        with self._autocast(h, False):
            out = self.out(h.float(), q)
            if self.cfg.skip:
                out = out + F.conv2d(x_in, self.skip_kernel(), padding=self.cfg.horizon)
            return out.permute(0, 2, 3, 1)

    def skip_kernel(self) -> torch.Tensor:
        """The linear skip as a (mask A) convolution kernel (out, channels + 1, 2h+1, 2h+1): weight
        ``skip[:, tap * (channels + 1) + c]`` sits at the tap's offset, as in ``_local_outputs``."""
        hz, cin = self.cfg.horizon, self.cfg.channels + 1
        k = 2 * hz + 1
        kernel = self.skip.new_zeros(self.skip.shape[0], cin, k, k)
        per_tap = self.skip.reshape(self.skip.shape[0], -1, cin)
        for i, (dy, dx) in enumerate(causal_offsets(hz)):
            kernel[:, :, hz + dy, hz + dx] = per_tap[:, i]
        return kernel

    def _local_outputs(self, h: torch.Tensor, q: bool, amp: bool = False) -> torch.Tensor:
        """The local model as what it is: a gather of the 24 causal neighbours, then a per-pixel
        MLP (matmuls in channels-last layout; ~2x faster to train than masked convolutions)."""
        hz = self.cfg.horizon
        b, c, hh, ww = h.shape
        padded = F.pad(h, (hz, hz, hz, 0)).permute(0, 2, 3, 1)  # (B, H + h, W + 2h, C)
        offsets = causal_offsets(hz)
        taps = torch.stack([padded[:, hz + dy : hz + dy + hh, hz + dx : hz + dx + ww] for dy, dx in offsets], dim=3)
        w = self.first.weight * self.first.mask
        w = quantize_weight(w, self.cfg.first_qmax, INPUT_CENTRE) if q else w
        w0 = torch.stack([w[:, :, hz + dy, hz + dx] for dy, dx in offsets], dim=1)  # (out, taps, cin)
        def dense(conv: MaskedConv, t: torch.Tensor) -> torch.Tensor:
            wt = quantize_weight(conv.weight, in_max=self.cfg.act_qmax) if q else conv.weight
            return t @ wt[:, :, 0, 0].t() + conv.bias

        with self._autocast(h, amp):
            a = self.first_act(taps.reshape(b, hh, ww, -1) @ w0.reshape(w0.shape[0], -1).t() + self.first.bias, q)
            for block in self.blocks:
                t = a
                for conv, act in zip(block.convs, block.acts):
                    t = act(dense(conv, t), q)
                a = block.out_act(a + t, q)
            a = self.head_act(dense(self.head, a), q)
        with self._autocast(h, False):
            out = dense(self.out, a.float())
            if self.cfg.skip:
                ws = quantize_weight(self.skip, self.cfg.skip_qmax, INPUT_CENTRE) if q else self.skip
                out = out + taps.reshape(b, hh, ww, -1) @ ws.t()
        return out

    def mixture_params(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per-pixel mixture parameters in grey-level units, channel coupling applied with ``x``.

        Returns logits (B, H, W, K) and means / log_scales (B, H, W, C, K).
        """
        cfg = self.cfg
        raw = self.raw_outputs(x)
        parts, start = {}, 0
        for kind, n in output_layout(cfg):
            parts[kind] = quantize_param(raw[..., start : start + n], kind, self.quantize, cfg)
            start += n
        b, hh, ww, _ = raw.shape
        k, c = cfg.mixtures, cfg.channels
        means = parts["mean"].reshape(b, hh, ww, c, k)
        if c == 3:
            coeff = parts["coeff"].reshape(b, hh, ww, 3, k)
            xs = x.permute(0, 2, 3, 1).unsqueeze(-1)  # (B, H, W, 3, 1)
            g = means[..., 1, :] + coeff[..., 0, :] * xs[..., 0, :]
            bl = means[..., 2, :] + coeff[..., 1, :] * xs[..., 0, :] + coeff[..., 2, :] * xs[..., 1, :]
            if self.quantize:
                g = round_ste(g / mx.MEAN_UNIT).clamp(mx.MEAN_MIN, mx.MEAN_MAX) * mx.MEAN_UNIT
                bl = round_ste(bl / mx.MEAN_UNIT).clamp(mx.MEAN_MIN, mx.MEAN_MAX) * mx.MEAN_UNIT
            means = torch.stack([means[..., 0, :], g, bl], dim=-2)
        return {
            "logits": parts["logit"],
            "means": means,
            "log_scales": parts["logscale"].reshape(b, hh, ww, c, k),
        }

    def is_calibrated(self) -> bool:
        """True once a local model has trained with fake quantisation (its activation scales are set)."""
        acts = [m for m in self.modules() if isinstance(m, ActQuant)]
        return self.cfg.kind == "local" and all(bool(a.initialised) for a in acts)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """Natural-log likelihood of every sub-pixel: (B, C, H, W)."""
        p = self.mixture_params(x)
        xs = x.permute(0, 2, 3, 1)  # (B, H, W, C)
        if self.cfg.joint:
            return mx.log_prob_joint(xs, p["logits"], p["means"], p["log_scales"]).permute(0, 3, 1, 2)
        logits = p["logits"].unsqueeze(-2).expand_as(p["means"])
        lp = mx.log_prob(xs, logits, p["means"], p["log_scales"])
        return lp.permute(0, 3, 1, 2)

    def bits(self, x: torch.Tensor) -> torch.Tensor:
        """Code length in bits per image: (B,)."""
        return -self.log_prob(x).flatten(1).sum(1) / math.log(2)


@torch.no_grad()
def scale_activation_steps(model: PixelCNN, factor: float) -> None:
    """Multiply every activation quantiser's step (and so its clamp range) by ``factor``."""
    for m in model.modules():
        if isinstance(m, ActQuant):
            m.log_scale.add_(math.log(factor))


def change_act_bits(model: PixelCNN, old_bits: int) -> None:
    """Weights trained (and activation scales learned) with ``old_bits``-bit activations, loaded
    into ``model`` of another width: keep each layer's clamp range, a finer grid inside it."""
    scale_activation_steps(model, (2**old_bits - 1) / model.cfg.act_qmax)


@torch.no_grad()
def calibrate_activations(model: PixelCNN, x: torch.Tensor, quantile: float = 1.0) -> None:
    """Set every activation range afresh to the ``quantile`` of its values on the batch ``x``
    (layer by layer, each seeing the quantised outputs of the ones before)."""
    acts = [m for m in model.modules() if isinstance(m, ActQuant)]
    was_training, was_quantizing = model.training, model.quantize
    for a in acts:
        a.calib_quantile = quantile
        a.initialised.fill_(False)
    model.train()
    model.quantize = True
    model.raw_outputs(x)
    model.train(was_training)
    model.quantize = was_quantizing


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for name, p in model.named_parameters() if "log_scale" not in name)
