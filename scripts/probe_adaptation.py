"""Probes of encoder-side ideas that were measured and not built (docs/codec.md, stop 21).

    python scripts/probe_adaptation.py ensemble --images 1,3,5,11,16,24 --partner rgb-c9cc998707970337 [--plain]
    python scripts/probe_adaptation.py out-weights --images 1,2,3 --kind delta --rate 0.3
    python scripts/probe_adaptation.py out-weights --images 1,2,3 --kind rank4 --rate 0.2
    python scripts/probe_adaptation.py out-weights --images 1,2,3 --kind scale --rate 2

``ensemble``: code length of each Kodak image when every sub-pixel's probability is the mixture
w * p_rgb + (1 - w) * p_partner of the two exact models' integer tables (each with its own
log-scale offsets and per-image bias, as the encoder makes them), for a few fixed w.

``out-weights``: on the per-image bias fit's own samples (adapt.fit_bias: 2 x 4,096 pixels), the
check sample's float code length with the bias alone and with the bias plus a change to the ``out``
layer's weights: integer deltas of every weight (``delta``), a rank-4 float change (``rank4``; an
upper bound: not rounded, no side cost) or an integer per-output scale in 1/256 (``scale``).  The
saving is the check sample's, scaled to the whole image; no side cost is counted.

One torch thread; prints a table and writes JSON to results/.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

from nelloc import adapt, codec, data, zoo
from nelloc.exact import ExactModel
from nelloc.model import floor_ste, round_ste
from nelloc.schedule import TileGrid

WEIGHTS = (0.0, 0.25, 0.5, 0.6, 0.75, 1.0)


def kodak(indices: list[int]) -> list[np.ndarray]:
    return [np.asarray(im) for i, im in enumerate(data.load_images("kodak", channels=3)) if i + 1 in indices]


def symbol_probs(model: ExactModel, pixels: np.ndarray, plain: bool = False) -> np.ndarray:
    """Probability of every coded sub-pixel (stream order), as the encoder codes it (``plain``:
    without the log-scale offsets and the bias)."""
    used: list[int] = []
    out = []
    block = 0 if plain else adapt.DEFAULT_BLOCK
    chunks = codec._coded_chunks(model, pixels, codec.DEFAULT_TILE, "cpu", block, used,
                                 1 if plain else adapt.DEFAULT_EFFORT, [])
    for k, (symbols, counts) in enumerate(chunks):
        if k == 0 and used and used[0]:
            continue  # the log-scale offsets' own symbols
        counts = np.asarray(counts, np.float64)
        out.append((counts[np.arange(len(symbols)), symbols] + 1) / 2**24)  # constriction codes count + 1
    return np.concatenate(out)


def cmd_ensemble(args) -> dict:
    rgb = zoo.load("rgb")
    partner = ExactModel.load(Path("models/retired") / f"{args.partner}.safetensors")
    rows, total, dims = [], np.zeros(len(WEIGHTS)), 0
    for i, px in zip(args.images, kodak(args.images)):
        p1, p2 = symbol_probs(rgb, px, args.plain), symbol_probs(partner, px, args.plain)
        bits = np.array([-np.log2(w * p1 + (1 - w) * p2).sum() for w in WEIGHTS])
        total += bits
        dims += px.size
        rows.append({"image": i, "bpsp": dict(zip(map(str, WEIGHTS), (bits / px.size).tolist()))})
        print(f"kodim{i:02d} " + " ".join(f"w={w}: {b / px.size:.4f}" for w, b in zip(WEIGHTS, bits)), flush=True)
    print("\n| w (share of rgb) | " + " | ".join(map(str, WEIGHTS)) + " |\n|---|" + "---|" * len(WEIGHTS))
    print("| bits/sub-pixel | " + " | ".join(f"{b / dims:.4f}" for b in total) + " |")
    print(f"\nbest fixed w against rgb alone: {(total.min() / total[-1] - 1) * 100:+.2f}%")
    return {"partner": args.partner, "plain": args.plain, "weights": WEIGHTS, "images": rows,
            "bpsp": dict(zip(map(str, WEIGHTS), (total / dims).tolist()))}


def side_bits(delta: torch.Tensor) -> float:
    """Empirical entropy of the rounded deltas, in bits: a lower bound on their side cost."""
    _, counts = np.unique(torch.round(delta).numpy().astype(np.int64), return_counts=True)
    p = counts / counts.sum()
    return float(-(counts * np.log2(p)).sum())


def cmd_out_weights(args) -> dict:
    torch.manual_seed(0)
    model = zoo.load("rgb")
    w_out, mul, add, _, _ = model._layers32["out"]
    w_head, mul_h, add_h, _, _ = model._layers32["head"]
    lo, hi = (torch.from_numpy(b.astype(np.float32)) for b in model.output_bounds())
    rows, tot = [], np.zeros(3)
    for i, px in zip(args.images, kodak(args.images)):
        h, w, c = px.shape
        n = h * w
        index = adapt.bias_sample_rows(n)
        x = TileGrid(h, w, codec.DEFAULT_TILE, 3, c).neighbourhoods(px, index)
        feats, skip = model.tail_inputs(x)
        vals = torch.from_numpy(px.reshape(n, c)[index].astype(np.float32))
        head_bias = torch.zeros(model.cfg.width, requires_grad=True)
        out_bias = torch.zeros(model.cfg.out_channels, requires_grad=True)
        if args.kind == "delta":
            extra = torch.zeros_like(w_out)
        elif args.kind == "rank4":
            extra = torch.randn(w_out.shape[0] * 4 + 4 * w_out.shape[1]) * 0.1
        else:
            extra = torch.zeros(model.cfg.out_channels)
        extra.requires_grad_(True)

        def code_bits(rows_: slice, with_extra: bool) -> torch.Tensor:
            a = torch.clamp(floor_ste(torch.matmul(feats[rows_], w_head) * mul_h + add_h + head_bias), 0, model.cfg.act_qmax)
            weights, scale = w_out, mul
            if with_extra and args.kind == "delta":
                weights = w_out + round_ste(extra)
            elif with_extra and args.kind == "rank4":
                k = w_out.shape[0] * 4
                weights = w_out + extra[:k].reshape(-1, 4) @ extra[k:].reshape(4, -1)
            elif with_extra:
                scale = mul * (1 + round_ste(extra) / 256)
            y = torch.matmul(a, weights) * scale + add + out_bias
            if skip is not None:
                y = y + skip[rows_]
            return adapt.surrogate_bits(y, lo, hi, vals[rows_], model.cfg.mixtures, model.cfg.coeff_bits)

        fit, check = slice(0, None, 2), slice(1, None, 2)

        kept = [extra.detach().clone()]

        def run(params: list, with_extra: bool) -> float:
            opt = torch.optim.Adam(params)
            with torch.no_grad():
                best = float(code_bits(check, with_extra))
            for step in range(1, adapt.BIAS_STEPS + 1):
                opt.zero_grad()
                (code_bits(fit, with_extra) / (len(vals) // 2)).backward()
                opt.step()
                if step % adapt.BIAS_CHECK_EVERY == 0:
                    with torch.no_grad():
                        now = float(code_bits(check, with_extra))
                    if now < best:
                        best = now
                        kept[0] = extra.detach().clone()
            return best

        with torch.no_grad():
            plain = float(code_bits(check, False))
        bias_only = run([{"params": [head_bias, out_bias], "lr": adapt.BIAS_RATE}], False)
        with torch.no_grad():
            head_bias.zero_()
            out_bias.zero_()
        both = run([{"params": [head_bias, out_bias], "lr": adapt.BIAS_RATE}, {"params": [extra], "lr": args.rate}], True)
        per_pixel = n / (len(vals) // 2)
        tot += np.array([plain, bias_only, both]) * per_pixel
        side = side_bits(kept[0]) if args.kind == "delta" else None
        rows.append({"image": i, "plain_bits": plain * per_pixel, "bias_bits": bias_only * per_pixel,
                     "bias_and_weights_bits": both * per_pixel, "delta_entropy_bits": side})
        print(f"kodim{i:02d}: bias {(bias_only / plain - 1) * 100:+.2f}%, bias + {args.kind} {(both / plain - 1) * 100:+.2f}%"
              f" (extra saving {(bias_only - both) * per_pixel / 8:.0f} bytes"
              + ("" if side is None else f"; the deltas' empirical entropy {side / 8:.0f} bytes") + ")", flush=True)
    print(f"\nall: bias {(tot[1] / tot[0] - 1) * 100:+.2f}%, bias + {args.kind} {(tot[2] / tot[0] - 1) * 100:+.2f}%"
          " (check samples' float code length, scaled to the images)")
    return {"kind": args.kind, "rate": args.rate, "images": rows,
            "bias_change": tot[1] / tot[0] - 1, "bias_and_weights_change": tot[2] / tot[0] - 1}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("ensemble")
    e.add_argument("--partner", default="rgb-c9cc998707970337", help="a model in models/retired (file stem)")
    e.add_argument("--plain", action="store_true", help="both models without log-scale offsets and bias")
    o = sub.add_parser("out-weights")
    o.add_argument("--kind", choices=["delta", "rank4", "scale"], default="delta")
    o.add_argument("--rate", type=float, default=0.3, help="Adam rate of the weight change")
    for s in (e, o):
        s.add_argument("--images", default="1,2,3", help="Kodak image numbers")
    args = p.parse_args()
    args.images = [int(v) for v in args.images.split(",")]
    torch.set_num_threads(1)
    t0 = time.time()
    result = {"ensemble": cmd_ensemble, "out-weights": cmd_out_weights}[args.cmd](args)
    out = Path("results") / f"probe-{args.cmd}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"command": "python " + " ".join(sys.argv), "machine": platform.machine(),
                               "processor": platform.processor(), "seconds": time.time() - t0, **result}, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
