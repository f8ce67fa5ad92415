"""Tests for the codec_bench harness (fast: two tiny synthetic images)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from codec_bench import report
from codec_bench.__main__ import main
from codec_bench.codecs import (
    DEFAULT_CODECS,
    REGISTRY,
    Codec,
    PNGCodec,
    make_codec,
    parse_codec_specs,
)
from codec_bench.datasets import Dataset, load_dataset
from codec_bench.run import compare_images, run_benchmark


def _synthetic() -> list[np.ndarray]:
    """24x20 RGB and 17x13 gray: smooth gradients plus noise."""
    rng = np.random.default_rng(1234)
    y, x = np.mgrid[0:20, 0:24].astype(np.float64)
    base = np.stack([8 * x, 9 * y, 4 * (x + y)], axis=-1)
    rgb = np.clip(base + rng.normal(0, 6, base.shape), 0, 255).astype(np.uint8)
    y, x = np.mgrid[0:13, 0:17].astype(np.float64)
    gray = np.clip(10 * x + 7 * y + rng.normal(0, 6, x.shape), 0, 255).astype(np.uint8)
    return [rgb, gray]


def _dataset() -> Dataset:
    return Dataset.from_arrays("synthetic", _synthetic(), ids=["rgb24x20", "gray17x13"])


def _nelloc_usable() -> bool:
    try:
        import nelloc  # noqa: F401
    except Exception:  # noqa: BLE001
        return False
    return make_codec("nelloc").available()[0]


def _smoke_codecs() -> list[Codec]:
    names = [n for n in DEFAULT_CODECS if n != "nelloc"]
    if _nelloc_usable():
        names.append("nelloc")
    return [make_codec(n) for n in names]


class FlippingPNG(PNGCodec):
    """Deliberately broken: decode flips one byte of the image."""

    name = "broken-png"

    def decode(self, data: bytes) -> np.ndarray:
        out = super().decode(data).copy()
        out.flat[0] ^= 0xFF
        return out


class RaisingPNG(PNGCodec):
    name = "raising-png"

    def decode(self, data: bytes) -> np.ndarray:
        raise RuntimeError("boom")


class MissingCodec(PNGCodec):
    name = "missing"

    def available(self) -> tuple[bool, str]:
        return False, "libmissing not installed"


def test_smoke_all_available_codecs_round_trip(tmp_path: Path, tiny_models) -> None:
    codecs = _smoke_codecs()
    doc = run_benchmark(_dataset(), codecs, repeat=1, memory="rss", command="pytest", limit=None)

    for key in report.REQUIRED_KEYS:
        assert key in doc
    for key in ("platform", "cpu_model", "cpu_count"):
        assert key in doc["machine"]
    for key in ("numpy", "pillow", "imagecodecs", "torch"):
        assert key in doc["versions"]
    assert doc["dataset"]["n_images"] == 2
    assert doc["dataset"]["subpixels"] == 24 * 20 * 3 + 17 * 13

    by_name = {r["codec"]: r for r in doc["results"]}
    assert set(by_name) == {c.label for c in codecs}
    for row in doc["results"]:
        for key in report.REQUIRED_CODEC_KEYS:
            assert key in row, (row["codec"], key)
        if row["status"] == "unavailable":
            assert row["reason"]
            continue
        assert row["status"] == "ok", (row["codec"], row["reason"], row["errors"])
        assert row["n_failed"] == 0
        assert row["n_ok"] + row["n_unsupported"] == 2
        assert row["bpsp"] > 0 and row["encode_mps"] > 0 and row["decode_mps"] > 0

    # the usual suspects are all present and lossless here
    for name in ("png", "webp", "jpegxl-e7", "jpeg2000", "jpegls", "avif"):
        assert by_name[name]["status"] == "ok" and by_name[name]["n_ok"] == 2
    qoi = by_name["qoi"]
    assert qoi["n_ok"] == 1 and qoi["n_unsupported"] == 1 and "RGB/RGBA only" in qoi["notes"]

    # report outputs
    json_path = report.write_json(doc, tmp_path / "results.json")
    loaded = json.loads(json_path.read_text())
    assert "per_image" not in loaded and loaded["results"]
    csv_paths = report.write_csv(doc, tmp_path)
    assert all(p.stat().st_size > 0 for p in csv_paths)
    table = report.markdown_table(doc, paper=True)
    assert "| `png` |" in table and "†" in table
    md = report.docs_markdown(report.load_results([json_path]), tmp_path / "benchmarks.md",
                              plot_dir=None)
    assert "Command: `pytest`" in md


def test_docs_name_the_limit_of_each_subset_run(tmp_path: Path) -> None:
    subset = run_benchmark(_dataset(), [PNGCodec()], repeat=1, memory="off", command="pytest", limit=1)
    whole = run_benchmark(_dataset(), [PNGCodec()], repeat=1, memory="off", command="pytest", limit=None)
    paths = [report.write_json(subset, tmp_path / "subset.json"), report.write_json(whole, tmp_path / "whole.json")]
    md = report.docs_markdown(report.load_results(paths), tmp_path / "benchmarks.md", plot_dir=None)
    name = subset["dataset"]["name"]
    subsets_line = next(line for line in md.splitlines() if line.startswith("**Subsets:**"))
    assert f"`{name}` (first 1)" in subsets_line
    assert subsets_line.count(name) == 1  # the whole-set run of the same data is not called a subset


def test_broken_codec_reported_failed() -> None:
    doc = run_benchmark(_dataset(), [FlippingPNG(), RaisingPNG(), PNGCodec()], repeat=1,
                        memory="off", command="pytest")
    rows = {r["codec"]: r for r in doc["results"]}
    flip = rows["broken-png"]
    assert flip["status"] == "failed" and flip["n_failed"] == 2
    assert "round trip mismatch" in flip["reason"] and flip["bpsp"] is None
    raising = rows["raising-png"]
    assert raising["status"] == "failed" and "RuntimeError: boom" in raising["reason"]
    assert rows["png"]["status"] == "ok"
    assert "failed: " in report.markdown_table(doc)


def test_unavailable_codec_listed_with_reason() -> None:
    doc = run_benchmark(_dataset(), [MissingCodec(), make_codec("flif")], repeat=1,
                        memory="off", command="pytest")
    rows = {r["codec"]: r for r in doc["results"]}
    assert rows["missing"]["status"] == "unavailable"
    assert rows["missing"]["reason"] == "libmissing not installed"
    assert "unavailable: libmissing not installed" in report.markdown_table(doc)
    if rows["flif"]["status"] == "unavailable":
        assert "not installed" in rows["flif"]["reason"]
        assert "CIFAR 4.19" in report.paper_note(doc, paper=False)


def test_compare_images_checks_dtype_shape_values() -> None:
    a = _synthetic()[0]
    assert compare_images(a, a.copy()) is None
    assert "dtype" in compare_images(a, a.astype(np.int16))
    assert "shape" in compare_images(a, a[:-1])
    b = a.copy()
    b[0, 0, 0] ^= 1
    assert "1/" in compare_images(a, b)


def test_codec_spec_parsing() -> None:
    assert parse_codec_specs("nelloc:model=rgb,tile=64,device=cpu,png,webp") == [
        "nelloc:model=rgb,tile=64,device=cpu", "png", "webp"]
    assert parse_codec_specs("all") == list(DEFAULT_CODECS)
    codec = make_codec("nelloc:model=rgb,tile=64,device=cpu")
    assert codec.label == "nelloc:model=rgb,tile=64,device=cpu" and codec.tile == 64
    assert make_codec("jpegxl:effort=3").effort == 3
    assert "effort=4" in make_codec("nelloc:effort=4").description and make_codec("nelloc").effort is None
    assert make_codec("jpegxl-e9").effort == 9
    with pytest.raises(ValueError):
        make_codec("nosuchcodec")
    assert "nelloc" in REGISTRY


def test_npz_and_folder_datasets(tmp_path: Path) -> None:
    from PIL import Image

    rgb, gray = _synthetic()
    np.savez(tmp_path / "set.npz", images=np.stack([rgb, rgb, rgb]))
    ds = load_dataset(str(tmp_path / "set.npz"), limit=2)
    assert len(ds) == 2 and ds[1].shape == rgb.shape
    folder = tmp_path / "imgs"
    folder.mkdir()
    Image.fromarray(rgb).save(folder / "a.png")
    Image.fromarray(gray).save(folder / "b.png")
    ds = load_dataset(str(folder))
    assert [im.shape for _, im in ds] == [rgb.shape, gray.shape]


def test_grey_variant_of_a_colour_set_is_its_luma(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from PIL import Image

    rgb, _ = _synthetic()
    (tmp_path / "kodak").mkdir()
    Image.fromarray(rgb).save(tmp_path / "kodak" / "kodim01.png")
    monkeypatch.setenv("NELLOC_DATA", str(tmp_path))
    ds = load_dataset("kodak-gray")
    assert ds.name == "kodak-gray" and ds.ids == ["kodim01.png"]
    assert np.array_equal(ds[0], np.asarray(Image.fromarray(rgb).convert("L"))) and ds[0].ndim == 2


def test_cli_run_and_docs(tmp_path: Path, capsys: pytest.CaptureFixture[str], tiny_models) -> None:
    from PIL import Image

    folder = tmp_path / "imgs"
    folder.mkdir()
    for i, im in enumerate(_synthetic()):
        Image.fromarray(im).save(folder / f"{i}.png")
    out = tmp_path / "res"
    rc = main(["run", "--dataset", str(folder), "--codecs", "png,jpegls,flif", "--out", str(out),
               "--repeat", "1", "-q", "--paper"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "| `png` |" in printed and "Command: `python -m codec_bench run" in printed
    assert (out / "results.json").exists() and (out / "results.csv").exists()
    assert (out / "bpsp_vs_decode_speed.png").stat().st_size > 0
    md = tmp_path / "docs" / "benchmarks.md"
    assert main(["docs", str(out / "results.json"), "--out", str(md)]) == 0
    text = md.read_text()
    assert "## imgs" in text and "python -m codec_bench run" in text
    assert (tmp_path / "docs" / "results" / "res.png").exists()


def test_rgb_with_equal_channels_keeps_its_shape() -> None:
    """Regression: an RGB image with R=G=B must not come back as gray (WebP adapter)."""
    gray = _synthetic()[1]
    rgb = np.repeat(gray[:, :, None], 3, axis=2)
    codecs = [make_codec(n) for n in ("webp", "png", "jpegxl-e7", "qoi")]
    doc = run_benchmark(Dataset.from_arrays("eq", [rgb, gray]), codecs, repeat=1, memory="off",
                        command="pytest")
    for row in doc["results"]:
        assert row["status"] in ("ok", "unavailable"), (row["codec"], row["reason"])


def test_merge_replaces_one_codecs_rows_and_keeps_their_command(tmp_path: Path) -> None:
    from PIL import Image

    folder = tmp_path / "imgs"
    folder.mkdir()
    for i, im in enumerate(_synthetic()):
        Image.fromarray(im).save(folder / f"{i}.png")
    base, new = tmp_path / "base", tmp_path / "new"
    assert main(["run", "--dataset", str(folder), "--codecs", "png,qoi", "--out", str(base), "--repeat", "1", "-q"]) == 0
    assert main(["run", "--dataset", str(folder), "--codecs", "png", "--out", str(new), "--repeat", "1", "-q"]) == 0
    merged_path = tmp_path / "merged.json"
    assert main(["merge", str(base / "results.json"), str(new / "results.json"), "--out", str(merged_path)]) == 0
    merged = json.loads(merged_path.read_text())
    rows = {r["name"]: r for r in merged["results"]}
    assert set(rows) == {"png", "qoi"}
    assert "remeasured" in rows["png"] and "remeasured" not in rows["qoi"]
    assert merged["remeasured"][0]["codecs"] == ["png"]
    md = tmp_path / "benchmarks.md"
    assert main(["docs", str(merged_path), "--out", str(md), "--no-plots"]) == 0
    assert "Re-measured later: png" in md.read_text()
    again = tmp_path / "again.json"  # a second re-measurement of png supersedes the first one's note
    assert main(["merge", str(merged_path), str(new / "results.json"), "--out", str(again)]) == 0
    assert [e["codecs"] for e in json.loads(again.read_text())["remeasured"]] == [["png"]]
    other = tmp_path / "other"
    assert main(["run", "--dataset", str(folder), "--codecs", "png", "--limit", "1", "--out", str(other), "--repeat", "1", "-q"]) == 0
    assert main(["merge", str(merged_path), str(other / "results.json")]) == 2  # different image count


def test_merge_keeps_two_specs_of_one_codec_apart() -> None:
    from codec_bench.report import merge_results

    def row(spec: str, bpsp: float) -> dict:
        return {"codec": spec, "name": spec.split(":")[0], "bpsp": bpsp}

    dataset = {"name": "x", "n_images": 2}
    base = {"dataset": dataset, "results": [row("nelloc", 3.3), row("png", 4.4)]}
    new = {"dataset": dataset, "results": [row("nelloc", 3.2), row("nelloc:adapt=0", 3.3)],
           "command": "c", "date": "d", "machine": "m"}
    merged = merge_results(base, new)
    assert {r["codec"]: r["bpsp"] for r in merged["results"]} == {"nelloc": 3.2, "png": 4.4, "nelloc:adapt=0": 3.3}


def test_nelloc_effort_option_reaches_the_encoder(tiny_models, monkeypatch) -> None:
    import nelloc

    seen = []
    real = nelloc.compress
    monkeypatch.setattr(nelloc, "compress", lambda *a, **k: seen.append(k["effort"]) or real(*a, **k))
    codec = make_codec("nelloc:effort=3")
    assert codec.available() == (True, "")
    img = (np.arange(48 * 40 * 3) % 251).astype(np.uint8).reshape(48, 40, 3)
    assert np.array_equal(codec.decode(codec.encode(img)), img)
    assert seen and set(seen) == {3}
