#!/usr/bin/env bash
# The codec_bench runs behind docs/benchmarks.md, one after another (~2 h on the 2-core VM with a
# training job beside it: Kodak took 75 min, AVIF and WebP m6 encodes and NeLLoC dominate).
set -u
. .venv/bin/activate
codecs=nelloc,png,webp,jpegxl-e7,jpegxl-e9,cjxl,jpeg2000,jpegls,avif,qoi,flif
bench() {  # bench NAME ARGS...
  python -m codec_bench run --paper -q --out "results/$1" "${@:2}" && cp "results/$1/results.json" "docs/results/$1.json" \
    && { [ ! -f "results/$1/bpsp_vs_decode_speed.png" ] || cp "results/$1/bpsp_vs_decode_speed.png" "docs/results/$1.png"; }
}
bench kodak --dataset kodak --codecs "$codecs"
bench classic --dataset classic --codecs "$codecs"
bench cifar10-test --dataset cifar10-test --codecs "$codecs"
bench mnist-test-limit2000 --dataset mnist-test --limit 2000 --codecs "$codecs"
bench clic-limit2 --dataset clic --limit 2 --codecs "$codecs"
