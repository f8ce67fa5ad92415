"""`nelloc` command line: a thin shell over ``nelloc.api`` (and training / benchmarks / OOD).

Errors are one line on stderr (``nelloc: error: ...``) and a non-zero exit; outputs are written to
a temporary file in the destination folder and renamed into place, so a failure never leaves a
partial file, and an existing file is only replaced with ``--force``.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

import click
from tqdm import tqdm

from nelloc import api
from nelloc.adapt import DEFAULT_EFFORT, EFFORTS
from nelloc.container import DEFAULT_MAX_PIXELS
from nelloc.data import IMAGE_SUFFIXES
from nelloc.errors import NellocError

NLC_SUFFIX = ".nlc"
LOSSLESS_OUTPUTS = {".png": "PNG", ".tif": "TIFF", ".tiff": "TIFF", ".bmp": "BMP", ".webp": "WEBP",
                    ".ppm": "PPM", ".pgm": "PPM", ".pnm": "PPM"}


class CliError(NellocError):
    pass


STDIO = Path("-")  # as an input: read standard input; as an output: write standard output


def _label(path: Path, output: bool = False) -> str:
    return ("<stdout>" if output else "<stdin>") if path == STDIO else str(path)


def _read(src: Path) -> bytes:
    """The bytes of an input file, or of standard input (read once per command)."""
    if src != STDIO:
        return src.read_bytes()
    ctx = click.get_current_context()
    if "stdin" not in ctx.meta:
        ctx.meta["stdin"] = sys.stdin.buffer.read()
    return ctx.meta["stdin"]


def _stdout_option(output: str | None, to_stdout: bool) -> str | None:
    if to_stdout and output not in (None, "-"):
        raise CliError("use either -c/--stdout or -o/--output, not both")
    return "-" if to_stdout else output


def _check_stdio(dests: list[Path]) -> None:
    if STDIO in dests and sys.stdout.buffer.isatty():
        raise CliError("refusing to write binary data to a terminal (use -o FILE or redirect standard output)")


def _fail(msg: str) -> None:
    click.echo(f"nelloc: error: {msg}", err=True)


def _expand(inputs: tuple[str, ...], suffixes: set[str]) -> list[Path]:
    files: list[Path] = []
    for raw in inputs:
        p = Path(raw)
        if p == STDIO:
            files.append(STDIO)
        elif p.is_dir():
            found = sorted(q for q in p.iterdir() if q.is_file() and q.suffix.lower() in suffixes)
            if not found:
                raise CliError(f"{p}: no {'/'.join(sorted(suffixes))} files in this directory")
            files += found
        else:
            files.append(p)
    if STDIO in files and len(files) > 1:
        raise CliError("'-' (standard input) must be the only input")
    return files


def _destinations(files: list[Path], output: str | None, out_dir: str | None, suffix: str) -> list[Path]:
    if output and out_dir:
        raise CliError("use either -o/--output or --out-dir, not both")
    if output:
        if len(files) != 1:
            raise CliError("-o/--output takes one input; use --out-dir for several")
        return [Path(output)]
    if files == [STDIO] and not out_dir:
        return [STDIO]
    if STDIO in files:
        raise CliError("standard input has no name: use -o FILE or -o - (standard output)")
    base = Path(out_dir) if out_dir else None
    if base is not None and not base.is_dir():
        raise CliError(f"{base}: output directory does not exist")
    return [(base or f.parent) / (f.stem + suffix) for f in files]


def _write_atomic(dest: Path, write, force: bool) -> None:
    """Write via a temporary file in the destination folder, then rename (never a partial file);
    ``-`` writes standard output."""
    if dest == STDIO:
        out = sys.stdout.buffer
        write(out)
        out.flush()
        return
    if dest.exists() and not force:
        raise CliError(f"{dest}: already exists (use --force to overwrite)")
    if dest.is_dir():
        raise CliError(f"{dest}: is a directory")
    folder = dest.parent if str(dest.parent) else Path(".")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=folder)
    except OSError as exc:
        raise CliError(f"{dest}: cannot write to {folder} ({exc.strerror or exc})") from None
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _run_all(files, dests, work, quiet: bool, what: str) -> None:
    failures = 0
    bar = tqdm(total=len(files), desc=what, unit="file", disable=True if quiet else None, leave=False, file=sys.stderr)
    for i, (src, dest) in enumerate(zip(files, dests)):
        try:
            line = work(i, src, dest)
            if not quiet:
                tqdm.write(line, file=sys.stderr)
        except NellocError as exc:
            failures += 1
            msg = str(exc).replace("<bytes>", _label(src))
            _fail(msg if _label(src) in msg else f"{_label(src)}: {msg}")
        except OSError as exc:
            failures += 1
            _fail(f"{_label(src)}: {exc.strerror or exc}")
        bar.update(1)
    bar.close()
    if failures:
        sys.exit(1)


BATCH_PIXELS = 1 << 18  # files up to this many pixels are coded together, this many pixels a batch


class _Batches:
    """Codes runs of consecutive small files together (one batched wavefront: thumbnails decode ~9x
    faster) and hands the results out file by file, errors included."""

    def __init__(self, files: list[Path], pixels_of, code_batch) -> None:
        self.files, self.pixels_of, self.code_batch = files, pixels_of, code_batch
        self.results: dict[int, object] = {}
        self.sizes: dict[int, int | None] = {}

    def _pixels(self, i: int) -> int | None:
        if i not in self.sizes:
            try:
                self.sizes[i] = self.pixels_of(self.files[i])
            except (NellocError, OSError, ValueError):
                self.sizes[i] = None  # the real error is reported when the file is coded alone
        return self.sizes[i]

    def get(self, i: int):
        """The batched result of file ``i`` (raised if an error), or None to code it alone."""
        if i not in self.results:
            size = self._pixels(i)
            if size is None or size > BATCH_PIXELS or i + 1 >= len(self.files) or (self._pixels(i + 1) or BATCH_PIXELS + 1) > BATCH_PIXELS:
                return None
            batch, total = [], 0
            for j in range(i, len(self.files)):
                size = self._pixels(j)
                if size is None or total + size > BATCH_PIXELS:
                    break
                batch.append(j)
                total += size
            t0 = time.perf_counter()
            results = self.code_batch([self.files[j] for j in batch])
            share = (time.perf_counter() - t0) / len(batch)
            self.results.update({j: (r, share, len(batch)) for j, r in zip(batch, results)})
        result, share, n = self.results.pop(i)
        if isinstance(result, Exception):
            raise result
        return result, share, n


class _Group(click.Group):
    """Turns every failure into one line on stderr and a non-zero exit, never a traceback."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except NellocError as exc:
            _fail(str(exc))
            ctx.exit(1)
        except MemoryError:
            _fail("out of memory (for very large images, try a smaller --tile, or lower --max-pixels to refuse them)")
            ctx.exit(1)
        except KeyboardInterrupt:
            _fail("interrupted")
            ctx.exit(130)
        except BrokenPipeError:  # e.g. `nelloc models | head -1`: the reader left; stop quietly, as cat does
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())  # so that the interpreter's final flush cannot fail again
            ctx.exit(141)
        except (click.exceptions.Exit, click.ClickException, click.exceptions.Abort, SystemExit):
            raise
        except Exception as exc:  # noqa: BLE001 - a bug: still one line, and a distinct exit code
            _fail(f"internal error: {type(exc).__name__}: {exc} (please report this)")
            ctx.exit(70)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="nelloc")
