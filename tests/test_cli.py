"""The `nelloc` command line: round trips, exit codes, one-line errors, no partial files."""

from __future__ import annotations

import inspect
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

import nelloc
from conftest import smooth_image
from nelloc.cli import main


def _runner() -> CliRunner:
    # click < 8.2 mixes stderr into stdout unless told not to; 8.2+ always keeps result.stderr apart
    if "mix_stderr" in inspect.signature(CliRunner.__init__).parameters:
        return CliRunner(mix_stderr=False)
    return CliRunner()


def run(*args):
    return _runner().invoke(main, [str(a) for a in args])


def assert_ok(result) -> None:
    assert result.exit_code == 0, f"exit {result.exit_code}: {result.output}"
    assert result.exception is None


def assert_error(result, *fragments: str) -> str:
    """A handled failure: non-zero exit, one line 'nelloc: error: ...' on stderr, no traceback."""
    assert result.exit_code != 0
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    err = result.stderr.strip()
    assert err.startswith("nelloc: error:"), err
    assert len(err.splitlines()) == 1, err
    assert "Traceback" not in result.output and "internal error" not in err
    for f in fragments:
        assert f in err, err
    return err


def _files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


@pytest.fixture
def rgb_png(tmp_path) -> Path:
    p = tmp_path / "img.png"
    Image.fromarray(smooth_image(8, 10, 3, seed=31)).save(p)
    return p


def _pixels_equal(a: Path, b: Path) -> bool:
    ia, ib = Image.open(a), Image.open(b)
    return ia.mode == ib.mode and ia.size == ib.size and ia.tobytes() == ib.tobytes()


# -- round trips ---------------------------------------------------------------------------------


def test_compress_then_decompress_round_trips_pixel_exact(tiny_models, rgb_png, tmp_path):
    assert_ok(run("compress", rgb_png))
    nlc = tmp_path / "img.nlc"
    assert nlc.is_file()
    out = tmp_path / "out"
    out.mkdir()
    assert_ok(run("decompress", nlc, "--out-dir", out))
    assert _files(out) == ["img.png"]
    assert _pixels_equal(rgb_png, out / "img.png")
    assert_ok(run("decompress", nlc, "-o", tmp_path / "again.tif"))
    assert _pixels_equal(rgb_png, tmp_path / "again.tif")


@pytest.mark.parametrize("mode", ["RGBA", "LA", "L"])
def test_round_trip_of_grey_and_alpha_pngs(tiny_models, tmp_path, mode):
    src = tmp_path / "a.png"
    arr = smooth_image(6, 7, {"RGBA": 4, "LA": 2, "L": 1}[mode], seed=32)
    Image.fromarray(arr[..., 0] if mode == "L" else arr).save(src)
    assert_ok(run("compress", "-q", src, "-o", tmp_path / "a.nlc"))
    assert_ok(run("decompress", "-q", tmp_path / "a.nlc", "-o", tmp_path / "b.png"))
    assert _pixels_equal(src, tmp_path / "b.png")


def test_fallback_mode_decompresses_to_tiff_by_default(tiny_models, tmp_path):
    src = tmp_path / "cmyk.tif"
    Image.fromarray(smooth_image(5, 6, 3, seed=33)).convert("CMYK").save(src)
    assert_ok(run("compress", "-q", src))
    out = tmp_path / "out"
    out.mkdir()
    assert_ok(run("decompress", "-q", tmp_path / "cmyk.nlc", "--out-dir", out))
    assert _files(out) == ["cmyk.tif"]
    assert _pixels_equal(src, out / "cmyk.tif")


def test_quiet_prints_nothing_on_success(tiny_models, rgb_png, tmp_path):
    result = run("compress", "-q", rgb_png)
    assert_ok(result)
    assert result.stdout == "" and result.stderr == ""
    result = run("decompress", "-q", tmp_path / "img.nlc", "-o", tmp_path / "back.png")
    assert_ok(result)
    assert result.stdout == "" and result.stderr == ""


def test_summary_line_without_quiet(tiny_models, rgb_png, tmp_path):
    result = run("compress", rgb_png)
    assert_ok(result)
    assert "img.png" in result.stderr and "bits/sub-pixel" in result.stderr


# -- existing outputs ----------------------------------------------------------------------------


