"""Whole images <-> .nlc bytes: modes, alpha, fallback, ICC profile, checksums.

* L and RGB are coded by the neural codec (gray / rgb model); LA and RGBA add the alpha plane as a
  separate grey plane (a constant alpha, e.g. fully opaque, costs one byte).
* Every other mode Pillow can read (1, P, PA, I;16, I, F, CMYK, YCbCr, LAB, HSV, ...) is stored
  losslessly by the fallback: a PNG of the image when PNG round-trips it exactly, otherwise the
  raw pixel bytes (plus palette) compressed with LZMA.
"""

from __future__ import annotations

import io
import lzma
import re
import struct
import zlib
from pathlib import Path
from typing import Sequence, Union

import numpy as np
from PIL import Image, ImageMode, UnidentifiedImageError

from nelloc import adapt
from nelloc import container as ct
from nelloc import zoo
from nelloc.adapt import DEFAULT_BLOCK
from nelloc.codec import DEFAULT_TILE, PlaneJob, choose_model, decode_planes, encode_segments, resolve_device
from nelloc.errors import BadStreamError, ModelError, NellocError, UnsupportedImageError

ImageLike = Union[np.ndarray, Image.Image, str, Path, bytes]
NEURAL_MODES = {"L": (1, False), "LA": (1, True), "RGB": (3, False), "RGBA": (3, True)}
MAX_TILE = 1 << 16
MAX_BLOCK = 1 << 16
ARITHMETIC_OF_VERSION = {1: 1, 2: 2, 3: 2, 4: 2, 5: 2}  # container format version -> network arithmetic (nelloc.exact)
Image.MAX_IMAGE_PIXELS = None  # we enforce our own limit (max_pixels) with a clear message


def _array_mode(arr: np.ndarray) -> str:
    if arr.dtype == np.bool_:
        return "1"
    if arr.dtype == np.uint16 and arr.ndim == 2:
        return "I;16"
    if arr.dtype != np.uint8:
        raise UnsupportedImageError(f"unsupported array dtype {arr.dtype} (use uint8, or uint16 for 16-bit grey)")
    modes = {2: "L"} if arr.ndim == 2 else {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}
    key = 2 if arr.ndim == 2 else arr.shape[2] if arr.ndim == 3 else None
    if key not in modes:
        raise UnsupportedImageError(f"unsupported array shape {arr.shape} (use (H, W) or (H, W, 1|2|3|4))")
    return modes[key]


def to_image(image: ImageLike, max_pixels: int = ct.DEFAULT_MAX_PIXELS) -> Image.Image:
    """Open a path or encoded bytes (PNG, ...), wrap an array, or pass a PIL image through (loaded,
    with its ICC profile).  A file is refused before its pixels are read if it has more than
    ``max_pixels`` (a few bytes of PNG can claim gigapixels)."""
    if isinstance(image, Image.Image):
        image.load()
        return image
    if isinstance(image, np.ndarray):
        _array_mode(image)  # validates dtype and shape
        if image.ndim == 3 and image.shape[2] == 1:
            image = image[..., 0]
        if image.size == 0:
            raise UnsupportedImageError("empty image")
        return Image.fromarray(np.ascontiguousarray(image))
    if isinstance(image, (bytes, bytearray)):
        path, image = Path("<bytes>"), io.BytesIO(image)
    else:
        path = image = Path(image)
    try:
        im = Image.open(image)
        _refuse_lossy_read(im, path)
        if im.size[0] * im.size[1] > max_pixels:
            raise UnsupportedImageError(f"{path}: {ct.pixel_limit_message(*im.size, max_pixels)}")
        im.load()
    except FileNotFoundError:
        raise UnsupportedImageError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise UnsupportedImageError(f"{path}: is a directory") from None
    except UnidentifiedImageError:
        raise UnsupportedImageError(f"{path}: not an image Pillow can read (unknown format)") from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise UnsupportedImageError(f"{path}: not an image Pillow can read ({exc})") from None
    return im


