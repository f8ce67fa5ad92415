"""NeLLoC codec benchmark (issue: the codec): round trips, rates, overhead, speed, tiling cost.

    python scripts/bench_nelloc.py roundtrip --dataset kodak [--limit N] [--model rgb] [--tile 64]
    python scripts/bench_nelloc.py tiles --dataset kodak --tiles 0,16,32,64,128 [--limit N] [--files]
    python scripts/bench_nelloc.py speed --image kodak/kodim23.png --models rgb,paper,paper-widened [--repeat 3]
    python scripts/bench_nelloc.py batch --dataset cifar10-test --limit 200 [--model rgb]
    python scripts/bench_nelloc.py tile-speed --image kodak/kodim23.png --tiles 64,96,128 --sizes 128,256,512,0 --threads 1,2
    python scripts/bench_nelloc.py devices --dataset kodak --devices cuda,cpu [--limit N] [--model rgb]
    python scripts/bench_nelloc.py matmul
    python scripts/bench_nelloc.py network-share --image kodak/kodim23.png [--model rgb] [--repeat 3]

Every sub-command prints a Markdown table and writes JSON to results/ (machine, versions, command).
``paper`` in ``--models`` means a paper-size model (h=3, r=1, 256 channels, K=10) exported from
``--paper-run`` (a training run directory), for the decode-speed target.  ``paper-widened`` is a
paper-size model built here from the shipped ``rgb`` (width 128) by ``nelloc.train.widen``: it
computes exactly ``rgb``'s function, so its mixtures are as sharp as a trained model's (the CDF
kernel's cost depends on that), and it does the paper-size model's arithmetic (the speed does not
depend on the weights' values).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

import nelloc
from nelloc import codec, data, exact, zoo

RESULTS = Path("results")


def machine() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "nelloc": nelloc.__version__, "python": platform.python_version(),
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}


def save(kind: str, payload: dict) -> Path:
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"nelloc-{kind}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    payload = {"command": "python " + " ".join(sys.argv), "machine": machine(), **payload}
    path.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"\nwrote {path}")
    return path


def float_bits(name: str, img: np.ndarray) -> float | None:
    return codec.likelihood_bits(img, model=name)


def cmd_roundtrip(args) -> None:
    imgs = data.load_images(args.dataset, channels=zoo.load(args.model).cfg.channels, limit=args.limit)
    rows, ok = [], 0
    for k, img in enumerate(imgs):
        t0 = time.perf_counter()
        blob = nelloc.compress(img, model=args.model, tile=args.tile, device="cpu")
        t1 = time.perf_counter()
        back = nelloc.decompress(blob, device="cpu", as_array=True)
        t2 = time.perf_counter()
        exact_ok = bool(np.array_equal(back, img))
        ok += exact_ok
        fb = float_bits(args.model, img)
        sub = img.size
        payload = sum(seg["payload_bytes"] for seg in nelloc.info(blob)["segments"])
        row = {"image": k, "shape": list(img.shape), "bytes": len(blob), "bpsp": 8 * len(blob) / sub,
               "payload_bpsp": 8 * payload / sub,
               "float_bpsp": fb / sub if fb else None, "exact": exact_ok,
               "encode_mp_s": img.shape[0] * img.shape[1] / 1e6 / (t1 - t0),
               "decode_mp_s": img.shape[0] * img.shape[1] / 1e6 / (t2 - t1)}
        rows.append(row)
        if args.quiet_images:
            continue
        print(f"{k:3d} {row['bpsp']:.4f} bpsp (float {row['float_bpsp'] or float('nan'):.4f}) exact={exact_ok} "
              f"enc {row['encode_mp_s']:.3f} MP/s dec {row['decode_mp_s']:.3f} MP/s", flush=True)
    total_bits = sum(8 * r["bytes"] for r in rows)
    total_sub = sum(int(np.prod(r["shape"])) for r in rows)
    summary = {"dataset": args.dataset, "model": args.model, "tile": args.tile or codec.DEFAULT_TILE,
               "images": len(rows), "exact_round_trips": ok, "bpsp": total_bits / total_sub,
               "median_encode_mp_s": statistics.median(r["encode_mp_s"] for r in rows),
               "median_decode_mp_s": statistics.median(r["decode_mp_s"] for r in rows)}
    if all(r["float_bpsp"] for r in rows):
        fl = sum(r["float_bpsp"] * np.prod(r["shape"]) for r in rows) / total_sub
        pl = sum(r["payload_bpsp"] * np.prod(r["shape"]) for r in rows) / total_sub
        summary.update(float_bpsp=fl, payload_bpsp=pl, overhead_percent=100 * (summary["bpsp"] / fl - 1),
                       payload_overhead_percent=100 * (pl / fl - 1))
    print("\n| set | model | tile | images | exact | bits/sub-pixel (file) | payload only | float likelihood | "
          "payload vs float | file vs float | enc MP/s | dec MP/s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    nan = float("nan")
    print(f"| {args.dataset} | {args.model} | {summary['tile']} | {len(rows)} | {ok}/{len(rows)} | {summary['bpsp']:.4f} | "
          f"{summary.get('payload_bpsp', nan):.4f} | {summary.get('float_bpsp', nan):.4f} | "
          f"{summary.get('payload_overhead_percent', nan):+.2f}% | {summary.get('overhead_percent', nan):+.2f}% | "
          f"{summary['median_encode_mp_s']:.3f} | {summary['median_decode_mp_s']:.3f} |")
    save("roundtrip", {"summary": summary, "images": rows})


def cmd_tiles(args) -> None:
    model = zoo.load(args.model)
    imgs = data.load_images(args.dataset, channels=model.cfg.channels, limit=args.limit)
    tiles = [int(t) for t in args.tiles.split(",")]
    res = {}
    for t in tiles:
        if args.files:  # actual files, with the encoder's per-image adaptations
            bits = sum(8 * len(nelloc.compress(im, model=args.model, tile=t)) for im in imgs)
        else:
            bits = sum(codec.plane_code_length(model, im if im.ndim == 3 else im[..., None], t) for im in imgs)
        res[t] = bits / sum(im.size for im in imgs)
        print(f"tile {t}: {res[t]:.4f} bpsp", flush=True)
    base = res.get(0, min(res.values()))
    print("\n| tile | patches per 768x512 image | bits/sub-pixel | vs untiled |")
    print("|---|---|---|---|")
    for t in tiles:
        patches = 1 if t == 0 else -(-768 // t) * -(-512 // t)
        print(f"| {t or 'untiled'} | {patches} | {res[t]:.4f} | {100 * (res[t] / base - 1):+.2f}% |")
    save("tiles", {"dataset": args.dataset, "model": args.model, "images": len(imgs), "files": args.files,
                   "bpsp_by_tile": res})


def _paper_model(run: str | None) -> exact.ExactModel:
    from nelloc.train import load_float_model as load_run

    return exact.ExactModel(exact.export(load_run(run)), load_run(run).cfg)


def _paper_model_widened() -> exact.ExactModel:
    from nelloc.model import PixelCNN
    from nelloc.train import widen

    torch.manual_seed(0)
    narrow = zoo.load_float("rgb")
    wide = PixelCNN(type(narrow.cfg)(**{**narrow.cfg.to_dict(), "width": 256}))
    widen(wide, narrow)
    with torch.no_grad():
        # int8 rows are scaled to the full range, so a dense random row over 256 inputs of 10 bits
        # breaks the loader's 2**24 sum bound: the added units keep a random quarter of their inputs
        for p in wide.parameters():
            if p.dim() > 1 and p.shape[:2] == (256, 256):
                keep = torch.rand(128, 256) < 0.25
                p[128:] *= keep.view(128, 256, *([1] * (p.dim() - 2)))
    wide.quantize = narrow.quantize
    return exact.ExactModel(exact.export(wide.eval()), wide.cfg, "paper-widened")


def cmd_speed(args) -> None:
    img = data.load_images(args.image, channels=3)[0] if Path(args.image).is_dir() else np.asarray(
        nelloc.api.to_image(data.data_root() / args.image if not Path(args.image).exists() else args.image).convert("RGB"))
    rows = []
    for name in args.models.split(","):
        if name == "paper":
            model = _paper_model(args.paper_run)
        else:
            model = _paper_model_widened() if name == "paper-widened" else zoo.load(name)
        enc, dec = [], []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            payload = codec.encode_plane(model, img, args.tile, "cpu")
            t1 = time.perf_counter()
            back = codec.decode_plane(model, payload, img.shape[0], img.shape[1], args.tile, "cpu")
            t2 = time.perf_counter()
            assert np.array_equal(back, img)
            enc.append(t1 - t0)
            dec.append(t2 - t1)
        mp = img.shape[0] * img.shape[1] / 1e6
        cfg = model.cfg
        fan0 = cfg.fan_in
        macs = fan0 * cfg.width + cfg.res_blocks * 3 * cfg.width**2 + cfg.width**2 + cfg.width * cfg.out_channels
        macs += fan0 * cfg.out_channels if cfg.skip else 0
        rows.append({"model": name, "width": cfg.width, "res_blocks": cfg.res_blocks, "macs_per_pixel": macs,
                     "encode_mp_s": mp / statistics.median(enc), "decode_mp_s": mp / statistics.median(dec),
                     "bpsp": 8 * len(payload) / img.size})
        print(rows[-1], flush=True)
    peak = matmul_gflops()
    print(f"\nmatmul peak here: {peak:.0f} GFLOP/s (fp32, {torch.get_num_threads()} threads)")
    print("\n| model | width | MACs/pixel | network bound MP/s | encode MP/s | decode MP/s | bits/sub-pixel |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        r["network_bound_mp_s"] = peak * 1e9 / (2 * r["macs_per_pixel"]) / 1e6
        print(f"| {r['model']} | {r['width']} | {r['macs_per_pixel']} | {r['network_bound_mp_s']:.3f} | "
              f"{r['encode_mp_s']:.3f} | {r['decode_mp_s']:.3f} | {r['bpsp']:.3f} |")
    save("speed", {"image": args.image, "shape": list(img.shape), "tile": args.tile, "repeat": args.repeat,
                   "matmul_gflops": peak, "rows": rows})


def cmd_network_share(args) -> None:
    """Decode time with the network and with its outputs replayed (recorded in the same decode): the
    share of decoding a smaller (faster) model could save at most."""
    model = zoo.load(args.model)
    path = data.data_root() / args.image if not Path(args.image).exists() else args.image
    img = np.asarray(nelloc.api.to_image(path).convert("RGB" if model.cfg.channels == 3 else "L"))
    img = img.reshape(img.shape[0], img.shape[1], -1)
    payload = codec.encode_plane(model, img, args.tile, "cpu")
    network = codec._network_rows
    recorded: list[torch.Tensor] = []

    def record(*a):
        out = network(*a)
        recorded.append(out.clone())
        return out

    def decode(rows) -> float:
        codec._network_rows = rows
        try:
            t0 = time.perf_counter()
            back = codec.decode_plane(model, payload, img.shape[0], img.shape[1], args.tile, "cpu")
            assert np.array_equal(back, img)
            return time.perf_counter() - t0
        finally:
            codec._network_rows = network

    full, replayed = [], []
    for _ in range(args.repeat):
        recorded.clear()
        decode(record)
        full.append(decode(network))
        outputs = iter(recorded)
        replayed.append(decode(lambda *a: next(outputs)))
    f, r = statistics.median(full), statistics.median(replayed)
    print("| image | model | decode s | decode s, network outputs replayed | network share |")
    print("|---|---|---|---|---|")
    print(f"| {args.image} | {args.model} | {f:.2f} | {r:.2f} | {(f - r) / f:.0%} |")
    save("network-share", {"image": args.image, "model": args.model, "tile": args.tile, "decode_s": full,
                           "replayed_s": replayed, "network_share": (f - r) / f})


def cmd_tile_speed(args) -> None:
    """Decode time against tile size, image size and torch threads.  The configurations are
    interleaved within each repeat, so a slow spell of a shared VM hits all of them alike."""
    model = zoo.load(args.model)
    full = np.asarray(nelloc.api.to_image(data.data_root() / args.image).convert("RGB"))
    sizes = [int(v) for v in args.sizes.split(",")]
    tiles = [int(v) for v in args.tiles.split(",")]
    threads = [int(v) for v in args.threads.split(",")]
    cases = []
    for size in sizes:
        img = np.ascontiguousarray(full if size == 0 else full[:size, :size])
        for t in tiles:
            cases.append((img, t, codec.encode_plane(model, img, t)))
    times: dict[tuple, list[float]] = {}
    old = torch.get_num_threads()
    for _ in range(args.repeat):
        for img, t, payload in cases:
            for n in threads:
                torch.set_num_threads(n)
                t0 = time.perf_counter()
                back = codec.decode_plane(model, payload, img.shape[0], img.shape[1], t, "cpu")
                times.setdefault((img.shape[:2], t, n), []).append(time.perf_counter() - t0)
                assert np.array_equal(back, img)
    torch.set_num_threads(old)
    rows = []
    print("\n| image | tile | pixels per step | torch threads | decode s (median) | decode MP/s |\n|---|---|---|---|---|---|")
    for (shape, t, n), ts in times.items():
        steps = codec.TileGrid(shape[0], shape[1], t, model.cfg.horizon, model.cfg.channels).num_steps
        med = statistics.median(ts)
        rows.append({"height": shape[0], "width": shape[1], "tile": t, "threads": n, "steps": steps,
                     "decode_s": ts, "median_decode_s": med, "decode_mp_s": shape[0] * shape[1] / 1e6 / med})
        print(f"| {shape[1]}x{shape[0]} | {t} | {shape[0] * shape[1] // steps} | {n} | {med:.3f} | {rows[-1]['decode_mp_s']:.4f} |")
    save("tile-speed", {"image": args.image, "model": args.model, "repeat": args.repeat, "rows": rows})


def cmd_batch(args) -> None:
    """Small images: one at a time vs one batched wavefront (encode_planes / decode_planes)."""
    model = zoo.load(args.model)
    imgs = data.load_images(args.dataset, channels=model.cfg.channels, limit=args.limit)
    mp = sum(im.shape[0] * im.shape[1] for im in imgs) / 1e6
    rows = []
    for how in ("one at a time", "batched"):
        t0 = time.perf_counter()
        if how == "batched":
            payloads = codec.encode_planes(model, imgs, args.tile)
        else:
            payloads = [codec.encode_plane(model, im, args.tile) for im in imgs]
        t1 = time.perf_counter()
        jobs = [codec.PlaneJob(p, im.shape[0], im.shape[1], args.tile) for p, im in zip(payloads, imgs)]
        if how == "batched":
            back = codec.decode_planes(model, jobs)
        else:
            back = [codec.decode_planes(model, [j])[0] for j in jobs]
        t2 = time.perf_counter()
        assert all(np.array_equal(b, im) for b, im in zip(back, imgs))
        rows.append({"how": how, "images": len(imgs), "encode_mp_s": mp / (t1 - t0), "decode_mp_s": mp / (t2 - t1),
                     "bpsp": 8 * sum(map(len, payloads)) / sum(im.size for im in imgs)})
    print(f"\n{args.dataset}, {len(imgs)} images, model {args.model}\n")
    print("| how | encode MP/s | decode MP/s | bits/sub-pixel |\n|---|---|---|---|")
    for r in rows:
        print(f"| {r['how']} | {r['encode_mp_s']:.4f} | {r['decode_mp_s']:.4f} | {r['bpsp']:.3f} |")
    save("batch", {"dataset": args.dataset, "model": args.model, "tile": args.tile, "rows": rows})


def _timed(fn, *args, **kw):
    t0 = time.perf_counter()
    out = fn(*args, **kw)
    return out, time.perf_counter() - t0


def cmd_devices(args) -> None:
    """Files made on one device decode on every other: each image is encoded on every device in
    ``--devices``, the files compared byte for byte, and every file decoded on every device."""
    devices = args.devices.split(",")
    for dev in devices:
        if dev.startswith("cuda") and not torch.cuda.is_available():
            raise SystemExit(f"--devices: {dev} asked for, but torch sees no CUDA device here")
    imgs = data.load_images(args.dataset, channels=zoo.load(args.model).cfg.channels, limit=args.limit)
    warm = imgs[0][:16, :16]
    for dev in devices:  # CUDA context and kernel start-up out of the timings
        nelloc.decompress(nelloc.compress(warm, model=args.model, tile=args.tile, device=dev), device=dev)
    rows = []
    for k, img in enumerate(imgs):
        mp = img.shape[0] * img.shape[1] / 1e6
        blobs, enc, dec, exact_ok = {}, {}, {}, {}
        for dev in devices:
            blobs[dev], t = _timed(nelloc.compress, img, model=args.model, tile=args.tile, device=dev)
            enc[dev] = mp / t
        for made_on, blob in blobs.items():
            for dev in devices:
                back, t = _timed(nelloc.decompress, blob, device=dev, as_array=True)
                exact_ok[f"{made_on}->{dev}"] = bool(np.array_equal(back, img))
                dec.setdefault(dev, []).append(mp / t)
        same = len({bytes(b) for b in blobs.values()}) == 1
        rows.append({"image": k, "shape": list(img.shape), "bytes": len(blobs[devices[0]]),
                     "identical_files": same, "exact": exact_ok, "encode_mp_s": enc,
                     "decode_mp_s": {d: statistics.median(v) for d, v in dec.items()}})
        print(f"{k:3d} identical files: {same}  exact: {all(exact_ok.values())}  "
              + "  ".join(f"{d}: enc {enc[d]:.3f} dec {rows[-1]['decode_mp_s'][d]:.3f} MP/s" for d in devices),
              flush=True)
    identical = sum(r["identical_files"] for r in rows)
    exact_all = sum(all(r["exact"].values()) for r in rows)
    names = {d: torch.cuda.get_device_name() if d.startswith("cuda") else "cpu" for d in devices}
    print(f"\n{args.dataset}, {len(rows)} images, model {args.model}: files identical on all devices "
          f"{identical}/{len(rows)}, every file exact on every device {exact_all}/{len(rows)}\n")
    print("| device | encode MP/s (median) | decode MP/s (median) |\n|---|---|---|")
    summary = {"dataset": args.dataset, "model": args.model, "tile": args.tile or codec.DEFAULT_TILE,
               "images": len(rows), "identical_files": identical, "exact_everywhere": exact_all,
               "device_names": names, "median_encode_mp_s": {}, "median_decode_mp_s": {}}
    for dev in devices:
        summary["median_encode_mp_s"][dev] = statistics.median(r["encode_mp_s"][dev] for r in rows)
        summary["median_decode_mp_s"][dev] = statistics.median(r["decode_mp_s"][dev] for r in rows)
        print(f"| {dev} ({names[dev]}) | {summary['median_encode_mp_s'][dev]:.3f} | "
              f"{summary['median_decode_mp_s'][dev]:.3f} |")
    save("devices", {"summary": summary, "images": rows})
    if identical < len(rows) or exact_all < len(rows):
        raise SystemExit("devices: a file differed between devices or did not decode exactly")


def matmul_gflops(n: int = 2048, k: int = 256) -> float:
    a, b = torch.rand(n * 8, k), torch.rand(k, k)
    times = []
    for _ in range(7):
        t0 = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - t0)
    return 2 * a.shape[0] * k * k / statistics.median(times) / 1e9


def _image_set_args(parser: argparse.ArgumentParser, dataset: str = "kodak", limit: int | None = None) -> None:
    parser.add_argument("--dataset", default=dataset)
    parser.add_argument("--limit", type=int, default=limit)
    parser.add_argument("--model", default="rgb")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("roundtrip")
    _image_set_args(r)
    r.add_argument("--tile", type=int)
    r.add_argument("--quiet-images", action="store_true", help="no per-image lines")
    t = sub.add_parser("tiles")
    _image_set_args(t)
    t.add_argument("--tiles", default="0,16,32,64,128")
    t.add_argument("--files", action="store_true",
                   help="actual nelloc.compress files (offsets and per-image bias) instead of the plain model's code length")
    s = sub.add_parser("speed")
    s.add_argument("--image", default="kodak/kodim23.png")
    s.add_argument("--models", default="rgb")
    s.add_argument("--paper-run")
    s.add_argument("--tile", type=int, default=codec.DEFAULT_TILE)
    s.add_argument("--repeat", type=int, default=3)
    ts = sub.add_parser("tile-speed")
    ts.add_argument("--image", default="kodak/kodim23.png")
    ts.add_argument("--model", default="rgb")
    ts.add_argument("--tiles", default="64,96,128")
    ts.add_argument("--sizes", default="128,256,512,0", help="square crops of the image; 0 = the whole image")
    ts.add_argument("--threads", default="2")
    ts.add_argument("--repeat", type=int, default=5)
    sub.add_parser("matmul")
    ns = sub.add_parser("network-share")
    ns.add_argument("--image", default="kodak/kodim23.png")
    ns.add_argument("--model", default="rgb")
    ns.add_argument("--tile", type=int, default=codec.DEFAULT_TILE)
    ns.add_argument("--repeat", type=int, default=3)
    dv = sub.add_parser("devices")
    _image_set_args(dv)
    dv.add_argument("--tile", type=int)
    dv.add_argument("--devices", default="cuda,cpu", help="comma-separated torch devices, e.g. cuda,cpu")
    b = sub.add_parser("batch")
    _image_set_args(b, dataset="cifar10-test", limit=200)
    b.add_argument("--tile", type=int, default=codec.DEFAULT_TILE)
    args = p.parse_args()
    if args.cmd == "matmul":
        print(f"{matmul_gflops():.1f} GFLOP/s")
        return
    {"roundtrip": cmd_roundtrip, "tiles": cmd_tiles, "speed": cmd_speed, "batch": cmd_batch,
     "tile-speed": cmd_tile_speed, "devices": cmd_devices, "network-share": cmd_network_share}[args.cmd](args)


if __name__ == "__main__":
    main()
