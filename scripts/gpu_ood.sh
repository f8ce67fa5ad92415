#!/bin/bash
# The grey OOD pairs on a lent GPU, in one device call (stage first: sh scripts/gpu_stage.sh ood):
#     bash scripts/gpu_ood.sh LOCAL_SECONDS PAIR_SECONDS [WIDTH] [BLOCKS]
# For each in-distribution set (Fashion-MNIST -> pair `gray`, MNIST -> pair `mnist`), all at once:
#   1. a local expert (the codec's local architecture, width WIDTH) from scratch for LOCAL_SECONDS;
#   2. the full PixelCNN (WIDTH, BLOCKS residual blocks with 3x3 middles) warm-started from it, and the
#      local expert continued from the same start for exactly as many steps (equal budget, --steps-like),
#      for PAIR_SECONDS; the last 4 snapshots (5% of the steps apart) of each averaged (RUN-swa).
# Results: $OUT/NAME.tgz per set (the averaged runs, the local expert, logs); export them here with
#     nelloc ood export runs/g-NAME-F-swa runs/g-NAME-E-swa --name gray|mnist
set -u
local_s=${1:?usage: gpu_ood.sh LOCAL_SECONDS PAIR_SECONDS [WIDTH] [BLOCKS]}
pair_s=${2:?usage: gpu_ood.sh LOCAL_SECONDS PAIR_SECONDS [WIDTH] [BLOCKS]}
width=${3:-128}
blocks=${4:-5}
out=${OUT:-results/gpu-out}
mkdir -p "$out"
bash scripts/gpu_run.sh setup > /tmp/gpu_setup.log 2>&1 || { cat /tmp/gpu_setup.log; exit 1; }
common='"crop":28,"batch":256,"val_every":1000,"val_crops":1024,"ckpt_every":2000,"sampler":"vector","threads":2,"seed":5'
model() { echo "\"model\":{\"width\":$width,\"channels\":1,\"res_blocks\":$1,\"kind\":\"$2\"}"; }
timed() { OUT=/tmp/gpu_ood_out bash scripts/gpu_run.sh timed "$@" > /dev/null 2>&1; }
sets="fm:fashion-mnist-train mn:mnist-train"
for s in $sets; do
    name=${s%%:*} data=${s#*:}
    timed "runs/g-$name-L" "$local_s" --qat-start 1.0 --snapshots 1 \
        --new "{\"data\":[\"$data\"],$common,\"lr\":2e-3,$(model 1 local)}" &
done
wait
for s in $sets; do
    name=${s%%:*} data=${s#*:}
    start="\"lr\":3e-4,\"warmup\":200,\"init_from\":\"runs/g-$name-L\""
    timed "runs/g-$name-F" "$pair_s" --qat-start 1.0 --every 0.05 \
        --new "{\"data\":[\"$data\"],$common,$start,$(model "$blocks" full)}" &
    timed "runs/g-$name-E" "$pair_s" --qat-start 1.0 --every 0.05 --steps-like "runs/g-$name-F" \
        --new "{\"data\":[\"$data\"],$common,$start,$(model 1 local)}" &
done
wait
for s in $sets; do
    name=${s%%:*}
    tar czf "$out/$name.tgz" runs/g-$name-[LFE]/last.pt runs/g-$name-*/log.jsonl runs/g-$name-*/summary.json \
        $(ls -d runs/g-$name-F-swa runs/g-$name-E-swa 2>/dev/null)
    tail -n 1 /tmp/gpu_ood_out/g-$name-*.log
done
ls -la "$out"
