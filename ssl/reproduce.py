"""The reproduction table: does location help, measured like the papers measure it.

    python -m ssl.reproduce --manifest data/bench/manifests/pairs.parquet --preset full \
        --out runs/reproduce --report REPRODUCTION.md          (make reproduce)

Evaluates two baselines under the same protocol (a frozen randomly initialised encoder of the
same backbone, and hand-crafted features; a third, torchvision's ImageNet-supervised encoder,
when its weights are in the local torch cache: never downloaded, the log says when it is left
out and where the file goes), then trains, with the same budget and seeds, simclr,
simclr+sp, geoclr, geoclr+sp, the other frameworks (simsiam, moco, byol, dino; --frameworks),
each with two views and with location positives, and csp with the
mc, nce and l2 losses (on the geoclr encoder of the same seed); evaluates each with
`ssl.evaluate` (spatially blocked splits, several split seeds; SP's spatial tasks for every image
encoder, so that +sp can be compared with its baseline) and writes REPRODUCTION.md: macro-F1 at
128 and full dims, the spatial-task scores and the CSP scores, each mean ± std over training
seeds × split seeds, beside the papers' claims with a plain verdict for each.

A previous reproduction is never overwritten by accident: when --out already holds any of the
runs (or reproduce.json) it refuses before training anything; use a new --out, or --overwrite
to train every run afresh (each run folder is replaced as `ssl.train --overwrite` does).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import torch

from .data.manifest import ManifestError, load_manifest
from .evaluation.run import main as evaluate_main
from .evaluation.stats import combine, diff_rows, judge, paired
from .files import (
    ReportError,
    check_report,
    check_whole_report,
    replace_section,
    write_text_atomic,
)
from .flags import non_negative_int, positive_int
from .training import runfolder
from .training.frameworks import BASELINE, REGISTRY
from .training.loop import TrainingError
from .training.models import choose_device
from .training.pretrained import fetch_hint, imagenet_weights
from .training.run import main as train_main
from .training.runlog import CheckpointError

# the other frameworks (every registered one beside the baseline simclr, which the main table
# trains as simclr and geoclr), each with two views and with location positives, same path
FRAMEWORKS = tuple(n for n in REGISTRY if n != BASELINE)


def framework_configs(names) -> dict[str, list[str]]:
    out = {}
    for fw in names:
        flags = ["--objective", fw, *REGISTRY[fw].reproduce_flags]
        out[fw] = [*flags, "--positives", "views"]
        out[f"{fw}+location"] = [*flags, "--positives", "location"]
    return out


ALL_FRAMEWORK_CONFIGS = framework_configs(FRAMEWORKS)
PRESETS = {
    # one H100: resnet18 at 128 px, batch 2x256; about 20 minutes for the whole table
    "full": {"backbone": "resnet18", "image_size": 128, "batch_size": 256, "steps": 1200,
             "csp_steps": 800, "train_seeds": [0, 1, 2], "eval_seeds": [0, 1, 2],
             "sweep_seeds": [0, 1, 2], "frameworks": list(FRAMEWORKS)},
    # two CPU cores: resnet18 (512-d features, so that "largest at 128 dims" is a question) at
    # 64 px, three training seeds, the r_loc sweep with one. Sized for about 90-100 minutes:
    # resnet18 trains at 30-60 images/s at 64 px on two cores (about 2.5 minutes per image
    # encoder), an evaluation takes about a minute. So few steps leave the encoders barely
    # trained: this preset tests the code and the statistics, not the methods (REPRODUCTION.md)
    "cpu": {"backbone": "resnet18", "image_size": 64, "batch_size": 64, "steps": 120,
            "csp_steps": 120, "train_seeds": [0, 1, 2], "eval_seeds": [0, 1, 2],
            "sweep_seeds": [0], "frameworks": []},  # the other frameworks: --frameworks
    # CPU-sized: a small CNN at 32 px, the same code path, a few minutes on two cores
    "smoke": {"backbone": "tiny", "image_size": 32, "batch_size": 32, "steps": 60,
              "csp_steps": 60, "train_seeds": [0], "eval_seeds": [0, 1, 2],
              "sweep_seeds": [0], "frameworks": list(FRAMEWORKS)},
    # one ~8-minute call on one H100/H200 (make reproduce-gpu): the claims' runs only (simclr,
    # geoclr, geoclr+sp, csp on geoclr), three training seeds, the probe cells the claims read,
    # SP's spatial tasks where the sp claim reads them, each baseline evaluated once, no
    # cross-dive column and no r_loc sweep. Evaluations run as 6 processes beside the training
    # (their probes are CPU work). Sized from CPU timings of each part and the H100 anchors to
    # about 6 minutes (REPRODUCTION.md's GPU section has the arithmetic); not yet measured
    "gpu": {"backbone": "resnet18", "image_size": 128, "batch_size": 256, "steps": 500,
            "csp_steps": 300, "train_seeds": [0, 1, 2], "eval_seeds": [0, 1, 2],
            "sweep_seeds": [], "frameworks": [], "configs": ["simclr", "geoclr", "geoclr+sp"],
            "cells": ["--probes", "svm", "--regimes", "10,all", "--dims", "128,full"],
            "spatial_tasks": ["geoclr", "geoclr+sp"], "cross_dive": False,
            "baselines": "first seed", "eval_workers": 6, "section": "gpu"},
}
# --tiny: the preset's shape (runs, seeds, cells, report) at sizes two CPU cores run in a few
# minutes; the test suite dry-runs make reproduce-gpu this way
TINY = {"backbone": "tiny", "image_size": 32, "batch_size": 16, "steps": 4, "csp_steps": 4,
        "eval_workers": 2}
IMAGE_CONFIGS = {
    "simclr": ["--objective", "simclr"],
    "simclr+sp": ["--objective", "simclr", "--sp", "0.5"],
    "geoclr": ["--objective", "geoclr"],
    "geoclr+sp": ["--objective", "geoclr", "--sp", "0.5"],
}
CSP_LOSSES = ("mc", "nce", "l2")
# the probe cells the table and the claims read (svm at 128 and full width, all labels and 10
# per class; kNN at full width): evaluating only these halves the probe time of every run
TABLE_CELLS = ["--probes", "svm,knn", "--regimes", "10,all", "--dims", "128,full"]
BASELINES = {"random-init": ["--baseline", "random-init"],
             "handcrafted": ["--baseline", "handcrafted"]}
# evaluated only when torchvision's ImageNet weights of the preset's backbone are in the local
# torch cache (never downloaded; training/pretrained.py); its row appears only then
OPTIONAL_BASELINES = {"imagenet": ["--baseline", "imagenet"]}
CLAIMS = {
    "lrssl": "Location-regularised SSL: +4.9 ± 4.0 % macro-F1 over standard SSL for CNNs, "
             "largest with 128-d features (Liang et al. 2025, arXiv 2509.06660)",
    "geoclr": "GeoCLR: +10.2 % accuracy over SimCLR (Yamada et al. 2022)",
    "frameworks": "Location positives help positive-pair frameworks: +4.9 ± 4.0 % macro-F1 "
                  "for CNNs, +6.3 ± 8.9 % for ViTs (Liang et al. 2025, arXiv 2509.06660; "
                  "there with multi-crop methods not gaining)",
    "csp": "CSP: the MC loss ahead of NCE and L2 (Mai et al., ICML 2023)",
    "sp": "SP improves spatial reasoning (Shen et al. 2026, arXiv 2605.09963)",
}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m ssl.reproduce", description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--manifest", required=True, help="pairs.parquet of the benchmark survey")
    p.add_argument("--preset", choices=sorted(PRESETS), default="full")
    p.add_argument("--out", default="runs/reproduce",
                   help="folder for every run; refused when it holds a previous reproduction "
                        "unless --overwrite")
    p.add_argument("--overwrite", action="store_true",
                   help="retrain into the run folders of a previous reproduction in --out")
    p.add_argument("--report", default="REPRODUCTION.md",
                   help="Markdown report (.md) to write: a new file, or one an earlier "
                        "reproduction wrote (its written discussion is kept); a preset with a "
                        "section (gpu) writes only between its markers in a .md file")
    p.add_argument("--steps", type=positive_int, default=None,
                   help="override the preset's steps")
    p.add_argument("--train-seeds", type=_train_seeds, default=None,
                   help="override, e.g. 0,1,2 (whole numbers >= 0, each once)")
    p.add_argument("--sweep", type=_sweep, default=None, metavar="R=PAIRS,...",
                   help="r_loc sweep for geoclr: pairs manifests of the same survey built with "
                        "other radii (pipeline build --r-loc R --out DIR --cache-from ...), "
                        "e.g. 1=data/bench/rloc-1/pairs.parquet,2=...; trained with the "
                        "preset's sweep seeds and evaluated like the rest")
    p.add_argument("--frameworks", type=_frameworks, default=None, metavar="F,...",
                   help="the frameworks trained besides simclr/geoclr, each with two views and "
                        f"with location positives ({', '.join(FRAMEWORKS)}, 'all' or 'none'); "
                        "default: the preset's (all for full and smoke, none for cpu)")
    p.add_argument("--tiny", action="store_true",
                   help="the preset's runs, seeds and report at tiny sizes (a small CNN at 32 "
                        "px, 4 steps): a dry run of the whole path on the CPU")
    p.add_argument("--device", choices=["cuda", "cpu"], default=None)
    p.add_argument("--workers", type=non_negative_int, default=None,
                   help="CPU decode processes")
    p.add_argument("--eval-workers", type=positive_int, default=None,
                   help="evaluations run at once, as processes beside the training (default: "
                        "the preset's; 1 runs each in this process when its run is trained)")
    return p


def _train_seeds(text: str) -> str:
    """--train-seeds: '0,1,2' checked (whole numbers >= 0, none twice), passed on as text."""
    seeds = [non_negative_int(t.strip()) for t in text.split(",") if t.strip()]
    if not seeds:
        raise argparse.ArgumentTypeError(f"expected seeds like 0,1,2, got {text!r}")
    twice = sorted({v for v in seeds if seeds.count(v) > 1})
    if twice:
        raise argparse.ArgumentTypeError(f"seed {twice[0]} is given twice in {text!r}; give "
                                         "each seed once")
    return ",".join(str(v) for v in seeds)


def _frameworks(text: str) -> list[str]:
    if text in ("all", "none"):
        return list(FRAMEWORKS) if text == "all" else []
    names = [t.strip() for t in text.split(",") if t.strip()]
    bad = [n for n in names if n not in FRAMEWORKS]
    if bad or not names:
        raise argparse.ArgumentTypeError(f"--frameworks: {', '.join(bad) or repr(text)} is not "
                                         f"one of {', '.join(FRAMEWORKS)} (or all, none)")
    return names


def _sweep(text: str) -> dict[float, str]:
    """'1=a.parquet,2=b.parquet' -> {1.0: 'a.parquet', 2.0: 'b.parquet'}."""
    out: dict[float, str] = {}
    for item in (t.strip() for t in text.split(",")):
        if not item:
            continue
        radius, sep, path = item.partition("=")
        try:
            r = float(radius)
        except ValueError:
            r = -1.0
        if not sep or not path or not r > 0:
            raise argparse.ArgumentTypeError(
                f"--sweep: expected RADIUS=PAIRS_MANIFEST items with a positive radius in metres, "
                f"got {item!r}")
        if not Path(path).is_file():
            raise argparse.ArgumentTypeError(f"--sweep: {path} (radius {r:g} m): no such file; "
                                             "build it with pipeline build --r-loc first")
        out[r] = path
    if not out:
        raise argparse.ArgumentTypeError("--sweep: expected at least one RADIUS=PAIRS item")
    return out


def _run(fn, argv: list[str], what: str, timings: dict | None = None) -> None:
    print(f"[reproduce] {what}", flush=True)
    t = time.perf_counter()
    code = fn(argv)
    if code != 0:
        raise SystemExit(f"[reproduce] {what} failed with exit code {code}")
    if timings is not None:  # seconds per part: what the next sizing of a preset starts from
        timings[what] = round(time.perf_counter() - t, 1)


class Evaluations:
    """The ``ssl.evaluate`` calls of a reproduction. With one worker each runs in this process
    when it is submitted. With more, each runs as its own process beside the training that goes
    on (its output in OUT/logs/), so the probes, which run on the CPU, of one encoder overlap the
    GPU training of the next; a failure ends the reproduction at the next submit or at the end."""

    def __init__(self, workers: int, out: Path, timings: dict):
        self.out, self.timings = out, timings
        self.pool = ThreadPoolExecutor(workers) if workers > 1 else None
        self.futures: list[Future] = []

    def submit(self, argv: list[str], run: Path, what: str, folder: str = "eval") -> Future:
        for f in self.futures:  # an evaluation that already failed: stop before more work
            if f.done() and f.exception() is not None:
                self.close()
                raise f.exception()
        if self.pool is None:
            fut: Future = Future()
            _run(evaluate_main, argv, what, self.timings)
            fut.set_result(_metrics(run, folder))
        else:
            print(f"[reproduce] {what}: started beside the training", flush=True)
            fut = self.pool.submit(self._process, argv, run, what, folder)
        self.futures.append(fut)
        return fut

    def _process(self, argv: list[str], run: Path, what: str, folder: str) -> dict:
        log = self.out / "logs" / (what.replace(" ", "-").replace(",", "") + ".log")
        log.parent.mkdir(parents=True, exist_ok=True)
        t = time.perf_counter()
        with open(log, "w") as fh:
            code = subprocess.call([sys.executable, "-m", f"{__package__}.evaluate", *argv],
                                   stdout=fh, stderr=subprocess.STDOUT)
        if code != 0:
            tail = log.read_text()[-1500:]
            raise SystemExit(f"[reproduce] {what} failed with exit code {code} ({log}):\n{tail}")
        self.timings[what] = round(time.perf_counter() - t, 1)
        print(f"[reproduce] {what}: done in {self.timings[what]:.0f} s", flush=True)
        return _metrics(run, folder)

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)


def _resolve(main: Future, cross: Future | None) -> dict:
    m = dict(main.result())
    m["cross_dive_results"] = cross.result()["results"] if cross is not None else None
    return m


def run_names(seeds: list[int]) -> list[str]:
    return [f"{name}-s{seed}" for seed in seeds
            for name in [*BASELINES, *OPTIONAL_BASELINES, *IMAGE_CONFIGS,
                         *ALL_FRAMEWORK_CONFIGS, *(f"csp-{loss}" for loss in CSP_LOSSES)]]


def previous_reproduction(out: Path, seeds: list[int]) -> list[str]:
    """The entries of `out` this reproduction would replace (non-empty run folders and
    reproduce.json)."""
    found = [f"{n}/" for n in run_names(seeds) if not runfolder.inspect(out / n).empty]
    return found + (["reproduce.json"] if (out / "reproduce.json").exists() else [])


def run_all(args) -> dict:
    cfg = dict(PRESETS[args.preset])
    if getattr(args, "tiny", False):
        cfg.update(TINY)
    if args.steps:
        cfg["steps"] = cfg["csp_steps"] = args.steps
    if args.train_seeds:
        cfg["train_seeds"] = [int(s) for s in args.train_seeds.split(",")]
    if getattr(args, "frameworks", None) is not None:
        cfg["frameworks"] = args.frameworks
    images = {n: IMAGE_CONFIGS[n] for n in cfg.get("configs", IMAGE_CONFIGS)}
    configs = {**images, **framework_configs(cfg.get("frameworks", []))}
    cells = cfg.get("cells", TABLE_CELLS)
    spatial_for = set(cfg.get("spatial_tasks", configs))
    timings: dict[str, float] = {}

    def step(fn, argv: list[str], what: str) -> None:
        _run(fn, argv, what, timings)
    out = Path(args.out)
    overwrite = getattr(args, "overwrite", False)
    found = previous_reproduction(out, cfg["train_seeds"])
    if found and not overwrite:
        more = f" and {len(found) - 6} more" if len(found) > 6 else ""
        raise TrainingError(f"{out} already holds a reproduction ({', '.join(found[:6])}{more});"
                            " nothing was changed. Use a new --out, or --overwrite to retrain "
                            "those runs.")
    try:  # before anything is trained: a manifest every run can read
        manifest = load_manifest(args.manifest)
    except ManifestError as exc:
        raise TrainingError(str(exc)) from None
    common = ["--manifest", args.manifest, "--backbone", cfg["backbone"], "--image-size",
              str(cfg["image_size"]), "--batch-size", str(cfg["batch_size"]),
              "--log-every", "50", "--checkpoint-every", "100000"]
    if overwrite:
        common += ["--overwrite"]
    if args.device:
        common += ["--device", args.device]
    if args.workers is not None:
        common += ["--workers", str(args.workers)]
    seeds = ",".join(str(s) for s in cfg["eval_seeds"])
    evals: dict[str, list] = {}
    t0 = time.perf_counter()
    workers = getattr(args, "eval_workers", None)
    ev = Evaluations(cfg.get("eval_workers", 1) if workers is None else workers, out, timings)
    dev = (["--device", args.device] if args.device else []) + (
        ["--overwrite"] if overwrite else [])  # evaluations of runs being retrained
    # a cross-dive split needs two dives
    cross = cfg.get("cross_dive", True) and len(set(manifest.dive.tolist())) >= 2
    imagenet = imagenet_available(cfg["backbone"])
    print(f"[reproduce] {imagenet.pop('note')}", flush=True)

    def cross_dive(source: list[str], run: Path, what: str) -> Future | None:
        """The same encoder on the cross-dive split (svm, full width, all labels)."""
        if not cross:
            return None
        return ev.submit([*source, "--manifest", args.manifest, "--out",
                          str(run / "eval-dives"), "--seeds", seeds, "--cross-dive", "--probes",
                          "svm", "--regimes", "all", "--dims", "full", "--no-spatial-tasks",
                          *dev], run, f"{what}, cross-dive split", folder="eval-dives")

    try:
        for seed in cfg["train_seeds"]:
            # the baselines, under the same protocol: what an encoder must beat
            for name, flags in BASELINES.items():
                run = out / f"{name}-s{seed}"
                if seed != cfg["train_seeds"][0] and (name == "handcrafted" or
                                                      cfg.get("baselines") == "first seed"):
                    # hand-crafted features are deterministic: one evaluation serves every seed;
                    # a preset may evaluate the random-init baseline once too (it is no claim's)
                    evals[name].append(evals[name][0])
                    continue
                source = [*flags, "--backbone", cfg["backbone"], "--image-size",
                          str(cfg["image_size"]), "--init-seed", str(seed)]
                m = ev.submit([*source, "--manifest", args.manifest, "--out", str(run / "eval"),
                               "--seeds", seeds, *cells, "--no-spatial-tasks", *dev], run,
                              f"evaluate {name} seed {seed}")
                evals.setdefault(name, []).append(
                    (m, cross_dive(source, run, f"evaluate {name} seed {seed}")))
            if imagenet["present"]:  # deterministic: the first seed's evaluation serves them all
                name = "imagenet"
                if seed != cfg["train_seeds"][0]:
                    evals[name].append(evals[name][0])
                else:
                    run = out / f"{name}-s{seed}"
                    source = [*OPTIONAL_BASELINES[name], "--backbone", cfg["backbone"],
                              "--image-size", str(cfg["image_size"])]
                    m = ev.submit([*source, "--manifest", args.manifest, "--out",
                                   str(run / "eval"), "--seeds", seeds, *cells,
                                   "--no-spatial-tasks", *dev], run, f"evaluate {name}")
                    evals[name] = [(m, cross_dive(source, run, f"evaluate {name}"))]
            for name, flags in configs.items():
                run = out / f"{name}-s{seed}"
                step(train_main, [*common, *flags, "--steps", str(cfg["steps"]), "--seed",
                                  str(seed), "--out", str(run)], f"train {name} seed {seed}")
                spatial = "--spatial-tasks" if name in spatial_for else "--no-spatial-tasks"
                m = ev.submit(["--checkpoint", str(run / "last.pt"), "--manifest", args.manifest,
                               "--out", str(run / "eval"), "--seeds", seeds, *cells, spatial, *dev],
                              run, f"evaluate {name} seed {seed}")
                evals.setdefault(name, []).append(
                    (m, cross_dive(["--checkpoint", str(run / "last.pt")], run,
                                   f"evaluate {name} seed {seed}")))
            for loss in CSP_LOSSES:
                name = f"csp-{loss}"
                run = out / f"{name}-s{seed}"
                step(train_main, [*common, "--objective", "csp", "--image-encoder",
                                  str(out / f"geoclr-s{seed}" / "last.pt"), "--csp-loss", loss,
                                  "--steps", str(cfg["csp_steps"]), "--seed", str(seed),
                                  "--out", str(run)], f"train {name} seed {seed}")
                m = ev.submit(["--checkpoint", str(run / "last.pt"), "--manifest", args.manifest,
                               "--out", str(run / "eval"), "--seeds", seeds, "--probes", "svm",
                               "--regimes", "all", "--no-spatial-tasks", *dev], run,
                              f"evaluate {name} seed {seed}")
                evals.setdefault(name, []).append((m, None))
        sweep: dict[str, dict] = {}
        t_sweep = time.perf_counter()
        for radius, manifest in sorted((getattr(args, "sweep", None) or {}).items()):
            key = f"{radius:g}"
            for seed in cfg["sweep_seeds"]:
                run = out / f"sweep-geoclr-r{key}-s{seed}"
                step(train_main, ["--manifest", manifest, *common[2:], *IMAGE_CONFIGS["geoclr"],
                                  "--steps", str(cfg["steps"]), "--seed", str(seed), "--out",
                                  str(run)], f"train geoclr r_loc {key} m seed {seed}")
                # evaluated on the main manifest: the same images, one protocol for every radius
                m = ev.submit(["--checkpoint", str(run / "last.pt"), "--manifest", args.manifest,
                               "--out", str(run / "eval"), "--seeds", seeds, "--probes", "svm",
                               "--regimes", "all", "--dims", "full", "--no-spatial-tasks", *dev],
                              run, f"evaluate geoclr r_loc {key} m seed {seed}")
                entry = sweep.setdefault(key, {"manifest": manifest, "seeds": [], "evals": []})
                entry["seeds"].append(seed)
                entry["evals"].append((m, None))
        # every evaluation finished (in order; the first failure ends the reproduction)
        evals = {name: [_resolve(*pair) for pair in pairs] for name, pairs in evals.items()}
        for entry in sweep.values():
            entry["evals"] = [_resolve(*pair) for pair in entry["evals"]]
    finally:  # on success every evaluation has finished; on a failure the rest are dropped
        ev.close()
    device = choose_device(args.device, TrainingError).type
    name = torch.cuda.get_device_name() if device == "cuda" else "CPU"
    return {"preset": args.preset + (" (--tiny)" if getattr(args, "tiny", False) else ""),
            "config": cfg, "device": name, "imagenet": imagenet,
            "torch": torch.__version__, "date_utc": time.strftime("%Y-%m-%d", time.gmtime()),
            "seconds": round(time.perf_counter() - t0, 1), "timings": timings, "evals": evals,
            "manifest": args.manifest, "sweep": sweep,
            "sweep_seconds": round(time.perf_counter() - t_sweep, 1)}


def imagenet_available(backbone: str) -> dict:
    """Whether the optional imagenet baseline runs: torchvision's ImageNet weights of
    ``backbone`` in the local torch cache. ``why``: for the report, without any path; ``note``:
    for the log, saying where the file goes."""
    try:
        label, path = imagenet_weights(backbone)
    except CheckpointError:
        why = f"torchvision has no ImageNet weights of the {backbone} backbone"
        return {"present": False, "why": why, "note": f"no imagenet baseline: {why}"}
    if path.is_file():
        return {"present": True, "weights": label, "file": path.name,
                "note": f"imagenet baseline: torchvision's {label} weights ({path.name})"}
    why = (f"torchvision's {label} weights ({path.name}) were not in the local torch cache "
           "(python -m ssl.evaluate --baseline imagenet says where they go)")
    return {"present": False, "weights": label, "file": path.name, "why": why,
            "note": f"no imagenet baseline: torchvision's {label} weights ({path.name}) are not "
                    f"in the local torch cache; {fetch_hint(backbone)}"}


def _metrics(run: Path, folder: str = "eval") -> dict:
    return json.loads((run / folder / "metrics.json").read_text())


# --- aggregation ----------------------------------------------------------------------------

def _values(evals: list[dict], *, features="image", probe="svm", dims="128", regime="all",
            metric="macro_f1", split="blocked") -> list[float]:
    """Per-split values pooled over training seeds (results rows of ssl.evaluate; `split`
    'cross-dive': the rows of the cross-dive evaluation)."""
    out = []
    for m in evals:
        rows = (m.get("cross_dive_results") or [] if split == "cross-dive"
                else m["results"] + m.get("location_results", []))
        for r in rows:
            if (r.get("features", "image"), r["probe"], r["dims"], r["regime"]) == (
                    features, probe, dims, regime):
                out += [v for v in r[metric]["values"] if v is not None]
    return out


def _per_run(evals: list[dict], *, features="image", probe="svm", dims="128", regime="all",
             metric="macro_f1") -> list[list[float | None]]:
    """Per training seed (in order), the values per split (None where not measured): the
    positions that pair two configurations."""
    out = []
    for m in evals:
        row: list[float | None] = []
        for r in m["results"] + m.get("location_results", []):
            if (r.get("features", "image"), r["probe"], r["dims"], r["regime"]) == (
                    features, probe, dims, regime):
                row = list(r[metric]["values"])
        out.append(row)
    return out


def _spatial_per_run(evals: list[dict], task: str, key: str) -> list[list[float | None]]:
    """SP's spatial tasks give one value per training seed."""
    out = []
    for m in evals:
        v = (m.get("spatial_tasks") or {}).get(task, {}).get(key)
        out.append([float(v)] if isinstance(v, (int, float)) else [None])
    return out