def main() -> None:
    """NeLLoC: neural local lossless image compression."""


@main.command()
@click.argument("inputs", nargs=-1, required=True)
@click.option("-o", "--output", help="Output file (one input only).")
@click.option("--out-dir", help="Folder for the outputs (default: beside each input).")
@click.option("--model", help="Model for the colour / grey planes (default: colour planes of 16,384+ pixels get "
              "rgb or rgb-photo, whichever the encoder estimates codes them smaller, smaller ones rgb; gray).")
@click.option("--tile", type=click.IntRange(0, 65536), default=None, help="Tile size in pixels (0 = untiled; default 96).")
@click.option("--adapt-block", type=click.IntRange(0, 65536), default=None,
              help="Side of the squares that get their own log-scale offset per channel (0 = none; default 48).")
@click.option("--adapt-bias/--no-adapt-bias", default=True, show_default=True,
              help="Fit a per-image bias of the model's last two layers to planes of 65,536+ pixels "
                   "(smaller photos; slower encode, same decode).")
@click.option("-e", "--effort", type=click.IntRange(min(EFFORTS), max(EFFORTS)), default=DEFAULT_EFFORT, show_default=True,
              help="Encoder effort: 1 fits no per-image bias, 3 and 4 fit it longer (smaller photos, "
                   "slower encode); every effort decodes at the same speed.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--threads", type=click.IntRange(1), default=None,
              help="CPU threads (default: all cores); never changes the output.")
