"""Training: random crops from staged sets -> fake-quantised PixelCNN -> checkpoints -> exact export.

Resumable exactly: a checkpoint holds the model, the optimiser, the step, every RNG state and the
sampler's state, so an interrupted run continues with the same batches it would have seen.
"""

from __future__ import annotations

import ctypes
import json
import math
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from nelloc import data as datasets
from nelloc.model import ModelConfig, PixelCNN, calibrate_activations, change_act_bits, count_parameters, output_layout


@dataclass
class TrainConfig:
    data: list[str] = field(default_factory=lambda: ["cifar10-train"])  # "name[/F][:weight]"; /F: every
    #                                                                       image shrunk F times (data.downscale)
    model: ModelConfig = field(default_factory=ModelConfig)
    crop: int = 32
    batch: int = 32
    lr: float = 3e-4
    steps: int = 1000
    val_every: int = 200
    ckpt_every: int = 100
    val_crops: int = 64
    seed: int = 0
    qat_start: float = 0.8  # fraction of the steps trained in float before fake quantisation
    calib_quantile: float = 1.0  # each fake-quantised phase starts with activation ranges set to
    #                              this quantile of the first batch (0.999 clipped: it cost 3-9%,
    #                              docs/ablations.md, stops 11 and 30); 0 keeps the ranges an
    #                              earlier leg learned (the maximum if there are none)
    warmup: int = 100
    grad_clip: float = 1.0  # max gradient norm (0 = off); deep full models at lr 1e-3 stalled at the
    #                         pixel marginal without it (and often with it: use lr 3e-4 for those)
    threads: int = 0  # 0 = torch default
    device: str = "cpu"
    init_from: str = ""  # a local run whose model starts this full model (see warm_start)
    amp: str = "auto"  # bfloat16 autocast of the trunk in the float phase: "auto" (CUDA, or a CPU with
    #   native bfloat16 arithmetic: see native_bf16), "on", "off"
    sampler: str = "loop"  # "vector": the same crop distribution drawn with array operations (another
    #                        stream of crops; 2x faster at batch 256: 4 vs 9 ms on the CPU VM)
    augment: str = "flip"  # "flip": horizontal mirror with probability 1/2; "dihedral": any of the
    #                        square's 8 symmetries (mirror, upside down, transposed), equally likely
    schedule: str = "cosine"  # after the warm-up: "cosine" down to 10% of lr at the last step, or
    #                          "constant" lr (the paper's recipe; an open-ended run that later legs
    #                          finish with a cosine tail by setting schedule and steps)

    @classmethod
    def from_overrides(cls, overrides: dict) -> "TrainConfig":
        """A config from JSON-style overrides, e.g. {"lr": 3e-4, "model": {"width": 64}}."""
        over = dict(overrides)
        return cls(model=ModelConfig(**over.pop("model", {})), **over)


AUGMENTS = ("flip", "dihedral")
SCHEDULES = ("cosine", "constant")