def test_existing_output_is_an_error_and_is_left_untouched(tiny_models, rgb_png, tmp_path):
    nlc = tmp_path / "img.nlc"
    nlc.write_bytes(b"precious")
    assert_error(run("compress", rgb_png), "already exists", "--force")
    assert nlc.read_bytes() == b"precious"
    # decompressing beside the source would overwrite the original PNG: refused too
    original = rgb_png.read_bytes()
    assert_ok(run("compress", "-f", "-q", rgb_png))
    assert_error(run("decompress", nlc), "already exists")
    assert rgb_png.read_bytes() == original
    assert not [n for n in _files(tmp_path) if n.endswith(".part")]


def test_decompressing_a_non_stream_reports_that_not_the_name_clash(tiny_models, rgb_png):
    # `nelloc decompress img.png` would write img.png: the real problem is that it is not a .nlc file
    original = rgb_png.read_bytes()
    assert_error(run("decompress", rgb_png), "not a NeLLoC file")
    assert rgb_png.read_bytes() == original


def test_force_overwrites(tiny_models, rgb_png, tmp_path):
    nlc = tmp_path / "img.nlc"
    nlc.write_bytes(b"old")
    assert_ok(run("compress", "--force", "-q", rgb_png))
    assert nelloc.info(nlc.read_bytes())["width"] == 10
    rgb_png.write_bytes(b"old")
    assert_ok(run("decompress", "-f", "-q", nlc))
    assert np.array_equal(np.asarray(Image.open(rgb_png)), smooth_image(8, 10, 3, seed=31))


# -- several inputs, directories -----------------------------------------------------------------


def test_output_option_with_several_inputs_is_an_error(tiny_models, rgb_png, tmp_path):
    other = tmp_path / "other.png"
    shutil.copy(rgb_png, other)
    assert_error(run("compress", rgb_png, other, "-o", tmp_path / "x.nlc"), "-o")
    assert not (tmp_path / "x.nlc").exists()
    assert_error(run("compress", rgb_png, "-o", tmp_path / "x.nlc", "--out-dir", tmp_path))


def test_directory_input_compresses_every_image_in_it(tiny_models, tmp_path):
    src = tmp_path / "pics"
    src.mkdir()
    Image.fromarray(smooth_image(5, 6, 3, seed=34)).save(src / "a.png")
    Image.fromarray(smooth_image(4, 9, 1, seed=35)[..., 0]).save(src / "b.bmp")
    (src / "notes.txt").write_text("not an image")
    assert_ok(run("compress", "-q", src))
    assert _files(src) == ["a.nlc", "a.png", "b.bmp", "b.nlc", "notes.txt"]
    out = tmp_path / "out"
    out.mkdir()
    assert_ok(run("decompress", "-q", src, "--out-dir", out))
    assert _files(out) == ["a.png", "b.png"]
    assert _pixels_equal(src / "a.png", out / "a.png") and _pixels_equal(src / "b.bmp", out / "b.png")


def test_out_dir_puts_outputs_there(tiny_models, rgb_png, tmp_path):
    out = tmp_path / "nlc"
    out.mkdir()
    assert_ok(run("compress", "-q", rgb_png, "--out-dir", out))
    assert _files(out) == ["img.nlc"]
    assert not (tmp_path / "img.nlc").exists()


def test_nonexistent_out_dir_is_an_error(tiny_models, rgb_png, tmp_path):
    assert_error(run("compress", rgb_png, "--out-dir", tmp_path / "nope"), "does not exist")
    assert not (tmp_path / "nope").exists()


def test_empty_directory_input_is_an_error(tiny_models, tmp_path):
    (tmp_path / "empty").mkdir()
    assert_error(run("compress", tmp_path / "empty"), "files in this directory")


def test_one_bad_input_among_several_still_writes_the_others(tiny_models, rgb_png, tmp_path):
    result = run("compress", "-q", rgb_png, tmp_path / "missing.png")
    assert result.exit_code == 1
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert result.stderr.strip().startswith("nelloc: error:") and "missing.png" in result.stderr
    assert (tmp_path / "img.nlc").is_file()


# -- bad inputs ----------------------------------------------------------------------------------


def test_missing_input_is_an_error(tiny_models, tmp_path):
    assert_error(run("compress", tmp_path / "missing.png"), "missing.png")
    assert_error(run("decompress", tmp_path / "missing.nlc"), "missing.nlc")
    assert_error(run("info", tmp_path / "missing.nlc"), "missing.nlc")
    assert _files(tmp_path) == []