# Pillow unpacks these 16-bit-per-sample layouts into 8-bit modes, dropping the low byte.  ("RGB;16" and
# "BGR;16" without an endianness letter are 5-6-5 pixels, which 8 bits per channel hold exactly.)
_SIXTEEN_BIT_SAMPLES = re.compile(r";16[BLN]$|^(?!RGB;16$|BGR;16$)[A-Z]+;16$")


def _refuse_lossy_read(im: Image.Image, path: Path) -> None:
    """Refuse sources that Pillow would read with less than they hold: frames after the first of an
    animation or multi-page file, and 16-bit colour samples read as 8-bit."""
    frames = getattr(im, "n_frames", 1)
    if frames > 1:
        raise UnsupportedImageError(f"{path}: has {frames} frames (animated or multi-page); NeLLoC codes single images")
    if ImageMode.getmode(im.mode).typestr != "|u1":
        return
    for codec_name, _, _, args, *_ in im.tile:  # (codec, extents, offset, args), a plain tuple in older Pillow
        rawmode = args[0] if isinstance(args, tuple) else args
        ppm_maxval = args[1] if codec_name.startswith("ppm") and isinstance(args, tuple) else 255
        if (isinstance(rawmode, str) and _SIXTEEN_BIT_SAMPLES.search(rawmode)) or ppm_maxval > 255:
            raise UnsupportedImageError(
                f"{path}: 16 bits per sample is supported for plain grey only, not colour or alpha "
                f"(it would be read as 8-bit {im.mode})")


def _planes(im: Image.Image) -> tuple[np.ndarray, np.ndarray | None]:
    arr = np.asarray(im)
    if arr.ndim == 2:
        arr = arr[..., None]
    channels, has_alpha = NEURAL_MODES[im.mode]
    main = np.ascontiguousarray(arr[..., :channels])
    alpha = np.ascontiguousarray(arr[..., channels:]) if has_alpha else None
    return main, alpha


def _default_model(plane: np.ndarray, tile: int) -> str:
    """The installed default that codes this plane best (``codec.choose_model``); thumbnails, below
    ``zoo.PHOTO_MIN_PIXELS``, get the first candidate without the estimate."""
    names = zoo.default_candidates(plane.shape[2])
    if len(names) == 1 or plane.shape[0] * plane.shape[1] < zoo.PHOTO_MIN_PIXELS:
        return names[0]
    return names[choose_model([zoo.load(n) for n in names], plane, tile)]


def _neural_segment(plane: np.ndarray, model_name: str, tile: int) -> ct.Segment:
    """A neural segment whose payload is filled in later, when its model codes a batch of planes."""
    return ct.Segment(ct.SEG_NEURAL, plane.shape[2], model_name, b"", tile, payload=b"")


def _encode_segments(jobs: dict[str, list[tuple[np.ndarray, ct.Segment]]], tile: int, dev, block: int,
                     effort: int = adapt.DEFAULT_EFFORT) -> None:
    """Fill in the payloads: one batched ``encode_planes`` call per model."""
    for model_name, items in jobs.items():
        model = zoo.load(model_name).to(dev)
        for plane, _ in items:
            if model.cfg.channels != plane.shape[2]:
                raise ModelError(f"model {model_name!r} codes {model.cfg.channels}-channel planes, not {plane.shape[2]}")
        coded = encode_segments(model, [plane for plane, _ in items], tile, dev, block, effort)
        for (_, seg), plane in zip(items, coded):
            seg.model_id = bytes.fromhex(model.sha256)[: ct.MODEL_ID_BYTES]
            seg.block, seg.bias, seg.payload = plane.block, plane.bias, plane.payload


def _fallback_segment(im: Image.Image) -> ct.Segment:
    try:
        buf = io.BytesIO()
        im.save(buf, format="PNG", optimize=True)
        back = Image.open(io.BytesIO(buf.getvalue()))
        back.load()
        if back.mode == im.mode and back.tobytes() == im.tobytes() and back.getpalette() == im.getpalette():
            return ct.Segment(ct.SEG_FALLBACK, len(im.getbands()), method=ct.FALLBACK_PNG, payload=buf.getvalue())
    except (OSError, ValueError, KeyError):
        pass
    palette = im.palette
    pal_mode = (palette.mode if palette is not None else "").encode("ascii")
    pal_bytes = bytes(im.getpalette(rawmode=palette.mode) or b"") if palette is not None else b""
    head = struct.pack("<B", len(pal_mode)) + pal_mode + struct.pack("<I", len(pal_bytes)) + pal_bytes
    payload = head + lzma.compress(im.tobytes(), preset=9)
    return ct.Segment(ct.SEG_FALLBACK, len(im.getbands()), method=ct.FALLBACK_RAW_LZMA, payload=payload)


