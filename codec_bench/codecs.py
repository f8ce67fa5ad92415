"""Lossless image codecs under test: one small class per codec, plus a registry.

Every codec maps a uint8 numpy array of shape (H, W), (H, W, 3) or (H, W, 4)
to bytes and back. The harness (``codec_bench.run``) checks each round trip
bit-exact; codecs themselves do not verify anything.

A codec that cannot handle a particular image by design (QOI on grayscale)
raises :class:`Unsupported`; any other exception is a failure.
"""

from __future__ import annotations

import abc
import importlib
import io
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any, Callable, ClassVar

import numpy as np
from PIL import Image

__all__ = [
    "Codec",
    "Unsupported",
    "REGISTRY",
    "DEFAULT_CODECS",
    "make_codec",
    "parse_codec_specs",
]


class Unsupported(Exception):
    """The codec cannot represent this image (e.g. QOI and grayscale)."""


def _mode_for(array: np.ndarray) -> str:
    """Pillow mode for a uint8 array of shape (H,W), (H,W,3) or (H,W,4)."""
    if array.ndim == 2:
        return "L"
    return {3: "RGB", 4: "RGBA"}[array.shape[2]]


def _imagecodecs() -> Any:
    import imagecodecs

    return imagecodecs


class Codec(abc.ABC):
    """Base class. Subclasses set ``name`` and implement encode/decode."""

    name: ClassVar[str] = "codec"
    description: ClassVar[str] = ""
    default_repeat: ClassVar[int] = 3
    neural: ClassVar[bool] = False

    def __init__(self, **options: Any) -> None:
        if options:
            raise TypeError(f"{self.name}: unknown options {sorted(options)}")
        self.options: dict[str, Any] = {}

    @property
    def label(self) -> str:
        """Name plus options, as typed on the command line."""
        if not self.options:
            return self.name
        opts = ",".join(f"{k}={v}" for k, v in self.options.items())
        return f"{self.name}:{opts}"

    def available(self) -> tuple[bool, str]:
        return True, ""

    def version(self) -> str | None:
        return None

    @abc.abstractmethod
    def encode(self, array: np.ndarray) -> bytes:
        """Implemented by each codec."""

    @abc.abstractmethod
    def decode(self, data: bytes) -> np.ndarray:
        """Implemented by each codec."""

    def model_size_bytes(self) -> int | None:
        return None

    def extra_metrics(self, array: np.ndarray) -> dict[str, float | None]:
        """Per-image side metrics computed outside the timed loop."""
        return {}


# --------------------------------------------------------------------------
# Pillow codecs


class PNGCodec(Codec):
    name = "png"
    description = "Pillow PNG, compress_level=9, optimize=True"

    def version(self) -> str | None:
        from PIL import features

        return f"libpng via Pillow (zlib {features.version('zlib')})"

    def encode(self, array: np.ndarray) -> bytes:
        buf = io.BytesIO()
        Image.fromarray(array, _mode_for(array)).save(
            buf, format="PNG", compress_level=9, optimize=True
        )
        return buf.getvalue()

    def decode(self, data: bytes) -> np.ndarray:
        with Image.open(io.BytesIO(data)) as im:
            return np.asarray(im)


class WebPCodec(Codec):
    name = "webp"
    description = (
        "Pillow WebP lossless, method=6, quality=100, exact=True; gray is coded as R=G=B "
        "plus a 1-byte gray marker (counted in the size)"
    )
    GRAY_MARK: ClassVar[bytes] = b"G"  # WebP streams start with b"RIFF"

    def available(self) -> tuple[bool, str]:
        from PIL import features

        if not features.check("webp"):
            return False, "Pillow built without WebP support"
        return True, ""

    def version(self) -> str | None:
        from PIL import features

        return f"libwebp {features.version('webp')} via Pillow"

    def encode(self, array: np.ndarray) -> bytes:
        gray = array.ndim == 2
        if gray:  # WebP has no gray mode: replicate into RGB, undone on decode.
            array = np.repeat(array[:, :, None], 3, axis=2)
        buf = io.BytesIO()
        Image.fromarray(array, _mode_for(array)).save(
            buf, format="WEBP", lossless=True, method=6, quality=100, exact=True
        )
        return (self.GRAY_MARK if gray else b"") + buf.getvalue()

    def decode(self, data: bytes) -> np.ndarray:
        gray = data[:1] == self.GRAY_MARK
        with Image.open(io.BytesIO(data[1:] if gray else data)) as im:
            out = np.asarray(im)
        return np.ascontiguousarray(out[..., 0]) if gray else out