def test_not_an_image_is_an_error(tiny_models, tmp_path):
    p = tmp_path / "fake.png"
    p.write_text("hello")
    assert_error(run("compress", p), "fake.png", "not an image")
    assert _files(tmp_path) == ["fake.png"]


def test_truncated_nlc_is_an_error_and_leaves_no_output(tiny_models, rgb_png, tmp_path):
    assert_ok(run("compress", "-q", rgb_png, "-o", tmp_path / "x.nlc"))
    bad = tmp_path / "cut.nlc"
    bad.write_bytes((tmp_path / "x.nlc").read_bytes()[:-7])
    before = _files(tmp_path)
    assert_error(run("decompress", bad), "cut.nlc", "truncated")
    assert_error(run("info", bad), "truncated")
    assert _files(tmp_path) == before  # no cut.png, no .part file


def test_failed_decode_leaves_no_partial_file(tiny_models, rgb_png, tmp_path):
    """A stream whose payload fails the pixel checksum: the decode fails after the header was read."""
    from nelloc import container as ct

    c = ct.loads(nelloc.compress(rgb_png))
    payload = bytearray(c.segments[0].payload)
    payload[len(payload) // 2] ^= 0x55
    c.segments[0].payload = bytes(payload)
    bad = tmp_path / "bad.nlc"
    bad.write_bytes(ct.dumps(c))
    out = tmp_path / "out"
    out.mkdir()
    assert_error(run("decompress", bad, "--out-dir", out), "bad.nlc")
    assert _files(out) == []


def test_failed_write_leaves_no_partial_file(tiny_models, tmp_path):
    """CMYK cannot be stored as PNG: the error comes while writing the temporary file."""
    src = tmp_path / "c.tif"
    Image.fromarray(smooth_image(5, 6, 3, seed=36)).convert("CMYK").save(src)
    assert_ok(run("compress", "-q", src, "-o", tmp_path / "c.nlc"))
    out = tmp_path / "out"
    out.mkdir()
    assert_error(run("decompress", tmp_path / "c.nlc", "-o", out / "c.png"), "PNG cannot hold mode CMYK losslessly (try -o with .tif)")
    assert _files(out) == []


def test_unwritable_output_directory_is_an_error(tiny_models, rgb_png, tmp_path):
    if os.geteuid() == 0:
        pytest.skip("running as root: chmod 0o500 does not stop root from writing")
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        assert_error(run("compress", rgb_png, "--out-dir", ro), "cannot write")
        assert _files(ro) == []
    finally:
        ro.chmod(0o700)


def test_output_in_a_missing_folder_is_an_error(tiny_models, rgb_png, tmp_path):
    assert_error(run("compress", rgb_png, "-o", tmp_path / "no" / "such" / "x.nlc"), "cannot write")
    assert _files(tmp_path) == ["img.png"]


def test_lossy_output_suffix_is_refused(tiny_models, rgb_png, tmp_path):
    assert_ok(run("compress", "-q", rgb_png))
    assert_error(run("decompress", tmp_path / "img.nlc", "-o", tmp_path / "img.jpg"), "lossy")
    assert not (tmp_path / "img.jpg").exists()


def test_missing_model_is_an_error_naming_its_id(tiny_models, rgb_png, tmp_path, monkeypatch):
    assert_ok(run("compress", "-q", rgb_png))
    need = nelloc.info((tmp_path / "img.nlc").read_bytes())["segments"][0]["model_id"]
    empty = tmp_path / "no-models"
    empty.mkdir()
    monkeypatch.setenv("NELLOC_MODELS", str(empty))
    monkeypatch.setattr("nelloc.zoo.model_dirs", lambda: [empty])
    assert_error(run("decompress", tmp_path / "img.nlc", "-o", tmp_path / "x.png"), need, "not installed")
    assert not (tmp_path / "x.png").exists()


# -- info and models -----------------------------------------------------------------------------


def test_info_prints_size_mode_and_bits_per_subpixel(tiny_models, rgb_png, tmp_path):
    assert_ok(run("compress", "-q", rgb_png))
    nlc = tmp_path / "img.nlc"
    result = run("info", nlc)
    assert_ok(result)
    first = result.stdout.splitlines()[0]
    assert "10x8" in first and "RGB" in first and "bits/sub-pixel" in first
    bits = 8 * nlc.stat().st_size / (10 * 8 * 3)
    assert f"{bits:.4f}" in first
    assert "segment: type=neural" in result.stdout and "model=rgb" in result.stdout


def test_info_json_parses(tiny_models, rgb_png, tmp_path):
    assert_ok(run("compress", "-q", rgb_png))
    result = run("info", "--json", tmp_path / "img.nlc", tmp_path / "img.nlc")
    assert_ok(result)
    lines = result.stdout.splitlines()
    assert len(lines) == 2
    meta = json.loads(lines[0])
    assert (meta["width"], meta["height"], meta["mode"]) == (10, 8, "RGB")
    assert meta["file"].endswith("img.nlc") and meta["bits_per_subpixel"] > 0
    assert meta["segments"][0]["model"] == "rgb"


def test_models_lists_installed_models(tiny_models):
    result = run("models")
    assert_ok(result)
    names = [line.split("\t")[0] for line in result.stdout.splitlines()]
    assert "rgb" in names and "gray" in names
    rgb_line = next(line for line in result.stdout.splitlines() if line.startswith("rgb\t"))
    assert "3ch" in rgb_line and str(tiny_models) in rgb_line


# -- the installed console script ----------------------------------------------------------------


def test_console_script_exit_code_and_stderr(tiny_models, rgb_png, tmp_path):
    exe = Path(sys.executable).parent / "nelloc"
    if not exe.exists():
        exe = Path(shutil.which("nelloc") or "nelloc")
    out = tmp_path / "out"
    out.mkdir()
    proc = subprocess.run(
        [str(exe), "compress", str(rgb_png), str(tmp_path / "missing.png"), "--out-dir", str(out)],
        capture_output=True, text=True, timeout=120, env={**os.environ, "NELLOC_MODELS": str(tiny_models)},
    )
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr + proc.stdout
    errors = [line for line in proc.stderr.splitlines() if line.startswith("nelloc: error:")]
    assert len(errors) == 1 and "missing.png" in errors[0]
    assert _files(out) == ["img.nlc"]
    assert np.array_equal(nelloc.decompress((out / "img.nlc").read_bytes(), as_array=True),
                          smooth_image(8, 10, 3, seed=31))


def test_a_reader_that_goes_away_is_not_an_internal_error(tiny_models):
    """Regression: `nelloc models | head -1` printed "internal error: BrokenPipeError"."""
    exe = Path(sys.executable).parent / "nelloc"
    if not exe.exists():
        exe = Path(shutil.which("nelloc") or "nelloc")
    proc = subprocess.Popen([str(exe), "models"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, "NELLOC_MODELS": str(tiny_models)})
    proc.stdout.close()  # before nelloc writes a byte (importing torch alone takes over a second)
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141
    assert err == ""


# -- regressions (each docstring names the bug the test once caught) ------------------------------


def _fallback_nlc(tmp_path: Path, mode: str) -> tuple[Path, Image.Image]:
    rng = np.random.default_rng(37)
    if mode == "I":
        im = Image.fromarray(rng.integers(-(2**31), 2**31 - 1, (5, 7), dtype=np.int32))
    elif mode == "I;16":
        im = Image.fromarray(rng.integers(0, 65536, (5, 7), dtype=np.uint16))
    elif mode == "PA":
        im = Image.fromarray(rng.integers(0, 16, (5, 7), dtype=np.uint8)).convert("P").convert("PA")
        im.putalpha(Image.fromarray(rng.integers(0, 256, (5, 7), dtype=np.uint8)))
    else:
        im = Image.fromarray(smooth_image(5, 7, 3, seed=38)).convert(mode)
    path = tmp_path / f"{mode.replace(';', '_')}.nlc"
    path.write_bytes(nelloc.compress(im))
    return path, nelloc.decompress(path.read_bytes())


@pytest.mark.parametrize("mode", ["I", "PA"])
def test_default_output_format_can_store_fallback_mode(tiny_models, tmp_path, mode):
    """Regression (nelloc/cli.py, PNG_MODES / _default_suffix): "I" and "PA" are listed as PNG modes, but
    Pillow cannot write them as PNG, so `nelloc decompress X.nlc` of a valid I or PA file fails with
    "cannot store mode I as PNG" (TIFF stores both exactly: `-o X.tif` works)."""
    nlc, image = _fallback_nlc(tmp_path, mode)
    assert_ok(run("decompress", "-q", nlc))
    (out,) = [p for p in tmp_path.iterdir() if p.suffix != ".nlc"]
    back = Image.open(out)
    assert back.mode == image.mode and back.tobytes() == image.tobytes()


@pytest.mark.parametrize("mode, suffix", [("I;16", ".webp"), ("F", ".webp"), ("CMYK", ".webp"), ("I", ".ppm")])
def test_lossless_output_suffix_never_silently_loses_data(tiny_models, tmp_path, mode, suffix):
    """Regression (nelloc/cli.py, decompress -> write): Pillow converts I;16 / F / CMYK to 8-bit RGB when
    saving WEBP, and clips I (int32) when saving PPM; the CLI exits 0 with a lossy file.  It should
    refuse (one-line error) or write an image that reads back identical."""
    nlc, image = _fallback_nlc(tmp_path, mode)
    out = tmp_path / f"out{suffix}"
    result = run("decompress", "-q", nlc, "-o", out)
    if result.exit_code != 0:
        assert_error(result)
        assert not out.exists()
        return
    back = Image.open(out)
    assert back.mode == image.mode and back.tobytes() == image.tobytes(), f"{mode} -> {back.mode}: data lost"


def test_a_folder_of_small_images_is_coded_in_batches_with_errors_per_file(tiny_models, tmp_path):
    src, packed, out = tmp_path / "src", tmp_path / "packed", tmp_path / "out"
    for d in (src, packed, out):
        d.mkdir()
    arrays = {}
    for k in range(6):
        arr = smooth_image(9 + k % 2, 12, 3 if k % 3 else 1, seed=k)
        arrays[f"im{k}"] = arr[..., 0] if arr.shape[2] == 1 else arr
        Image.fromarray(arrays[f"im{k}"]).save(src / f"im{k}.png")
    (src / "im9.png").write_bytes(b"not a png")  # fails alone, the batch goes on
    result = run("compress", src, "--out-dir", packed)
    assert result.exit_code == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("nelloc: error:")]
    assert len(errors) == 1 and "im9.png" in errors[0]
    assert "(batch of 6)" in result.stderr  # the summary lines go to stderr too
    assert sorted(p.name for p in packed.iterdir()) == [f"im{k}.nlc" for k in range(6)]
    for k in range(6):  # byte-identical to compressing each file alone
        assert (packed / f"im{k}.nlc").read_bytes() == nelloc.compress(src / f"im{k}.png")
    blob = bytearray((packed / "im3.nlc").read_bytes())
    blob[-6] ^= 0xFF
    (packed / "im3.nlc").write_bytes(bytes(blob))
    result = run("decompress", packed, "--out-dir", out)
    errors = [line for line in result.stderr.splitlines() if line.startswith("nelloc: error:")]
    assert result.exit_code == 1 and len(errors) == 1 and "im3.nlc" in errors[0]
    assert sorted(p.name for p in out.iterdir()) == [f"im{k}.png" for k in range(6) if k != 3]
    for k in (0, 1, 2, 4, 5):
        assert np.array_equal(np.asarray(Image.open(out / f"im{k}.png")), arrays[f"im{k}"])


