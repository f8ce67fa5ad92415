"""Regenerate docs/models.md from the model cards: python scripts/models_doc.py"""
import json
from pathlib import Path

cards = [json.loads(p.read_text()) for p in sorted(Path("models").glob("*.json"))]
lines = ["# Shipped models", "", "Generated from `models/*.json` by `python scripts/models_doc.py`.", "",
         "| name | channels | h | r | width | K | activation bits | parameters | file bytes | training data | steps | wall time | best val bpd (crops) | evaluation (bits/sub-pixel, actual .nlc files) |",
         "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
for c in cards:
    a, t = c["architecture"], c["training"]
    ev = "; ".join(f"{k}: {v['bits_per_subpixel']} ({v['images']} images)" for k, v in c["evaluation"]["bits_per_subpixel_actual_files"].items())
    lines.append(f"| `{c['name']}` | {a['channels']} | {a['horizon']} | {a['res_blocks']} | {a['width']} | {a['mixtures']} | {a.get('act_bits', 8)} | "
                 f"{c['parameters']} | {c['file_bytes']} | {', '.join(t['data'])} | {t['steps']} (QAT from {t['qat_from_step']}) | "
                 f"{t['wall_seconds'] / 60:.0f} min on {t['hardware']} | {t['best_val_bpd']} | {ev} |")
lines += ["", "Learning curves (validation bits per dimension on held-out crops, by step):", ""]
for c in cards:
    lines.append(f"- `{c['name']}`: " + ", ".join(f"{s}: {v}" for s, v in c["training"]["val_curve"]))
notes = [f"- `{c['name']}`: {c['training_notes']}" for c in cards if c.get("training_notes")]
if notes:
    lines += ["", "How they were trained (`training_notes` in each card):", "", *notes]
lines += ["", "## Notes", "",
          "- The evaluation column was measured by `nelloc export` with the codec of that day. The codec has",
          "  improved since without changing the models: from stop 20 the encoder's per-image bias of the last two",
          "  layers (docs/codec.md) codes Kodak with `rgb` in 3.087 bits/sub-pixel instead of 3.179, CLIC (first 2)",
          "  in 1.788 instead of 1.868 and the classic images in 4.797 instead of 5.182 (`docs/results/*-nelloc-stop20.json`).",
          "- **Which colour model a plane gets (stop 21).** `rgb-photo` is `rgb` fine-tuned for 6,000 steps on half",
          "  CIFAR-10, half shrunk CLIC photos. Against `rgb`, actual files with the encoder's offsets and bias:",
          "  Kodak (24) 3.087 -> 3.064 (-0.74%; `docs/results/kodak-nelloc-stop21.json`); CIFAR-10 test (first 200)",
          "  3.716 -> 3.749 (+0.87%; `docs/results/cifar10-test-limit200-photo-stop21.json`); held-out CIFAR-10 train",
          "  likelihood 3.7249 -> 3.7524. So for colour planes of 16,384+ pixels (`nelloc.zoo.PHOTO_MIN_PIXELS`) the",
          "  encoder estimates the code length under both models from up to 8,192 sampled pixels",
          "  (`nelloc.codec.choose_model`, ~0.16 s on a Kodak image) and takes the smaller: all 24 Kodak photos, the",
          "  4 colour classic images and the first 4 CLIC photos get `rgb-photo`. Thumbnails get `rgb`: choosing",
          "  for CIFAR-10's 32x32 images too coded the 1,000 in 3.742 instead of 3.748 but doubled their encoding",
          "  time (17 -> 33 ms each). `--model` overrides it.",
          "  A continuation of `rgb`'s own run on CIFAR-10 in the same stop (runs/c21-E,",
          "  12,000 more steps at a restarted rate, four fake-quantised snapshots averaged) scored 3.7271 on the",
          "  held-out images against `rgb`'s 3.7249 and was not shipped.",
          "  Size is only a proxy for what the image is: on crops of the first 8 Kodak photos (rows from 100,",
          "  columns from 200) `rgb-photo` is better at every size, 64x64 -0.70%, 128x128 -0.58%, 256x256 -0.70%",
          "  (actual files, a scratch loop of `nelloc.compress(crop, model=...)`), while CIFAR-10's downsampled",
          "  thumbnails prefer `rgb`: hence the sampled estimate from 128x128 up rather than a size rule alone",
          "  (it picks `rgb-photo` for 7 of those 8 128x128 crops).",
          "- **Stop 22: `rgb-photo` trained on.** Its run continued 10,000 steps (cosine restart over 16,000, same",
          "  mix; its card is in `models/retired/`). Actual files with the default models against stop 21: Kodak 3.064 -> 3.057,",
          "  classic 4.778 -> 4.771, CLIC first 2 1.712 -> 1.689 (training data; `docs/results/*-nelloc-stop22.json`).",
          "  The step from 6,000 to 16,000 steps gained a third of what the first 6,000 did (Kodak-8 likelihood",
          "  -0.52% against -1.7%).",
          "- **Stop 24: `rgb` trained on from a restart at the paper's rate.** 8,164 more steps of batch 32 on",
          "  CIFAR-10 from 936f7de3's averaged weights, cosine from lr 3e-4 (its card is in `models/retired/`): held-out",
          "  likelihood 3.7249 -> 3.6971, CIFAR-10 test (1,000 files) 3.748 -> 3.716",
          "  (`docs/results/cifar10-test-nelloc-stop24.json`). Earlier continuations had restarted at ~2e-4 or",
          "  less and gained nothing (runs/c21-E above); the same leg once more from the new model gained nothing",
          "  either (runs/c25-D32: held-out 3.6974); docs/ablations.md, \"Stop 24\".",
          "- **Stop 30: `rgb-photo` is a width-256 model** (the paper's size, 11-bit skip; its card is in `models/retired/`):",
          "  6,000 photo-mix steps from the width-256 CIFAR-10 run at 30,000 steps. Actual Kodak files with the",
          "  default models 3.057 -> 3.042 (all 24 get `rgb-photo`; `docs/results/kodak-nelloc-stop30.json`), at",
          "  0.061 / 0.117 MP/s encode / decode on the AMD EPYC VM, where a width-128 `rgb` decodes kodim23 at 0.208",
          "  and this model at 0.128 (docs/ablations.md, \"Stop 30\"). `rgb` (thumbnails) stays width 128: the same",
          "  width-256 run annealed on CIFAR-10 alone still codes the first 200 test files in 3.701 against 3.677.",
          "- **Stop 31: `rgb-photo` from a later snapshot** (fa3f4800; its card is in `models/retired/`): the stop-30 photo",
          "  tail from the width-256 CIFAR-10 run at 35,000 steps instead of 30,000. Actual Kodak files, this model",
          "  on every image, 3.0418 -> 3.0298 (-0.39%). Training the stop-30 tail on to 12,000 steps instead",
          "  gained less (3.0381; fddf7d3a, shipped for an hour, retired). Same architecture, size and speed",
          "  (docs/ablations.md, \"Stop 31\").",
          "- **Stop 32: `rgb` is a width-256 model too** (7811294b; its card is in `models/retired/`): the CIFAR-10-only",
          "  width-256 run at 45,000 steps, annealed 4,000 steps and fake-quantised 400. Held-out likelihood",
          "  3.6971 -> 3.6406, CIFAR-10 test (1,000 files) 3.716 -> 3.661 (`docs/results/cifar10-test-nelloc-stop32.json`).",
          "  Thumbnails code no slower one at a time (0.053 / 0.017 MP/s beside a training job, against 0.048 / 0.015",
          "  for bbff2aa2 on the Intel Xeon VM): a 32x32 image's time is mostly not the network's. The same recipe",
          "  from 40,000 steps (731d716f: 3.6584, 3.675) was shipped first and retired the same stop.",
          "  `rgb-photo` a7b72b9c is the stop-31 photo tail from the same run at 45,000 steps: Kodak, this model on",
          "  every image, 3.0298 -> 3.0142 (b6541341, the tail from 40,000 steps, 3.0229, shipped and retired in",
          "  between; docs/ablations.md, \"Stop 32\").",
          "- **Stop 33: both colour models from the same run at 50,000 steps** (`training_notes` above; the",
          "  stop-32 recipes unchanged). `rgb` fa0a993b: held-out likelihood 3.6406 -> 3.6272, CIFAR-10 test",
          "  (1,000 files) 3.661 -> 3.648 (`docs/results/cifar10-test-nelloc-stop33.json`). `rgb-photo` 759c3fc0:",
          "  1,024 held-out mix crops 2.9617 -> 2.9447, Kodak, this model on every image, 3.0142 -> 3.0074; with",
          "  the default models Kodak 3.014 -> 3.007 and classic 4.604 -> 4.600 (docs/ablations.md, \"Stop 33\").",
          "  `gray-photo` f04515d6 is width 256 too: the stop-25 recipe started from 759c3fc0 (6,000 steps);",
          "  Kodak as grey, this model on every image, 4.1096 -> 4.0694 (-0.98%).",
          "- **Stop 34: a new base run, kept in the repository.** `runs/` was lost with the VM; `runs/rgb-base`",
          "  went on from fa0a993b's float weights at the constant rate 3e-4 (fresh Adam) and is kept in",
          "  `models/train/rgb-base` (`scripts/keep_run.py`). `rgb` 96c4550c: the stop-32 recipe from its 15,000-step",
          "  snapshot; held-out likelihood 3.6272 -> 3.5959, first 200 CIFAR-10 test files 3.6082 -> 3.577, all",
          "  1,000 3.648 -> 3.619 (`docs/results/cifar10-test-nelloc-stop34.json`). `rgb-photo` 5cb75c0e: the photo",
          "  tail from the same snapshot; 1,024 held-out mix crops 2.9447 -> 2.9088, Kodak, this model on every",
          "  image, 3.0074 -> 2.995 (docs/ablations.md, \"Stop 34\").",
          "- **Stop 35: both colour models from the same base run at 35,000 steps** (the recipes unchanged).",
          "  `rgb` 9c99b34b: held-out likelihood 3.5959 -> 3.5590, first 200 CIFAR-10 test files 3.577 -> 3.5402.",
          "  `rgb-photo` b4d8b6f0: 1,024 held-out mix crops 2.9088 -> 2.8721, Kodak, this model on every image,",
          "  2.995 -> 2.9842. `gray-photo` 5bb058d8: the stop-33 recipe from 5cb75c0e (stop 34's `rgb-photo`);",
          "  Kodak as grey, this model on every image, 4.0694 -> 4.0575 (docs/ablations.md, \"Stop 35\").",
          "- **Stop 36: all three from 10,000 more base steps** (the recipes unchanged). `rgb` eb055a70: the base",
          "  at 45,000 steps; held-out likelihood 3.5590 -> 3.5485, first 200 CIFAR-10 test files 3.5402 -> 3.531.",
          "  `rgb-photo` 2e63f80e: 1,024 held-out mix crops 2.8721 -> 2.8661, Kodak, this model on every image,",
          "  2.9842 -> 2.9787 (but the 4 colour classic images grew 0.1-0.5%). `gray-photo` 1d7390b9: the stop-33",
          "  recipe from b4d8b6f0 (stop 35's `rgb-photo`); Kodak as grey, this model on every image, 4.0575 -> 4.0508",
          "  (docs/ablations.md, \"Stop 36\").",
          "- **No `fast` variant.** A narrower network would speed decoding up by at most the network's share of",
          "  the decode time, and that share is under half: decoding kodim23 with `rgb` takes 2.73 s, and 1.72 s with",
          "  the network's outputs replayed from a recording (37%); a 512x512 classic image with `gray`, 0.95 s",
          "  against 0.54 s (43%) (`python scripts/bench_nelloc.py network-share --image kodak/kodim23.png`,",
          "  `... --model gray --image classic/airplane_f16.png`, medians of 3, stop 20, 2-core Intel Xeon VM;",
          "  JSON: `docs/results/network-share-stop20-{rgb,gray}.json`).",
          "  A width-64 `rgb` (about 40% of the multiply-adds) would therefore decode at most ~1.3x faster, while",
          "  costing bits; the CDF kernel and the range coder, not the network, bound the speed."]
Path("docs/models.md").write_text("\n".join(lines) + "\n")
print("\n".join(lines))