# --------------------------------------------------------------------------
# imagecodecs codecs


class _ImagecodecsCodec(Codec):
    """Common availability check for codecs backed by imagecodecs."""

    ic_name: ClassVar[str] = ""

    def available(self) -> tuple[bool, str]:
        try:
            ic = _imagecodecs()
        except ImportError as exc:
            return False, f"imagecodecs not installed ({exc})"
        codec = getattr(ic, self.ic_name.upper(), None)
        if codec is None or not codec.available:
            return False, f"imagecodecs built without {self.ic_name}"
        return True, ""

    def version(self) -> str | None:
        ic = _imagecodecs()
        return f"{getattr(ic, self.ic_name + '_version')()} (imagecodecs {ic.__version__})"


class JpegXLCodec(_ImagecodecsCodec):
    name = "jpegxl"
    ic_name = "jpegxl"

    def __init__(self, effort: int = 7, **options: Any) -> None:
        super().__init__(**options)
        self.effort = int(effort)
        self.options = {"effort": self.effort}

    @property
    def description(self) -> str:  # type: ignore[override]
        return f"imagecodecs JPEG XL, lossless=True, effort={self.effort}, 1 thread"

    def encode(self, array: np.ndarray) -> bytes:
        # distance=0 alone is *not* lossless in imagecodecs: lossless=True is required.
        return _imagecodecs().jpegxl_encode(
            array, lossless=True, effort=self.effort, numthreads=1
        )

    def decode(self, data: bytes) -> np.ndarray:
        return _imagecodecs().jpegxl_decode(data, numthreads=1)


class JpegXLE7(JpegXLCodec):
    name = "jpegxl-e7"

    def __init__(self, **options: Any) -> None:
        super().__init__(effort=7, **options)
        self.options = {}


class JpegXLE9(JpegXLCodec):
    name = "jpegxl-e9"

    def __init__(self, **options: Any) -> None:
        super().__init__(effort=9, **options)
        self.options = {}


class Jpeg2000Codec(_ImagecodecsCodec):
    name = "jpeg2000"
    ic_name = "jpeg2k"
    description = "imagecodecs JPEG 2000 (OpenJPEG), reversible 5/3, J2K codestream"

    def encode(self, array: np.ndarray) -> bytes:
        return _imagecodecs().jpeg2k_encode(array, level=0, reversible=True, numthreads=1)

    def decode(self, data: bytes) -> np.ndarray:
        return _imagecodecs().jpeg2k_decode(data, numthreads=1)


class JpegLSCodec(_ImagecodecsCodec):
    name = "jpegls"
    ic_name = "jpegls"
    description = "imagecodecs JPEG-LS (CharLS), NEAR=0, no colour transform"

    def encode(self, array: np.ndarray) -> bytes:
        return _imagecodecs().jpegls_encode(array, level=0)

    def decode(self, data: bytes) -> np.ndarray:
        return _imagecodecs().jpegls_decode(data)


class AVIFCodec(_ImagecodecsCodec):
    name = "avif"
    ic_name = "avif"
    description = "imagecodecs AVIF (libavif), level=100 (lossless), 4:4:4, 1 thread"

    def encode(self, array: np.ndarray) -> bytes:
        # level=100 selects libavif's lossless mode (identity matrix, 4:4:4);
        # the harness still verifies every round trip, so a lossy result fails.
        return _imagecodecs().avif_encode(array, level=100, pixelformat=444, numthreads=1)

    def decode(self, data: bytes) -> np.ndarray:
        return _imagecodecs().avif_decode(data, numthreads=1)


class QOICodec(_ImagecodecsCodec):
    name = "qoi"
    ic_name = "qoi"
    description = "imagecodecs QOI (RGB/RGBA only)"

    def encode(self, array: np.ndarray) -> bytes:
        if array.ndim != 3 or array.shape[2] not in (3, 4):
            raise Unsupported("QOI supports RGB/RGBA only (grayscale image)")
        return _imagecodecs().qoi_encode(array)

    def decode(self, data: bytes) -> np.ndarray:
        return _imagecodecs().qoi_decode(data)


# --------------------------------------------------------------------------
# External binaries (temp files)


