"""Reports: Markdown table, JSON, CSV, bpsp-vs-speed plot, and docs/benchmarks.md."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any, Iterable, Sequence

__all__ = [
    "PAPER_TABLE4",
    "PAPER_DATASET",
    "FLIF_PAPER_NOTE",
    "markdown_table",
    "paper_note",
    "write_json",
    "write_csv",
    "plot",
    "load_results",
    "docs_markdown",
    "REQUIRED_KEYS",
    "REQUIRED_CODEC_KEYS",
]

#: NeLLoC paper, Table 4, bits per sub-pixel. NeLLoC row: r=1, trained on CIFAR.
PAPER_TABLE4: dict[str, dict[str, float]] = {
    "CIFAR": {"png": 5.87, "webp": 4.61, "jpeg2000": 5.56, "flif": 4.19, "nelloc": 3.28},
    "SVHN": {"flif": 2.93},
    "CelebA": {"flif": 4.44},
    "ImageNet32": {"flif": 4.52},
    "ImageNet64": {"flif": 4.19},
    "ImageNet": {"flif": 3.51, "nelloc": 3.25},
}

#: our dataset name -> the paper's test set it corresponds to
PAPER_DATASET: dict[str, str] = {"cifar10-test": "CIFAR", "celeba32": "CelebA"}

FLIF_PAPER_NOTE = "FLIF is not installed here; the paper's FLIF numbers (NeLLoC Table 4, bpsp): " + ", ".join(
    f"{ds} {row['flif']:.2f}" for ds, row in PAPER_TABLE4.items()
)

REQUIRED_KEYS = ("schema_version", "date", "command", "dataset", "settings", "machine",
                 "versions", "results")
REQUIRED_CODEC_KEYS = ("codec", "status", "reason", "n_images", "n_ok", "bpsp", "bpsp_mean",
                       "encode_mps", "decode_mps", "peak_memory_bytes", "memory_method",
                       "model_size_bytes", "likelihood_overhead_pct")


# --------------------------------------------------------------------------
# Markdown


def _fmt(value: float | None, spec: str = ".3f") -> str:
    return "" if value is None else format(value, spec)


def _mib(value: int | None) -> str:
    return "" if value is None else f"{value / 2**20:.1f}"


def _paper_value(doc: dict[str, Any], codec_name: str) -> float | None:
    ds = PAPER_DATASET.get(doc["dataset"]["name"])
    if ds is None:
        return None
    return PAPER_TABLE4[ds].get(codec_name)


def _status_cell(row: dict[str, Any]) -> str:
    if row["status"] == "ok":
        return "ok" if not row.get("notes") else f"ok ({row['notes']})"
    return f"{row['status']}: {row['reason']}".replace("|", "/").replace("\n", " ")


def markdown_table(doc: dict[str, Any], paper: bool = False) -> str:
    """One row per codec: bpsp, MP/s, memory, model size, status."""
    cols = ["codec", "bpsp", "mean bpsp", "enc MP/s", "dec MP/s", "peak mem MiB",
            "model MiB", "NLL overhead %"]
    if paper:
        cols.append("paper T4 bpsp")
    cols.append("status")
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    ordered = sorted(doc["results"], key=lambda r: (r["bpsp"] is None, r["bpsp"] or 0.0))
    for row in ordered:
        mark = " †" if row["status"] == "ok" and row.get("n_unsupported") else ""
        cells = [
            f"`{row['codec']}`",
            _fmt(row["bpsp"]) + mark,
            _fmt(row["bpsp_mean"]) + mark,
            _fmt(row["encode_mps"], ".3g"),
            _fmt(row["decode_mps"], ".3g"),
            _mib(row["peak_memory_bytes"]),
            _mib(row["model_size_bytes"]),
            _fmt(row["likelihood_overhead_pct"], ".2f"),
        ]
        if paper:
            cells.append(_fmt(_paper_value(doc, row["name"]), ".2f"))
        cells.append(_status_cell(row))
        lines.append("| " + " | ".join(cells) + " |")
    if any(r["status"] == "ok" and r.get("n_unsupported") for r in ordered):
        lines.append("")
        lines.append("† over the supported images only (see status); not comparable with full-set rows.")
    return "\n".join(lines)


def paper_note(doc: dict[str, Any], paper: bool) -> str:
    """Lines printed under the table: FLIF reference numbers, paper rows."""
    notes = []
    names = {r["name"]: r for r in doc["results"]}
    flif = names.get("flif")
    if flif is not None and flif["status"] == "unavailable":
        notes.append(FLIF_PAPER_NOTE + ".")
    if paper:
        ds = PAPER_DATASET.get(doc["dataset"]["name"])
        if ds is None:
            notes.append(f"--paper: the paper has no test set matching "
                         f"`{doc['dataset']['name']}`; its Table 4 rows are, for reference:")
        else:
            notes.append(f"--paper: `{doc['dataset']['name']}` corresponds to the paper's {ds} "
                         "column (the paper used the full test set). Table 4 rows:")
        for ds_name, row in PAPER_TABLE4.items():
            notes.append(f"  - {ds_name}: " + ", ".join(f"{k} {v:.2f}" for k, v in row.items()))
        notes.append("  (NeLLoC row: r=1, trained on CIFAR.)")
    return "\n".join(notes)


def header_lines(doc: dict[str, Any]) -> list[str]:
    ds, m, s = doc["dataset"], doc["machine"], doc["settings"]
    subset = f", `--limit {ds['limit']}` subset" if ds.get("limit") else ""
    kinds = ", ".join(f"{n} {k}" for k, n in ds.get("image_kinds", {}).items())
    return [
        f"Dataset `{ds['name']}`: {ds['n_images']} images ({kinds}){subset}, "
        f"{ds['pixels'] / 1e6:.3f} MP, {ds['subpixels']} sub-pixels.",
        f"Command: `{doc['command']}`",
        f"Machine: {m['cpu_model']}, {m['cpu_count']} cores ({m['cpu_count_usable']} usable), "
        f"{m['platform']}, Python {m['python']}. Date: {doc['date']}.",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in doc["versions"].items() if v) + ".",
        f"Memory: {s['memory_description']}. Timing: {s['timing']}; repeats: {s['repeat']}.",
    ] + [
        f"Re-measured later: {', '.join(r['codecs'])}, with `{r['command']}` on {r['date']} "
        f"({r['machine']['cpu_model']}, {r['machine']['cpu_count']} cores)."
        for r in doc.get("remeasured", [])
    ]


def _row_key(row: dict[str, Any]) -> str:
    """A row's codec spec (e.g. ``nelloc:adapt=0``): two specs of one codec are two rows."""
    return row.get("codec") or row["name"]


