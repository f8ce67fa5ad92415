"""The exact integer network the codec runs, exported from a trained float ``PixelCNN``.

Why it is exact on every machine (CPU, CUDA, any BLAS, batch size or thread count):

* every matmul multiplies int8-valued weights (|w| <= 127; the first layer's and the skip's up to
  2047 with ``first_bits`` / ``skip_bits`` 12) by integer activations (0..255, or 0..1023 for models
  with ``act_bits = 10``; inputs -128..128) in float32; the loader checks that
  each output channel's sum of |w| * (largest input) is below 2**24, so every partial sum in any
  order is an exactly representable integer;
* re-quantisation between layers (arithmetic 2, format version 2) is
  ``floor(fl32(fl32(acc * mul) + add))``: one float32 multiply and one float32 add, each a separate
  elementwise operation, which IEEE 754 defines to the bit (round to nearest even; no fused
  multiply-add, no subnormals: the loader checks the constants) -- so every device computes the same
  float32 numbers, even though they are rounded;
* arithmetic 1 (format version 1, still decoded) did the same in float64 with dyadic ``mul`` and
  ``add``, exactly (the loader checks products stay below 2**53); it is ~3x slower on CPU;
* the outputs are integer mixture parameters; the integer CDF (``mixture.counts``) takes it from
  there with tables stored in the same file.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from safetensors import safe_open
from safetensors.numpy import save_file

from nelloc import _requant as fused_ops
from nelloc import mixture as mx
from nelloc.errors import ModelError
from nelloc.model import INPUT_CENTRE, WEIGHT_QMAX, ModelConfig, PixelCNN, causal_offsets, param_spec
from nelloc.model import floor_ste, output_layout, weight_scale

FORMAT = "nelloc-exact-1"
MUL_BITS = 24  # significant bits of each dyadic multiplier (acc * mul stays below 2**49)
ARITHMETIC = 2  # what new streams use (see the module docstring); 1 is kept for old streams
ARITHMETICS = (1, 2)
MIN_NORMAL = 2.0**-100  # constants are 0 or above this, so no float32 product is subnormal
MAX_BIAS = 1 << 14  # |per-image bias value| (format section 5c); the mean grid spans 24,576 units


@dataclass
class Layer:
    weight: np.ndarray  # (fan_in, fan_out) int8
    mul: np.ndarray  # (fan_out,) float64 dyadic
    add: np.ndarray  # (fan_out,) float64 dyadic
    lo: np.ndarray  # (fan_out,) clamp bounds, float64 integers
    hi: np.ndarray


def _dyadic(values: np.ndarray, exponent: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Round to integer / 2**S with MUL_BITS significant bits; returns (rounded values, S)."""
    values = np.asarray(values, dtype=np.float64)
    if exponent is None:
        mag = np.maximum(np.abs(values), 1e-30)
        exponent = MUL_BITS - np.ceil(np.log2(mag)).astype(np.int64)
    return np.round(values * np.exp2(exponent)) * np.exp2(-exponent), exponent


def _requant(weight: np.ndarray, scale: np.ndarray, bias: np.ndarray, lo, hi, dtype: type = np.int8) -> Layer:
    """Layer computing clamp(floor(acc * scale + bias), lo, hi) with dyadic scale and bias."""
    mul, exponent = _dyadic(scale)
    add, _ = _dyadic(bias, exponent)
    n = len(mul)
    return Layer(weight.astype(dtype), mul, add, np.broadcast_to(np.float64(lo), (n,)).copy(),
                 np.broadcast_to(np.float64(hi), (n,)).copy())


def _int_weight(w: torch.Tensor, in_max: float, qmax: int = WEIGHT_QMAX) -> tuple[np.ndarray, np.ndarray]:
    scale = weight_scale(w, qmax, in_max)
    q = torch.round(w.detach() / scale.view(-1, *([1] * (w.dim() - 1)))).clamp(-qmax, qmax)
    return q.numpy(), scale.double().numpy()


