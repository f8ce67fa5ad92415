"""What fake quantisation costs a float-trained snapshot, by activation width:

    python scripts/quant_cost.py runs/rgb-skip@8000 --dataset kodak --limit 8 --act-bits 8,10 \
        [--calibrate 0.9999,1.0] [--widen 1,1.5] [--out F.json]

Loads the snapshot's weights (``last.pt``), and scores the images with the float model and with the
model fake-quantised (int8 weights, integer mixture parameters, activations of each listed width;
the learned activation ranges are kept, only the grid inside them gets finer or coarser; with
``--widen``/``--calibrate`` also ranges widened or set afresh on the run's validation crops).  No
training: this is the rounding cost before quantisation-aware fine-tuning recovers part of it.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import time

import torch

from nelloc import data
from nelloc.model import PixelCNN, calibrate_activations, change_act_bits, scale_activation_steps
from nelloc.ood import images_bits
from nelloc.train import build_samplers, load_float_model, load_run_config


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run")
    p.add_argument("--dataset", default="kodak")
    p.add_argument("--limit", type=int, default=8)
    p.add_argument("--act-bits", default="8,10")
    p.add_argument("--calibrate", default="", help="comma-separated quantiles: also set the activation ranges "
                   "afresh to each quantile of the run's validation crops (the run's own training mix)")
    p.add_argument("--widen", default="1", help="comma-separated factors: also try the learned ranges times each")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    base = load_float_model(args.run, "last")
    if not base.is_calibrated():
        raise SystemExit(f"{args.run}: never trained with fake quantisation (no activation ranges)")
    imgs = data.load_images(args.dataset, channels=base.cfg.channels, limit=args.limit)
    sub = sum(im.size for im in imgs)

    def bpsp(model: PixelCNN) -> float:
        return float(images_bits([model], imgs, progress=False)[0].sum()) / sub

    base.quantize = False
    t0 = time.perf_counter()
    rows = {"float": bpsp(base)}
    print(f"float: {rows['float']:.4f} ({time.perf_counter() - t0:.0f} s)", flush=True)
    calib = None
    if args.calibrate:
        calib = build_samplers(load_run_config(args.run))[1]
    trials = [(float(f), None) for f in args.widen.split(",")]  # (range factor, calibration quantile)
    trials += [(1.0, float(q)) for q in args.calibrate.split(",") if q]
    for bits in [int(b) for b in args.act_bits.split(",")]:
        for factor, quantile in trials:
            model = PixelCNN(dataclasses.replace(base.cfg, act_bits=bits))
            model.load_state_dict(base.state_dict())
            change_act_bits(model, base.cfg.act_bits)
            how = "learned ranges" + ("" if factor == 1 else f" x {factor:g}")
            scale_activation_steps(model, factor)
            if quantile is not None:
                calibrate_activations(model, calib, quantile)
                how = f"ranges = {quantile} quantile"
            model.quantize = True
            model.eval()
            value = bpsp(model)
            key = f"act{bits}" + ("" if factor == 1 else f"-x{factor:g}") + ("" if quantile is None else f"-q{quantile}")
            rows[key] = value
            print(f"fake-quantised, {bits}-bit activations, {how}: {value:.4f} "
                  f"({100 * (value / rows['float'] - 1):+.2f}%)", flush=True)
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"run": args.run, "dataset": args.dataset, "images": len(imgs), "bpsp": rows}, f, indent=1)


if __name__ == "__main__":
    main()
