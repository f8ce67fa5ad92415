"""`nelloc ood ...`: OOD scores from a full / local PixelCNN pair (see ``nelloc.ood``, docs/ood.md)."""

from __future__ import annotations

import json
from pathlib import Path

import click
import numpy as np
from PIL import Image

from nelloc import data as datasets
from nelloc import ood as _ood
from nelloc.data import IMAGE_SUFFIXES
from nelloc.errors import NellocError, UnsupportedImageError


class OODCliError(NellocError):
    pass


def _read_image(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as im:
            if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
                raise UnsupportedImageError(f"{path}: {im.mode} images are not 8-bit; OOD scoring takes 8-bit grey or RGB")
            grey = im.mode in ("1", "L", "LA", "La") or (im.mode == "P" and _palette_is_grey(im))
            return np.asarray(im.convert("L" if grey else "RGB"))
    except OSError as exc:
        raise UnsupportedImageError(f"{path}: not a readable image ({exc})") from None


def _palette_is_grey(im: Image.Image) -> bool:
    rgb = np.asarray(im.convert("RGB"))
    return bool((rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all())


def _collect(inputs: tuple[str, ...], limit: int | None) -> list[tuple[str, np.ndarray]]:
    """(name, uint8 image) for every image file, image in a folder, image of an .npz or staged set."""
    out: list[tuple[str, np.ndarray]] = []
    for raw in inputs:
        p = Path(raw)
        if p.is_dir():
            files = sorted(q for q in p.iterdir() if q.is_file() and q.suffix.lower() in IMAGE_SUFFIXES)
            if not files:
                raise OODCliError(f"{p}: no image files in this directory")
            out += [(str(q), _read_image(q)) for q in files[:limit]]
        elif p.is_file() and p.suffix.lower() != ".npz":
            out.append((str(p), _read_image(p)))
        elif not p.exists() and p.suffix.lower() in IMAGE_SUFFIXES:
            raise OODCliError(f"{raw}: no such file")
        else:  # .npz, staged set name or derived spec (kodak-crops32)
            iset = _ood.load_set(raw, None, limit)
            out += [(f"{raw}[{i}]", im) for i, im in enumerate(iset.images)]
    if not out:
        raise OODCliError("no images to score")
    return out


@click.group("ood")
def ood() -> None:
    """Out-of-distribution scores: log p_full(x) - log p_local(x) from a full / local PixelCNN pair."""


@ood.command("score")
@click.argument("inputs", nargs=-1, required=True)
@click.option("--model-pair", "pair_name", help="Installed pair (default: 'gray' for grey images, 'rgb' for colour).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object instead of a table.")
@click.option("--batch", type=click.IntRange(1), default=256, show_default=True, help="Images per forward pass.")
@click.option("--device", default="cpu", show_default=True, help="torch device: cpu, cuda, cuda:1 or auto.")
@click.option("--limit", type=click.IntRange(1), default=None, help="At most N images per input folder / .npz.")
@click.option("--mirror", is_flag=True, help="Average each figure over the image and its left-right mirror.")
def score_cmd(inputs, pair_name, as_json, batch, device, limit, mirror) -> None:
    """Per image: bits per dim under the full and local model, and the score in bits.

    score = log2 p_full(x) - log2 p_local(x) for the whole image (higher = more in-distribution).
    INPUTS are image files, folders of images, .npz files (array 'images') or staged set names."""
    items = _collect(inputs, limit)
    if pair_name:
        groups = {pair_name: list(range(len(items)))}
    else:
        groups: dict[str, list[int]] = {}
        for i, (_, im) in enumerate(items):
            groups.setdefault(_ood.default_pair(_ood.image_channels(im)), []).append(i)
    rows: list[dict | None] = [None] * len(items)
    for name, idx in groups.items():
        pair = _ood.load_pair(name)
        s = _ood.score_images([items[i][1] for i in idx], pair, batch=batch, device=device, mirror=mirror)
        for j, i in enumerate(idx):
            im = items[i][1]
            rows[i] = {"name": items[i][0], "pair": name, "height": im.shape[0], "width": im.shape[1],
                       "channels": pair.channels, "bpd_full": round(float(s["bpd_full"][j]), 5),
                       "bpd_local": round(float(s["bpd_local"][j]), 5), "score_bits": round(float(s["score"][j]), 3),
                       "score_bpd": round(float(s["score_bpd"][j]), 5)}
    if as_json:
        click.echo(json.dumps({"score": "log2 p_full(x) - log2 p_local(x), bits per image; higher = in-distribution",
                               "mirror": mirror, "images": rows}, indent=1))
        return
    click.echo(f"{'bpd_full':>9} {'bpd_local':>9} {'score_bits':>11}  {'pair':<6} image")
    for r in rows:
        click.echo(f"{r['bpd_full']:9.4f} {r['bpd_local']:9.4f} {r['score_bits']:11.2f}  {r['pair']:<6} {r['name']}")
    click.echo("score = log2 p_full - log2 p_local per image (bits); higher = more in-distribution"
               + ("; each figure the mean over the image and its mirror" if mirror else ""), err=True)


@ood.command("eval")
@click.option("--in-dist", required=True, help="In-distribution test set (staged name, folder, .npz, derived spec).")
@click.option("--ood", "ood_sets", multiple=True, required=True,
              help="OOD set (repeatable), e.g. mnist-test, omniglot-28-inv, celeba, kodak-crops32.")
@click.option("--model-pair", "pair_name", help="Installed pair (default by the in-dist set's channels: gray / rgb).")
@click.option("--limit", type=click.IntRange(1), default=None, help="N images (crops) of every set, evenly spaced over it (sets may be stored grouped by class).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object instead of a Markdown table.")
@click.option("--plot-dir", type=click.Path(file_okay=False), help="Write score histograms (PNG) here.")
@click.option("--batch", type=click.IntRange(1), default=256, show_default=True)
@click.option("--device", default="cpu", show_default=True, help="torch device: cpu, cuda, cuda:1 or auto.")
@click.option("--no-baselines", is_flag=True, help="Skip the input-complexity rows (PNG / JPEG XL / FLIF).")
@click.option("--mirror", is_flag=True, help="Add the row of the ratio averaged over each image and its left-right "
              "mirror (twice the network work).")
@click.option("--record", is_flag=True, help="Store the AUROC / FPR95 in the pair's card (ood/NAME.json).")
def eval_cmd(in_dist, ood_sets, pair_name, limit, as_json, plot_dir, batch, device, no_baselines, mirror, record) -> None:
    """AUROC and FPR at 95% TPR: full likelihood, local likelihood, NeLLoC ratio, input complexity."""
    if not pair_name:
        pair_name = _ood.default_pair(_channels_of(in_dist))
    result = _ood.evaluate(in_dist, list(ood_sets), pair_name, limit=limit, batch=batch, device=device,
                          plot_dir=plot_dir, baselines=not no_baselines, mirror=mirror)
    if record:
        result["recorded_in"] = str(_ood.record_evaluation(pair_name, result))
    click.echo(json.dumps(result, indent=1) if as_json else _ood.format_markdown(result))


def _channels_of(spec: str) -> int:
    """3 if any image of the set (or of the set a derived spec starts from) is colour, else 1."""
    m = _ood._DERIVED.match(spec)
    base = spec if _ood._exists(spec) or not m else m["base"]
    folder = datasets.resolve(base)
    if folder.is_dir():
        for q in sorted(folder.iterdir()):
            if q.suffix.lower() in IMAGE_SUFFIXES:
                try:
                    with Image.open(q) as im:
                        if im.mode not in ("1", "L", "LA", "I;16", "I"):
                            return 3
                except OSError:
                    continue
        return 1
    try:
        imgs = datasets.load_images(base, channels=None, limit=1)
    except (FileNotFoundError, KeyError, OSError, ValueError) as exc:
        raise OODCliError(f"image set {spec!r}: {exc}") from None
    if not imgs:
        raise OODCliError(f"image set {spec!r}: no images")
    return _ood.image_channels(imgs[0])


@ood.command("export")
@click.argument("full_run", type=click.Path(exists=True, file_okay=False))
@click.argument("local_run", type=click.Path(exists=True, file_okay=False))
@click.option("--name", required=True, help="Pair name, e.g. gray or rgb.")
@click.option("--out-dir", default="models", show_default=True, help="Model folder; the pair goes to OUT_DIR/ood/.")
def export_cmd(full_run, local_run, name, out_dir) -> None:
    """Install the last checkpoints of two training runs (full, local) as pair NAME."""
    card = _ood.export_pair(full_run, local_run, name, out_dir)
    d = Path(out_dir) / _ood.PAIR_SUBDIR
    click.echo(f"{d / (name + '-full.safetensors')}: {card['full']['parameters']} parameters, "
               f"{card['full']['training']['steps']} steps")
    click.echo(f"{d / (name + '-local.safetensors')}: {card['local']['parameters']} parameters, "
               f"{card['local']['training']['steps']} steps, quantize={card['local']['quantize']}")
    click.echo(f"{d / (name + '.json')}: card")