def test_test_flag_checks_every_file_and_writes_nothing(tiny_models, rgb_png, tmp_path):
    from nelloc import container as ct

    good = tmp_path / "good.nlc"
    assert_ok(run("compress", "-q", rgb_png, "-o", good))
    c = ct.loads(good.read_bytes())
    payload = bytearray(c.segments[0].payload)
    payload[len(payload) // 2] ^= 0x55  # a valid container whose pixels fail the checksum
    c.segments[0].payload = bytes(payload)
    bad = tmp_path / "bad.nlc"
    bad.write_bytes(ct.dumps(c))
    before = _files(tmp_path)
    result = run("decompress", "-t", good)
    assert_ok(result)
    assert "good.nlc: OK, 10x8 RGB" in result.stderr
    result = run("decompress", "--test", good, bad)
    assert result.exit_code == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("nelloc: error:")]
    assert len(errors) == 1 and "bad.nlc" in errors[0]
    assert "good.nlc: OK" in result.stderr
    assert _files(tmp_path) == before  # no image written, no .part file
    assert_error(run("decompress", "-t", good, "-o", tmp_path / "x.png"), "--test writes nothing")


# -- standard input / output and threads ---------------------------------------------------------


def test_stdin_to_stdout_round_trip(tiny_models, rgb_png):
    packed = _runner().invoke(main, ["compress", "-", "-q"], input=rgb_png.read_bytes())
    assert_ok(packed)
    assert np.array_equal(nelloc.decompress(packed.stdout_bytes, as_array=True), smooth_image(8, 10, 3, seed=31))
    unpacked = _runner().invoke(main, ["decompress", "-", "-q"], input=packed.stdout_bytes)
    assert_ok(unpacked)
    import io

    back = Image.open(io.BytesIO(unpacked.stdout_bytes))
    assert back.format == "PNG" and np.array_equal(np.asarray(back), smooth_image(8, 10, 3, seed=31))