class CropSampler:
    """Random crops with horizontal flips (or, with ``augment="dihedral"``, any of the square's 8
    symmetries) from a weighted mixture of image sets."""

    def __init__(self, sources: list[tuple[list[np.ndarray], float]], crop: int, seed: int, augment: str = "flip") -> None:
        if augment not in AUGMENTS:
            raise ValueError(f"augment must be one of {list(AUGMENTS)}, not {augment!r}")
        self.sources = [imgs for imgs, _ in sources]
        w = np.array([wt for _, wt in sources], dtype=np.float64)
        self.weights = w / w.sum()
        self.crop = crop
        self.augment = augment
        self.rng = np.random.default_rng(seed)

    def _turned(self, crops: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Crops (N, C, C[, channels]), already mirrored at random; with ``augment="dihedral"`` each
        also turned upside down and transposed with probability 1/2, so that all 8 symmetries of the
        square are equally likely.  ``flip`` draws nothing here, so its crop stream is unchanged."""
        if self.augment == "dihedral":
            upside_down, transposed = rng.random(len(crops)) < 0.5, rng.random(len(crops)) < 0.5
            crops[upside_down] = crops[upside_down, ::-1]
            crops[transposed] = crops[transposed].swapaxes(1, 2)
        return crops

    def _one(self, rng: np.random.Generator) -> np.ndarray:
        imgs = self.sources[rng.choice(len(self.sources), p=self.weights)]
        img = imgs[rng.integers(len(imgs))]
        h, w = img.shape[:2]
        ch, cw = min(self.crop, h), min(self.crop, w)
        y, x = rng.integers(h - ch + 1), rng.integers(w - cw + 1)
        patch = img[y : y + ch, x : x + cw]
        if (ch, cw) != (self.crop, self.crop):  # tiny images: tile by reflection to the crop size
            patch = np.pad(patch, [(0, self.crop - ch), (0, self.crop - cw)] + [(0, 0)] * (img.ndim - 2), mode="symmetric")
        return patch[:, ::-1] if rng.random() < 0.5 else patch

    def batch(self, n: int, rng: np.random.Generator | None = None) -> torch.Tensor:
        rng = rng or self.rng
        arr = self._turned(np.stack([self._one(rng) for _ in range(n)]), rng)
        if arr.ndim == 3:
            arr = arr[..., None]
        return torch.from_numpy(np.ascontiguousarray(arr)).permute(0, 3, 1, 2).float()


class VectorCropSampler(CropSampler):
    """CropSampler's distribution (source by weight, image uniformly, position uniformly, flip with
    probability 1/2) drawn for a whole batch at once: one gather per source of equal-sized images
    (CIFAR-10) and one per distinct image otherwise."""

    def __init__(self, sources: list[tuple[list[np.ndarray], float]], crop: int, seed: int, augment: str = "flip") -> None:
        super().__init__(sources, crop, seed, augment)
        self.stacked = [np.stack(imgs) if len({im.shape for im in imgs}) == 1 else None for imgs in self.sources]
        self.shapes = [np.array([im.shape[:2] for im in imgs]) for imgs in self.sources]

    def batch(self, n: int, rng: np.random.Generator | None = None) -> torch.Tensor:
        rng = rng or self.rng
        c = self.crop
        src = rng.choice(len(self.sources), size=n, p=self.weights)
        pick, ys, xs, flip = (rng.random(n) for _ in range(4))
        first = self.sources[0][0]
        out = np.empty((n, c, c) + first.shape[2:], dtype=np.uint8)
        for s in np.unique(src):
            rows = np.flatnonzero(src == s)
            which = (pick[rows] * len(self.sources[s])).astype(np.int64)
            h, w = self.shapes[s][which].T
            if (h < c).any() or (w < c).any():  # tiny images: padded crops, one at a time
                for r in rows:
                    out[r] = self._one(rng)
                continue
            y = (ys[rows] * (h - c + 1)).astype(np.int64)
            x = (xs[rows] * (w - c + 1)).astype(np.int64)
            if self.stacked[s] is not None:
                win = np.lib.stride_tricks.sliding_window_view(self.stacked[s], (c, c), axis=(1, 2))
                out[rows] = np.moveaxis(win[which, y, x], (-2, -1), (1, 2))
                continue
            for i in np.unique(which):
                sel = which == i
                win = np.lib.stride_tricks.sliding_window_view(self.sources[s][i], (c, c), axis=(0, 1))
                out[rows[sel]] = np.moveaxis(win[y[sel], x[sel]], (-2, -1), (1, 2))
        flipped = flip < 0.5
        out[flipped] = out[flipped, :, ::-1]
        out = self._turned(out, rng)
        if out.ndim == 3:
            out = out[..., None]
        return torch.from_numpy(out).permute(0, 3, 1, 2).float()


SAMPLERS = {"loop": CropSampler, "vector": VectorCropSampler}


def _parse_source(spec: str) -> tuple[str, int, float]:
    """``"clic/2:0.3"`` -> ("clic", 2, 0.3): a set, the factor its images are shrunk by, its weight."""
    source, _, weight = spec.partition(":")
    name, _, factor = source.rpartition("/")
    if not (name and factor.isdigit()):  # no factor: a plain name or a path
        name, factor = source, "1"
    if int(factor) < 1:
        raise ValueError(f"{spec!r}: the downscale factor must be a positive integer")
    return name, int(factor), float(weight or 1.0)


def _split(imgs: list[np.ndarray], holdout: float = 0.05) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Deterministic train / validation split: every 20th image is held out (at least one)."""
    if len(imgs) == 1:
        return imgs, imgs
    step = max(2, int(round(1 / holdout)))
    val = imgs[::step]
    train = [im for i, im in enumerate(imgs) if i % step]
    return train, val