@click.option("--max-pixels", type=click.IntRange(1), default=DEFAULT_MAX_PIXELS, show_default=True,
              help="Refuse images larger than this (checked before they are decoded).")
@click.option("--strip", is_flag=True,
              help="Drop EXIF, XMP and PNG text (kept by default; the ICC profile is always kept).")
@click.option("-c", "--stdout", "to_stdout", is_flag=True, help="Write to standard output (same as -o -).")
@click.option("-f", "--force", is_flag=True, help="Overwrite existing outputs.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar or summary.")
def compress(inputs, output, out_dir, model, tile, adapt_block, adapt_bias, effort, device, threads, max_pixels, strip,
             to_stdout, force, quiet) -> None:
    """Compress images to .nlc files (IMG.png -> IMG.nlc; '-' reads standard input)."""
    output = _stdout_option(output, to_stdout)
    files = _expand(inputs, IMAGE_SUFFIXES)
    dests = _destinations(files, output, out_dir, NLC_SUFFIX)
    _check_stdio(dests)
    if threads:
        api.set_threads(threads)
    options = dict(model=model, tile=tile, device=device, adapt_block=adapt_block, adapt_bias=adapt_bias,
                   effort=effort, keep_metadata=not strip)

    def pixels_of(src: Path) -> int:
        from PIL import Image

        with Image.open(src) as im:  # reads the header only
            return im.size[0] * im.size[1]

    def code_batch(batch: list[Path]) -> list:
        out: list = [None] * len(batch)
        images = {}
        for k, src in enumerate(batch):
            try:
                images[k] = api.to_image(src, max_pixels=max_pixels)
            except NellocError as exc:
                out[k] = exc
        try:
            blobs = api.compress_many(list(images.values()), **options)
            for k, data in zip(images, blobs):
                out[k] = (images[k], data)
        except NellocError:  # find out which file it was: code them one by one
            for k, im in images.items():
                try:
                    out[k] = (im, api.compress(im, **options))
                except NellocError as exc:
                    out[k] = exc
        return out

    batches = _Batches(files, pixels_of, code_batch)

    def work(i: int, src: Path, dest: Path) -> str:
        if dest != STDIO and dest.exists() and not force:
            raise CliError(f"{dest}: already exists (use --force to overwrite)")
        t0 = time.perf_counter()
        batched = batches.get(i)
        if batched is None:
            im = api.to_image(_read(src) if src == STDIO else src, max_pixels=max_pixels)
            data = api.compress(im, **options)
            seconds, note = time.perf_counter() - t0, ""
        else:
            (im, data), seconds, n = batched
            note = f" (batch of {n})"
        _write_atomic(dest, lambda f: f.write(data), force)
        raw = len(im.tobytes())
        sub = im.size[0] * im.size[1] * len(im.getbands())
        return (f"{_label(src)} -> {_label(dest, output=True)}: {raw} -> {len(data)} bytes (ratio {raw / len(data):.2f}, "
                f"{8 * len(data) / sub:.3f} bits/sub-pixel) in {seconds:.2f} s{note}")

    _run_all(files, dests, work, quiet, "compress")


