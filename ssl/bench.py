"""Training throughput: the model-only ceiling and the real data path, side by side in one run.

    python -m ssl.bench --manifest data/seafloor/manifests/pairs.parquet [--compile]

1. ceiling: random tensors in place of the views (2 x batch per step), the same model, loss,
   backward and optimiser step;
2. end to end: the trainer's data path on the manifest's image shards (GPU decode when CUDA is
   present, CPU worker processes otherwise), GPU augmentation in batch, then the same step.
Both count encoder views per second (2 per image per step) after warm-up steps, and the ratio
end-to-end / ceiling is printed for eager and, with --compile, compiled models.

``--json FILE`` also writes the results as JSON (``"tool": "ssl.bench"`` in it). An existing
FILE is replaced only with ``--overwrite`` and only when it is such a record (an earlier
``--json`` of this command); any other file is never replaced. Checked before measuring.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

from .data import augment
from .data.manifest import ManifestError, load_manifest
from .data.store import BatchSource, ImageStore
from .files import write_text_atomic
from .flags import non_negative_int, positive_int
from .objectives.simclr import nt_xent
from .training.models import BACKBONES, Encoder, choose_device

TOOL = "ssl.bench"


def is_bench_record(path: Path) -> bool:
    """Whether ``path`` is a JSON file this command wrote with --json (its ``tool`` key, or the
    shape records had before the key: device, args with a manifest, rows)."""
    try:
        if Path(path).stat().st_size > 2**24:  # far larger than any record: not one
            return False
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if not isinstance(doc, dict):
        return False
    return doc.get("tool") == TOOL or (set(doc) == {"device", "args", "rows"}
                                        and isinstance(doc["args"], dict)
                                        and "manifest" in doc["args"])


def json_out_error(path: Path, overwrite: bool) -> str | None:
    """Why --json may not be written at ``path`` (one message), or None."""
    if path.is_dir():
        return f"--json {path} is a folder; expected a file name such as {path / 'bench.json'}"
    if path.is_symlink():
        return f"--json {path} is a link; it is never replaced: choose another --json file"
    if path.exists():
        if not path.is_file() or not is_bench_record(path):
            return (f"--json {path} exists and is not a record written by ssl.bench --json; it "
                    "is never replaced: choose another --json file")
        if not overwrite:
            return (f"--json {path} holds the record of an earlier ssl.bench run; pass "
                    "--overwrite to replace it, or choose another --json file")
    return None


def _step(model, opt, views, autocast, temperature=0.1):
    with autocast:
        _, z = model(views)
    z = z.float()
    b = z.shape[0] // 2
    loss = nt_xent(z[:b], z[b:], temperature)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def measure(args, device, compiled: bool) -> dict:
    torch.manual_seed(0)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    enc = Encoder(args.backbone).to(device)
    if device.type == "cuda":
        enc = enc.to(memory_format=torch.channels_last)
    model = torch.compile(enc) if compiled else enc
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.precision == "bf16")
    fmt = torch.channels_last if device.type == "cuda" else torch.contiguous_format
    b, s = args.batch_size, args.image_size

    views = torch.randn(2 * b, 3, s, s, device=device).contiguous(memory_format=fmt)
    for _ in range(args.warmup):
        _step(model, opt, views, autocast)
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(args.steps):
        _step(model, opt, views, autocast)
    _sync(device)
    ceiling = 2 * b * args.steps / (time.perf_counter() - t0)

    manifest = args.loaded
    source = BatchSource(ImageStore.open(manifest), b, device=device, workers=args.workers, seed=0)
    gen = torch.Generator(device=device).manual_seed(0)
    done, wait, t0 = 0, 0.0, None
    epoch = 0
    while done < args.warmup + args.steps:
        for batch in source.batches(epoch):
            with torch.no_grad():
                v = torch.cat([augment.simclr_views(batch.canvas, batch.sizes, s, gen),
                               augment.simclr_views(batch.canvas, batch.sizes, s, gen)])
            _step(model, opt, v.contiguous(memory_format=fmt), autocast)
            done += 1
            if done == args.warmup:
                _sync(device)
                t0 = time.perf_counter()
            elif done > args.warmup:
                wait += batch.wait_s
            if done >= args.warmup + args.steps:
                break
        epoch += 1
    _sync(device)
    secs = time.perf_counter() - t0
    e2e = 2 * b * args.steps / secs
    peak = (torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None)
    return {"mode": "compiled" if compiled else "eager", "ceiling_img_s": ceiling,
            "end_to_end_img_s": e2e, "ratio": e2e / ceiling, "data_wait_share": wait / secs,
            "peak_memory_gib": peak}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m ssl.bench", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--manifest", required=True, help="pairs.parquet of a built site")
    ap.add_argument("--backbone", choices=BACKBONES, default="resnet18")
    ap.add_argument("--image-size", type=positive_int, default=224)
    ap.add_argument("--batch-size", type=positive_int, default=256)
    ap.add_argument("--steps", type=positive_int, default=30, help="timed steps per measurement")
    ap.add_argument("--warmup", type=non_negative_int, default=10, help="untimed steps first")
    ap.add_argument("--precision", choices=["bf16", "fp32"], default=None,
                    help="default bf16 on cuda, fp32 on cpu")
    ap.add_argument("--workers", type=non_negative_int, default=None,
                    help="CPU decode processes (no GPU)")
    ap.add_argument("--compile", action="store_true", help="also measure torch.compile")
    ap.add_argument("--json", default=None, metavar="FILE",
                    help="also write the results to this file (a new file, or an earlier "
                         "record of this command with --overwrite)")
    ap.add_argument("--overwrite", action="store_true",
                    help="replace the record of an earlier run at --json (any other file is "
                         "never replaced)")
    args = ap.parse_args(argv)
    if args.json:  # before loading or measuring anything
        why = json_out_error(Path(args.json), args.overwrite)
        if why:
            print(f"error: {why}", file=sys.stderr)
            return 2
    try:
        manifest = load_manifest(args.manifest)
    except ManifestError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if manifest.n < args.batch_size:
        print(f"error: --batch-size {args.batch_size} is larger than the manifest's "
              f"{manifest.n} images; use --batch-size {manifest.n} or less", file=sys.stderr)
        return 2
    args.loaded = manifest
    device = choose_device(None)
    if args.precision is None:
        args.precision = "bf16" if device.type == "cuda" else "fp32"
    if args.workers is None:
        import os

        args.workers = max(0, min(8, (os.cpu_count() or 1) - 1))
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    name = torch.cuda.get_device_name() if device.type == "cuda" else (
        platform.processor() or platform.machine())
    print(f"device: {name}; torch {torch.__version__}; {args.backbone} {args.image_size} px, "
          f"batch 2x{args.batch_size}, {args.precision}", flush=True)
    rows = [measure(args, device, False)]
    if args.compile:
        rows.append(measure(args, device, True))
    print("\n| mode | ceiling img/s | end-to-end img/s | end-to-end / ceiling | waiting for data |")
    print("|---|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['mode']} | {r['ceiling_img_s']:,.0f} | {r['end_to_end_img_s']:,.0f} "
              f"| {100 * r['ratio']:.0f} % | {100 * r['data_wait_share']:.0f} % |")
    if args.json:
        why = json_out_error(Path(args.json), args.overwrite)  # again: it may have changed
        if why:
            print(f"error: {why}", file=sys.stderr)
            return 2
        doc = {"tool": TOOL, "device": name, "rows": rows,
               "args": {k: v for k, v in vars(args).items() if k != "loaded"}}
        try:
            write_text_atomic(args.json, json.dumps(doc, indent=1) + "\n")
        except OSError as exc:  # a full disk, a folder that went away: one line
            print(f"error: --json {args.json}: {exc}", file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
