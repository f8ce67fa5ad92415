#!/bin/bash
# The legs that turn a snapshot of the CIFAR-10 base run into the three shipped photo/thumbnail models
# (the recipes of every stop since 33; docs/ablations.md "Stop 38"):
#
#     bash scripts/base_legs.sh N [--dry-run] [--no-grey]
#
# N is a step of runs/rgb-base with a snapshot runs/rgb-base@N (train_extend.py takes one every 5,000
# steps). Pause the base run first (kill -STOP its pid): on the 2-core VM the two first legs take one
# core each. Side by side:
#   - photo tail -> runs/pN-swa: 6,000 steps on the photo mix, the last 300 fake-quantised,
#     three snapshots averaged, less any that spiked (--drop-spikes; ~45 min on one Intel Xeon thread);
#   - rgb anneal -> runs/rgb-qN-swa (rgb): 4,000 steps of cosine on CIFAR-10, then 400 fake-quantised,
#     four snapshots averaged (~35 min), with the held-out likelihood of both (scripts/heldout_bits.py);
# then, side by side:
#   - long photo tail -> runs/pNb-swa (rgb-photo since stop 42): the photo tail at its last float step
#     (5,700) trained on to 12,000 steps, the last 600 fake-quantised, then 600 more fake-quantised at a
#     constant 3e-5, four snapshots averaged (~72 min in stop 48);
#   - gray-photo -> runs/gpN-swa: 6,000 steps on the grey mix from the 6,000-step photo tail's float
#     weights (~32 min).
# --no-grey leaves the grey leg out (stop 41: its gain per base step is below its spread over seeds).
# Each leg's output goes to runs/LEG.out. Then export and evaluate each model
# (`nelloc export RUN --name NAME --out-dir DIR --eval ...`; the cards' training_notes name the commands)
# and install the ones that beat the shipped model on held-out data
# (`python scripts/install_model.py NAME DIR NOTES.txt`).
set -euo pipefail
N=${1:?usage: base_legs.sh N [--dry-run] [--no-grey]}
[[ $N =~ ^[0-9]+$ ]] || { echo "base_legs.sh: N must be a step count, not ${N@Q}" >&2; exit 2; }
DRY=0
GREY_LEG=1
for opt in "${@:2}"; do
    case $opt in
        --dry-run) DRY=1 ;;
        --no-grey) GREY_LEG=0 ;;
        *) echo "base_legs.sh: unknown option ${opt@Q}" >&2; exit 2 ;;
    esac
done
run() {  # prints each command shell-quoted (a dry run can be pasted), then runs it
    local arg
    printf '+'
    for arg in "$@"; do
        if [[ $arg =~ ^[][A-Za-z0-9@%+=:,./_-]+$ ]]; then printf ' %s' "$arg"; else printf ' %s' "${arg@Q}"; fi
    done
    printf '\n'
    [ "$DRY" = 1 ] || "$@"
}
cd "$(dirname "$0")/.."
[ "$DRY" = 1 ] || python -c "import nelloc" 2> /dev/null || {
    echo "base_legs.sh: python cannot import nelloc (activate the environment: . .venv/bin/activate)" >&2; exit 1; }
[ "$DRY" = 1 ] || [ -f "runs/rgb-base@$N/last.pt" ] || { echo "no runs/rgb-base@$N/last.pt" >&2; exit 1; }
E=$((N + 4000))
# a tail's fake-quantised snapshot more than 1% above the best one on held-out crops is left out of its
# mean (stop 44: one spiked by 4%; within the other tails the three spread 0.5-0.7%)
SPIKE=0.01
# the first layer on a 12-bit grid since stop 46 (int8 rounding there cost 0.5% and grew with the base)
NET='"horizon":3,"width":256,"res_blocks":1,"skip":true,"act_bits":10,"skip_bits":11,"first_bits":12'
# the colour models' channel coefficients in units of 1/4096 since stop 47 (1/256 cost ~0.3%)
COLOUR=$NET',"coeff_bits":12'
# both 6,000-step tails: cosine from 3e-4, the last 5% fake-quantised
TAIL='"crop":32,"batch":32,"lr":3e-4,"warmup":100,"steps":6000,"qat_start":0.95,"calib_quantile":1.0,"val_every":2000,"val_crops":256,"ckpt_every":500,"threads":1'
PHOTO='{"data":["cifar10-train:0.5","clic/2:0.25","clic/4:0.25"],'$TAIL',"seed":30,"sampler":"vector","init_from":"runs/rgb-base@'$N'","model":{'$COLOUR'}}'
GREY='{"data":["cifar10-train:0.3","clic/2:0.25","clic/3:0.1","clic/4:0.25","yale:0.1"],'$TAIL',"seed":28,"sampler":"vector","init_from":"runs/init/p'$N'-float.safetensors","model":{"channels":1,'$NET'}}'