def build_samplers(cfg: TrainConfig) -> tuple[CropSampler, torch.Tensor]:
    train_sources, val_sources = [], []
    for spec in cfg.data:
        name, factor, weight = _parse_source(spec)
        if name in datasets.EVALUATION_SETS:
            raise ValueError(f"{name} is an evaluation set; never train on it")
        imgs = [datasets.downscale(im, factor) for im in datasets.load_images(name, channels=cfg.model.channels)]
        train, val = _split(imgs)
        train_sources.append((train, weight))
        val_sources.append((val, weight))
    if cfg.sampler not in SAMPLERS:
        raise ValueError(f"sampler must be one of {sorted(SAMPLERS)}, not {cfg.sampler!r}")
    sampler = SAMPLERS[cfg.sampler](train_sources, cfg.crop, cfg.seed, cfg.augment)
    val_rng = np.random.default_rng(cfg.seed + 1)
    val = CropSampler(val_sources, cfg.crop, cfg.seed + 1).batch(cfg.val_crops, val_rng)
    return sampler, val


def keep_freed_memory() -> bool:
    """On Linux with glibc, serve allocations below 1 GiB from the heap and keep freed memory there
    (process-wide; results do not change).  By default glibc gives each freed block above its
    mmap threshold (128 KiB to 32 MiB) back to the kernel, so every training step faults its
    activations in again: 15 of 27 s were system time for 40 width-256 steps on the stop-15 VM,
    0.57 s/step, against 1 s and 0.40 s/step with this.  Returns whether it was applied."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3
    return bool(libc.mallopt(m_mmap_threshold, 1 << 30)) and bool(libc.mallopt(m_trim_threshold, 1 << 30))


def describe_hardware(device: torch.device, threads: int = 0) -> str:
    """The machine a run trains on, for its model card (a run's last leg; the card is made elsewhere)."""
    accel = f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" and torch.cuda.is_available() else ""
    return (f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, device {device.type}{accel}, "
            f"{threads or 'default'} torch threads")


def native_bf16(device: torch.device, cpuinfo: str = "/proc/cpuinfo") -> bool:
    """Whether bfloat16 matmuls are native on ``device``: CUDA, or an x86 CPU with AVX512-BF16 or AMX
    (on the stop-29 AMD EPYC VM a width-256 step took 0.36 s instead of 0.51; where bfloat16 is only
    emulated it would be slower, so other CPUs train in float32)."""
    if device.type == "cuda":
        return True
    if device.type != "cpu":
        return False
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        return False
    flags = set(next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), []))
    return bool(flags & {"avx512_bf16", "amx_bf16"})


def uses_amp(cfg: TrainConfig, device: torch.device) -> bool:
    """Whether a run with this configuration trains (and validates) in bfloat16 autocast on ``device``."""
    return cfg.amp == "on" or (cfg.amp == "auto" and native_bf16(device))


@torch.no_grad()
def crops_bits_per_dim(model: PixelCNN, crops: torch.Tensor, device: torch.device) -> float:
    """Mean bits per sub-pixel of ``model`` on a batch of crops (validation), 32 crops at a time."""
    return float(torch.cat([model.bits(b.to(device)) for b in crops.split(32)]).mean()) / crops[0].numel()