def test_stdout_flag_writes_no_file_and_keeps_the_summary_on_stderr(tiny_models, rgb_png, tmp_path):
    result = run("compress", rgb_png, "-c")
    assert_ok(result)
    assert _files(tmp_path) == ["img.png"]
    assert "<stdout>" in result.stderr
    assert result.stdout_bytes == nelloc.compress(Image.open(rgb_png))


def test_stdout_for_a_fallback_mode_is_tiff(tiny_models, tmp_path):
    path, original = _fallback_nlc(tmp_path, "CMYK")
    result = run("decompress", path, "-c", "-q")
    assert_ok(result)
    import io

    back = Image.open(io.BytesIO(result.stdout_bytes))
    assert back.format == "TIFF" and back.mode == "CMYK" and back.tobytes() == original.tobytes()


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["compress", "-", "x.png"], "must be the only input"),
        (["compress", "-", "--out-dir", "."], "standard input has no name"),
        (["compress", "x.png", "-c", "-o", "y.nlc"], "not both"),
    ],
)
def test_stdio_misuse_is_a_one_line_error(tiny_models, args, fragment):
    assert_error(_runner().invoke(main, args, input=b""), fragment)


def test_garbage_on_stdin_is_a_one_line_error(tiny_models):
    assert_error(_runner().invoke(main, ["compress", "-"], input=b"not an image"), "<stdin>", "not an image")
    assert_error(_runner().invoke(main, ["decompress", "-"], input=b"NLC garbage"), "<stdin>")