tail_leg() {  # RUN CONFIG: a 6,000-step tail, its three fake-quantised snapshots averaged into RUN-swa
    run python scripts/train_extend.py "$1" 2000,4000,5700,5800,5900,6000 --new "$2"
    run python scripts/average_snapshots.py "$1-swa" "$1@5800" "$1@5900" "$1@6000" --drop-spikes "$SPIKE"
}

long_tail_leg() {  # stop 31's longer tail; stop 42: Kodak -0.40% against the 6,000-step tail
    run cp -r "runs/p$N@5700" "runs/p${N}b"
    run python scripts/train_extend.py "runs/p${N}b" 8000,10000,11400,11600,11800,12000 \
        --lr 3e-4 --qat-start 0.95 --set '{"threads":1,"steps":12000,"val_every":2000}'
    # stop 48: 600 more fake-quantised steps at a constant 3e-5; the cosine's last snapshots swing by ~1%,
    # these by 0.1-0.2% (stops 47 and 48; stop 47: Kodak -0.05% against the cosine's mean); in stop 50
    # 12,400 was 1.1% below 12,000 and 12,600 spiked 2.4% above 12,400 (left out by --drop-spikes)
    run python scripts/train_extend.py "runs/p${N}b" 12200,12400,12600 \
        --set '{"schedule":"constant","lr":3e-5,"steps":12600}'
    run python scripts/average_snapshots.py "runs/p${N}b-swa" "runs/p${N}b@12000" "runs/p${N}b@12200" "runs/p${N}b@12400" \
        "runs/p${N}b@12600" --drop-spikes "$SPIKE"
}

rgb_leg() {
    run cp -r "runs/rgb-base@$N" "runs/rgb-anneal$N"
    run python scripts/train_extend.py "runs/rgb-anneal$N" "$E" \
        --set '{"schedule":"cosine","warmup":'$N',"steps":'$E',"val_every":1000000000,"threads":1}'
    run python scripts/heldout_bits.py "runs/rgb-anneal$N@$E"
    run cp -r "runs/rgb-anneal$N@$E" "runs/rgb-q$N"
    local steps=($((E + 100)) $((E + 200)) $((E + 300)) $((E + 400)))  # snapshots, all averaged
    run python scripts/train_extend.py "runs/rgb-q$N" "$(IFS=,; echo "${steps[*]}")" \
        --lr 3e-5 --qat-start 0.99 --model-set '{"skip_bits": 11, "first_bits": 12, "coeff_bits": 12}' \
        --set '{"schedule":"cosine","warmup":'$E',"calib_quantile":1.0,"val_every":1000000000,"threads":1}'
    run python scripts/average_snapshots.py "runs/rgb-q$N-swa" "${steps[@]/#/runs/rgb-q$N@}"
    run python scripts/heldout_bits.py "runs/rgb-q$N-swa"
}

grey_leg() {
    # the grey model starts from the photo tail's float weights (nelloc.train.greyscale_from_colour)
    run mkdir -p runs/init
    run nelloc export "runs/p$N-swa" --name rgb-photo --out-dir "runs/init/p$N-export"
    run cp "runs/init/p$N-export/float/rgb-photo.safetensors" "runs/init/p$N-float.safetensors"
    tail_leg "runs/gp$N" "$GREY"
}

if [ "$DRY" = 1 ]; then
    tail_leg "runs/p$N" "$PHOTO"; rgb_leg; long_tail_leg
    [ "$GREY_LEG" = 0 ] || grey_leg
    exit 0
fi
tail_leg "runs/p$N" "$PHOTO" > "runs/p$N.out" 2>&1 &
photo=$!
rgb_leg > "runs/rgb-q$N.out" 2>&1 &
rgb=$!
wait $photo
long_tail_leg > "runs/p${N}b.out" 2>&1 &
long=$!
[ "$GREY_LEG" = 0 ] || grey_leg > "runs/gp$N.out" 2>&1
wait $rgb
wait $long
echo "done: runs/p$N-swa runs/p${N}b-swa runs/rgb-q$N-swa$([ "$GREY_LEG" = 0 ] || echo " runs/gp$N-swa")"
