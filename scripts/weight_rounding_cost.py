"""What rounding each layer's weights to its integer grid costs a float snapshot, before any
fake-quantised training (activations and mixture parameters left in float):

    python scripts/weight_rounding_cost.py runs/rgb-anneal195000@199000 [...] [--first-bits 8,10,12] [--out F.json]

For each run: the held-out likelihood (every 20th CIFAR-10 train image, as ``heldout_bits.py``) of the
float model, then with only one layer's weights rounded (int8; the skip on the run's ``skip_bits``
grid), then with all of them, then with only the first layer rounded to each of ``--first-bits``;
with ``--params``, also each kind of mixture parameter alone (weights float) rounded to its unit.
Stop 46 found the first layer's int8 grid the largest cost, growing as the base run trained
(docs/ablations.md, "Stop 46").
"""
from __future__ import annotations

import argparse
import json

import torch

from nelloc import data
from nelloc import model as nm
from nelloc.ood import images_bits
from nelloc.train import _split, load_float_model

# the order in which PixelCNN._local_outputs rounds its weights (one res block of three convolutions)
LAYERS = ["first", "block0.conv0", "block0.conv1", "block0.conv2", "head", "out", "skip"]


class Rounding:
    """Replaces ``nelloc.model.quantize_weight`` for the model's weights: rounds only the chosen layers,
    and the first layer to ``first_qmax``; activations and mixture parameters stay float."""

    def __init__(self) -> None:
        self.rounded: set[str] = set()
        self.first_qmax = nm.WEIGHT_QMAX
        self.params: set[str] = set()  # mixture parameter kinds rounded to their integer units
        self.calls = 0
        self._weight, self._act, self._param = nm.quantize_weight, nm.ActQuant.forward, nm.quantize_param

    def __enter__(self) -> "Rounding":
        act, param = self._act, self._param
        nm.quantize_weight = self._round
        nm.ActQuant.forward = lambda module, x, quantize=True: act(module, x, False)
        nm.quantize_param = lambda raw, kind, quantize, cfg=nm.ModelConfig(): param(raw, kind, kind in self.params, cfg)
        return self

    def __exit__(self, *exc) -> None:
        nm.quantize_weight, nm.ActQuant.forward, nm.quantize_param = self._weight, self._act, self._param

    def _round(self, w: torch.Tensor, qmax: int = nm.WEIGHT_QMAX, in_max: float | None = None) -> torch.Tensor:
        layer = LAYERS[self.calls % len(LAYERS)]
        self.calls += 1
        if layer not in self.rounded:
            return w
        return self._weight(w, self.first_qmax if layer == "first" else qmax, in_max)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+")
    p.add_argument("--first-bits", default="8,10,12")
    p.add_argument("--params", action="store_true",
                   help="also round each kind of mixture parameter alone to its integer unit")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    _, held_out = _split(data.load_images("cifar10-train", channels=3))
    subpixels = sum(im.size for im in held_out)
    results = {}
    with Rounding() as rounding:
        for run in args.runs:
            model = load_float_model(run, "last")
            if model.cfg.res_blocks != 1 or not model.cfg.skip:
                raise SystemExit(f"{run}: this probe knows the layer order of one-block models with the skip")
            model = model.eval()
            model.quantize = True  # every weight goes through quantize_weight; Rounding picks which round

            def bpsp(layers: set[str], first_bits: int = 8, params: set[str] = frozenset()) -> float:
                rounding.rounded, rounding.calls, rounding.params = layers, 0, set(params)
                rounding.first_qmax = 2 ** (first_bits - 1) - 1
                return float(images_bits([model], held_out, progress=False)[0].sum()) / subpixels

            row = {"float": bpsp(set())}
            row |= {f"only {layer}": bpsp({layer}) - row["float"] for layer in LAYERS}
            row["all"] = bpsp(set(LAYERS)) - row["float"]
            row |= {f"only first, {b} bits": bpsp({"first"}, int(b)) - row["float"] for b in args.first_bits.split(",")}
            if args.params:
                kinds = [k for k, _ in nm.output_layout(model.cfg)]
                row |= {f"only {kind} parameters": bpsp(set(), params={kind}) - row["float"] for kind in kinds}
                row["all mixture parameters"] = bpsp(set(), params=set(kinds)) - row["float"]
            results[run] = row
            print(run, f"float {row['float']:.4f}", " ".join(f"{k}: {v:+.4f}" for k, v in row.items() if k != "float"), flush=True)
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"images": len(held_out), "set": "cifar10-train held out (every 20th)",
                       "bits_per_subpixel_float_and_added_by_rounding": results}, f, indent=1)


if __name__ == "__main__":
    main()
