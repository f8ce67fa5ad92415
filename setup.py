"""Builds the two C kernels (exact integer mixture counts; the exact network's fused float32
re-quantisation); everything else is in pyproject.toml."""
from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension("nelloc._cdf", ["nelloc/_cdf.c"], extra_compile_args=["-O3", "-std=gnu99", "-ffp-contract=off"]),
        Extension("nelloc._requant", ["nelloc/_requant.c"],
                  extra_compile_args=["-O3", "-std=gnu99", "-ffp-contract=off", "-fno-math-errno", "-fno-trapping-math"]),
    ]
)