PNG_MODES = {"1", "L", "LA", "P", "RGB", "RGBA", "I;16"}  # modes Pillow writes and reads back as PNG


def _header(src: Path) -> dict | None:
    """``api.info`` of a .nlc file, or None if it cannot be read (the real error is reported when
    the file is decoded)."""
    try:
        return api.info(Path(src).read_bytes())
    except (NellocError, OSError):
        return None


def _default_suffix(header: dict | None) -> str:
    """.png, or .tif for the modes PNG cannot hold (CMYK, YCbCr, LAB, I, F, PA, ...)."""
    return ".tif" if header is not None and header["mode"] not in PNG_MODES else ".png"


def _metadata_options(im, fmt: str) -> dict:
    """Pillow save options that write the decoded image's EXIF, XMP and PNG text (PNG and WebP;
    the other output formats get none of it)."""
    from PIL import PngImagePlugin

    text = getattr(im, "text", None) or {}
    exif, xmp = im.info.get("exif"), im.info.get("xmp")
    if fmt == "WEBP":
        return {k: v for k, v in (("exif", exif), ("xmp", xmp)) if v}
    if fmt != "PNG" or not (text or exif or xmp):
        return {}
    chunks = PngImagePlugin.PngInfo()
    if xmp and api.XMP_PNG_KEYWORD not in text:
        text = {**text, api.XMP_PNG_KEYWORD: xmp.decode("utf-8", errors="replace")}
    for key, value in text.items():
        if key == api.XMP_PNG_KEYWORD or not value.isascii():
            chunks.add_itxt(key, value)
        else:
            chunks.add_text(key, value, zip=len(value) > 1024)
    return {"pnginfo": chunks, **({"exif": exif} if exif else {})}


def _lossless_bytes(im, fmt: str, dest: Path) -> bytes:
    """Encode ``im`` as ``fmt`` and check that reading it back gives the same mode and pixels."""
    import io

    from PIL import Image

    extra = {"lossless": True, "exact": True} if fmt == "WEBP" else {}
    if im.info.get("icc_profile"):
        extra["icc_profile"] = im.info["icc_profile"]
    extra.update(_metadata_options(im, fmt))
    buf = io.BytesIO()
    try:
        im.save(buf, format=fmt, **extra)
        back = Image.open(io.BytesIO(buf.getvalue()))
        back.load()
        same = back.mode == im.mode and back.size == im.size and back.tobytes() == im.tobytes()
        same = same and back.getpalette() == im.getpalette()
    except (OSError, ValueError, KeyError):
        same = False
    if not same:
        others = " or ".join(ext for ext, name in ((".tif", "TIFF"), (".png", "PNG")) if name != fmt)
        raise CliError(f"{dest}: {fmt} cannot hold mode {im.mode} losslessly (try -o with {others})")
    return buf.getvalue()


@main.command()
@click.argument("inputs", nargs=-1, required=True)
@click.option("-o", "--output", help="Output image (one input only); format from the suffix (default .png).")
@click.option("--out-dir", help="Folder for the outputs (default: beside each input).")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--max-pixels", type=click.IntRange(1), default=DEFAULT_MAX_PIXELS, show_default=True,
              help="Refuse streams that claim more pixels than this.")
@click.option("--threads", type=click.IntRange(1), default=None,
              help="CPU threads (default: all cores); never changes the output.")
@click.option("-c", "--stdout", "to_stdout", is_flag=True, help="Write to standard output (same as -o -).")
@click.option("-t", "--test", "test_only", is_flag=True,
              help="Decode and check every file (both CRCs), write nothing; exit 1 if any fails.")
