#!/usr/bin/env bash
# Training queue for the OOD model pairs of docs/ood.md (CPU, one thread each, one after another).
# Every run resumes from its checkpoint, so re-running this script continues where it stopped.
#
# Local experts: width 64, r = 1, lr 2e-3, 800 steps. Full models: width 64, 4 residual blocks with
# 3x3 middle convolutions, *warm-started from the local expert* (nelloc.train.warm_start: the full
# model starts as the local model, so training only adds what lies beyond the local window), lr 3e-4,
# gradient clipping 1.0, snapshots every 200 steps for the AUROC-against-steps curve
# (scripts/ood_curve.py). Measured on Fashion-MNIST: cold-started 4-block full models at lr 1e-3
# stalled at the pixel marginal (~5.9 bpd) for 3 of 4 seeds; at lr 3e-4 a cold start reached only
# 3.43 bpd (validation) after 1,000 steps, worse than the local expert's 3.28, and the ratio's AUROC
# vs MNIST was 0.014 (inverted).
set -u
. .venv/bin/activate
local_expert() {  # local_expert RUN DATA CHANNELS CROP
  python scripts/train_run.py "$1" "{\"data\":[\"$2\"],\"model\":{\"width\":64,\"channels\":$3,\"res_blocks\":1,\"kind\":\"local\"},\"crop\":$4,\"batch\":32,\"lr\":0.002,\"steps\":800,\"qat_start\":1.0,\"val_every\":250,\"ckpt_every\":100,\"threads\":1}"
}
full() {  # full RUN DATA CHANNELS CROP LOCAL_RUN
  python scripts/train_extend.py "$1" 200,400,600,800 --new "{\"data\":[\"$2\"],\"model\":{\"width\":64,\"channels\":$3,\"res_blocks\":4,\"kind\":\"full\"},\"crop\":$4,\"batch\":32,\"lr\":0.0003,\"warmup\":0,\"steps\":800,\"qat_start\":1.0,\"val_every\":200,\"ckpt_every\":50,\"threads\":1,\"init_from\":\"$5\"}"
}
localeq() {  # localeq RUN DATA CHANNELS CROP LOCAL_RUN: the local expert continued from the same start with
  #            the full model's budget and schedule (equal budget: the ratio then measures only what
  #            the full model learns beyond the window, not that it trained longer)
  python scripts/train_extend.py "$1" 200,400,600,800 --new "{\"data\":[\"$2\"],\"model\":{\"width\":64,\"channels\":$3,\"res_blocks\":1,\"kind\":\"local\"},\"crop\":$4,\"batch\":32,\"lr\":0.0003,\"warmup\":0,\"steps\":800,\"qat_start\":1.0,\"val_every\":200,\"ckpt_every\":50,\"threads\":1,\"init_from\":\"$5\"}"
}
average() {  # average RUN: the mean of the weights at steps 400, 600 and 800 -> RUN-swa
  python scripts/average_snapshots.py "$1-swa" "$1@400" "$1@600" "$1@800"
}
pair() {  # pair NAME DATA CHANNELS CROP
  local_run=runs/ood-$1-local
  local_expert "$local_run" "$2" "$3" "$4"
  full "runs/ood-$1-fullw" "$2" "$3" "$4" "$local_run"
  localeq "runs/ood-$1-localeq" "$2" "$3" "$4" "$local_run"
  average "runs/ood-$1-fullw"
  average "runs/ood-$1-localeq"
}
pair fmnist fashion-mnist-train 1 28   # then: nelloc ood export runs/ood-fmnist-fullw-swa runs/ood-fmnist-localeq-swa --name gray
pair mnist mnist-train 1 28            #       nelloc ood export runs/ood-mnist-fullw-swa runs/ood-mnist-localeq-swa --name mnist
pair cifar cifar10-train 3 32          #       nelloc ood export runs/ood-cifar-fullw-swa runs/ood-cifar-localeq-swa --name rgb
