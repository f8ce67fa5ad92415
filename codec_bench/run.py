"""Measurement loop: round-trip verification, sizes, speed, memory, per-codec summaries."""

from __future__ import annotations

import datetime as _dt
import importlib.metadata
import os
import platform
import statistics
import sys
import time
import tracemalloc
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence, TypeVar

import numpy as np
from tqdm import tqdm

from .codecs import Codec, Unsupported
from .datasets import Dataset

__all__ = [
    "SCHEMA_VERSION",
    "MemoryMeter",
    "compare_images",
    "machine_info",
    "library_versions",
    "run_benchmark",
]

SCHEMA_VERSION = 1
T = TypeVar("T")


# --------------------------------------------------------------------------
# Memory


class MemoryMeter:
    """Peak extra memory of one call.

    ``rss``: peak resident set size growth during the call, measured by resetting
    the kernel's high-water mark (``/proc/self/clear_refs`` = 5) and reading
    ``VmHWM`` afterwards; covers native (C/C++/torch) allocations; Linux only.
    ``tracemalloc``: peak of Python-traced allocations (numpy buffers and bytes
    objects, but not memory malloc'ed inside C libraries or torch); slows calls
    down, so the traced pass is not timed.
    ``off``: no measurement.
    """

    DESCRIPTIONS = {
        "rss": "peak RSS growth per encode/decode call (VmHWM reset via /proc/self/clear_refs)",
        "tracemalloc": "tracemalloc peak per call (Python-visible allocations only)",
        "off": "not measured",
    }

    def __init__(self, method: str = "rss") -> None:
        if method not in self.DESCRIPTIONS:
            raise ValueError(f"unknown memory method {method!r}")
        if method == "rss" and not _rss_supported():
            method = "tracemalloc"
        self.method = method

    @property
    def description(self) -> str:
        return self.DESCRIPTIONS[self.method]

    @property
    def timing_ok(self) -> bool:
        """Whether a measured call can also be used as a timing sample."""
        return self.method != "tracemalloc"

    def measure(self, fn: Callable[[], T]) -> tuple[T, int | None]:
        if self.method == "rss":
            _reset_hwm()
            base = _proc_status_kib("VmRSS")
            result = fn()
            return result, max(0, _proc_status_kib("VmHWM") - base) * 1024
        if self.method == "tracemalloc":
            started = not tracemalloc.is_tracing()
            if started:
                tracemalloc.start()
            tracemalloc.reset_peak()
            base = tracemalloc.get_traced_memory()[0]
            try:
                result = fn()
                peak = tracemalloc.get_traced_memory()[1] - base
            finally:
                if started:
                    tracemalloc.stop()
            return result, max(0, peak)
        return fn(), None