XMP_PNG_KEYWORD = "XML:com.adobe.xmp"  # the iTXt chunk that carries XMP in a PNG


def _as_bytes(value) -> bytes:
    return value.encode("utf-8") if isinstance(value, str) else bytes(value)


def metadata_of(im: Image.Image) -> list[tuple[str, bytes]]:
    """What ``compress`` keeps besides pixels and the ICC profile: EXIF (``info["exif"]``), XMP
    (``info["xmp"]``) and PNG text chunks (``im.text``, XMP among them), as container entries."""
    text = getattr(im, "text", None) or {}
    entries = [(f"text:{key}", _as_bytes(value)) for key, value in text.items()]
    if im.info.get("exif"):
        entries.insert(0, ("exif", _as_bytes(im.info["exif"])))
    if im.info.get("xmp") and XMP_PNG_KEYWORD not in text:
        entries.append(("xmp", _as_bytes(im.info["xmp"])))
    return entries


def _attach_metadata(im: Image.Image, entries: list[tuple[str, bytes]]) -> None:
    """Put metadata back where Pillow puts it when it reads a PNG: ``info["exif"]`` and ``info["xmp"]``
    as bytes, text chunks in ``info`` and in a ``text`` dict (as ``PngImageFile.text``)."""
    text = {}
    for key, value in entries:
        if key.startswith("text:"):
            text[key[5:]] = im.info[key[5:]] = value.decode("utf-8", errors="replace")
        elif key in ("exif", "xmp"):
            im.info[key] = value
    if XMP_PNG_KEYWORD in text:
        im.info["xmp"] = text[XMP_PNG_KEYWORD].encode("utf-8")
    if text:
        im.text = text


def _container(im: Image.Image, model, alpha_model, tile: int, jobs: dict, keep_metadata: bool) -> ct.Container:
    width, height = im.size
    if width < 1 or height < 1:
        raise UnsupportedImageError("empty image")
    icc = im.info.get("icc_profile") or b""
    c = ct.Container(width, height, im.mode, icc_profile=icc, pixel_crc=zlib.crc32(im.tobytes()))
    c.metadata = metadata_of(im) if keep_metadata else []
    # A tRNS colour key (``transparency`` of an L or RGB image) has no place in a neural segment; the PNG
    # fallback keeps it.
    if im.mode not in NEURAL_MODES or "transparency" in im.info:
        c.kind = ct.KIND_FALLBACK
        c.segments.append(_fallback_segment(im))
        return c
    main, alpha = _planes(im)
    planes = [(main, model or _default_model(main, tile))]
    if alpha is not None and (alpha == alpha.flat[0]).all():
        c.segments.append(ct.Segment(ct.SEG_CONSTANT, 1, value=int(alpha.flat[0])))
    elif alpha is not None:
        planes.append((alpha, alpha_model or zoo.default_model(1)))
    for k, (plane, name) in enumerate(planes):
        seg = _neural_segment(plane, name, tile)
        c.segments.insert(k, seg)
        jobs.setdefault(name, []).append((plane, seg))
    return c


def _check_tile(tile: int | None) -> int:
    tile = DEFAULT_TILE if tile is None else int(tile)
    if not 0 <= tile <= MAX_TILE:
        raise UnsupportedImageError(f"tile size must be between 0 (untiled) and {MAX_TILE}, got {tile}")
    return tile


def _check_block(block: int | None) -> int:
    block = DEFAULT_BLOCK if block is None else int(block)
    if not 0 <= block <= MAX_BLOCK:
        raise UnsupportedImageError(f"adaptation block size must be between 0 (off) and {MAX_BLOCK}, got {block}")
    return block


def _check_effort(effort: int, adapt_bias: bool) -> int:
    try:
        effort = adapt.check_effort(effort)
    except ValueError as e:
        raise UnsupportedImageError(str(e)) from None
    return effort if adapt_bias else 1


