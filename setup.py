"""Builds the one C kernel (exact integer mixture counts); everything else is in pyproject.toml."""
from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension("nelloc._cdf", ["nelloc/_cdf.c"], extra_compile_args=["-O3", "-std=gnu99", "-ffp-contract=off"]),
    ]
)
