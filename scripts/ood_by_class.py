"""AUROC of an OOD pair's ratio per class of a labelled in-distribution set (which classes the score
confuses with the OOD set):

    python scripts/ood_by_class.py --model-pair gray --in-dist fashion-mnist-test --ood mnist-test \
        --limit 1000 --out docs/results/ood-by-class-gray.json    [--mirror: nelloc ood score --mirror's score]

Both sets are subsampled evenly (``--limit`` as in ``nelloc ood eval``); the in-distribution set's
``.npz`` must hold a ``labels`` array.
"""
import argparse
import json
import sys
from pathlib import Path

import numpy as np

from nelloc import data, ood

FASHION = "T-shirt/top Trouser Pullover Dress Coat Sandal Shirt Sneaker Bag Ankle-boot".split()

p = argparse.ArgumentParser()
p.add_argument("--model-pair", required=True)
p.add_argument("--in-dist", required=True)
p.add_argument("--ood", required=True)
p.add_argument("--limit", type=int, default=1000)
p.add_argument("--mirror", action="store_true", help="the ratio averaged over each image and its mirror")
p.add_argument("--out")
args = p.parse_args()

pair = ood.load_pair(args.model_pair)
with np.load(data.resolve(args.in_dist)) as f:
    idx = ood.spread_indices(len(f["labels"]), args.limit)
    images, labels = f["images"][idx], f["labels"][idx]
in_s = ood.score_images([ood.to_channels(im, pair.channels) for im in images], pair, progress=False, mirror=args.mirror)
out_set = ood.load_set(args.ood, pair.channels, args.limit, spread=True)
out_s = ood.score_images(out_set.images, pair, progress=False, mirror=args.mirror)
score_in, score_out = np.asarray(in_s["score"]), np.asarray(out_s["score"])
names = FASHION if "fashion" in args.in_dist else [str(c) for c in range(int(labels.max()) + 1)]
rows = []
for c in np.unique(labels):
    m = labels == c
    rows.append({"class": int(c), "name": names[c], "images": int(m.sum()), "auroc": ood.auroc(score_in[m], score_out),
                 "mean_score_bits": float(score_in[m].mean()), "bpd_full": float(np.asarray(in_s["bpd_full"])[m].mean()),
                 "bpd_local": float(np.asarray(in_s["bpd_local"])[m].mean())})
print(f"\n{args.in_dist} ({len(labels)} images) vs {out_set.label}; pair {args.model_pair}: "
      f"AUROC {ood.auroc(score_in, score_out):.3f}, OOD mean score {score_out.mean():.1f} bits\n")
print("| class | images | AUROC of the ratio | mean score (bits/image) | bits/dim full / local |\n|---|---|---|---|---|")
for r in rows:
    print(f"| {r['name']} | {r['images']} | {r['auroc']:.3f} | {r['mean_score_bits']:.1f} | "
          f"{r['bpd_full']:.3f} / {r['bpd_local']:.3f} |")
if args.out:
    Path(args.out).write_text(json.dumps({"command": "python " + " ".join(sys.argv), "ood_label": out_set.label,
                                          "auroc": ood.auroc(score_in, score_out),
                                          "ood_mean_score_bits": float(score_out.mean()), "rows": rows}, indent=2) + "\n")
    print(f"\nwrote {args.out}")