class _BinaryCodec(Codec):
    """Codec driven by an external encoder/decoder binary through temp files."""

    binaries: ClassVar[tuple[str, ...]] = ()
    suffix: ClassVar[str] = ".bin"
    install_hint: ClassVar[str] = ""

    def available(self) -> tuple[bool, str]:
        missing = [b for b in self.binaries if shutil.which(b) is None]
        if missing:
            return False, f"not installed ({', '.join(missing)} not on PATH{self.install_hint})"
        return True, ""

    @abc.abstractmethod
    def encode_cmd(self, src: Path, dst: Path) -> list[str]:
        """Implemented by each codec."""

    @abc.abstractmethod
    def decode_cmd(self, src: Path, dst: Path) -> list[str]:
        """Implemented by each codec."""

    def encode(self, array: np.ndarray) -> bytes:
        with tempfile.TemporaryDirectory(prefix="codec_bench_") as tmp:
            src, dst = Path(tmp) / "in.png", Path(tmp) / f"out{self.suffix}"
            Image.fromarray(array, _mode_for(array)).save(src, compress_level=1)
            _check_call(self.encode_cmd(src, dst))
            return dst.read_bytes()

    def decode(self, data: bytes) -> np.ndarray:
        with tempfile.TemporaryDirectory(prefix="codec_bench_") as tmp:
            src, dst = Path(tmp) / f"in{self.suffix}", Path(tmp) / "out.png"
            src.write_bytes(data)
            _check_call(self.decode_cmd(src, dst))
            with Image.open(dst) as im:
                return np.asarray(im)

    def version(self) -> str | None:
        try:
            out = subprocess.run(
                [self.binaries[0], "--version"], capture_output=True, text=True, timeout=10
            )
        except (OSError, subprocess.SubprocessError):
            return None
        text = (out.stdout or out.stderr).strip().splitlines()
        return text[0] if text else None


def _check_call(cmd: list[str]) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd[0]} exited {proc.returncode}: {proc.stderr.strip()[-300:]}")


class CjxlCodec(_BinaryCodec):
    name = "cjxl"
    binaries = ("cjxl", "djxl")
    suffix = ".jxl"
    install_hint = "; Debian: apt install libjxl-tools"
    description = "libjxl-tools cjxl -d 0 -e 7 / djxl (temp files)"

    def encode_cmd(self, src: Path, dst: Path) -> list[str]:
        return ["cjxl", str(src), str(dst), "-d", "0", "-e", "7", "--quiet"]

    def decode_cmd(self, src: Path, dst: Path) -> list[str]:
        return ["djxl", str(src), str(dst), "--quiet"]


class FLIFCodec(_BinaryCodec):
    name = "flif"
    binaries = ("flif",)
    suffix = ".flif"
    description = "flif -e (default effort) / flif -d (temp files)"

    def encode_cmd(self, src: Path, dst: Path) -> list[str]:
        return ["flif", "-e", "-o", str(src), str(dst)]

    def decode_cmd(self, src: Path, dst: Path) -> list[str]:
        return ["flif", "-d", "-o", str(src), str(dst)]


# --------------------------------------------------------------------------
# NeLLoC


