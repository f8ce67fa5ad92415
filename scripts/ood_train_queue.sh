#!/usr/bin/env bash
# Training queue for docs/ood.md and the decode-speed model (CPU, one thread each, one after another).
set -u
. .venv/bin/activate
run() { python scripts/train_run.py "$@"; }
# a paper-size codec model (h=3, r=1, 256 channels, K=10), briefly trained: for the decode-speed measurement
run runs/paper-c256 '{"data":["clic:0.6","cifar10-train:0.3","classic:0.1"],"model":{"width":256},"crop":32,"batch":32,"lr":0.002,"steps":250,"qat_start":0.6,"val_every":250,"ckpt_every":50,"threads":1}'
run runs/ood-fmnist-local '{"data":["fashion-mnist-train"],"model":{"width":64,"channels":1,"res_blocks":1,"kind":"local"},"crop":28,"batch":32,"lr":0.002,"steps":800,"qat_start":1.0,"val_every":250,"ckpt_every":100,"threads":1}'
run runs/ood-fmnist-full '{"data":["fashion-mnist-train"],"model":{"width":64,"channels":1,"res_blocks":4,"kind":"full"},"crop":28,"batch":32,"lr":0.002,"steps":800,"qat_start":1.0,"val_every":250,"ckpt_every":100,"threads":1}'
run runs/ood-cifar-local '{"data":["cifar10-train"],"model":{"width":64,"channels":3,"res_blocks":1,"kind":"local"},"crop":32,"batch":32,"lr":0.002,"steps":800,"qat_start":1.0,"val_every":250,"ckpt_every":100,"threads":1}'
run runs/ood-cifar-full '{"data":["cifar10-train"],"model":{"width":96,"channels":3,"res_blocks":5,"kind":"full"},"crop":32,"batch":32,"lr":0.002,"steps":600,"qat_start":1.0,"val_every":250,"ckpt_every":100,"threads":1}'
