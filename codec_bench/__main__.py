"""Command line: ``python -m codec_bench {run,docs,merge,list}``.

Examples::

    python -m codec_bench run --dataset kodak --codecs nelloc,png,webp,jpegxl-e7 --limit 4
    python -m codec_bench run --dataset cifar10-test --codecs "nelloc:model=rgb,tile=64,device=cpu,png"
    python -m codec_bench docs results/*/results.json
    python -m codec_bench merge docs/results/kodak.json results/kodak-nelloc/results.json
    python -m codec_bench list
"""

from __future__ import annotations

import argparse
import datetime as _dt
import re
import sys
from pathlib import Path
from typing import Sequence

from . import report
from .codecs import DEFAULT_CODECS, REGISTRY, make_codec, parse_codec_specs
from .datasets import GREY_DATASETS, NAMED_DATASETS, data_root, load_dataset
from .run import command_line, run_benchmark


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m codec_bench", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)

    run = sub.add_parser("run", help="benchmark codecs on a dataset")
    run.add_argument("--dataset", required=True,
                     help=f"one of {', '.join([*NAMED_DATASETS, *GREY_DATASETS])}, an image folder or an .npz file")
    run.add_argument("--codecs", action="append", default=None,
                     help="comma-separated codec specs, e.g. 'png,webp,nelloc:model=rgb,tile=64'"
                          f" (default: all = {','.join(DEFAULT_CODECS)})")
    run.add_argument("--limit", type=int, default=None, help="use the first N images")
    run.add_argument("--repeat", type=int, default=None,
                     help="timed runs per image, median taken (default 3; 1 for nelloc)")
    run.add_argument("--out", type=Path, default=None,
                     help="results folder (default results/<dataset>-<timestamp>/)")
    run.add_argument("--memory", choices=["rss", "tracemalloc", "off"], default="rss",
                     help="peak-memory method (default rss: VmHWM reset per call, Linux)")
    run.add_argument("--paper", action="store_true",
                     help="print the NeLLoC paper's Table 4 numbers beside ours")
    run.add_argument("--per-image-json", action="store_true",
                     help="also store per-image rows in results.json (always in per_image.csv)")
    run.add_argument("-q", "--quiet", action="store_true", help="no progress bar")

    docs = sub.add_parser("docs", help="regenerate docs/benchmarks.md from results JSON files")
    docs.add_argument("results", nargs="+", type=Path)
    docs.add_argument("--out", type=Path, default=Path("docs/benchmarks.md"))
    docs.add_argument("--plot-dir", type=Path, default=None,
                      help="where to write one plot per results file (default: <out dir>/results)")
    docs.add_argument("--no-plots", action="store_true")

    merge = sub.add_parser("merge", help="replace one codec's rows in a results file by a newer run's")
    merge.add_argument("base", type=Path, help="results JSON to update (written in place unless --out)")
    merge.add_argument("new", type=Path, help="results JSON of a newer run on the same dataset")
    merge.add_argument("--out", type=Path, default=None)

    sub.add_parser("list", help="list codecs and datasets with availability")
    return ap


def _cmd_run(args: argparse.Namespace, argv: Sequence[str]) -> int:
    specs = [s for text in (args.codecs or ["all"]) for s in parse_codec_specs(text)]
    codecs = [make_codec(s) for s in specs]
    dataset = load_dataset(args.dataset, limit=args.limit)
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    out = args.out or Path("results") / f"{_slug(dataset.name)}-{stamp}"
    out.mkdir(parents=True, exist_ok=True)
    progress = not args.quiet and sys.stderr.isatty()
    doc = run_benchmark(dataset, codecs, repeat=args.repeat, memory=args.memory,
                        progress=progress, command=command_line(argv), limit=args.limit)
    report.write_json(doc, out / "results.json", per_image=args.per_image_json)
    report.write_csv(doc, out)
    report.plot([doc], out / "bpsp_vs_decode_speed.png")
    print("\n".join(report.header_lines(doc)))
    print()
    print(report.markdown_table(doc, paper=args.paper))
    note = report.paper_note(doc, paper=args.paper)
    if note:
        print()
        print(note)
    print(f"\nWrote {out}/results.json, results.csv, per_image.csv, bpsp_vs_decode_speed.png")
    failed = [r["codec"] for r in doc["results"] if r["status"] == "failed"]
    if failed:
        print(f"FAILED codecs: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


def _cmd_docs(args: argparse.Namespace) -> int:
    docs = report.load_results(args.results)
    plot_dir = None
    if not args.no_plots:
        plot_dir = args.plot_dir or args.out.parent / "results"
        plot_dir.mkdir(parents=True, exist_ok=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    report.docs_markdown(docs, args.out, plot_dir=plot_dir)
    print(f"Wrote {args.out} from {len(docs)} results file(s)")
    return 0


def _cmd_merge(args: argparse.Namespace) -> int:
    base, new = report.load_results([args.base, args.new])
    try:
        merged = report.merge_results(base, new)
    except ValueError as exc:
        print(f"codec_bench merge: {exc}", file=sys.stderr)
        return 2
    out = args.out or args.base
    report.write_json(merged, out)
    print(f"Wrote {out}: rows {', '.join(r.get('codec') or r['name'] for r in new['results'])} from {args.new}")
    return 0


def _cmd_list() -> int:
    print("codecs:")
    for name, cls in REGISTRY.items():
        ok, reason = cls().available()
        print(f"  {name:10s} {'available' if ok else reason}")
    print(f"datasets (data root {data_root()}):")
    for name, rel in NAMED_DATASETS.items():
        exists = (data_root() / rel).exists()
        print(f"  {name:20s} {rel}{'' if exists else '  (missing)'}")
    for name, colour in GREY_DATASETS.items():
        print(f"  {name:20s} {colour}, converted to grey (L)")
    return 0


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(argv)
    if args.cmd == "run":
        return _cmd_run(args, argv)
    if args.cmd == "docs":
        return _cmd_docs(args)
    if args.cmd == "merge":
        return _cmd_merge(args)
    return _cmd_list()


if __name__ == "__main__":
    sys.exit(main())