class NellocCodec(Codec):
    """The project's neural codec, through ``nelloc.compress``/``decompress``."""

    name = "nelloc"
    default_repeat = 1
    neural = True

    def __init__(
        self, model: str | None = None, tile: int | None = None, device: str = "auto", adapt: int | None = None,
        bias: int | None = None, effort: int | None = None, **options: Any
    ) -> None:
        super().__init__(**options)
        self.model = model
        self.tile = None if tile is None else int(tile)
        self.adapt = None if adapt is None else int(adapt)
        self.bias = None if bias is None else int(bias)  # nelloc:bias=0: no per-image output bias
        self.effort = None if effort is None else int(effort)  # nelloc:effort=4: the longest bias fit
        self.device = device
        self.options = {
            k: v
            for k, v in (("model", model), ("tile", self.tile), ("adapt", self.adapt), ("bias", self.bias),
                         ("effort", self.effort), ("device", device))
            if v is not None and not (k == "device" and v == "auto")
        }
        self._nelloc: Any = None

    @property
    def description(self) -> str:  # type: ignore[override]
        return (
            f"nelloc.compress(model={self.model!r}, tile={self.tile!r}, adapt_block={self.adapt!r}, "
            f"adapt_bias={self.bias != 0}, effort={self.effort!r}, device={self.device!r})"
        )

    def available(self) -> tuple[bool, str]:
        try:
            nelloc = importlib.import_module("nelloc")
        except Exception as exc:  # noqa: BLE001 - any import error means unavailable
            return False, f"import nelloc failed ({type(exc).__name__}: {exc})"
        for attr in ("compress", "decompress"):
            if not callable(getattr(nelloc, attr, None)):
                return False, f"nelloc has no {attr}() yet"
        self._nelloc = nelloc
        # Smoke-test (and warm up) the model outside the timed loop.
        probe = (np.arange(64, dtype=np.uint8).reshape(8, 8) * 3)
        probe_rgb = np.stack([probe, probe[::-1], probe.T], axis=-1)
        errors = []
        for img in (probe_rgb, probe):
            try:
                self.decode(self.encode(img))
                return True, ""
            except Exception as exc:  # noqa: BLE001
                errors.append(f"{type(exc).__name__}: {exc}")
        return False, "model failed on a probe image (" + "; ".join(errors) + ")"

    def version(self) -> str | None:
        return getattr(self._nelloc, "__version__", None) if self._nelloc else None

    def encode(self, array: np.ndarray) -> bytes:
        return bytes(
            self._nelloc.compress(array, model=self.model, tile=self.tile, device=self.device, adapt_block=self.adapt,
                                  adapt_bias=self.bias != 0, **({} if self.effort is None else {"effort": self.effort}))
        )

    def decode(self, data: bytes) -> np.ndarray:
        return np.asarray(self._nelloc.decompress(data, device=self.device))

    def model_size_bytes(self) -> int | None:
        fn = _optional_attr("nelloc.zoo", "model_size_bytes")
        if fn is None:
            return None
        name = self.model
        if name is None:
            name = getattr(importlib.import_module("nelloc.zoo"), "DEFAULT_MODEL", None)
        try:
            return int(fn(name))
        except Exception:  # noqa: BLE001 - metric is optional
            return None

    def extra_metrics(self, array: np.ndarray) -> dict[str, float | None]:
        fn = _optional_attr("nelloc.codec", "likelihood_bits")
        if fn is None:
            return {"likelihood_bits": None}
        try:
            return {"likelihood_bits": float(fn(array, model=self.model))}
        except Exception:  # noqa: BLE001 - metric is optional
            return {"likelihood_bits": None}


def _optional_attr(module: str, attr: str) -> Callable[..., Any] | None:
    try:
        return getattr(importlib.import_module(module), attr, None)
    except Exception:  # noqa: BLE001
        return None


# --------------------------------------------------------------------------
# Registry and CLI spec parsing

REGISTRY: dict[str, type[Codec]] = {
    cls.name: cls
    for cls in (
        NellocCodec,
        PNGCodec,
        WebPCodec,
        JpegXLE7,
        JpegXLE9,
        JpegXLCodec,
        CjxlCodec,
        Jpeg2000Codec,
        JpegLSCodec,
        AVIFCodec,
        QOICodec,
        FLIFCodec,
    )
}

#: codecs run when ``--codecs`` is not given (``jpegxl`` is the parametrised form).
DEFAULT_CODECS: tuple[str, ...] = tuple(n for n in REGISTRY if n != "jpegxl")


def _convert(value: str) -> Any:
    if value.lower() in ("none", "null"):
        return None
    try:
        return int(value)
    except ValueError:
        return value


def make_codec(spec: str) -> Codec:
    """Build a codec from ``name`` or ``name:key=value,key=value``."""
    name, _, opts = spec.partition(":")
    name = name.strip().lower()
    if name not in REGISTRY:
        raise ValueError(f"unknown codec {name!r}; known: {', '.join(REGISTRY)}")
    kwargs: dict[str, Any] = {}
    for item in filter(None, (o.strip() for o in opts.split(","))):
        key, eq, value = item.partition("=")
        if not eq:
            raise ValueError(f"codec option {item!r} in {spec!r} is not key=value")
        kwargs[key.strip()] = _convert(value.strip())
    return REGISTRY[name](**kwargs)


def parse_codec_specs(text: str) -> list[str]:
    """Split ``"nelloc:model=rgb,tile=64,png,webp"`` into codec specs.

    A comma-separated token of the form ``key=value`` (with no ``:``) belongs to
    the preceding codec's options.
    """
    specs: list[str] = []
    for token in filter(None, (t.strip() for t in text.split(","))):
        if "=" in token and ":" not in token.split("=", 1)[0] and specs:
            sep = "," if ":" in specs[-1] else ":"
            specs[-1] = f"{specs[-1]}{sep}{token}"
        else:
            specs.append(token)
    if specs == ["all"]:
        return list(DEFAULT_CODECS)
    return specs