def export(model: PixelCNN) -> dict[str, np.ndarray]:
    """Float (fake-quantised) local model -> tensors of the exact model."""
    cfg = model.cfg
    if cfg.kind != "local":
        raise ModelError("only local models can be exported to the exact codec model")
    model = model.cpu().eval()
    if not model.is_calibrated():
        raise ModelError("model was never trained with fake quantisation; nothing to export")
    tensors: dict[str, np.ndarray] = {}
    qmax = cfg.act_qmax

    def put(prefix: str, layer: Layer) -> None:
        # hidden layers clamp to 0..qmax, so only ``out`` stores its bounds (files before stop 46 stored
        # every layer's: 20 KB of a width-256 model)
        fields = ("weight", "mul", "add", "lo", "hi") if prefix == "out" else ("weight", "mul", "add")
        for field in fields:
            tensors[f"{prefix}.{field}"] = getattr(layer, field)

    # first layer: gather order is (causal position, channel) with the validity plane last
    w, s_w = _int_weight(model.first.weight * model.first.mask, INPUT_CENTRE, cfg.first_qmax)
    h = cfg.horizon
    cols = [w[:, :, h + dy, h + dx] for dy, dx in causal_offsets(h)]  # each (out, cin)
    w0 = np.stack(cols, axis=1).reshape(w.shape[0], -1).T  # (24 * cin, out)
    s_in = 1.0 / INPUT_CENTRE
    s_out = model.first_act.scale
    bias = model.first.bias.detach().double().numpy()
    put("first", _requant(w0, s_in * s_w / s_out, bias / s_out + 0.5, 0, qmax, stored_dtype(cfg.first_qmax)))
    s_in = s_out

    for b, block in enumerate(model.blocks):
        s_block_in = s_in
        for i, (conv, act) in enumerate(zip(block.convs, block.acts)):
            w, s_w = _int_weight(conv.weight * conv.mask, qmax)
            s_out = act.scale
            bias = conv.bias.detach().double().numpy()
            put(f"block{b}.conv{i}", _requant(w[:, :, 0, 0].T, s_in * s_w / s_out, bias / s_out + 0.5, 0, qmax))
            s_in = s_out
        s_res = block.out_act.scale
        mul_x, _ = _dyadic(np.array([s_block_in / s_res]))
        mul_h, _ = _dyadic(np.array([s_in / s_res]))
        tensors[f"block{b}.residual"] = np.array([mul_x[0], mul_h[0]])
        s_in = s_res

    w, s_w = _int_weight(model.head.weight * model.head.mask, qmax)
    s_out = model.head_act.scale
    bias = model.head.bias.detach().double().numpy()
    put("head", _requant(w[:, :, 0, 0].T, s_in * s_w / s_out, bias / s_out + 0.5, 0, qmax))
    s_in = s_out

    w, s_w = _int_weight(model.out.weight * model.out.mask, qmax)
    bias = model.out.bias.detach().double().numpy()
    gain, offset, unit, lo, hi = (np.concatenate([np.full(n, param_spec(k, cfg)[i]) for k, n in output_layout(cfg)])
                                  for i in range(5))
    put("out", _requant(w[:, :, 0, 0].T, s_in * s_w * gain / unit, (gain * bias + offset) / unit + 0.5, lo, hi))
    if cfg.skip:  # linear path from the neighbourhood (integer inputs at scale 1/128) to the outputs
        w, s_w = _int_weight(model.skip, INPUT_CENTRE, cfg.skip_qmax)
        mul, _ = _dyadic(s_w * gain / unit / INPUT_CENTRE)
        tensors["skip.weight"], tensors["skip.mul"] = w.T.astype(stored_dtype(cfg.skip_qmax)), mul
    for name, table in mx.build_tables().items():
        tensors[f"table.{name}"] = table
    if cfg.joint:
        tensors["table.log"] = mx.build_log_table()
    return tensors


def digest(tensors: dict[str, np.ndarray], cfg: ModelConfig) -> str:
    """SHA-256 of the model's config and every tensor (name, dtype, shape, bytes), sorted by name."""
    h = hashlib.sha256(json.dumps(cfg.to_dict(), sort_keys=True).encode())
    for name in sorted(tensors):
        t = np.ascontiguousarray(tensors[name])
        h.update(f"{name}|{t.dtype.str}|{t.shape}|".encode())
        h.update(t.tobytes())
    return h.hexdigest()


def save(path: str | Path, tensors: dict[str, np.ndarray], cfg: ModelConfig, name: str) -> str:
    meta = {"format": FORMAT, "name": name, "config": json.dumps(cfg.to_dict()), "sha256": digest(tensors, cfg)}
    save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, str(path), metadata=meta)
    return meta["sha256"]