def merge_results(base: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """``base`` with the rows of ``new`` (same dataset) replacing those of the same codec spec.

    Each replaced or added row keeps where it came from (``remeasured``: command, date, machine),
    and the document lists them, so a table never shows a number without its command.
    """
    if base["dataset"]["name"] != new["dataset"]["name"] or base["dataset"].get("n_images") != new["dataset"].get("n_images"):
        raise ValueError(f"different datasets: {base['dataset']['name']} ({base['dataset'].get('n_images')} images) "
                         f"vs {new['dataset']['name']} ({new['dataset'].get('n_images')} images)")
    provenance = {"command": new["command"], "date": new["date"], "machine": new["machine"]}
    rows = {_row_key(r): r for r in base["results"]}
    for row in new["results"]:
        rows[_row_key(row)] = {**row, "remeasured": provenance}
    merged = {k: v for k, v in base.items() if k not in ("per_image", "_path")}
    merged["results"] = list(rows.values())
    replaced = {_row_key(r) for r in new["results"]}
    earlier = []  # an earlier re-measurement stays listed only for rows it still provides
    for entry in base.get("remeasured", []):
        still = [c for c in entry["codecs"] if c not in replaced]
        if still:
            earlier.append({**entry, "codecs": still})
    merged["remeasured"] = [*earlier, {"codecs": sorted(replaced), **provenance}]
    return merged


# --------------------------------------------------------------------------
# Files


def write_json(doc: dict[str, Any], path: Path, per_image: bool = False) -> Path:
    data = doc if per_image else {k: v for k, v in doc.items() if k != "per_image"}
    path.write_text(json.dumps(data, indent=1, default=str) + "\n")
    return path


def write_csv(doc: dict[str, Any], folder: Path) -> list[Path]:
    """``results.csv`` (one row per codec, plus run metadata) and ``per_image.csv``."""
    meta = {
        "dataset": doc["dataset"]["name"],
        "n_images_dataset": doc["dataset"]["n_images"],
        "date": doc["date"],
        "command": doc["command"],
        "cpu_model": doc["machine"]["cpu_model"],
        "cpu_count": doc["machine"]["cpu_count"],
        "platform": doc["machine"]["platform"],
        **{f"version_{k}": v for k, v in doc["versions"].items()},
    }
    rows = [{**{k: _csv_value(v) for k, v in r.items()}, **meta} for r in doc["results"]]
    paths = [_write_rows(folder / "results.csv", rows)]
    if doc.get("per_image"):
        paths.append(_write_rows(folder / "per_image.csv", doc["per_image"]))
    return paths


def _csv_value(value: Any) -> Any:
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return value


def _write_rows(path: Path, rows: Sequence[dict[str, Any]]) -> Path:
    fields: list[str] = []
    for row in rows:
        fields.extend(k for k in row if k not in fields)
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    return path


def plot(docs: Sequence[dict[str, Any]], path: Path) -> Path:
    """Bits per sub-pixel vs decode MP/s (log x), one panel per dataset."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FormatStrFormatter, NullFormatter

    fig, axes = plt.subplots(1, len(docs), figsize=(5.5 * len(docs), 4.2), squeeze=False)
    for ax, doc in zip(axes[0], docs):
        rows = [r for r in doc["results"] if r["status"] == "ok" and r["decode_mps"]]
        for row in rows:
            ax.scatter(row["decode_mps"], row["bpsp"], s=30)
            label = row["codec"] + (" †" if row.get("n_unsupported") else "")
            ax.annotate(label, (row["decode_mps"], row["bpsp"]), fontsize=8,
                        xytext=(4, 3), textcoords="offset points")
        ds = doc["dataset"]
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(FormatStrFormatter("%g"))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("decode speed (MP/s, log scale)")
        ax.set_ylabel("bits per sub-pixel")
        title = f"{ds['name']} ({ds['n_images']} images)"
        if any(r.get("n_unsupported") for r in rows):
            title += "\n† = supported images only"
        ax.set_title(title, fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# --------------------------------------------------------------------------
# docs/benchmarks.md


def load_results(paths: Iterable[Path]) -> list[dict[str, Any]]:
    docs = []
    for p in paths:
        doc = json.loads(Path(p).read_text())
        missing = [k for k in REQUIRED_KEYS if k not in doc]
        if missing:
            raise ValueError(f"{p}: not a codec_bench results file (missing {missing})")
        doc["_path"] = str(p)
        docs.append(doc)
    return docs


def docs_markdown(docs: Sequence[dict[str, Any]], out: Path, plot_dir: Path | None = None,
                  paper: bool = True) -> str:
    """Render docs/benchmarks.md from results documents; plots go to ``plot_dir``."""
    parts = [
        "# Benchmarks",
        "",
        "Generated by `python -m codec_bench docs` from the JSON files listed under each "
        "table; do not edit by hand. Regenerate with:",
        "",
        "```",
        "python -m codec_bench docs " + " ".join(d["_path"] for d in docs)
        + f" --out {out}",
        "```",
        "",
        "bpsp = bits per sub-pixel = total compressed bits / (images x H x W x channels); "
        "\"mean bpsp\" averages per-image bpsp. MP/s counts pixels (H x W) per second, "
        "single process. Every codec's round trip is checked bit-exact (dtype, shape, "
        "values) on every image; a mismatch or error marks the codec failed. "
        "\"paper T4\" is the NeLLoC paper's Table 4 where the test set matches "
        "(the paper used full test sets). \"NLL overhead\" is NeLLoC's actual file size over "
        "its float model's likelihood: the cost of exact integer coding, tiling and the "
        "container (format v3: 25 bytes per grey image, 0.26 bits/sub-pixel on a 28x28 image; v2: 36 bytes, 0.37; the coder's "
        "final 32-bit word adds 0.04).",
        "",
    ]
    subsets = [f"`{d['dataset']['name']}` (first {d['dataset']['limit']})" for d in docs if d["dataset"].get("limit")]
    if subsets:
        parts += [
            f"**Subsets:** the runs for {', '.join(subsets)} use `--limit` "
            "(first N images only), so their numbers are indicative, not full-set results. "
            "Timings come from the machine listed under each table and are noisy when it is shared.",
            "",
        ]
    for doc in docs:
        ds = doc["dataset"]
        title = ds["name"] + (f" (first {ds['limit']} images, `--limit` subset)" if ds.get("limit") else "")
        parts += [f"## {title}", ""]
        parts += [f"- {line}" for line in header_lines(doc)]
        parts += [f"- Results file: `{_rel(Path(doc['_path']), out.parent)}`", ""]
        parts += [markdown_table(doc, paper=paper), ""]
        note = paper_note(doc, paper=False)
        if note:
            parts += [note, ""]
        if plot_dir is not None:
            png = plot_dir / f"{_plot_stem(Path(doc['_path']))}.png"
            plot([doc], png)
            parts += [f"![bpsp vs decode speed, {ds['name']}]({_rel(png, out.parent)})", ""]
    parts += codec_settings(docs)
    if paper:
        parts += ["## NeLLoC paper, Table 4 (bits per sub-pixel)", ""]
        parts += [f"- {ds}: " + ", ".join(f"{k} {v:.2f}" for k, v in row.items())
                  for ds, row in PAPER_TABLE4.items()]
        parts += ["", "NeLLoC row: r=1, trained on CIFAR.", ""]
    text = "\n".join(parts)
    out.write_text(text)
    return text


def codec_settings(docs: Sequence[dict[str, Any]]) -> list[str]:
    """A bullet list of each codec's settings and library version (first seen)."""
    seen: dict[str, str] = {}
    for doc in docs:
        for row in doc["results"]:
            if row["codec"] not in seen or (row.get("version") and "version" not in seen[row["codec"]]):
                version = f"; version: {row['version']}" if row.get("version") else ""
                seen[row["codec"]] = f"{row.get('description', '')}{version}"
    lines = ["## Codec settings", ""]
    lines += [f"- `{name}`: {text}" for name, text in seen.items()]
    return lines + [""]


def _plot_stem(json_path: Path) -> str:
    """``results/kodak-2024/results.json`` -> ``kodak-2024``; ``x/cifar.json`` -> ``cifar``."""
    if json_path.stem == "results" and json_path.parent.name:
        return json_path.resolve().parent.name
    return json_path.stem


def _rel(path: Path, base: Path) -> str:
    try:
        return str(path.resolve().relative_to(base.resolve()))
    except ValueError:
        return str(path)
