"""Copy a local-model run's checkpoint into a new run folder with a wider model that computes exactly
the same function, so that an extension leg gives the model more capacity without starting over:

    python scripts/widen_run.py runs/rgb-skip@24960 runs/rgb-w256 256
    python scripts/train_extend.py runs/rgb-w256 28000 --model-set '{"width": 256}' ...

The weights are widened with ``nelloc.train.widen`` (added units: fresh random inputs, zero output
weights).  The optimiser state is kept and padded: the added entries get no momentum and their
tensor's mean second moment, so that their first Adam steps are of the usual size (zeros there make
them ~3x the learning rate, and with hundreds of added units moving together cost 0.5 bits/dim at
once).  Step, schedule and RNG states are those of the source, so the leg sees the batches the
narrow model would have seen.
"""
import argparse
import json
from pathlib import Path

import torch

from nelloc.model import ModelConfig, PixelCNN
from nelloc.train import widen


def pad_adam_state(opt_state: dict, narrow: PixelCNN, wide: PixelCNN) -> None:
    wide_params = dict(wide.named_parameters())
    for index, (name, _) in enumerate(narrow.named_parameters()):
        state = opt_state["state"].get(index)
        if state is None:
            continue
        for key in ("exp_avg", "exp_avg_sq"):
            fill = 0.0 if key == "exp_avg" else float(state[key].mean())
            padded = torch.full_like(wide_params[name].detach(), fill)
            padded[tuple(map(slice, state[key].shape))] = state[key]
            state[key] = padded


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("source", help="run folder with last.pt (a local model)")
    p.add_argument("out", help="new run folder (must not exist)")
    p.add_argument("width", type=int)
    p.add_argument("--seed", type=int, default=12345, help="seed of the added units' random inputs")
    args = p.parse_args()
    st = torch.load(Path(args.source) / "last.pt", map_location="cpu", weights_only=True)
    cfg = json.loads(st["config"])
    narrow_cfg = ModelConfig(**cfg["model"])
    if narrow_cfg.kind != "local" or args.width <= narrow_cfg.width:
        raise SystemExit(f"widen_run: needs a local model narrower than {args.width} (got {narrow_cfg})")
    narrow = PixelCNN(narrow_cfg)
    narrow.load_state_dict(st["model"])
    cfg["model"]["width"] = args.width
    torch.manual_seed(args.seed)
    wide = PixelCNN(ModelConfig(**cfg["model"]))
    widen(wide, narrow)
    pad_adam_state(st["opt"], narrow, wide)
    st["model"], st["config"] = wide.state_dict(), json.dumps(cfg)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=False)
    torch.save(st, out / "last.pt")
    print(f"{out / 'last.pt'}: width {narrow_cfg.width} -> {args.width}, step {st['step']}")


if __name__ == "__main__":
    main()