def _spatial(evals: list[dict], task: str, key: str) -> list[float]:
    out = []
    for m in evals:
        v = (m.get("spatial_tasks") or {}).get(task, {}).get(key)
        if isinstance(v, (int, float)):
            out.append(float(v))
    return out


def mean_std(values: list[float]) -> tuple[float, float] | None:
    if not values:
        return None
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def cell(values: list[float], digits: int = 3) -> str:
    ms = mean_std(values)
    return "n/a" if ms is None else f"{ms[0]:.{digits}f} ± {ms[1]:.{digits}f}"


def report(res: dict) -> str:
    ev = res["evals"]
    cfg = res["config"]
    names = [n for n in [*BASELINES, *OPTIONAL_BASELINES, *IMAGE_CONFIGS,
                         *ALL_FRAMEWORK_CONFIGS] if n in ev]
    # (heading, cell) per column; a column no run measured (a preset's trimmed probe cells, no
    # cross-dive split) is left out rather than shown empty
    columns = [("128 dims", lambda e: _values(e, dims="128")),
               ("full dims", lambda e: _values(e, dims="full")),
               ("full dims, 10 labels/class", lambda e: _values(e, dims="full", regime="10")),
               ("kNN (k=20)", lambda e: _values(e, probe="knn", dims="full")),
               ("accuracy (full)", lambda e: _values(e, dims="full", metric="accuracy")),
               ("cross-dive split (full)", lambda e: _values(e, dims="full", split="cross-dive"))]
    columns = [c for c in columns if any(c[1](ev[n]) for n in names)]
    where = (f"device: {res['device']}" + (f", torch {res['torch']}" if res.get("torch") else "")
             + (f", {res['date_utc']}" if res.get("date_utc") else ""))
    lines = [REPORT_HEADING, "",
             f"Preset **{res['preset']}** on `{res['manifest']}`: {cfg['backbone']} at "
             f"{cfg['image_size']} px, batch {cfg['batch_size']}, {cfg['steps']} steps per image "
             f"encoder ({cfg['csp_steps']} for CSP), training seeds {cfg['train_seeds']}, split "
             f"seeds {cfg['eval_seeds']}; {where}; {res['seconds'] / 60:.1f} "
             "minutes in all. Cells: mean ± std over training seeds × spatially blocked split "
             "seeds; linear SVM on frozen pooled features, all labels unless noted."
             + (" The cross-dive column tests on whole dives and trains on the others (label "
                "some dives, map the rest); each split seed draws which dives are tested."
                if any(h.startswith("cross-dive") for h, _ in columns) else ""), "",
             "## Habitat classification (macro-F1)", "",
             "| encoder | " + " | ".join(h for h, _ in columns) + " |",
             "|---|" + "---:|" * len(columns)]
    for name in names:
        lines.append(f"| {name} | " + " | ".join(cell(f(ev[name])) for _, f in columns) + " |")
    if (res.get("imagenet") or {}).get("why") and "imagenet" not in ev:
        lines += ["", f"No imagenet row: {res['imagenet']['why']}."]
    spatial = [n for n in [*IMAGE_CONFIGS, *ALL_FRAMEWORK_CONFIGS] if n in ev
               and _spatial(ev[n], "position_scale", "r2_mean")]
    lines += ["", "## SP's spatial tasks (frozen features)", "",
              "| encoder | position/scale R² (mean of dx, dy, log w, log h) | jigsaw accuracy "
              "(chance 0.01) | habitat F1 after reassembly |", "|---|---:|---:|---:|"]
    for name in spatial:
        e = ev[name]
        lines.append(f"| {name} | {cell(_spatial(e, 'position_scale', 'r2_mean'))} | "
                     f"{cell(_spatial(e, 'jigsaw', 'accuracy'))} | "
                     f"{cell(_spatial(e, 'jigsaw', 'habitat_macro_f1_reassembled'))} |")
    lines += ["", "## CSP (location encoder on the geoclr image encoder; macro-F1, full dims)", "",
              "| loss | location only | location + image features |", "|---|---:|---:|"]
    for loss in CSP_LOSSES:
        e = ev.get(f"csp-{loss}", [])
        lines.append(f"| {loss} | {cell(_values(e, features='location', dims='full'))} | "
                     f"{cell(_values(e, features='fused', dims='full'))} |")
    if res.get("sweep"):
        lines += ["", "## GeoCLR and the positive radius r_loc", "",
                  f"geoclr trained on pairs within r_loc (training seeds "
                  f"{cfg.get('sweep_seeds')}: fewer than the table above where the preset says "
                  "so), evaluated on the main manifest; macro-F1, svm, full dims, all labels. "
                  "Difference to simclr paired by training seed and split (only the seeds both "
                  f"have). The sweep took {res.get('sweep_seconds', 0) / 60:.1f} minutes; each "
                  "radius's pairs come from `pipeline build --r-loc R --cache-from`, which reuses "
                  "the ingest.", "", "| r_loc (m) | macro-F1 | geoclr − simclr |",
                  "|---:|---:|---|"]
        base = {seed: m for seed, m in zip(cfg["train_seeds"], ev.get("simclr", []),
                                           strict=False)}
        for key, entry in sorted(res["sweep"].items(), key=lambda kv: float(kv[0])):
            pairs = [(m, base[s]) for s, m in zip(entry["seeds"], entry["evals"], strict=True)
                     if s in base]
            d = paired(_per_run([a for a, _ in pairs], dims="full"),
                       _per_run([b for _, b in pairs], dims="full")) if pairs else None
            lines.append(f"| {key} | {cell(_values(entry['evals'], dims='full'))} | "
                         f"{d.text() + ': ' + judge(d) if d else 'n/a'} |")
    lines += ["", "## The papers' claims", "",
              "Each difference is paired: the same training seed and the same split, a − b, "
              "averaged over the splits of each training seed; mean, 95 % interval (Student t "
              "over training seeds; one seed gives none) and the number of seeds. A part is "
              "**reproduced** when its interval excludes zero in the claimed direction, "
              "**contradicted** when it excludes zero the other way, and **not shown** "
              "otherwise; a claim is reproduced only when every part is.", "",
              "| claim | part | measured here (a − b) | verdict |", "|---|---|---|---|"]
    for claim, parts in claims(ev):
        verdicts = [judge(p, sign) for _, p, sign, _ in parts]
        overall = combine(verdicts)
        for k, ((what, p, _sign, pct), v) in enumerate(zip(parts, verdicts, strict=True)):
            head = f"{CLAIMS[claim]} — **{overall}**" if k == 0 else ""
            lines.append(f"| {head} | {what} | {p.text(pct) if p else 'n/a'} | {v} |")
    lines.append("")
    return "\n".join(lines)


