"""codec_bench: lossless image codec benchmark harness (NeLLoC vs classical codecs).

Run ``python -m codec_bench --help``. Layout: ``codecs`` (one class per codec and a
registry), ``datasets``, ``run`` (measurement loop and metrics), ``report``
(Markdown, JSON, CSV, plots, docs/benchmarks.md).
"""

from .codecs import REGISTRY, Codec, Unsupported, make_codec, parse_codec_specs
from .datasets import Dataset, load_dataset
from .run import run_benchmark

__all__ = [
    "REGISTRY",
    "Codec",
    "Dataset",
    "Unsupported",
    "load_dataset",
    "make_codec",
    "parse_codec_specs",
    "run_benchmark",
]