def quantizing_at(cfg: TrainConfig, step: int) -> bool:
    """Whether step ``step`` of a run with this configuration trains with fake quantisation."""
    return cfg.model.kind == "local" and step >= int(cfg.qat_start * cfg.steps)


def logged_step(line: str) -> float:
    """The step a line of a run's ``log.jsonl`` records. A process killed while writing leaves a
    cut-off last line: it counts as a step after every checkpoint (``inf``)."""
    try:
        return json.loads(line)["step"]
    except (ValueError, KeyError, TypeError):
        return math.inf


def log_up_to(log_text: str, step: int) -> str:
    """A run's ``log.jsonl`` text with only the lines of steps up to ``step`` (a checkpoint's), each
    ending in a newline."""
    return "".join(line + "\n" for line in log_text.splitlines() if logged_step(line) <= step)


class Trainer:
    def __init__(self, cfg: TrainConfig, run_dir: str | Path) -> None:
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        torch.manual_seed(cfg.seed)
        self.device = torch.device(cfg.device)
        self.hardware = describe_hardware(self.device, cfg.threads)
        self.model = PixelCNN(cfg.model).to(self.device)
        if cfg.amp not in ("auto", "on", "off"):
            raise ValueError(f"amp must be auto, on or off, not {cfg.amp!r}")
        if cfg.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {list(SCHEDULES)}, not {cfg.schedule!r}")
        self.model.amp = uses_amp(cfg, self.device)
        self.opt = torch.optim.Adam(self.model.parameters(), lr=cfg.lr)
        self.sampler, self.val = build_samplers(cfg)
        self.step = 0
        self.wall = 0.0
        self.best_val = math.inf
        ckpt = self.run_dir / "last.pt"
        if ckpt.exists():
            self.load(ckpt)
            self._trim_log()
        elif cfg.init_from:
            warm_start(self.model, load_float_model(cfg.init_from, "last"))

    # -- checkpoints ------------------------------------------------------------------------
    def state(self) -> dict:
        return {
            "config": json.dumps(asdict(self.cfg)),
            "hardware": self.hardware,
            "model": self.model.state_dict(),
            "opt": self.opt.state_dict(),
            "step": self.step,
            "wall": self.wall,
            "best_val": self.best_val,
            "torch_rng": torch.get_rng_state(),
            "sampler_rng": json.dumps(self.sampler.rng.bit_generator.state),
        }

    def save(self, path: Path) -> None:
        tmp = path.with_suffix(".tmp")
        torch.save(self.state(), tmp)
        tmp.replace(path)

    def load(self, path: Path) -> None:
        # on the CPU: the RNG states must stay CPU byte tensors (a CUDA run failed to resume, stop 23);
        # load_state_dict moves the model and the optimiser state to their device
        st = torch.load(path, map_location="cpu", weights_only=True)
        self.model.load_state_dict(st["model"])
        saved_bits = json.loads(st["config"])["model"].get("act_bits", 8)
        if saved_bits != self.cfg.model.act_bits:  # e.g. an extension leg that widens activations
            change_act_bits(self.model, saved_bits)
        self.opt.load_state_dict(st["opt"])
        self.step, self.wall, self.best_val = int(st["step"]), float(st["wall"]), float(st["best_val"])
        torch.set_rng_state(st["torch_rng"])
        self.sampler.rng.bit_generator.state = json.loads(st["sampler_rng"])

    # -- loop -------------------------------------------------------------------------------
    def bits_per_dim(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.bits(x.to(self.device)).mean() / x[0].numel()

    @torch.no_grad()
    def validate(self) -> float:
        self.model.quantize = self.quantizing(self.step - 1)
        self.model.eval()
        bpd = crops_bits_per_dim(self.model, self.val, self.device)
        self.model.train()
        return bpd

    def lr_at(self, step: int) -> float:
        """Linear warm-up, then cosine decay to 10% of the peak at the last step (or, with
        ``schedule="constant"``, the peak rate from then on)."""
        cfg = self.cfg
        if step < cfg.warmup:
            return cfg.lr * (step + 1) / cfg.warmup
        if cfg.schedule == "constant":
            return cfg.lr
        progress = min(1.0, (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup))
        return cfg.lr * (0.1 + 0.45 * (1 + math.cos(math.pi * progress)))

    def quantizing(self, step: int) -> bool:
        return quantizing_at(self.cfg, step)

    def train_step(self) -> float:
        self.model.quantize = self.quantizing(self.step)
        x = self.sampler.batch(self.cfg.batch)
        entering = self.model.quantize and not self.quantizing(self.step - 1)
        if entering:
            self._forget_best()
        # ranges learned in an earlier leg may be stale after float training: set them afresh; a
        # model with none (also one resumed inside its quantised phase) gets them as configured
        if self.model.quantize and ((entering and self.cfg.calib_quantile > 0) or not self.model.is_calibrated()):
            calibrate_activations(self.model, x.to(self.device), self.cfg.calib_quantile or 1.0)
        for group in self.opt.param_groups:
            group["lr"] = self.lr_at(self.step)
        loss = self.bits_per_dim(x)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        if self.cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
        self.opt.step()
        self.step += 1
        return float(loss.detach())

    def _forget_best(self) -> None:
        """A new fake-quantisation phase begins (the first, or that of an extension leg): the best
        model of an earlier phase is no candidate for export any more."""
        self.best_val = math.inf
        (self.run_dir / "best_model.pt").unlink(missing_ok=True)

    def _trim_log(self) -> None:
        """Resuming: steps logged after the checkpoint were lost with the interruption and will be
        trained again, so their records go (the curve then has each step once)."""
        path = self.run_dir / "log.jsonl"
        if not path.exists():
            return
        text = path.read_text()
        kept = log_up_to(text, self.step)
        if kept != text:
            tmp = path.with_suffix(".tmp")
            tmp.write_text(kept)
            tmp.replace(path)

    def log(self, record: dict) -> None:
        with open(self.run_dir / "log.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")

    def run(self, steps: int | None = None, quiet: bool = False) -> None:
        cfg = self.cfg
        target = steps if steps is not None else cfg.steps
        keep_freed_memory()
        self.model.train()
        bar = tqdm(total=target, initial=self.step, disable=quiet, desc="train", unit="step")
        running = None
        while self.step < target:
            t0 = time.perf_counter()
            loss = self.train_step()
            self.wall += time.perf_counter() - t0
            running = loss if running is None else 0.98 * running + 0.02 * loss
            bar.update(1)
            bar.set_postfix(bpd=f"{running:.3f}")
            record = {"step": self.step, "loss_bpd": loss, "wall_s": round(self.wall, 2)}
            if self.step % cfg.val_every == 0 or self.step == target:
                record["val_bpd"] = self.validate()
                record["quantized"] = self.model.quantize
                if self.model.quantize and record["val_bpd"] < self.best_val:
                    self.best_val = record["val_bpd"]
                    torch.save(self.model.state_dict(), self.run_dir / "best_model.pt")
            self.log(record)
            if self.step % cfg.ckpt_every == 0 or self.step == target:
                self.save(self.run_dir / "last.pt")
        bar.close()


WARM_BIAS = 1e-6  # positive, so the added blocks' last ReLU passes gradient from the first step; tiny,
# because each added block shifts every unit by it (1e-3 cost 0.08 bits/dim on 5 added blocks of rgb)


@torch.no_grad()
def warm_start(full: PixelCNN, local: PixelCNN) -> None:
    """Start a full model as (almost exactly) a trained local model, so that training only has to
    add what lies beyond the local window -- the non-local expert of the OOD ratio.

    A model given the same configuration is copied as it is: that continues a local expert for as
    many steps as its full partner got (equal training budget for the OOD ratio), or continues a
    shipped model (``init_from`` a float model file, e.g. ``models/ood/gray-full.safetensors``).
    A local model given the same configuration plus the linear skip starts as exactly that model
    (the skip is zero) and learns the skip from there.
    A local model given the same configuration but a larger width starts as exactly that model too
    (``widen``): the added units are there to learn what the narrow model had no room for.
    A grey local model given a colour one of the same configuration starts as its red channel
    (``greyscale_from_colour``), e.g. a grey photo model from ``rgb-photo``.

    The first layer, block 0 (its 1x1 middle convolution becomes the centre tap of the 3x3 one),
    the head and the output layer are copied; the other blocks start as the identity (their last
    convolution has zero weights and a tiny positive bias: relu(a + bias) ~= a for a >= 0).
    """
    fc, lc = full.cfg, local.cfg
    if fc == lc:  # a local expert continued with its full partner's budget, or a model continued as it is
        full.load_state_dict(local.state_dict())
        return
    same_net = fc.kind == lc.kind == "local" and fc.channels == lc.channels
    if same_net and replace(fc, joint=lc.joint, skip_bits=lc.skip_bits, first_bits=lc.first_bits,
                            coeff_bits=lc.coeff_bits) == lc:
        # the likelihood or an integer grid (the skip's, the first layer's, the coefficients') changes, not the net
        full.load_state_dict(local.state_dict())
        return
    if fc.kind == lc.kind == "local" and fc.skip and not lc.skip and replace(fc, skip=False) == lc:
        missing, unexpected = full.load_state_dict(local.state_dict(), strict=False)
        assert missing == ["skip"] and not unexpected  # the new skip starts at zero: the same model
        return
    if fc.kind == lc.kind == "local" and fc.width > lc.width and replace(fc, width=lc.width, act_bits=lc.act_bits) == lc:
        widen(full, local)  # e.g. 10-bit activations at width 128 to 9 bits at 256 (the 2**24 bound)
        if fc.act_bits != lc.act_bits:
            change_act_bits(full, lc.act_bits)
        return
    if fc.kind == lc.kind == "local" and (fc.channels, lc.channels) == (1, 3) and not lc.joint and replace(
            fc, channels=3, coeff_bits=lc.coeff_bits) == lc:  # grey models have no coefficients
        greyscale_from_colour(full, local)
        return
    if fc.kind != "full" or lc.kind != "local" or (fc.channels, fc.horizon, fc.width, fc.mixtures, fc.skip) != (
            lc.channels, lc.horizon, lc.width, lc.mixtures, lc.skip) or lc.res_blocks != 1:
        raise ValueError("warm start needs a 1-block local model of the same channels, horizon, width, mixtures and skip")
    if fc.skip:
        full.skip.copy_(local.skip)
    for name in ("first", "first_act", "head", "head_act", "out"):
        getattr(full, name).load_state_dict(getattr(local, name).state_dict())
    fb, lb = full.blocks[0], local.blocks[0]
    for i in (0, 2):
        fb.convs[i].load_state_dict(lb.convs[i].state_dict())
    mid = fb.convs[1].weight.shape[-1] // 2
    fb.convs[1].weight.zero_()
    fb.convs[1].weight[:, :, mid, mid] = lb.convs[1].weight[:, :, 0, 0]
    fb.convs[1].bias.copy_(lb.convs[1].bias)
    for fa, la in zip(list(fb.acts) + [fb.out_act], list(lb.acts) + [lb.out_act]):
        fa.load_state_dict(la.state_dict())
    for block in full.blocks[1:]:
        block.convs[2].weight.zero_()
        block.convs[2].bias.fill_(WARM_BIAS)


@torch.no_grad()
def greyscale_from_colour(grey: PixelCNN, colour: PixelCNN) -> None:
    """Load a colour local model into a grey one of the same configuration so that, in float, the
    grey model's prediction of a grey image is exactly the colour model's prediction of its red
    channel when the image is given as R = G = B: the red channel is predicted from the causal
    neighbourhood alone, as a grey model predicts.  A grey input v stands for the colour inputs
    (v, v, v), so each first-layer and skip weight on v is the sum of the three colour weights; the
    output rows kept are the logits and the red means and log-scales (the channel coefficients go).
    """
    k, starts, start = colour.cfg.mixtures, {}, 0
    for kind, n in output_layout(colour.cfg):
        starts[kind], start = start, start + n
    # means and log-scales are stored channel by channel, so the red channel's are each kind's first k
    rows = [starts[kind] + i for kind in ("logit", "mean", "logscale") for i in range(k)]

    def inputs_summed(w: torch.Tensor, dim: int) -> torch.Tensor:  # (.., R, G, B, valid, ..) -> (.., v, valid, ..)
        return torch.cat([w.narrow(dim, 0, 3).sum(dim, keepdim=True), w.narrow(dim, 3, 1)], dim)

    state = colour.state_dict()
    state["first.weight"] = inputs_summed(state["first.weight"], 1)
    state["first.mask"] = grey.first.mask
    state["out.weight"], state["out.bias"] = state["out.weight"][rows], state["out.bias"][rows]
    state["out.mask"] = grey.out.mask
    if colour.cfg.skip:
        per_tap = state["skip"][rows].reshape(len(rows), -1, 4)
        state["skip"] = inputs_summed(per_tap, 2).reshape(len(rows), -1)
    grey.load_state_dict(state)


@torch.no_grad()
def widen(wide: PixelCNN, narrow: PixelCNN) -> None:
    """Load ``narrow`` into ``wide`` (a local model differing only in width) so that ``wide``
    computes exactly the same function: every added unit keeps its fresh random inputs, and its
    output weights into the narrow model's units (and the mixture parameters) are zero.  Gradients
    reach those zero weights from the first step, since the added units' activations are not zero.
    """
    wide_state = wide.state_dict()
    for key, src in narrow.state_dict().items():
        if key.endswith(".mask"):  # the wide model's own masks are right (and must not be zeroed)
            continue
        dst = wide_state[key]
        if dst.dim() > 1:
            dst[: src.shape[0], src.shape[1] :] = 0
        dst[tuple(map(slice, src.shape))] = src  # the leading block: the narrow model's units


def load_run_config(run_dir: str | Path) -> TrainConfig:
    st = torch.load(Path(run_dir) / "last.pt", map_location="cpu", weights_only=True)
    raw = json.loads(st["config"])
    raw["model"] = ModelConfig(**raw["model"])
    return TrainConfig(**raw)


def model_summary(model: PixelCNN) -> dict:
    return {"parameters": count_parameters(model), "config": model.cfg.to_dict()}


def load_float_model(run_dir: str | Path, which: str = "best") -> PixelCNN:
    """The trained float (fake-quantised) model of a run: ``best`` (by validation) or ``last``; or
    of a float model file (``models/float/NAME.safetensors``, e.g. to start a run from a shipped model)."""
    if str(run_dir).endswith(".safetensors") and Path(run_dir).is_file():
        from nelloc.zoo import load_float_file

        return load_float_file(run_dir)
    cfg = load_run_config(run_dir)
    model = PixelCNN(cfg.model)
    if which == "best" and (Path(run_dir) / "best_model.pt").exists():
        state = torch.load(Path(run_dir) / "best_model.pt", map_location="cpu", weights_only=True)
    else:
        state = torch.load(Path(run_dir) / "last.pt", map_location="cpu", weights_only=True)["model"]
    model.load_state_dict(state)
    # a run is evaluated as it trained last: float unless its final steps were fake-quantised (a run
    # started from a quantised model and trained float has calibrated scales but is a float model)
    model.quantize = model.is_calibrated() and quantizing_at(cfg, cfg.steps - 1)
    return model.eval()


def evaluate_exact(name: str, sets: list[str], limit: int | None = None, tile: int | None = None) -> dict:
    """Actual compressed size (bits per sub-pixel) of model ``name`` (installed name or a
    ``.safetensors`` path) on named sets."""
    from nelloc import api, zoo

    model = zoo.load(name)
    results = {}
    for s in sets:
        imgs = datasets.load_images(s, channels=model.cfg.channels, limit=limit)
        bits = sum(8 * len(api.compress(im, model=name, tile=tile, device="cpu")) for im in imgs)
        sub = sum(im.size for im in imgs)
        results[s] = {"images": len(imgs), "bits_per_subpixel": round(bits / sub, 4)}
    return results


def run_summary(run_dir: str | Path) -> dict:
    """What a model card says about the run that trained it (config, steps, time, curve)."""
    run_dir = Path(run_dir)
    cfg = load_run_config(run_dir)
    st = torch.load(run_dir / "last.pt", map_location="cpu", weights_only=True)
    log = run_dir / "log.jsonl"
    records = [json.loads(line) for line in log.read_text().splitlines() if line.strip()] if log.exists() else []
    curve = [(r["step"], round(r["val_bpd"], 4)) for r in records if "val_bpd" in r]
    return {
        "data": cfg.data,
        "crop": cfg.crop,
        **({"augment": cfg.augment} if cfg.augment != "flip" else {}),
        "batch": cfg.batch,
        "lr": cfg.lr,
        "steps": int(st["step"]),
        "planned_steps": cfg.steps,
        "qat_from_step": int(cfg.qat_start * cfg.steps),
        "wall_seconds": round(float(st["wall"])),
        # recorded by the trainer since stop 23; older checkpoints: this machine (they all trained here)
        "hardware": st.get("hardware") or describe_hardware(torch.device(cfg.device), cfg.threads),
        # the best fake-quantised validation; a run that never fake-quantised has none (JSON has no inf)
        "best_val_bpd": round(float(st["best_val"]), 4) if math.isfinite(float(st["best_val"])) else None,
        "final_val_bpd": curve[-1][1] if curve else None,
        "val_curve": curve,
        **({"init_from": cfg.init_from} if cfg.init_from else {}),
        **({"weights_averaged_over": json.loads((run_dir / "averaged_from.json").read_text())}
           if (run_dir / "averaged_from.json").exists() else {}),
    }


def export_run(run_dir: str | Path, name: str, out_dir: str | Path, evaluate: list[str], limit: int | None = None) -> dict:
    """Write ``out_dir/NAME.safetensors`` (exact model), ``out_dir/float/NAME.safetensors`` (float
    weights, for likelihood measurements) and the model card ``out_dir/NAME.json``."""
    from safetensors.torch import save_file as save_torch

    from nelloc import exact, zoo

    run_dir, out_dir = Path(run_dir), Path(out_dir)
    cfg = load_run_config(run_dir)
    model = load_float_model(run_dir)
    tensors = exact.export(model)
    exact.ExactModel(tensors, cfg.model, name)  # refuses an unsafe model before anything is written or retired
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}.safetensors"
    zoo.retire(path, exact.digest(tensors, cfg.model))  # files made with the model it replaces must keep decoding
    sha = exact.save(path, tensors, cfg.model, name)
    (out_dir / "float").mkdir(exist_ok=True)
    weights = {k: v.contiguous() for k, v in model.state_dict().items() if not k.endswith(".mask")}  # masks are rebuilt
    save_torch(weights, str(out_dir / "float" / f"{name}.safetensors"),
               metadata={"config": json.dumps(cfg.model.to_dict())})
    card = {
        "name": name,
        "sha256": sha,
        "architecture": cfg.model.to_dict(),
        "parameters": count_parameters(model),
        "file_bytes": path.stat().st_size,
        "training": run_summary(run_dir),
        "evaluation": {"bits_per_subpixel_actual_files": evaluate_exact(str(path), evaluate, limit) if evaluate else {},
                       "limit_per_set": limit},
    }
    (out_dir / f"{name}.json").write_text(json.dumps(card, indent=2) + "\n")
    return card