@click.option("-f", "--force", is_flag=True, help="Overwrite existing outputs.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar or summary.")
def decompress(inputs, output, out_dir, device, max_pixels, threads, to_stdout, test_only, force, quiet) -> None:
    """Decompress .nlc files to images (IMG.nlc -> IMG.png; '-' reads standard input).

    Standard output gets PNG, or TIFF for modes PNG cannot hold."""
    output = _stdout_option(output, to_stdout)
    if test_only and (output or out_dir):
        raise CliError("--test writes nothing: drop -o / --out-dir / --stdout")
    files = _expand(inputs, {NLC_SUFFIX})
    dests = list(files) if test_only else _destinations(files, output, out_dir, ".png")
    _check_stdio([] if test_only else dests)
    if threads:
        api.set_threads(threads)
    headers: dict[Path, dict | None] = {}
    for i, (src, dest) in enumerate(zip(files, dests)):
        if not output and src.is_file():
            headers[src] = _header(src)
            dests[i] = dest.with_suffix(_default_suffix(headers[src]))  # unused by --test

    def pixels_of(src: Path) -> int:
        meta = headers[src] if src in headers else _header(src)
        if meta is None or meta["width"] * meta["height"] > max_pixels:
            raise CliError(f"{src}: not batched")  # decoded alone, which reports the real error
        return meta["width"] * meta["height"]

    def code_batch(batch: list[Path]) -> list:
        streams = [Path(src).read_bytes() for src in batch]
        return api.decompress_many(streams, device=device, max_pixels=max_pixels, errors="return")

    batches = _Batches(files, pixels_of, code_batch)

    def work(i: int, src: Path, dest: Path) -> str:
        if test_only:
            im, seconds, note = decode(i, src)
            return f"{_label(src)}: OK, {im.size[0]}x{im.size[1]} {im.mode} in {seconds:.2f} s{note}"
        fmt = None if dest == STDIO else LOSSLESS_OUTPUTS.get(dest.suffix.lower())  # stdout: by mode, below
        if fmt is None and dest != STDIO:
            raise CliError(f"{dest}: unsupported or lossy output format (use one of {', '.join(sorted(LOSSLESS_OUTPUTS))})")
        if dest != STDIO and dest.exists() and not force:
            if src in headers and headers[src] is None:
                decode(i, src)  # not a readable stream: report that rather than the name clash
            raise CliError(f"{dest}: already exists (use --force to overwrite)")
        im, seconds, note = decode(i, src)
        fmt = fmt or ("PNG" if im.mode in PNG_MODES else "TIFF")
        blob = _lossless_bytes(im, fmt, dest)
        _write_atomic(dest, lambda f: f.write(blob), force)
        return (f"{_label(src)} -> {_label(dest, output=True)}{' (' + fmt + ')' if dest == STDIO else ''}: "
                f"{im.size[0]}x{im.size[1]} {im.mode} in {seconds:.2f} s{note}")

    def decode(i: int, src: Path) -> tuple:
        """(image, seconds, note) of file ``i``: the CRCs are checked by ``api``."""
        t0 = time.perf_counter()
        batched = batches.get(i)
        if batched is None:
            data = _read(src)
            meta = api.info(data, max_pixels=max_pixels)
            planes = sum(1 for seg in meta["segments"] if seg["type"] == "neural")
            with tqdm(total=planes * meta["width"] * meta["height"], desc=src.name, unit="px", unit_scale=True,
                      disable=True if quiet else None, leave=False, file=sys.stderr) as bar:
                im = api.decompress(data, device=device, max_pixels=max_pixels, progress=bar.update)
            seconds, note = time.perf_counter() - t0, ""
        else:
            im, seconds, n = batched
            note = f" (batch of {n})"
        return im, seconds, note

    _run_all(files, dests, work, quiet, "test" if test_only else "decompress")


