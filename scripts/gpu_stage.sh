#!/bin/sh
# Stage into .dev/ (git-ignored) what a lent GPU machine needs and cannot fetch: the constriction
# wheel for its Python 3.12, and the data one job reads.  Run here, in the repository root:
#     sh scripts/gpu_stage.sh bench     # Kodak (15 MB): the CUDA <-> CPU interchange benchmark
#     sh scripts/gpu_stage.sh train     # rgb training mix: CIFAR-10 train, classic, a CLIC subset
#     sh scripts/gpu_stage.sh photo     # rgb-photo's mix: CIFAR-10 train and all of CLIC shrunk 2x,
#                                       #   3x and 4x (.dev/data/clic_2, clic_3, clic_4); BENCH=1 adds
#                                       #   Kodak 1-6 for `gpu_run.sh bench --limit 6` in the same call
#     sh scripts/gpu_stage.sh ood       # the grey OOD pairs' training sets: Fashion-MNIST and MNIST train
# then call the device tool with carry [".dev"] (and the run folder for training): docs/gpu.md.
set -eu
job=${1:?usage: gpu_stage.sh bench|train|photo|ood}
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
photo)
    # the mix "cifar10-train:0.5 clic/2:0.25 clic/4:0.25" with CLIC shrunk here (nelloc.data.downscale,
    # same files, same order, so the same held-out images): all 26 photos fit, where the full-size set
    # does not; name them as paths: .dev/data/clic_2:0.25
    cp "$src/cifar10_train_subset.npz" .dev/data/
    if [ "${BENCH:-0}" = 1 ]; then
        mkdir -p .dev/data/kodak
        cp "$src"/kodak/kodim0[1-6].png .dev/data/kodak/
    fi
    python - "$src/clic2025_valid" .dev/data <<'PY'
import sys
from pathlib import Path
import numpy as np
from PIL import Image
from nelloc.data import downscale
src, out = Path(sys.argv[1]), Path(sys.argv[2])
for f in (2, 3, 4):
    (out / f"clic_{f}").mkdir()
for p in sorted(src.glob("*.png")):
    img = np.asarray(Image.open(p).convert("RGB"))
    for f in (2, 3, 4):
        Image.fromarray(downscale(img, f)).save(out / f"clic_{f}" / p.name, compress_level=9)
PY
    ;;
ood)
    cp "$src/fashion_mnist_train.npz" "$src/mnist_train.npz" .dev/data/ ;;
*)
    echo "gpu_stage.sh: unknown job $job (bench, train, photo or ood)" >&2; exit 2 ;;
esac
du -sh .dev