def _proc_status_kib(key: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise KeyError(key)


def _reset_hwm() -> None:
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")


def _rss_supported() -> bool:
    try:
        _reset_hwm()
        _proc_status_kib("VmHWM")
        return True
    except (OSError, KeyError, ValueError):
        return False


# --------------------------------------------------------------------------
# Verification and timing


def compare_images(original: np.ndarray, decoded: Any) -> str | None:
    """``None`` if ``decoded`` equals ``original`` in dtype, shape and values, else why not."""
    decoded = np.asarray(decoded)
    if decoded.dtype != original.dtype:
        return f"dtype {decoded.dtype} != {original.dtype}"
    if decoded.shape != original.shape:
        return f"shape {decoded.shape} != {original.shape}"
    diff = decoded != original
    n_bad = int(np.count_nonzero(diff))
    if n_bad:
        max_abs = int(np.max(np.abs(decoded.astype(np.int16) - original.astype(np.int16))))
        return f"{n_bad}/{original.size} values differ (max abs diff {max_abs})"
    return None


SLOW_ROUND_TRIP_S = 2.0  # an image whose first encode + decode takes this long is timed once


def _timed(fn: Callable[..., T], *args: Any) -> tuple[T, float]:
    t0 = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - t0


@dataclass
class ImageRecord:
    image_id: str
    shape: tuple[int, ...]
    status: str = "ok"  # ok | failed | unsupported
    error: str = ""
    nbytes: int = 0
    encode_s: float = 0.0
    decode_s: float = 0.0
    peak_memory_bytes: int | None = None
    extra: dict[str, float | None] = field(default_factory=dict)

    @property
    def pixels(self) -> int:
        return self.shape[0] * self.shape[1]

    @property
    def subpixels(self) -> int:
        return int(np.prod(self.shape))


def _peak(*values: int | None) -> int | None:
    known = [v for v in values if v is not None]
    return max(known) if known else None


def measure_image(
    codec: Codec, image_id: str, image: np.ndarray, meter: MemoryMeter, repeat: int
) -> ImageRecord:
    """Encode/decode one image, verify, then time up to ``repeat`` runs (median).

    Runs after the first are skipped once a round trip takes SLOW_ROUND_TRIP_S or more: repeats
    matter for fast codecs (timer noise), not for ones that take seconds per image."""
    rec = ImageRecord(image_id, tuple(image.shape))
    stage = "encode"
    try:
        (data, enc_t), enc_mem = meter.measure(lambda: _timed(codec.encode, image))
        data = bytes(data)
        stage = "decode"
        (decoded, dec_t), dec_mem = meter.measure(lambda: _timed(codec.decode, data))
        stage = "verify"
        problem = compare_images(image, decoded)
        if problem:
            rec.status, rec.error = "failed", f"round trip mismatch: {problem}"
            return rec
        rec.nbytes, rec.peak_memory_bytes = len(data), _peak(enc_mem, dec_mem)
        enc_times, dec_times = ([enc_t], [dec_t]) if meter.timing_ok else ([], [])
        stage = "timing"
        while len(enc_times) < repeat and (not enc_times or enc_t + dec_t < SLOW_ROUND_TRIP_S):
            enc_times.append(_timed(codec.encode, image)[1])
            decoded, t = _timed(codec.decode, data)
            dec_times.append(t)
            problem = compare_images(image, decoded)
            if problem:
                rec.status, rec.error = "failed", f"round trip mismatch on repeat: {problem}"
                return rec
        rec.encode_s = statistics.median(enc_times)
        rec.decode_s = statistics.median(dec_times)
        stage = "extra metrics"
        rec.extra = codec.extra_metrics(image)
    except Unsupported as exc:
        rec.status, rec.error = "unsupported", str(exc)
    except Exception as exc:  # noqa: BLE001 - any codec error is a reported failure
        rec.status, rec.error = "failed", f"{stage}: {type(exc).__name__}: {exc}"
    return rec


# --------------------------------------------------------------------------
# Per-codec accumulation


class CodecRun:
    """Availability plus the image records of one codec on one dataset."""

    def __init__(self, codec: Codec, repeat: int | None) -> None:
        self.codec = codec
        self.repeat = repeat if repeat is not None else codec.default_repeat
        try:
            self.available, self.reason = codec.available()
        except Exception as exc:  # noqa: BLE001
            self.available, self.reason = False, f"availability check raised {exc!r}"
        self.records: list[ImageRecord] = []

    def summary(self, memory_method: str) -> dict[str, Any]:
        codec = self.codec
        out: dict[str, Any] = {
            "codec": codec.label,
            "name": codec.name,
            "options": dict(codec.options),
            "description": codec.description,
            "version": _safe(codec.version) if self.available else None,
            "neural": codec.neural,
            "repeat": self.repeat,
            "memory_method": memory_method,
            "n_images": len(self.records),
            "n_ok": 0,
            "n_failed": 0,
            "n_unsupported": 0,
            "errors": [],
            "notes": "",
            "bytes": None,
            "bits": None,
            "subpixels": None,
            "pixels": None,
            "bpsp": None,
            "bpsp_mean": None,
            "encode_s": None,
            "decode_s": None,
            "encode_mps": None,
            "decode_mps": None,
            "peak_memory_bytes": None,
            "model_size_bytes": _safe(codec.model_size_bytes) if self.available else None,
            "likelihood_bits": None,
            "likelihood_overhead_pct": None,
        }
        if not self.available:
            out.update(status="unavailable", reason=self.reason)
            return out
        ok = [r for r in self.records if r.status == "ok"]
        failed = [r for r in self.records if r.status == "failed"]
        unsup = [r for r in self.records if r.status == "unsupported"]
        out.update(n_ok=len(ok), n_failed=len(failed), n_unsupported=len(unsup))
        out["errors"] = [f"{r.image_id}: {r.error}" for r in failed[:3]]
        if unsup:
            out["notes"] = f"unsupported on {len(unsup)}/{len(self.records)} images: {unsup[0].error}"
        if failed:
            out.update(status="failed", reason=f"{len(failed)}/{len(self.records)} images failed; "
                       f"first: {failed[0].image_id}: {failed[0].error}")
            return out
        if not ok:
            status = "unsupported" if unsup else "failed"
            out.update(status=status, reason=unsup[0].error if unsup else "no images")
            return out
        out.update(status="ok", reason="")
        out.update(_aggregate(ok))
        return out


def _safe(fn: Callable[[], T]) -> T | None:
    try:
        return fn()
    except Exception:  # noqa: BLE001 - informational only
        return None


def _aggregate(ok: Sequence[ImageRecord]) -> dict[str, Any]:
    nbytes = sum(r.nbytes for r in ok)
    subpixels = sum(r.subpixels for r in ok)
    pixels = sum(r.pixels for r in ok)
    enc_s = sum(r.encode_s for r in ok)
    dec_s = sum(r.decode_s for r in ok)
    per_image = np.array([8 * r.nbytes / r.subpixels for r in ok])
    out: dict[str, Any] = {
        "bytes": nbytes,
        "bits": 8 * nbytes,
        "subpixels": subpixels,
        "pixels": pixels,
        "bpsp": 8 * nbytes / subpixels,
        "bpsp_mean": float(per_image.mean()),
        "encode_s": enc_s,
        "decode_s": dec_s,
        "encode_mps": pixels / 1e6 / enc_s if enc_s > 0 else None,
        "decode_mps": pixels / 1e6 / dec_s if dec_s > 0 else None,
        "peak_memory_bytes": _peak(*(r.peak_memory_bytes for r in ok)),
    }
    lik = [r.extra.get("likelihood_bits") for r in ok]
    if lik and all(v is not None for v in lik):
        total = float(sum(lik))  # type: ignore[arg-type]
        out["likelihood_bits"] = total
        out["likelihood_overhead_pct"] = 100.0 * (8 * nbytes - total) / total if total else None
    return out


# --------------------------------------------------------------------------
# Environment


def machine_info() -> dict[str, Any]:
    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next((ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name")), cpu)
    except OSError:
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    return {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "cpu_model": cpu,
        "cpu_count": os.cpu_count(),
        "cpu_count_usable": usable,
    }


def library_versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for dist in ("numpy", "pillow", "imagecodecs", "torch", "nelloc", "matplotlib", "tqdm"):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[dist] = None
    try:
        import nelloc  # noqa: F401

        out["nelloc_importable"] = "yes"
    except Exception as exc:  # noqa: BLE001
        out["nelloc_importable"] = f"no ({type(exc).__name__})"
    return out


def command_line(argv: Sequence[str] | None = None) -> str:
    import shlex

    args = list(sys.argv[1:] if argv is None else argv)
    return "python -m codec_bench " + shlex.join(args)


# --------------------------------------------------------------------------
# Driver


def run_benchmark(
    dataset: Dataset,
    codecs: Sequence[Codec],
    *,
    repeat: int | None = None,
    memory: str = "rss",
    progress: bool = False,
    command: str | None = None,
    limit: int | None = None,
) -> dict[str, Any]:
    """Run every available codec on every image; return the results document.

    The document's ``per_image`` list holds one row per (image, codec); it is
    written to CSV, not to the JSON file.
    """
    meter = MemoryMeter(memory)
    runs = [CodecRun(c, repeat) for c in codecs]
    active = [r for r in runs if r.available]
    t0 = time.perf_counter()
    total_pixels = total_subpixels = 0
    channels: dict[str, int] = {}
    bar = tqdm(dataset, total=len(dataset), desc=dataset.name, unit="img",
               disable=not progress, file=sys.stderr)
    for image_id, image in bar:
        total_pixels += image.shape[0] * image.shape[1]
        total_subpixels += image.size
        key = "gray" if image.ndim == 2 else {3: "rgb", 4: "rgba"}[image.shape[2]]
        channels[key] = channels.get(key, 0) + 1
        for run in active:
            run.records.append(measure_image(run.codec, image_id, image, meter, run.repeat))
    return {
        "schema_version": SCHEMA_VERSION,
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": command if command is not None else command_line(),
        "cwd": str(Path.cwd()),
        "dataset": {
            "name": dataset.name,
            "source": dataset.source,
            "n_images": len(dataset),
            "limit": limit,
            "pixels": total_pixels,
            "subpixels": total_subpixels,
            "image_kinds": channels,
        },
        "settings": {
            "repeat": repeat if repeat is not None else "codec default (3; 1 for nelloc)",
            "memory_method": meter.method,
            "memory_description": meter.description,
            "timing": "median of repeats per image (one run where the first round trip took >= "
                      f"{SLOW_ROUND_TRIP_S:g} s), summed over images; MP/s = pixels (H*W) / time",
        },
        "machine": machine_info(),
        "versions": library_versions(),
        "wall_s": time.perf_counter() - t0,
        "results": [r.summary(meter.method) for r in runs],
        "per_image": [
            {
                "image": rec.image_id,
                "shape": "x".join(map(str, rec.shape)),
                "codec": run.codec.label,
                "status": rec.status,
                "bytes": rec.nbytes if rec.status == "ok" else None,
                "bpsp": 8 * rec.nbytes / rec.subpixels if rec.status == "ok" else None,
                "encode_s": rec.encode_s if rec.status == "ok" else None,
                "decode_s": rec.decode_s if rec.status == "ok" else None,
                "peak_memory_bytes": rec.peak_memory_bytes,
                "error": rec.error,
            }
            for run in active
            for rec in run.records
        ],
    }