def compress_many(
    images: Sequence[ImageLike],
    *,
    model: str | None = None,
    alpha_model: str | None = None,
    tile: int | None = None,
    device: str = "auto",
    adapt_block: int | None = None,
    adapt_bias: bool = True,
    effort: int = adapt.DEFAULT_EFFORT,
    keep_metadata: bool = True,
) -> list[bytes]:
    """Compress several images; same-size small images share network calls (much faster for
    thumbnails).  Each result is exactly what ``compress`` gives for that image alone.
    ``adapt_block``: side of the squares that get their own log-scale offsets (``nelloc.adapt``;
    default 48, 0: none).  ``adapt_bias``: fit a per-image bias of the model's last two layers
    to planes of at least 65,536 pixels and keep it where it pays (``adapt.fit_bias``; costs encode
    time, not decode time).  ``effort`` (1-4, default 2): how hard the encoder works for that bias;
    1 fits none, 3 and 4 fit longer (smaller files, slower encoding; ``adapt.EFFORTS``), and every
    effort decodes at the same speed.  ``keep_metadata=False`` drops EXIF, XMP and PNG text (``metadata_of``);
    the ICC profile is always kept."""
    tile = _check_tile(tile)
    block = _check_block(adapt_block)
    effort = _check_effort(effort, adapt_bias)
    dev = resolve_device(device)
    jobs: dict[str, list[tuple[np.ndarray, ct.Segment]]] = {}
    containers = [_container(to_image(image), model, alpha_model, tile, jobs, keep_metadata) for image in images]
    _encode_segments(jobs, tile, dev, block, effort)
    return [ct.dumps(c) for c in containers]


def compress(
    image: ImageLike,
    *,
    model: str | None = None,
    alpha_model: str | None = None,
    tile: int | None = None,
    device: str = "auto",
    adapt_block: int | None = None,
    adapt_bias: bool = True,
    effort: int = adapt.DEFAULT_EFFORT,
    keep_metadata: bool = True,
) -> bytes:
    """Compress an image (path, PIL image or uint8 array) to .nlc bytes."""
    return compress_many([image], model=model, alpha_model=alpha_model, tile=tile, device=device,
                         adapt_block=adapt_block, adapt_bias=adapt_bias, effort=effort,
                         keep_metadata=keep_metadata)[0]


def _model_for(seg: ct.Segment):
    """The installed model a segment was made with: the one whose SHA-256 starts with its id
    (tried first under the name that format versions 1 and 2 also store)."""
    want = seg.model_id.hex()
    model = None
    if seg.model_name:
        try:
            model = zoo.load(seg.model_name)
            if model.sha256.startswith(want):
                return model
        except ModelError:
            model = None
    other = zoo.find_by_id(want)
    if other is not None:
        return other
    installed = ", ".join(f"{n} ({sha[:8]})" for n, sha in zoo.installed_hashes().items()) or "none"
    named = f"model {seg.model_name!r} with id {want}" if seg.model_name else f"the model with id {want}"
    raise ModelError(f"stream needs {named}, which is not installed (installed: {installed}; see `nelloc models`)")


def _model_name(seg: ct.Segment) -> str | None:
    """The segment's model name: stored (versions 1, 2), else the installed model with its id."""
    if seg.model_name:
        return seg.model_name
    return zoo.name_of_id(seg.model_id.hex())


def _decode_fallback(seg: ct.Segment, c: ct.Container) -> Image.Image:
    try:
        if seg.method == ct.FALLBACK_PNG:
            with Image.open(io.BytesIO(seg.payload)) as png:
                return png.copy()  # a plain Image: metadata goes into it as into a neural one
        if seg.method == ct.FALLBACK_RAW_LZMA:
            p = seg.payload
            n = p[0]
            pal_mode = p[1 : 1 + n].decode("ascii")
            (plen,) = struct.unpack("<I", p[1 + n : 5 + n])
            pal = p[5 + n : 5 + n + plen]
            im = Image.frombytes(c.mode, (c.width, c.height), lzma.decompress(p[5 + n + plen :]))
            if pal_mode:
                im.putpalette(pal, rawmode=pal_mode)
            return im
    except (OSError, ValueError, IndexError, struct.error, lzma.LZMAError, UnicodeDecodeError) as exc:
        raise BadStreamError(f"corrupted fallback payload ({exc})") from None
    raise BadStreamError(f"unknown fallback method {seg.method}")


