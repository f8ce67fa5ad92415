#!/usr/bin/env bash
# Training queue for the OOD model pairs of docs/ood.md (CPU, one thread each, one after another).
# Every run resumes from its checkpoint, so re-running this script continues where it stopped.
set -u
. .venv/bin/activate
run() { python scripts/train_run.py "$@"; }
full='"width":64,"res_blocks":4,"kind":"full"'
# Fashion-MNIST in-distribution (the paper's setting); the local expert ran 800 steps in an earlier session
run runs/ood-fmnist-local '{"data":["fashion-mnist-train"],"model":{"width":64,"channels":1,"res_blocks":1,"kind":"local"},"crop":28,"batch":32,"lr":0.002,"steps":800,"qat_start":1.0,"val_every":250,"ckpt_every":100,"threads":1}'
run runs/ood-fmnist-full4 '{"data":["fashion-mnist-train"],"model":{'"$full"',"channels":1},"crop":28,"batch":32,"lr":0.001,"steps":1000,"qat_start":1.0,"val_every":250,"ckpt_every":100,"threads":1}'
# MNIST in-distribution
run runs/ood-mnist-local '{"data":["mnist-train"],"model":{"width":64,"channels":1,"res_blocks":1,"kind":"local"},"crop":28,"batch":32,"lr":0.002,"steps":800,"qat_start":1.0,"val_every":250,"ckpt_every":100,"threads":1}'
run runs/ood-mnist-full '{"data":["mnist-train"],"model":{'"$full"',"channels":1},"crop":28,"batch":32,"lr":0.001,"steps":1000,"qat_start":1.0,"val_every":250,"ckpt_every":100,"threads":1}'
# CIFAR-10 in-distribution (colour)
run runs/ood-cifar-local '{"data":["cifar10-train"],"model":{"width":64,"channels":3,"res_blocks":1,"kind":"local"},"crop":32,"batch":32,"lr":0.002,"steps":800,"qat_start":1.0,"val_every":250,"ckpt_every":100,"threads":1}'
run runs/ood-cifar-full '{"data":["cifar10-train"],"model":{'"$full"',"channels":3},"crop":32,"batch":32,"lr":0.001,"steps":800,"qat_start":1.0,"val_every":250,"ckpt_every":100,"threads":1}'