def claims(ev: dict) -> list[tuple[str, list[tuple[str, object, int, bool]]]]:
    """Every part of every claim: (description, paired difference, claimed sign, relative %)."""
    def img(name, **kw):
        return _per_run(ev.get(name, []), **kw)

    def spatial(name, task, key):
        return _spatial_per_run(ev.get(name, []), task, key)

    g128 = paired(img("geoclr", dims="128"), img("simclr", dims="128"))
    gfull = paired(img("geoclr", dims="full"), img("simclr", dims="full"))
    # largest at 128 dims: the paired gain at 128 minus the paired gain at full width
    larger = None
    if g128 and gfull:
        larger = paired(diff_rows(img("geoclr", dims="128"), img("simclr", dims="128")),
                        diff_rows(img("geoclr", dims="full"), img("simclr", dims="full")))
    out = [("lrssl", [("geoclr − simclr, macro-F1 at 128 dims", g128, 1, True),
                      ("geoclr − simclr, macro-F1 at full dims", gfull, 1, True),
                      ("gain at 128 dims − gain at full dims", larger, 1, False)]),
           ("geoclr", [("geoclr − simclr, accuracy (full dims)",
                        paired(img("geoclr", dims="full", metric="accuracy"),
                               img("simclr", dims="full", metric="accuracy")), 1, True)])]
    ran = [fw for fw in FRAMEWORKS if fw in ev and f"{fw}+location" in ev]
    if ran:
        out.append(("frameworks", [(f"{fw}+location − {fw}, macro-F1 at 128 dims",
                                    paired(img(f"{fw}+location", dims="128"),
                                           img(fw, dims="128")), 1, True) for fw in ran]))
    loc = {loss: _per_run(ev.get(f"csp-{loss}", []), features="location", dims="full")
           for loss in CSP_LOSSES}
    out.append(("csp", [("mc − nce, location-only macro-F1", paired(loc["mc"], loc["nce"]), 1,
                         True),
                        ("mc − l2, location-only macro-F1", paired(loc["mc"], loc["l2"]), 1,
                         True)]))
    sp = []
    for base in ("simclr", "geoclr"):
        if f"{base}+sp" not in ev:  # a preset that does not train it
            continue
        for task, key, label in (("position_scale", "r2_mean", "position/scale R²"),
                                 ("jigsaw", "accuracy", "jigsaw accuracy")):
            sp.append((f"{base}+sp − {base}, {label}",
                       paired(spatial(f"{base}+sp", task, key), spatial(base, task, key)), 1,
                       False))
    out.append(("sp", sp))
    return out