def test_threads_option_gives_the_same_stream(tiny_models, rgb_png):
    one = run("compress", rgb_png, "-c", "-q", "--threads", "1")
    two = run("compress", rgb_png, "-c", "-q", "--threads", "2")
    nelloc.set_threads(None)
    assert_ok(one)
    assert_ok(two)
    assert one.stdout_bytes == two.stdout_bytes


def test_threads_option_gives_the_same_stream_with_a_fitted_bias(tiny_models, tmp_path, monkeypatch):
    from nelloc import adapt

    monkeypatch.setattr(adapt, "BIAS_MIN_PIXELS", 1 << 14)  # a smaller test image (the fit is the same)
    src = tmp_path / "big.png"
    Image.fromarray(smooth_image(130, 128, 3, seed=16)).save(src)
    one = run("compress", src, "-c", "-q", "--threads", "1")
    two = run("compress", src, "-c", "-q", "--threads", "2")
    nelloc.set_threads(None)
    assert_ok(one)
    assert_ok(two)
    assert one.stdout_bytes[4] == 5 and one.stdout_bytes == two.stdout_bytes


def test_train_calib_quantile_is_zero_or_a_high_quantile(tmp_path):
    res = _runner().invoke(main, ["train", str(tmp_path / "run"), "--calib-quantile", "0.3", "--steps", "1"])
    assert res.exit_code != 0 and "quantile from 0.5 to 1" in res.output + (res.stderr or "")
    assert not (tmp_path / "run").exists()


def test_animated_gif_is_a_one_line_error_and_writes_nothing(tmp_path):
    frames = [Image.fromarray(np.full((4, 4), v, np.uint8)) for v in (0, 128, 255)]
    gif = tmp_path / "anim.gif"
    frames[0].save(gif, save_all=True, append_images=frames[1:])
    assert_error(run("compress", gif), "anim.gif", "3 frames")
    assert _files(tmp_path) == ["anim.gif"]


