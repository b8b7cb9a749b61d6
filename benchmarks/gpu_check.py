"""GPU readiness in one command: what the trainer's GPU path does on the machine it runs on.

    bash benchmarks/gpu_check.sh --out DIR [--manifest PAIRS] [--device cuda|cpu] [--tiny]

Writes DIR/gpu_check.json (every figure and every error) and DIR/gpu_check.md (the tables):

1. environment: python, torch, torchvision, CUDA, GPU and driver;
2. decode: ``decode_gpu`` against ``decode_cpu`` on the manifest's shard images (largest absolute
   pixel difference), then again while other kernels run on a second stream, the case of the
   nvJPEG stream race (pytorch/vision#9606); on a machine without CUDA only the CPU decode runs;
3. ``ssl.bench``: the model-only ceiling and the real data path side by side in one process,
   eager and ``--compile``, for resnet18 at 128 and 224 px and resnet50 at 224 px, with the
   end-to-end share of the ceiling and the GPU memory peak;
4. a short training run of every objective and framework (simclr, geoclr + sp, sp, csp on the
   geoclr encoder, simsiam, moco, byol, dino with a ViT), each with its last loss and whether it
   is finite, and ``torchrun --nproc_per_node 1`` (the trainer starts its process group under
   torchrun even with one process: NCCL on CUDA, gloo on the CPU, and trains under DDP);
5. ``ssl.embed`` and ``ssl.evaluate`` of the geoclr checkpoint on the device.

A failed step is recorded with its error and the check goes on; the exit status is 1 when any
step failed, 2 for a mistake in the arguments. ``--tiny`` shrinks every size (tiny backbone,
32 px, a few steps) so the whole check runs on two CPU cores in a few minutes: the test suite runs
it that way, so the script keeps working as the trainer changes. The manifest (default: the
benchmark survey of ``make reproduce``) is built beforehand on a machine with the pipeline's
dependencies; the check itself needs only torch, torchvision, pyarrow, pillow and scikit-learn.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # `ssl` is the project's package (it loads the standard module
    sys.path.insert(0, str(REPO))  # first), as for python -m ssl.train; nothing imported ssl yet
DEFAULT_MANIFEST = REPO / "data" / "bench" / "manifests" / "pairs.parquet"

# (name, extra ssl.train arguments); csp trains on the geoclr run's encoder
OBJECTIVES = [
    ("simclr", ["--objective", "simclr"]),
    ("geoclr+sp", ["--objective", "geoclr", "--sp", "0.5"]),
    ("sp", ["--objective", "sp"]),
    ("csp", ["--objective", "csp"]),
    ("simsiam", ["--objective", "simsiam"]),
    ("moco", ["--objective", "moco"]),
    ("byol", ["--objective", "byol"]),
    ("dino", ["--objective", "dino", "--local-crops", "2"]),
]

SIZES = {
    "full": {"decode_images": 2000, "decode_repeats": 5,
             "bench": [("resnet18", 128, 512), ("resnet18", 224, 256), ("resnet50", 224, 256)],
             "bench_steps": 30, "bench_warmup": 10, "compile": True,
             "backbone": "resnet18", "vit": "vit-small", "image_size": 128, "batch": 256,
             "vit_size": 96, "vit_batch": 128, "steps": 60, "eval_seeds": "0"},
    "tiny": {"decode_images": 64, "decode_repeats": 2,
             "bench": [("tiny", 32, 8)], "bench_steps": 2, "bench_warmup": 1, "compile": False,
             "backbone": "tiny", "vit": "vit-tiny", "image_size": 32, "batch": 8,
             "vit_size": 32, "vit_batch": 8, "steps": 2, "eval_seeds": "0"},
}


class CheckError(Exception):
    """A step failed; its message goes into the report."""


def _tail(text: str, n: int = 1500) -> str:
    return text[-n:] if text else ""


def run_cmd(cmd: list[str], log: Path, timeout: float, env: dict | None = None) -> str:
    """Run one command from the repository root, its output into ``log``; CheckError with the
    last lines when it fails or outlasts ``timeout`` seconds."""
    log.parent.mkdir(parents=True, exist_ok=True)
    try:
        res = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout,
                             env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})})
    except subprocess.TimeoutExpired as exc:
        out = (exc.stdout or b"").decode(errors="replace") if isinstance(exc.stdout, bytes) \
            else (exc.stdout or "")
        log.write_text(out)
        raise CheckError(f"timed out after {timeout:.0f} s: {' '.join(cmd[1:4])} ...") from None
    log.write_text(res.stdout + res.stderr)
    if res.returncode != 0:
        raise CheckError(f"exit status {res.returncode}: {_tail(res.stderr or res.stdout, 600)}")
    return res.stdout


def environment(device: str) -> dict:
    import torch
    import torchvision

    env = {"python": platform.python_version(), "torch": torch.__version__,
           "torchvision": torchvision.__version__, "cuda": torch.version.cuda,
           "device": device, "cpu_count": os.cpu_count()}
    if device == "cuda":
        env["gpu"] = torch.cuda.get_device_name()
        env["gpu_memory_gib"] = round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1)
        smi = shutil.which("nvidia-smi")
        if smi:
            res = subprocess.run([smi, "--query-gpu=driver_version", "--format=csv,noheader"],
                                 capture_output=True, text=True, timeout=30)
            env["driver"] = res.stdout.strip() or None
    return env


def decode_check(manifest_path: Path, device: str, n: int, repeats: int) -> dict:
    """Largest absolute pixel difference between GPU and CPU decode of the first ``n`` shard
    images, alone and with a matrix product running on a second stream; CPU decode only
    without CUDA."""
    from ssl.data.manifest import load_manifest
    from ssl.data.store import ImageStore, decode_cpu, decode_gpu

    import torch

    store = ImageStore.open(load_manifest(manifest_path))
    rows = range(min(n, len(store)))
    jpegs = [store.read(i) for i in rows]
    t0 = time.perf_counter()
    ref = decode_cpu(jpegs)
    out = {"images": len(jpegs), "cpu_img_s": len(jpegs) / (time.perf_counter() - t0)}
    if device != "cuda":
        out["gpu"] = "not run: no CUDA device"
        return out

    def worst(got) -> int:
        return max(int((a.cpu().int() - b.int()).abs().max()) for a, b in zip(got, ref,
                                                                           strict=True))

    batch = 128
    decode_gpu(jpegs[:batch], device)  # warm-up: nvJPEG handles, allocator
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    got = [im for i in range(0, len(jpegs), batch) for im in decode_gpu(jpegs[i:i + batch],
                                                                        device)]
    torch.cuda.synchronize()
    out["gpu_img_s"] = len(jpegs) / (time.perf_counter() - t0)
    out["max_abs_diff"] = worst(got)
    side = torch.cuda.Stream()
    a = torch.randn(4096, 4096, device=device)
    diffs = []
    for _ in range(repeats):
        with torch.cuda.stream(side):
            for _ in range(8):
                a = (a @ a).clamp_(-1, 1)
        got = [im for i in range(0, len(jpegs), batch) for im in decode_gpu(
            jpegs[i:i + batch], device)]
        torch.cuda.synchronize()
        diffs.append(worst(got))
    out["max_abs_diff_concurrent"] = max(diffs)
    return out


def bench(manifest: Path, size: dict, work: Path) -> list[dict]:
    """ssl.bench per configuration (eager, and compiled where the size asks), with the GPU
    memory peak of the process read from its JSON."""
    rows = []
    for backbone, px, batch in size["bench"]:
        dest = work / f"bench-{backbone}-{px}.json"
        cmd = [sys.executable, "-m", "ssl.bench", "--manifest", str(manifest), "--backbone",
               backbone, "--image-size", str(px), "--batch-size", str(batch), "--steps",
               str(size["bench_steps"]), "--warmup", str(size["bench_warmup"]), "--json",
               str(dest), "--overwrite"] + (["--compile"] if size["compile"] else [])
        # --overwrite: the check owns its work folder; a rerun replaces its own bench records
        row = {"backbone": backbone, "image_size": px, "batch": batch}
        t0 = time.perf_counter()
        try:
            run_cmd(cmd, work / "logs" / f"bench-{backbone}-{px}.log", 600)
            got = json.loads(dest.read_text())
            row["rows"] = got["rows"]
        except (CheckError, OSError, ValueError, KeyError) as exc:
            row["error"] = str(exc)
        row["seconds"] = round(time.perf_counter() - t0, 1)
        rows.append(row)
    return rows


def last_loss(run: Path) -> float | None:
    lines = (run / "metrics.jsonl").read_text().strip().splitlines()
    return json.loads(lines[-1]).get("loss") if lines else None


def train_args(manifest: Path, size: dict, device: str, vit: bool = False) -> list[str]:
    return ["--manifest", str(manifest), "--backbone", size["vit"] if vit else size["backbone"],
            "--image-size", str(size["vit_size"] if vit else size["image_size"]),
            "--batch-size", str(size["vit_batch"] if vit else size["batch"]),
            "--steps", str(size["steps"]), "--device", device, "--seed", "0",
            "--no-tensorboard", "--log-every", "1"]


def objectives(manifest: Path, size: dict, device: str, work: Path) -> list[dict]:
    rows = []
    geoclr = work / "runs" / "geoclr+sp"
    for name, extra in OBJECTIVES:
        run = work / "runs" / name
        cmd = [sys.executable, "-m", "ssl.train",
               *train_args(manifest, size, device, vit=name == "dino"), *extra,
               "--out", str(run), "--overwrite"]
        if name == "csp":
            cmd += ["--image-encoder", str(geoclr / "last.pt")]
        row: dict = {"objective": name}
        t0 = time.perf_counter()
        try:
            run_cmd(cmd, work / "logs" / f"train-{name}.log", 600)
            loss = last_loss(run)
            row.update(loss=loss, finite=loss is not None and math.isfinite(loss))
        except (CheckError, OSError, ValueError) as exc:
            row["error"] = str(exc)
        row["seconds"] = round(time.perf_counter() - t0, 1)
        rows.append(row)
    return rows


def ddp(manifest: Path, size: dict, device: str, work: Path) -> dict:
    """torchrun with one process: the trainer launched as torchrun launches it."""
    run = work / "runs" / "torchrun"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
           "1", "-m", "ssl.train", *train_args(manifest, size, device), "--objective", "geoclr",
           "--out", str(run), "--overwrite"]
    out: dict = {"backend": "nccl" if device == "cuda" else "gloo"}
    t0 = time.perf_counter()
    try:
        text = run_cmd(cmd, work / "logs" / "torchrun.log", 600)
        loss = last_loss(run)
        out.update(loss=loss, finite=loss is not None and math.isfinite(loss),
                   launched="batch " in text, process_group="process group: " in text)
        if not out["process_group"]:
            raise CheckError("the trainer started under torchrun without a process group")
    except (CheckError, OSError, ValueError) as exc:
        out["error"] = str(exc)
    out["seconds"] = round(time.perf_counter() - t0, 1)
    return out


def embed_and_evaluate(manifest: Path, size: dict, device: str, work: Path) -> dict:
    ckpt = work / "runs" / "geoclr+sp" / "last.pt"
    out: dict = {}
    for name, cmd in (
            ("embed", [sys.executable, "-m", "ssl.embed", "--checkpoint", str(ckpt),
                       "--manifest", str(manifest), "--device", device, "--out",
                       str(work / "embeddings.parquet"), "--overwrite"]),
            ("evaluate", [sys.executable, "-m", "ssl.evaluate", "--checkpoint", str(ckpt),
                          "--manifest", str(manifest), "--device", device, "--seeds",
                          size["eval_seeds"], "--no-spatial-tasks", "--out",
                          str(work / "eval"), "--overwrite"])):
        t0 = time.perf_counter()
        try:
            run_cmd(cmd, work / "logs" / f"{name}.log", 600)
            out[name] = {"ok": True}
            if name == "evaluate":
                metrics = json.loads((work / "eval" / "metrics.json").read_text())
                out[name]["reference"] = metrics.get("reference")
        except (CheckError, OSError, ValueError) as exc:
            out[name] = {"ok": False, "error": str(exc)}
        out[name]["seconds"] = round(time.perf_counter() - t0, 1)
    return out


def failures(res: dict) -> list[str]:
    """Names of the steps that failed or gave a non-finite loss."""
    bad = [k for k in ("environment", "decode") if "error" in res.get(k, {})]
    dec = res.get("decode", {})
    if dec.get("max_abs_diff_concurrent", 0) > dec.get("max_abs_diff", 0):
        bad.append("decode under concurrent kernels")
    bad += [f"bench {r['backbone']} {r['image_size']} px" for r in res.get("bench", [])
            if "error" in r]
    bad += [f"train {r['objective']}" for r in res.get("objectives", [])
            if "error" in r or not r.get("finite")]
    d = res.get("ddp", {})
    if "error" in d or not d.get("finite"):
        bad.append("torchrun")
    bad += [k for k, v in res.get("embed_evaluate", {}).items() if not v.get("ok")]
    return bad


def markdown(res: dict) -> str:
    env = res["environment"]
    lines = [f"# GPU check ({res['size']}, {res['date']})", "",
             "| | |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in env.items()]
    dec = res.get("decode", {})
    lines += ["", "## Decode", "", "| images | CPU img/s | GPU img/s | max abs diff | "
              "max abs diff, concurrent kernels |", "|---:|---:|---:|---:|---:|"]
    if "error" in dec:
        lines.append(f"| failed: {dec['error']} | | | | |")
    else:
        gpu = dec.get("gpu_img_s")
        lines.append(f"| {dec.get('images')} | {dec.get('cpu_img_s', 0):,.0f} | "
                     + (f"{gpu:,.0f}" if gpu else dec.get("gpu", "—"))
                     + f" | {dec.get('max_abs_diff', '—')} | "
                     f"{dec.get('max_abs_diff_concurrent', '—')} |")
    lines += ["", "## Throughput (ssl.bench: images per second, two views per image)", "",
              "| model | px | batch | mode | ceiling | end to end | share of ceiling | "
              "waiting for data | GPU memory peak |", "|---|---:|---:|---|---:|---:|---:|---:|---:|"]
    for r in res.get("bench", []):
        if "error" in r:
            lines.append(f"| {r['backbone']} | {r['image_size']} | {r['batch']} | failed: "
                         f"{r['error'][:200]} | | | | | |")
            continue
        for m in r["rows"]:
            lines.append(f"| {r['backbone']} | {r['image_size']} | {r['batch']} | {m['mode']} | "
                         f"{m['ceiling_img_s']:,.0f} | {m['end_to_end_img_s']:,.0f} | "
                         f"{100 * m['ratio']:.0f} % | {100 * m['data_wait_share']:.0f} % | "
                         + (f"{m['peak_memory_gib']:.1f} GiB |" if m.get("peak_memory_gib")
                            else "— |"))
    lines += ["", "## Training steps", "", "| objective | last loss | finite | seconds |",
              "|---|---:|---|---:|"]
    for r in [*res.get("objectives", []), {"objective": f"torchrun ({res['ddp'].get('backend')})",
                                           **res.get("ddp", {})}]:
        if "error" in r:
            lines.append(f"| {r['objective']} | failed: {r['error'][:200]} | no | "
                         f"{r.get('seconds', '')} |")
        else:
            lines.append(f"| {r['objective']} | {r['loss']:.4f} | "
                         f"{'yes' if r['finite'] else 'NO'} | {r['seconds']} |")
    lines += ["", "## Embed and evaluate", ""]
    for k, v in res.get("embed_evaluate", {}).items():
        lines.append(f"- {k}: " + ("ok" if v.get("ok") else f"failed: {v.get('error')}")
                     + f" ({v.get('seconds')} s)")
    bad = failures(res)
    lines += ["", "**Failed:** " + "; ".join(bad) if bad else "**Every step passed.**", "",
              f"Whole check: {res['seconds'] / 60:.1f} min."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="benchmarks/gpu_check.sh",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="folder for gpu_check.json, .md and logs")
    ap.add_argument("--manifest", default=str(DEFAULT_MANIFEST),
                    help="pairs.parquet of a built survey (default: make reproduce's benchmark "
                         "survey)")
    ap.add_argument("--device", choices=["cuda", "cpu"], default=None,
                    help="default: cuda when available")
    ap.add_argument("--tiny", action="store_true",
                    help="tiny sizes: the CPU dry run of the test suite")
    args = ap.parse_args(argv)
    import torch

    manifest = Path(args.manifest)
    if not manifest.is_file():
        print(f"error: --manifest {manifest}: not found; build a survey first (make "
              "reproduce-cpu builds data/bench, or python -m pipeline build --catalog C)",
              file=sys.stderr)
        return 2
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda: torch sees no CUDA device here", file=sys.stderr)
        return 2
    work = Path(args.out)
    work.mkdir(parents=True, exist_ok=True)
    size = SIZES["tiny" if args.tiny else "full"]
    t0 = time.perf_counter()
    res: dict = {"size": "tiny" if args.tiny else "full",
                 "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                 "manifest": str(manifest), "environment": environment(device)}

    def step(name: str, fn, *a):
        print(f"[gpu-check] {name} ...", flush=True)
        s = time.perf_counter()
        try:
            res[name] = fn(*a)
        except Exception as exc:  # noqa: BLE001 - a failed step is reported, the check goes on
            res[name] = {"error": f"{type(exc).__name__}: {exc}"}
        print(f"[gpu-check] {name}: {time.perf_counter() - s:.0f} s", flush=True)
        (work / "gpu_check.json").write_text(json.dumps(res, indent=1, default=str))

    step("decode", decode_check, manifest, device, size["decode_images"], size["decode_repeats"])
    step("bench", bench, manifest, size, work)
    step("objectives", objectives, manifest, size, device, work)
    step("ddp", ddp, manifest, size, device, work)
    step("embed_evaluate", embed_and_evaluate, manifest, size, device, work)
    res["seconds"] = round(time.perf_counter() - t0, 1)
    res["failed"] = failures(res)
    (work / "gpu_check.json").write_text(json.dumps(res, indent=1, default=str))
    (work / "gpu_check.md").write_text(markdown(res))
    print(markdown(res))
    return 1 if res["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
