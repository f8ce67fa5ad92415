#!/bin/sh
# Stage into .dev/ (git-ignored) what a lent GPU machine needs and cannot fetch: the constriction
# wheel for its Python 3.12, and the data one job reads.  Run here, in the repository root:
#     sh scripts/gpu_stage.sh bench     # Kodak (15 MB): the CUDA <-> CPU interchange benchmark
#     sh scripts/gpu_stage.sh train     # rgb training mix: CIFAR-10 train, classic, a CLIC subset
# then call the device tool with carry [".dev"] (and the run folder for training): docs/gpu.md.
set -eu
job=${1:?usage: gpu_stage.sh bench|train}
src=${NELLOC_DATA:-../shared/data}
rm -rf .dev
mkdir -p .dev/whl .dev/data
python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .dev/whl constriction==0.5.0
case $job in
bench)
    cp -r "$src/kodak" .dev/data/ ;;
train)
    cp "$src/cifar10_train_subset.npz" .dev/data/
    cp -r "$src/classic" .dev/data/
    # the whole CLIC set (71 MB) is over the 64 MiB a call may carry: the smallest files up to ~36 MB
    mkdir .dev/data/clic2025_valid
    total=0
    for f in $(ls -S -r "$src/clic2025_valid"); do
        size=$(stat -c %s "$src/clic2025_valid/$f")
        [ $((total + size)) -gt 36000000 ] && break
        cp "$src/clic2025_valid/$f" .dev/data/clic2025_valid/
        total=$((total + size))
    done ;;
*)
    echo "gpu_stage.sh: unknown job $job (bench or train)" >&2; exit 2 ;;
esac
du -sh .dev