def test_metadata_is_written_back_to_png_and_webp_and_strip_drops_it(tmp_path):
    from PIL import PngImagePlugin

    src = tmp_path / "meta.png"
    exif = Image.Exif()
    exif[0x0112] = 3
    chunks = PngImagePlugin.PngInfo()
    chunks.add_text("Title", "kept")
    chunks.add_itxt("XML:com.adobe.xmp", "<x:xmpmeta/>")
    Image.fromarray(smooth_image(5, 6, 3, seed=14)).save(src, exif=exif, pnginfo=chunks)
    assert_ok(run("compress", src, "-o", tmp_path / "m.nlc", "-q"))
    info = run("info", tmp_path / "m.nlc")
    assert "metadata: exif" in info.output and "text:Title (4 bytes)" in info.output
    for suffix in (".png", ".webp"):
        assert_ok(run("decompress", tmp_path / "m.nlc", "-o", tmp_path / f"out{suffix}", "-q"))
        out = Image.open(tmp_path / f"out{suffix}")
        out.load()
        assert out.getexif()[0x0112] == 3 and out.info["xmp"] == b"<x:xmpmeta/>"
    assert Image.open(tmp_path / "out.png").text["Title"] == "kept"
    assert_ok(run("compress", src, "-o", tmp_path / "s.nlc", "--strip", "-q"))
    assert "  metadata:" not in run("info", tmp_path / "s.nlc").output


def test_no_adapt_bias_flag_and_info_shows_the_bias(tiny_models, tmp_path, monkeypatch):
    from nelloc import adapt

    monkeypatch.setattr(adapt, "BIAS_MIN_PIXELS", 1 << 14)
    src = tmp_path / "big.png"
    Image.fromarray(smooth_image(130, 128, 3, seed=15)).save(src)
    assert_ok(run("compress", src, "-o", tmp_path / "b.nlc", "-q"))
    assert_ok(run("compress", src, "-o", tmp_path / "p.nlc", "--no-adapt-bias", "-q"))
    biased, plain = run("info", tmp_path / "b.nlc").output, run("info", tmp_path / "p.nlc").output
    assert "format v5" in biased and "bias=" in biased and " values" in biased
    assert "format v4" in plain and "bias=None" in plain
    for name in ("b", "p"):
        assert_ok(run("decompress", tmp_path / f"{name}.nlc", "-o", tmp_path / f"{name}.png", "-q"))
        assert np.array_equal(np.asarray(Image.open(tmp_path / f"{name}.png")), np.asarray(Image.open(src)))


def test_effort_option_matches_the_encoder_efforts_and_effort_one_is_no_bias(tiny_models, tmp_path, monkeypatch):
    from nelloc import adapt, cli

    effort = next(p for p in cli.compress.params if p.name == "effort")
    assert (effort.type.min, effort.type.max, effort.default) == (min(adapt.EFFORTS), max(adapt.EFFORTS), adapt.DEFAULT_EFFORT)
    monkeypatch.setattr(adapt, "BIAS_MIN_PIXELS", 1 << 14)
    src = tmp_path / "big.png"
    Image.fromarray(smooth_image(130, 128, 3, seed=16)).save(src)
    assert_ok(run("compress", src, "-o", tmp_path / "e1.nlc", "-e", "1", "-q"))
    assert_ok(run("compress", src, "-o", tmp_path / "nb.nlc", "--no-adapt-bias", "-q"))
    assert (tmp_path / "e1.nlc").read_bytes() == (tmp_path / "nb.nlc").read_bytes()
    result = run("compress", src, "-o", tmp_path / "e5.nlc", "--effort", "5", "-q")
    assert result.exit_code == 2 and "Traceback" not in result.output and not (tmp_path / "e5.nlc").exists()


def test_compress_max_pixels_refuses_larger_images_and_out_of_memory_is_one_line(rgb_png, tmp_path, monkeypatch):
    assert_error(run("compress", rgb_png, "--max-pixels", 79), "10x8 = 80 pixels exceeds the limit of 79")
    assert_ok(run("compress", rgb_png, "--max-pixels", 80, "-q"))

    def no_memory(*args, **kwargs):
        raise MemoryError

    monkeypatch.setattr(nelloc.api, "compress_many", no_memory)
    monkeypatch.setattr(nelloc.api, "compress", no_memory)
    assert_error(run("compress", rgb_png, "-o", tmp_path / "x.nlc"), "out of memory")
    assert not (tmp_path / "x.nlc").exists()
