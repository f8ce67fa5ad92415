#!/bin/bash
# Runs ON the lent GPU machine (device tool, carry [".dev", ...]), in the repository root:
#     bash scripts/gpu_run.sh test                 # the CUDA tests (files interchangeable with the CPU)
#     bash scripts/gpu_run.sh bench [--limit N]    # bench_nelloc.py devices: Kodak encoded on CUDA and
#                                                  #   on CPU, files compared, each decoded on both
#     bash scripts/gpu_run.sh train RUN STEPS [train_extend.py options]   # continue a run on CUDA
#     bash scripts/gpu_run.sh setup                # install and build only (before parallel jobs)
#     bash scripts/gpu_run.sh timed RUN SECONDS [train_timed.py options]  # train for a time budget;
#                                                  #   RUN.tgz (checkpoint, log, summary, RUN-swa)
# Results (JSON, checkpoints) are copied to $OUT.  Stage .dev/ first: scripts/gpu_stage.sh, docs/gpu.md.
set -euo pipefail
job=${1:?usage: gpu_run.sh test|bench|train ...}
shift
out=${OUT:-results/gpu-out}
mkdir -p "$out" results
export PYTHONPATH=/tmp/site:$PWD NELLOC_DATA=$PWD/.dev/data PYTHONUNBUFFERED=1
python3 -c 'import constriction' 2>/dev/null || python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .dev/whl/*.whl
python3 setup.py -q build_ext --inplace > /dev/null
dev=${NELLOC_GPU_DEVICE:-cuda}  # cpu only to rehearse this script on a machine without a GPU
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), torch.cuda.get_device_name() if torch.cuda.is_available() else '')"
case $job in
test)
    python3 -m pytest -q -p no:cacheprovider tests/test_exact.py tests/test_codec.py 2>&1 | tee "$out/pytest.log" ;;
bench)
    python3 scripts/bench_nelloc.py devices --dataset kodak --devices "$dev,cpu" "$@" 2>&1 | tee "$out/bench.log"
    cp results/nelloc-devices-*.json "$out/" ;;
train)
    run=${1:?usage: gpu_run.sh train RUN STEPS [options]}
    steps=${2:?usage: gpu_run.sh train RUN STEPS [options]}
    shift 2
    # the run's config says cpu and some torch threads: --set device wins; the options may add --set too
    python3 scripts/train_extend.py "$run" "$steps" --set "{\"device\": \"$dev\"}" "$@" 2>&1 | tee "$out/train.log"
    cp "$run/last.pt" "$run/log.jsonl" "$out/" ;;
setup)
    ;;
timed)
    run=${1:?usage: gpu_run.sh timed RUN SECONDS [options]}
    seconds=${2:?usage: gpu_run.sh timed RUN SECONDS [options]}
    shift 2
    name=$(basename "$run")
    python3 scripts/train_timed.py "$run" "$seconds" --set "{\"device\": \"$dev\"}" "$@" 2>&1 | tee "$out/$name.log"
    tar czf "$out/$name.tgz" "$run/last.pt" "$run/log.jsonl" "$run/summary.json" $(ls -d "$run-swa" 2>/dev/null) ;;
*)
    echo "gpu_run.sh: unknown job $job (test, bench, train, setup or timed)" >&2; exit 2 ;;
esac