# the marked sections a preset writes in place of the whole report
SECTION_MARKS = {"gpu": ("<!-- reproduce-gpu: begin (make reproduce-gpu writes this section) -->",
                         "<!-- reproduce-gpu: end -->")}


def section_text(text: str, res: dict) -> str:
    """The report as a section of a larger one: its headings one level down, titled by the
    device it ran on."""
    lines = ["#" + ln if ln.startswith("#") else ln for ln in text.splitlines()]
    lines[0] = f"## Measured on {res['device']}: `make reproduce-gpu`"
    return "\n".join(lines).rstrip("\n")


DISCUSSION_MARK = "<!-- written discussion: kept as it is when this file is regenerated -->"
# the first line of every report the whole-file mode writes: how it knows a file as its own
REPORT_HEADING = "# Reproduction: does location help?"


def preserved_discussion(old: str) -> str:
    """The hand-written part of an existing report: from the marker on (or, in a report written
    before the marker existed, from its '## Discussion' heading on); empty when there is none."""
    if DISCUSSION_MARK in old:
        return old[old.index(DISCUSSION_MARK):]
    if "\n## Discussion" in old:
        return DISCUSSION_MARK + "\n" + old[old.index("\n## Discussion") + 1:]
    return ""


def check_report_target(report: str | Path, preset: str) -> str | None:
    """Refuse (ReportError) a --report this reproduction may not write, before any training: a
    preset with a section writes only between its markers in a Markdown file (the rest is kept
    byte for byte); the others write the whole file, which may replace only a report a
    reproduction wrote (it starts with REPORT_HEADING; its discussion is kept). Returns the
    whole-file mode's old text (None: no file yet, or section mode)."""
    section = PRESETS[preset].get("section")
    if section:
        check_report(report, *SECTION_MARKS[section])
        return None
    return check_whole_report(report, REPORT_HEADING)


def write_report(report: str | Path, text: str, res: dict, preset: str) -> None:
    """Write the report (checked again first: the file may have changed during the run)."""
    target = Path(report)
    section = PRESETS[preset].get("section")
    if section:  # a section of the report (REPRODUCTION.md's GPU section); the rest is kept
        begin, end = SECTION_MARKS[section]
        replace_section(target, begin + "\n" + section_text(text, res) + "\n" + end, begin, end)
    else:
        old = check_report_target(target, preset)
        kept = preserved_discussion(old) if old else ""
        write_text_atomic(target, text + ("\n" + kept if kept else ""))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        check_report_target(args.report, args.preset)  # before anything is trained
        res = run_all(args)
    except (TrainingError, ReportError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "reproduce.json").write_text(json.dumps(res, indent=1, default=str))
    text = report(res)
    try:
        write_report(args.report, text, res, args.preset)
    except (ReportError, OSError) as exc:  # the file changed or went away during the run
        print(f"error: {exc} (the runs and {out / 'reproduce.json'} are kept)", file=sys.stderr)
        return 2
    if res["config"].get("section"):
        text = section_text(text, res)
    print(text)
    print(f"[reproduce] wrote {args.report} ({res['seconds'] / 60:.1f} min)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