def _neural_jobs(c: ct.Container) -> list[ct.Segment]:
    """The segments of a neural container that need the network (checked against the mode)."""
    if c.mode not in NEURAL_MODES:
        raise BadStreamError(f"corrupted header: mode {c.mode!r} cannot be neural-coded")
    channels, has_alpha = NEURAL_MODES[c.mode]
    expected = [channels] + ([1] if has_alpha else [])
    if [s.channels for s in c.segments] != expected or any(s.type == ct.SEG_FALLBACK for s in c.segments):
        raise BadStreamError("corrupted header: segments do not match the image mode")
    for seg in c.segments:
        if seg.type == ct.SEG_NEURAL and seg.tile > MAX_TILE:
            raise BadStreamError(f"corrupted header: tile size {seg.tile}")
        if seg.type == ct.SEG_NEURAL and seg.block > MAX_BLOCK:
            raise BadStreamError(f"corrupted header: adaptation block size {seg.block}")
    return [seg for seg in c.segments if seg.type == ct.SEG_NEURAL]


def _decode_planes(work: list[tuple[ct.Container, ct.Segment]], dev, progress) -> dict[int, np.ndarray | Exception]:
    """Decoded plane (or the error) for every (container, segment), batched per model."""
    by_model: dict[str, tuple[object, list]] = {}
    results: dict[int, np.ndarray | Exception] = {}
    for c, seg in work:
        try:
            model = _model_for(seg)
            if model.cfg.channels != seg.channels:
                raise BadStreamError("corrupted header: model does not match the plane")
        except NellocError as exc:
            results[id(seg)] = exc
            continue
        by_model.setdefault((model.sha256, c.version, seg.bias), (model, []))[1].append((c, seg))
    for (_, version, bias), (model, items) in by_model.items():
        if bias is not None:
            try:
                model = model.with_bias(bias)
            except ModelError as exc:
                for _, seg in items:
                    results[id(seg)] = BadStreamError(f"corrupted header: {exc}")
                continue
        jobs = [PlaneJob(seg.payload, c.height, c.width, seg.tile, seg.block) for c, seg in items]
        arithmetic = ARITHMETIC_OF_VERSION[version]
        for (_, seg), plane in zip(items, decode_planes(model.to(dev), jobs, dev, progress, arithmetic)):
            results[id(seg)] = plane
    return results


def _assemble(c: ct.Container, planes: dict[int, np.ndarray | Exception]) -> Image.Image:
    arrays = []
    for seg in c.segments:
        if seg.type == ct.SEG_CONSTANT:
            arrays.append(np.full((c.height, c.width, seg.channels), seg.value, np.uint8))
            continue
        plane = planes[id(seg)]
        if isinstance(plane, Exception):
            raise plane
        arrays.append(plane)
    arr = np.concatenate(arrays, axis=2)
    return Image.fromarray(arr[..., 0] if arr.shape[2] == 1 else arr, mode=c.mode)


def _finish(c: ct.Container, im: Image.Image, as_array: bool) -> Image.Image | np.ndarray:
    if im.mode != c.mode or im.size != (c.width, c.height):
        raise BadStreamError("corrupted stream: decoded image does not match the header")
    try:
        raw = im.tobytes()
    except (ValueError, OSError) as exc:  # e.g. a palette of the wrong size in a raw fallback
        raise BadStreamError(f"corrupted stream: decoded image is invalid ({exc})") from None
    if zlib.crc32(raw) != c.pixel_crc:
        raise BadStreamError("corrupted stream: decoded pixels fail the checksum")
    if c.icc_profile:
        im.info["icc_profile"] = c.icc_profile
    _attach_metadata(im, c.metadata)
    return np.asarray(im) if as_array else im


