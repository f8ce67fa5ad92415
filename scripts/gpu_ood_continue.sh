#!/bin/bash
# Continue a shipped OOD pair on a lent GPU, in one device call (stage first: sh scripts/gpu_stage.sh ood):
#     bash scripts/gpu_ood_continue.sh PAIR SECONDS [LR] [DATA]
# PAIR is a shipped pair in models/ood/ (default data: gray -> fashion-mnist-train, mnist -> mnist-train).
# Both members start from their float files (models/ood/PAIR-full.safetensors, PAIR-local.safetensors;
# nelloc.train.warm_start copies a model of the same configuration) with a fresh Adam and a cosine
# schedule from LR (default 1e-4, 200 warm-up steps); the local member trains exactly as many steps as
# the full one (--steps-like: equal budget for the ratio).  This needs no run folder, so it works after
# runs/ is lost (a new checkout).  Results: $OUT/c-PAIR.tgz (the averaged runs and logs); export here with
#     nelloc ood export runs/c-PAIR-F-swa runs/c-PAIR-E-swa --name PAIR
# Rehearse on a CPU: NELLOC_GPU_DEVICE=cpu BATCH=8 PROBE=10 bash scripts/gpu_ood_continue.sh gray 120
set -u
pair=${1:?usage: gpu_ood_continue.sh PAIR SECONDS [LR] [DATA]}
seconds=${2:?usage: gpu_ood_continue.sh PAIR SECONDS [LR] [DATA]}
lr=${3:-1e-4}
. scripts/ood_pair_common.sh
data=${4:-$(ood_default_data "$pair")}
[ -n "$data" ] || { echo "gpu_ood_continue.sh: name the training data of pair $pair" >&2; exit 2; }
for member in full local; do
    [ -f "models/ood/$pair-$member.safetensors" ] || { echo "gpu_ood_continue.sh: no models/ood/$pair-$member.safetensors" >&2; exit 2; }
done
out=${OUT:-results/gpu-out}
mkdir -p "$out"
bash scripts/gpu_run.sh setup > /tmp/gpu_setup.log 2>&1 || { cat /tmp/gpu_setup.log; exit 1; }
common="\"data\":[\"$data\"],\"crop\":28,\"batch\":${BATCH:-256},\"val_every\":1000,\"val_crops\":1024,\"ckpt_every\":2000,\"sampler\":\"vector\",\"threads\":2,\"seed\":26,\"lr\":$lr,\"warmup\":200"
full_start=$(ood_member_start "$pair" full) || exit 1
local_start=$(ood_member_start "$pair" local) || exit 1
timed() { OUT=/tmp/gpu_ood_out bash scripts/gpu_run.sh timed "$@" --probe "${PROBE:-60}" > /dev/null 2>&1; }
timed "runs/c-$pair-F" "$seconds" --qat-start 1.0 --every 0.05 \
    --new "{$common,$full_start}" &
timed "runs/c-$pair-E" "$seconds" --qat-start 1.0 --every 0.05 --steps-like "runs/c-$pair-F" \
    --new "{$common,$local_start}" &
wait
tar czf "$out/c-$pair.tgz" runs/c-$pair-[FE]/log.jsonl runs/c-$pair-[FE]/summary.json \
    $(ls -d runs/c-$pair-F-swa runs/c-$pair-E-swa 2>/dev/null)
tail -n 2 /tmp/gpu_ood_out/c-$pair-*.log
ls -la "$out"
