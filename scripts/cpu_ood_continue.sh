#!/bin/bash
# Continue a shipped OOD pair on the 2-core CPU VM, members one after the other (each gets both cores):
#     bash scripts/cpu_ood_continue.sh PAIR FULL_SECONDS LOCAL_SECONDS [LR] [BATCH] [TAG]
# The CPU twin of scripts/gpu_ood_continue.sh: both members start from their float files
# (models/ood/PAIR-{full,local}.safetensors) with a fresh Adam and a cosine schedule from LR
# (default 5e-5, 100 warm-up steps); the full model's step count is sized to FULL_SECONDS by
# scripts/train_timed.py, and the local member then trains exactly as many steps (--steps-like:
# equal budget for the ratio) within LOCAL_SECONDS.  Runs: runs/TAG-F(-swa), runs/TAG-E(-swa)
# (TAG defaults to c-PAIR-cpu).  Export with
#     nelloc ood export runs/TAG-F-swa runs/TAG-E-swa --name PAIR --out-dir /tmp/cand
# Environment: WARMUP (100), VAL_EVERY (1000), CKPT_EVERY (500), PROBE (30 steps; the warm-up is at least PROBE + 10).
# Stop 27 ran: WARMUP=40 VAL_EVERY=200 CKPT_EVERY=100 PROBE=15 bash scripts/cpu_ood_continue.sh gray 5900 1300 5e-5 256
set -eu
pair=${1:?usage: cpu_ood_continue.sh PAIR FULL_SECONDS LOCAL_SECONDS [LR] [BATCH] [TAG]}
full_s=${2:?usage: cpu_ood_continue.sh PAIR FULL_SECONDS LOCAL_SECONDS [LR] [BATCH] [TAG]}
local_s=${3:?usage: cpu_ood_continue.sh PAIR FULL_SECONDS LOCAL_SECONDS [LR] [BATCH] [TAG]}
lr=${4:-5e-5}
batch=${5:-32}
tag=${6:-c-$pair-cpu}
. scripts/ood_pair_common.sh
data=$(ood_default_data "$pair")
[ -n "$data" ] || { echo "cpu_ood_continue.sh: no training data known for pair $pair" >&2; exit 2; }
common="\"data\":[\"$data\"],\"crop\":28,\"batch\":$batch,\"val_every\":${VAL_EVERY:-1000},\"val_crops\":1024,\"ckpt_every\":${CKPT_EVERY:-500},\"sampler\":\"vector\",\"threads\":2,\"seed\":27,\"lr\":$lr,\"warmup\":${WARMUP:-100}"
python3 scripts/train_timed.py "runs/$tag-F" "$full_s" --qat-start 1.0 --every 0.05 --probe ${PROBE:-30} \
    --new "{$common,$(ood_member_start "$pair" full)}"
python3 scripts/train_timed.py "runs/$tag-E" "$local_s" --qat-start 1.0 --every 0.05 --probe ${PROBE:-30} --steps-like "runs/$tag-F" \
    --new "{$common,$(ood_member_start "$pair" local)}"