@main.command()
@click.argument("inputs", nargs=-1, required=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def info(inputs, as_json) -> None:
    """Show the header fields and bits per sub-pixel of .nlc files."""
    failures = 0
    for src in inputs:
        try:
            meta = api.info(Path(src).read_bytes())
        except (NellocError, OSError) as exc:
            failures += 1
            _fail(f"{src}: {getattr(exc, 'strerror', None) or exc}")
            continue
        if as_json:
            click.echo(json.dumps({"file": src, **meta}))
            continue
        click.echo(f"{src}: {meta['width']}x{meta['height']} {meta['mode']}, {meta['file_bytes']} bytes, "
                   f"{meta['bits_per_subpixel']:.4f} bits/sub-pixel, format v{meta['format_version']}, {meta['kind']}")
        for s in meta["segments"]:
            shown = {**s, "bias": f"{len(s['bias'])} values"} if s.get("bias") else s
            fields = ", ".join(f"{k}={v}" for k, v in shown.items())
            click.echo(f"  segment: {fields}")
        if meta["metadata"]:
            click.echo("  metadata: " + ", ".join(f"{m['key']} ({m['bytes']} bytes)" for m in meta["metadata"]))
    if failures:
        sys.exit(1)


@main.command("models")
def models_cmd() -> None:
    """List installed models (and retired ones, kept to decode older files)."""
    from nelloc import zoo

    for name, path in zoo.list_models().items():
        try:
            m = zoo.load(name)
            click.echo(f"{name}\t{m.cfg.channels}ch h={m.cfg.horizon} r={m.cfg.res_blocks} "
                       f"width={m.cfg.width} K={m.cfg.mixtures}\t{path.stat().st_size} bytes\tsha256 {m.sha256[:16]}\t{path}")
        except NellocError as exc:
            click.echo(f"{name}\tunusable: {exc}")
    for path in zoo.retired_models():  # replaced models: decode their files, never encode
        click.echo(f"(retired)\t{path.stem}\t{path.stat().st_size} bytes\t{path}")


def _check_calib_quantile(value: float) -> float:
    if 0 < value < 0.5:
        raise click.BadParameter("use 0 (keep the model's ranges) or a quantile from 0.5 to 1")
    return value


@main.command()
@click.argument("run_dir")
@click.option("--data", "data", multiple=True, help="Training set NAME[/F][:WEIGHT] (repeatable), e.g. clic:0.6; /F shrinks its images F times (clic/2:0.25).")
@click.option("--channels", type=click.Choice(["1", "3"]), default="3", show_default=True)
@click.option("--width", type=int, default=256, show_default=True)
@click.option("--res-blocks", type=int, default=1, show_default=True)
@click.option("--horizon", type=int, default=3, show_default=True)
@click.option("--mixtures", type=int, default=10, show_default=True)
@click.option("--kind", type=click.Choice(["local", "full"]), default="local", show_default=True)
@click.option("--skip/--no-skip", default=False, show_default=True,
              help="Add a linear layer from the neighbourhood to the mixture parameters (full models: so that "
                   "they can start from a local model that has one).")
@click.option("--act-bits", type=click.IntRange(4, 12), default=8, show_default=True,
              help="Local models: hidden activations are integers 0..2^BITS-1 in the exact model "
              "(10: finer; wide layers get coarser weight steps where needed to keep float32 sums exact).")
@click.option("--skip-bits", type=click.IntRange(8, 12), default=8, show_default=True,
              help="With --skip: its weights are integers in +-(2^(BITS-1)-1) in the exact model (above 8: stored as "
              "int16; finer means, measured in docs/ablations.md).")
@click.option("--first-bits", type=click.IntRange(8, 12), default=8, show_default=True,
              help="Local models: the first layer's weights are integers in +-(2^(BITS-1)-1) in the exact model "
              "(above 8: stored as int16; measured in docs/ablations.md, stop 46).")
@click.option("--coeff-bits", type=click.IntRange(8, 12), default=8, show_default=True,
              help="Colour models: the channel coefficients are integers in units of 2^-BITS in the exact model "
              "(measured in docs/ablations.md, stop 47).")
@click.option("--joint/--no-joint", default=False, show_default=True,
              help="Colour local models: mixture components shared across a pixel's channels (each channel "
              "coded with the components' posterior given the earlier ones).")
@click.option("--crop", type=int, default=32, show_default=True)
@click.option("--augment", type=click.Choice(["flip", "dihedral"]), default="flip", show_default=True,
              help="Crops mirrored left-right at random (flip), or given any of the square's 8 symmetries (dihedral).")
@click.option("--batch", type=int, default=32, show_default=True)
@click.option("--lr", type=float, default=2e-3, show_default=True)
@click.option("--steps", type=int, default=4000, show_default=True)
@click.option("--schedule", type=click.Choice(["cosine", "constant"]), default="cosine", show_default=True,
              help="Learning rate after the warm-up: cosine down to 10% at the last step, or constant (the paper's).")
@click.option("--qat-start", type=float, default=0.8, show_default=True, help="Fraction of steps before fake quantisation.")
@click.option("--calib-quantile", type=click.FloatRange(0.0, 1.0), default=1.0, show_default=True,
              callback=lambda ctx, param, v: _check_calib_quantile(v),
              help="Fake quantisation starts with each activation range at this quantile of a batch (1 = maximum; "
              "0 = keep the ranges of a model that has them, e.g. one started with --init-from).")
@click.option("--grad-clip", type=float, default=1.0, show_default=True, help="Max gradient norm (0 = off).")
@click.option("--init-from", default="", help="Start from this run (or float model file, models/float/NAME.safetensors): "
              "a full model from a 1-block local run (OOD pairs), a --skip local model from the same model without it, "
              "or a wider local model from a narrower one.")
@click.option("--device", default="cpu", show_default=True)
@click.option("--amp", type=click.Choice(["auto", "on", "off"]), default="auto", show_default=True,
              help="bfloat16 mixed precision in the float phase (auto: on CUDA, and on CPUs with native bfloat16, AVX512-BF16 or AMX).")
@click.option("--threads", type=int, default=0, help="torch threads (0 = default).")
@click.option("-q", "--quiet", is_flag=True)
def train(run_dir, data, channels, width, res_blocks, horizon, mixtures, kind, skip, act_bits, skip_bits, first_bits,
          coeff_bits, joint, crop, augment, batch, lr, steps, schedule, qat_start, calib_quantile, grad_clip, init_from, device, amp, threads, quiet) -> None:
    """Train (or resume, if RUN_DIR has a checkpoint) a model on staged data."""
    from nelloc.model import ModelConfig
    from nelloc.train import TrainConfig, Trainer, load_run_config

    if (Path(run_dir) / "last.pt").exists():
        cfg = load_run_config(run_dir)
        cfg.steps = max(cfg.steps, steps)
    else:
        model = ModelConfig(int(channels), horizon, res_blocks, width, mixtures, kind, skip, act_bits, joint, skip_bits,
                            first_bits, coeff_bits)
        cfg = TrainConfig(list(data) or ["cifar10-train"], model, crop, batch, lr, steps, qat_start=qat_start,
                          calib_quantile=calib_quantile, grad_clip=grad_clip, device=device, threads=threads, init_from=init_from, amp=amp,
                          augment=augment, schedule=schedule)
    try:
        Trainer(cfg, run_dir).run(quiet=quiet)
    except (FileNotFoundError, ValueError) as exc:
        raise CliError(str(exc)) from None


@main.command("export")
@click.argument("run_dir")
@click.option("--name", required=True, help="Model name (file NAME.safetensors).")
@click.option("--out-dir", default="models", show_default=True)
@click.option("--eval", "evaluate", multiple=True, help="Evaluation set for the model card (repeatable).")
@click.option("--limit", type=int, default=None, help="Images per evaluation set.")
def export_cmd(run_dir, name, out_dir, evaluate, limit) -> None:
    """Export a trained run to the exact model the codec runs, with its model card."""
    from nelloc.train import export_run

    card = export_run(run_dir, name, out_dir, list(evaluate), limit)
    click.echo(json.dumps({k: card[k] for k in ("name", "sha256", "parameters", "file_bytes")}))
    click.echo(json.dumps(card["evaluation"]))


@main.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True}, add_help_option=False)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def bench(args) -> None:
    """Benchmark codecs (alias of `python -m codec_bench`; try `nelloc bench --help`)."""
    from codec_bench.__main__ import main as bench_main

    sys.exit(bench_main(list(args)))


def _add_ood() -> None:
    from nelloc.ood_cli import ood

    main.add_command(ood)


_add_ood()