class ExactModel:
    """Integer-exact local PixelCNN: gathered neighbourhoods -> integer mixture parameters."""

    def __init__(self, tensors: dict[str, np.ndarray], cfg: ModelConfig, name: str = "") -> None:
        self.cfg, self.name = cfg, name
        self.tensors = tensors
        self.sha256 = digest(tensors, cfg)
        self.tables = {k.split(".", 1)[1]: np.ascontiguousarray(v, dtype=np.int32)
                       for k, v in tensors.items() if k.startswith("table.")}
        self._check()
        self.device = torch.device("cpu")
        self._load_device()

    # -- loading and validation -------------------------------------------------------------
    @classmethod
    def load(cls, path: str | Path) -> "ExactModel":
        try:
            with safe_open(str(path), framework="numpy") as f:
                meta = f.metadata() or {}
                tensors = {k: f.get_tensor(k) for k in f.keys()}
            if meta.get("format") != FORMAT:
                raise ModelError(f"{path}: not a NeLLoC exact model (format {meta.get('format')!r})")
            cfg = ModelConfig(**json.loads(meta["config"]))
        except ModelError:
            raise
        except Exception as exc:  # noqa: BLE001 - any parse failure is a bad model file
            raise ModelError(f"{path}: cannot read model file ({exc})") from exc
        model = cls(tensors, cfg, meta.get("name", Path(path).stem))
        if meta.get("sha256") and meta["sha256"] != model.sha256:
            raise ModelError(f"{path}: model file is corrupted (hash mismatch)")
        return model

    def _layer_names(self) -> list[str]:
        names = ["first"]
        for b in range(self.cfg.res_blocks):
            names += [f"block{b}.conv{i}" for i in range(3)]
        return names + ["head", "out"]

    def _check(self) -> None:
        """Refuse any model whose arithmetic could round (see the module docstring)."""
        cfg = self.cfg
        if cfg.kind != "local" or cfg.channels not in (1, 3):
            raise ModelError("exact models must be local with 1 or 3 channels")
        fan_in, qmax = cfg.fan_in, cfg.act_qmax
        try:
            for name in self._layer_names():
                largest_input, w_qmax = (INPUT_CENTRE, cfg.first_qmax) if name == "first" else (qmax, WEIGHT_QMAX)
                acc_max = _checked_sum_bound(f"layer {name}", self.tensors[f"{name}.weight"], largest_input,
                                             w_qmax, stored_dtype(w_qmax))
                mul, add = self.tensors[f"{name}.mul"], self.tensors[f"{name}.add"]
                _, e = np.frexp(mul)
                exps = MUL_BITS + 1 - e.astype(np.int64)
                if (np.abs(mul) * acc_max * 2.0**exps + np.abs(add) * 2.0**exps >= 2**52).any():
                    raise ModelError(f"layer {name}: re-quantisation can exceed 2**53")
                for arr in (mul * 2.0**exps, add * 2.0**exps):
                    if not np.array_equal(arr, np.round(arr)):
                        raise ModelError(f"layer {name}: multipliers are not dyadic")
                lo, hi = self.bounds(name)
                if lo.shape != mul.shape or hi.shape != mul.shape:
                    raise ModelError(f"layer {name}: clamp bounds do not match its outputs")
                if name != "out" and ((lo != 0).any() or (hi != qmax).any()):
                    raise ModelError(f"layer {name}: hidden activations must be clamped to 0..{qmax}")
                _check_float32_constants(f"layer {name}", mul, add)
            for b in range(cfg.res_blocks):
                r32 = np.abs(self.tensors[f"block{b}.residual"].astype(np.float32))
                if not ((r32 >= MIN_NORMAL) & (r32 < 2**100)).all():
                    raise ModelError(f"block {b}: residual constants out of range")
            if cfg.skip:
                ws, ms = self.tensors["skip.weight"], self.tensors["skip.mul"]
                _checked_sum_bound("skip", ws, INPUT_CENTRE, cfg.skip_qmax, stored_dtype(cfg.skip_qmax))
                if ws.shape != (fan_in, cfg.out_channels) or ms.shape != (cfg.out_channels,):
                    raise ModelError("skip: shape does not match the configuration")
                _check_float32_constants("skip", ms)
            if self.tensors["first.weight"].shape[0] != fan_in:
                raise ModelError("first layer does not match the configured horizon")
            if self.tensors["out.weight"].shape[1] != cfg.out_channels:
                raise ModelError("output layer does not match the configured mixture")
            if self.tables["exp"].size != mx.EXP_TABLE_SIZE:
                raise ModelError("bad exp table")
            if self.tables["inv_scale"].size != mx.LOGSCALE_MAX - mx.LOGSCALE_MIN + 1:
                raise ModelError("bad inverse-scale table")
            if (self.tables["inv_scale"] <= 0).any() or self.tables["inv_scale"].max() >= 2**24:
                raise ModelError("bad inverse-scale table")
            if np.any(np.diff(self.tables["sigmoid"]) < 0):
                raise ModelError("bad sigmoid table")
            if cfg.joint:
                log = self.tables["log"]
                if cfg.channels != 3 or log.shape != (mx.LOG_MANTISSA,) or (log > 0).any() or (log < -2 * mx.LN2_FIXED).any():
                    raise ModelError("bad log table (joint models: colour only)")
        except KeyError as exc:
            raise ModelError(f"model file lacks tensor {exc}") from exc

    def bounds(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """A layer's clamp bounds (float64, per output): stored for ``out``; 0 and Q for the hidden
        layers, which files exported before stop 46 store too (checked when they load)."""
        t = self.tensors
        if name == "out" or f"{name}.lo" in t or f"{name}.hi" in t:
            return t[f"{name}.lo"], t[f"{name}.hi"]
        n = t[f"{name}.mul"].shape[0]
        return np.zeros(n), np.full(n, float(self.cfg.act_qmax))

    fuse_cpu_ops = True  # CPU: fused C re-quantisation (nelloc/_requant.c); False: torch's ops

    @property
    def _fused(self) -> bool:
        return self.fuse_cpu_ops and self.device.type == "cpu"

    def _load_device(self) -> None:
        dev = self.device
        self._layers, self._layers32 = {}, {}
        for name in self._layer_names():
            t = self.tensors
            weight = torch.from_numpy(t[f"{name}.weight"].astype(np.float32)).to(dev)
            consts = [t[f"{name}.mul"], t[f"{name}.add"], *self.bounds(name)]
            self._layers[name] = (weight, *(torch.from_numpy(c).to(dev) for c in consts))
            self._layers32[name] = (weight, *(torch.from_numpy(c.astype(np.float32)).to(dev) for c in consts))
        if self.cfg.skip:
            self._skip = (torch.from_numpy(self.tensors["skip.weight"].astype(np.float32)).to(dev),
                          torch.from_numpy(self.tensors["skip.mul"].astype(np.float32)).to(dev))
        if dev.type == "cpu":  # the fused path's constants: numpy views of the same float32 tensors
            self._consts32 = {name: tuple(t.numpy() for t in layer[1:]) for name, layer in self._layers32.items()}
            self._skip_mul32 = self._skip[1].numpy() if self.cfg.skip else None
        self._residual = [tuple(float(v) for v in self.tensors[f"block{b}.residual"])
                          for b in range(self.cfg.res_blocks)]
        # Python floats holding float32 values: torch's float32 ops use them without further rounding
        self._residual32 = [tuple(float(np.float32(v)) for v in r) for r in self._residual]

    def to(self, device: str | torch.device) -> "ExactModel":
        device = torch.device(device)
        if device != self.device:
            self.device = device
            self._load_device()
        return self

    @property
    def fan_in(self) -> int:
        return self.tensors["first.weight"].shape[0]

    # -- inference ------------------------------------------------------------------------------
    def _apply(self, name: str, x: torch.Tensor, act: bool = True) -> torch.Tensor:
        """Arithmetic 1: exact dyadic re-quantisation in float64."""
        w, mul, add, lo, hi = self._layers[name]
        acc = torch.matmul(x, w).double()  # exact integers (checked bound)
        y = torch.addcmul(add, acc, mul).floor_()  # exact dyadic arithmetic, no rounding
        y = torch.maximum(torch.minimum(y, hi), lo)
        return y.float() if act else y

    def _apply32(self, name: str, x: torch.Tensor, act: bool = True, skip_of: torch.Tensor | None = None) -> torch.Tensor:
        """Arithmetic 2: exact matmul, then one float32 multiply and one float32 add (separate ops:
        never fused into an FMA), floor and clamp.  ``skip_of``: the network input, whose skip term
        (its own exact matmul times its own float32 multiplier) is added before ``add``."""
        w, mul, add, lo, hi = self._layers32[name]
        if self._fused:
            return self._apply32_fused(name, x, skip_of)
        y = torch.matmul(x, w).mul_(mul)
        if skip_of is not None:
            ws, ms = self._skip
            y.add_(torch.matmul(skip_of, ws).mul_(ms))
        y = y.add_(add).floor_()
        return y.clamp_(0, self.cfg.act_qmax) if act else torch.maximum(torch.minimum(y, hi), lo)

    def _apply32_fused(self, name: str, x: torch.Tensor, skip_of: torch.Tensor | None) -> torch.Tensor:
        """``_apply32`` on the CPU with its elementwise steps in one C pass (nelloc/_requant.c: the
        same binary32 operations in the same order, so the same numbers)."""
        w = self._layers32[name][0]
        y = torch.matmul(x, w)
        if skip_of is None:
            fused_ops.requant(y.numpy(), *self._consts32[name])
        else:
            fused_ops.requant(y.numpy(), *self._consts32[name], torch.matmul(skip_of, self._skip[0]).numpy(), self._skip_mul32)
        return y

    @torch.no_grad()
    def forward(self, x: torch.Tensor, arithmetic: int = ARITHMETIC) -> torch.Tensor:
        """x: (N, fan_in) float32 integer-valued neighbourhoods -> (N, out_channels) integer-valued
        float tensor (float32 for arithmetic 2, float64 for 1)."""
        if arithmetic not in ARITHMETICS:
            raise ValueError(f"unknown arithmetic {arithmetic}")
        on_cuda = self.device.type == "cuda"  # TF32 would round the sums there; the CPU never uses it
        cuda_tf32 = torch.backends.cuda.matmul.allow_tf32
        if on_cuda:
            torch.backends.cuda.matmul.allow_tf32 = False
        try:
            if arithmetic == 1:
                if self.cfg.skip:
                    raise ModelError("models with a skip layer run arithmetic 2 only (format version >= 2)")
                return self._run(x, self._apply, self._residual, _residual64)
            return self._run(x, self._apply32, self._residual32, _residual32_fused if self._fused else _residual32)
        finally:
            if on_cuda:
                torch.backends.cuda.matmul.allow_tf32 = cuda_tf32

    def _trunk(self, x: torch.Tensor, apply, residuals, combine) -> torch.Tensor:
        """``first`` and the residual blocks: the activations entering ``head``."""
        h = apply("first", x)
        for b, (r0, r1) in enumerate(residuals):
            t = h
            for i in range(3):
                t = apply(f"block{b}.conv{i}", t)
            h = combine(h, t, r0, r1, self.cfg.act_qmax)
        return h

    def _run(self, x: torch.Tensor, apply, residuals, combine) -> torch.Tensor:
        """The layer sequence of docs/format.md section 4, with one arithmetic's layer and residual ops."""
        h = self._trunk(x, apply, residuals, combine)
        if self.cfg.skip:
            return apply("out", apply("head", h), act=False, skip_of=x)
        return apply("out", apply("head", h), act=False)

    # -- per-image biases (docs/format.md section 5c) -------------------------------------------
    def bias_layer_sizes(self) -> list[tuple[str, int]]:
        """(layer, outputs) of the layers a per-image bias can change, in network order."""
        return [(name, self.tensors[f"{name}.add"].shape[0]) for name in self._layer_names()]

    def bias_split(self, count: int) -> list[tuple[str, int]]:
        """The layers that ``count`` bias values cover: the last layers of the network, whole
        (the last ``out`` outputs, then ``head`` before them, and so on); ``ModelError`` if
        ``count`` does not end at a layer boundary."""
        covered, total = [], 0
        for name, size in reversed(self.bias_layer_sizes()):
            if total == count:
                break
            covered.append((name, size))
            total += size
        if total != count or count == 0:
            ends = list(np.cumsum([n for _, n in reversed(self.bias_layer_sizes())]))
            raise ModelError(f"a bias of {count} values does not cover whole layers of this model "
                             f"(it takes {', '.join(map(str, ends[:4]))}, ... values)")
        return covered[::-1]

    def with_bias(self, bias: Sequence[int]) -> "ExactModel":
        """This model with integer ``bias`` values added to the constant terms of its last layers
        (``bias_split``; each value in its layer's own output units): the per-image bias of
        docs/format.md section 5c.  Every changed constant is ``float32(add + bias)``, the same on
        every machine; ``ModelError`` if the result would leave the exactness budget."""
        bias = np.asarray(bias, dtype=np.int64).ravel()
        if np.abs(bias).max(initial=0) > MAX_BIAS:
            raise ModelError(f"bias value beyond +-{MAX_BIAS}")
        tensors, start = dict(self.tensors), 0
        for name, size in self.bias_split(len(bias)):
            tensors[f"{name}.add"] = self.tensors[f"{name}.add"] + bias[start : start + size].astype(np.float64)
            start += size
        return ExactModel(tensors, self.cfg, self.name).to(self.device)

    @torch.no_grad()
    def tail_inputs(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(N, fan_in) neighbourhoods -> the integer activations entering ``head`` (N, width) and
        the skip term of ``out`` (``f32(acc_s * S)``, or None): what ``tail`` needs."""
        h = self._trunk(x, self._apply32, self._residual32, _residual32_fused if self._fused else _residual32)
        skip = None
        if self.cfg.skip:
            ws, ms = self._skip
            skip = torch.matmul(x, ws).mul_(ms)
        return h, skip

    def tail(self, h: torch.Tensor, skip: torch.Tensor | None, head_bias: torch.Tensor | float = 0.0,
             out_bias: torch.Tensor | float = 0.0) -> torch.Tensor:
        """``head`` and ``out`` on ``tail_inputs``, differentiable in the biases (floors are
        straight-through): the last layer's values before its floor and clamp.  For the encoder's
        choice of a bias only; ``floor`` and ``clamp`` of it with zero biases is ``forward``."""
        return self.tail_after_head(self.head_values(h), skip, head_bias, out_bias)

    def head_values(self, h: torch.Tensor) -> torch.Tensor:
        """``head``'s values before its bias, floor and clamp: what a bias fit need not recompute."""
        w, mul, add, _, _ = self._layers32["head"]
        return torch.matmul(h, w) * mul + add

    def tail_after_head(self, head: torch.Tensor, skip: torch.Tensor | None, head_bias: torch.Tensor | float = 0.0,
                        out_bias: torch.Tensor | float = 0.0) -> torch.Tensor:
        """``tail`` from ``head_values``."""
        a = torch.clamp(floor_ste(head + head_bias), 0, self.cfg.act_qmax)
        w, mul, add, _, _ = self._layers32["out"]
        y = torch.matmul(a, w) * mul
        if skip is not None:
            y = y + skip
        return y + add + out_bias

    def output_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """The clamp bounds of the last layer's integer outputs: (lo, hi), each (out_channels,)."""
        return self.tensors["out.lo"], self.tensors["out.hi"]

    def split(self, out: np.ndarray) -> dict[str, np.ndarray]:
        """(N, out_channels) -> int32 logits (N, K), means / logscale_idx (N, C, K), coeffs (N, 3, K)."""
        cfg = self.cfg
        n, k, c = out.shape[0], cfg.mixtures, cfg.channels
        out = out.astype(np.int32)
        parts, start = {}, 0
        for kind, size in output_layout(cfg):
            parts[kind] = out[:, start : start + size]
            start += size
        res = {
            "logits": np.ascontiguousarray(parts["logit"]),
            "means": parts["mean"].reshape(n, c, k),
            "logscale_idx": parts["logscale"].reshape(n, c, k) - mx.LOGSCALE_MIN,
        }
        if c == 3:
            res["coeffs"] = parts["coeff"].reshape(n, 3, k)
        return res


def stored_dtype(qmax: int) -> type:
    """Integer weights in [-qmax, qmax] are stored as int8 when they fit (8-bit grids: the hidden and
    output layers, the skip with ``skip_bits`` 8, the first layer with ``first_bits`` 8), else int16."""
    return np.int8 if qmax <= WEIGHT_QMAX else np.int16


def _checked_sum_bound(what: str, w: np.ndarray, max_input: float, qmax: int = WEIGHT_QMAX,
                       dtype: type = np.int8) -> np.ndarray:
    """Check integer weights in [-qmax, qmax] (int8 in [-127, 127] unless said otherwise) whose sums
    with inputs up to ``max_input`` in magnitude stay below 2**24 (exact in float32); returns each
    output's bound on |acc|."""
    if w.dtype != dtype or np.abs(w.astype(np.int64)).max() > qmax:
        raise ModelError(f"{what}: weights must be {np.dtype(dtype).name} in [-{qmax}, {qmax}]")
    acc_max = np.abs(w.astype(np.int64)).sum(axis=0) * max_input
    if acc_max.max() >= 2**24:
        raise ModelError(f"{what}: sums can reach 2**24, float32 would round")
    return acc_max


def _check_float32_constants(what: str, *arrays: np.ndarray) -> None:
    """Constants must be 0 or normal binary32 numbers >= MIN_NORMAL, so no product is subnormal."""
    for arr in arrays:
        a32 = np.abs(arr.astype(np.float32))
        if not ((a32 == 0) | ((a32 >= MIN_NORMAL) & (a32 < 2**100))).all():
            raise ModelError(f"{what}: constants out of the float32 normal range")


def _residual64(h: torch.Tensor, t: torch.Tensor, r0: float, r1: float, qmax: int) -> torch.Tensor:
    """Arithmetic 1: exact in float64."""
    return (h.double() * r0 + t.double() * r1 + 0.5).floor_().clamp_(0, qmax).float()


def _residual32_fused(h: torch.Tensor, t: torch.Tensor, r0: float, r1: float, qmax: int) -> torch.Tensor:
    """``_residual32`` in one C pass on the CPU (same binary32 operations, same order); overwrites t."""
    fused_ops.residual(h.numpy(), t.numpy(), r0, r1, float(qmax))
    return t


def _residual32(h: torch.Tensor, t: torch.Tensor, r0: float, r1: float, qmax: int) -> torch.Tensor:
    """Arithmetic 2: ((h * r0) + (t * r1)) + 0.5, each a separately rounded binary32 op."""
    return (h * r0).add_(t.mul_(r1)).add_(0.5).floor_().clamp_(0, qmax)


def channel_logits(params: dict[str, np.ndarray], channel: int, values: np.ndarray | None,
                   tables: dict[str, np.ndarray], joint: bool, coeff_bits: int = 8) -> np.ndarray:
    """Mixture logits (N, K) of ``channel``: the network's, or for a joint model the components'
    posterior given the earlier channels' ``values`` (N, channel): the logits plus each component's
    integer log mass at those values (``mixture.log_mass``), unclamped int32."""
    logits = params["logits"]
    if not joint or channel == 0:
        return logits
    post = logits.astype(np.int64)
    for src in range(channel):
        means = coupled_means(params, src, values[:, :src], coeff_bits)
        mass = mx.bin_mass(means, params["logscale_idx"][:, src, :], values[:, src], tables)
        post += mx.log_mass(mass, tables["log"])
    return post.astype(np.int32)


def coupled_means(params: dict[str, np.ndarray], channel: int, values: np.ndarray | None,
                  coeff_bits: int = 8) -> np.ndarray:
    """Means of ``channel`` (N, K) after adding coefficient * earlier channels (integer, 1/64 units).

    ``values``: (N, channel) already known grey levels of the earlier channels of each pixel;
    the coefficients are in units of 2**-coeff_bits (``ModelConfig.coeff_bits``).
    """
    means = params["means"][:, channel, :]
    if channel == 0:
        return np.ascontiguousarray(means, dtype=np.int32)
    terms = [(0, 0)] if channel == 1 else [(1, 0), (2, 1)]  # (coefficient index, source channel)
    down = coeff_bits - 6  # coeff * 2**-coeff_bits * value grey levels == coeff * value / 2**down in 1/64 units
    shift = means.astype(np.int64) << down  # int64 throughout: a model file's bounds are not trusted here
    for ci, src in terms:
        shift += params["coeffs"][:, ci, :].astype(np.int64) * values[:, src : src + 1]
    # round half up: means + ((s + h) >> down) == ((means << down) + s + h) >> down, h = 2**(down-1)
    shift += 1 << (down - 1)
    shift >>= down
    return np.clip(shift, mx.MEAN_MIN, mx.MEAN_MAX).astype(np.int32)
