#!/bin/bash
# What a constant-rate run would score if it were annealed now (stop 29):
#     bash scripts/anneal_probe.sh RUN@STEP TAIL_STEPS OUT_RUN [HELDOUT_ARGS...]
# Copies the snapshot RUN@STEP to OUT_RUN, trains it TAIL_STEPS more on a cosine from the run's peak
# rate to 10% of it (the trainer's cosine with its warm-up set to end at STEP), float, and prints the
# float likelihood of the training set's held-out images (scripts/heldout_bits.py; extra arguments go
# to it).  PAUSE_PID=PID stops that process (e.g. the run the snapshot came from) for the tail and
# lets it go on afterwards, so that the two do not share the cores.
set -eu
snap=${1:?usage: anneal_probe.sh RUN@STEP TAIL_STEPS OUT_RUN}
tail_steps=${2:?usage: anneal_probe.sh RUN@STEP TAIL_STEPS OUT_RUN}
out=${3:?usage: anneal_probe.sh RUN@STEP TAIL_STEPS OUT_RUN}
shift 3
start=${snap##*@}
end=$((start + tail_steps))
[ -e "$out" ] && { echo "anneal_probe.sh: $out exists" >&2; exit 2; }
cp -r "$snap" "$out"
resume() { [ -z "${PAUSE_PID:-}" ] || kill -CONT "$PAUSE_PID"; }
[ -z "${PAUSE_PID:-}" ] || kill -STOP "$PAUSE_PID"
trap resume EXIT  # also when the tail fails or is interrupted
python3 scripts/train_extend.py "$out" "$end" \
    --set "{\"schedule\":\"cosine\",\"warmup\":$start,\"steps\":$end,\"val_every\":1000000000}"
resume  # the paused run goes on while the held-out images are scored
trap - EXIT
python3 scripts/heldout_bits.py "$out" "$@"