def decompress_many(
    streams: Sequence[bytes],
    *,
    device: str = "auto",
    max_pixels: int = ct.DEFAULT_MAX_PIXELS,
    as_array: bool = False,
    progress=None,
    errors: str = "raise",
) -> list:
    """Decode several .nlc streams in one batched wavefront (all planes of a model advance together).

    With ``errors="return"`` a stream that fails gives its exception in its place in the list and
    the others still decode; with ``"raise"`` the first failure is raised.
    """
    dev = resolve_device(device)
    parsed: list[ct.Container | Exception] = []
    work = []
    for data in streams:
        try:
            c = ct.loads(data, max_pixels=max_pixels)
            if c.kind == ct.KIND_FALLBACK:
                if len(c.segments) != 1 or c.segments[0].type != ct.SEG_FALLBACK:
                    raise BadStreamError("corrupted header: fallback file without its payload")
            else:
                work += [(c, seg) for seg in _neural_jobs(c)]
            parsed.append(c)
        except NellocError as exc:
            parsed.append(exc)
    planes = _decode_planes(work, dev, progress)
    out = []
    for c in parsed:
        try:
            if isinstance(c, Exception):
                raise c
            im = _decode_fallback(c.segments[0], c) if c.kind == ct.KIND_FALLBACK else _assemble(c, planes)
            out.append(_finish(c, im, as_array))
        except NellocError as exc:
            if errors == "raise":
                raise
            out.append(exc)
    return out


def decompress(
    data: bytes,
    *,
    device: str = "auto",
    max_pixels: int = ct.DEFAULT_MAX_PIXELS,
    as_array: bool = False,
    progress=None,
) -> Image.Image | np.ndarray:
    """Decode .nlc bytes to the original PIL image (or its numpy array with ``as_array``).

    ``progress``, if given, is called with the number of pixels decoded at each wavefront step.
    Raises ``BadStreamError`` for any malformed or corrupted stream and ``ModelError`` when the
    model it was made with is not installed.
    """
    return decompress_many([data], device=device, max_pixels=max_pixels, as_array=as_array, progress=progress)[0]


_TORCH_THREADS: int | None = None  # torch's own default, kept for set_threads(None)


def set_threads(n: int | None) -> None:
    """CPU threads for the network (torch) and the CDF kernel; None restores the defaults.

    Speed only: streams and decoded pixels never depend on it (tested with 1 and 2 threads).
    """
    import torch

    from nelloc import mixture

    global _TORCH_THREADS
    if _TORCH_THREADS is None:
        _TORCH_THREADS = torch.get_num_threads()
    torch.set_num_threads(n or _TORCH_THREADS)
    mixture.set_threads(n)


def info(data: bytes, max_pixels: int = ct.DEFAULT_MAX_PIXELS) -> dict:
    """Header fields and rates of a .nlc stream (checks its checksums, does not decode)."""
    c = ct.loads(data, max_pixels=max_pixels)
    subpixels = c.width * c.height * max(1, sum(s.channels for s in c.segments))
    return {
        "format_version": c.version,
        "width": c.width,
        "height": c.height,
        "mode": c.mode,
        "kind": "neural" if c.kind == ct.KIND_NEURAL else "fallback",
        "icc_profile_bytes": len(c.icc_profile),
        "metadata": [{"key": key, "bytes": len(value)} for key, value in c.metadata],
        "pixel_crc32": f"{c.pixel_crc:08x}",
        "file_bytes": len(data),
        "bits_per_subpixel": 8 * len(data) / subpixels,
        "segments": [
            {
                "type": {ct.SEG_NEURAL: "neural", ct.SEG_CONSTANT: "constant", ct.SEG_FALLBACK: "fallback"}[s.type],
                "channels": s.channels,
                **({"model": _model_name(s), "model_id": s.model_id.hex(), "tile": s.tile,
                    "adapt_block": s.block, "bias": list(s.bias) if s.bias else None}
                   if s.type == ct.SEG_NEURAL else {}),
                **({"value": s.value} if s.type == ct.SEG_CONSTANT else {}),
                **({"method": "png" if s.method == ct.FALLBACK_PNG else "raw-lzma"} if s.type == ct.SEG_FALLBACK else {}),
                "payload_bytes": len(s.payload),
            }
            for s in c.segments
        ],
    }
