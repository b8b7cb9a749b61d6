"""The choice of k (``ssl.habitats --k auto``) against the simulator's truth.

    python benchmarks/k_selection.py prepare --work DIR [--demo-seeds 0,1,2]
                                             [--bench-seeds 7,8,9] [--features ...]
    python benchmarks/k_selection.py analyse --work DIR [--report REPRODUCTION.md]

``prepare`` makes the surveys with the generator (the demo survey: ``--dives 3 --seed S
--faults`` as ``make demo``; the benchmark survey: ``--preset benchmark --dives 4
--images-per-dive 800 --seed S`` as ``make reproduce``), builds them (``pipeline build``) and
computes three kinds of features of every located image:

  handcrafted   the hand-crafted baseline (``ssl/evaluation/handcrafted.py``) at 64 px
  demo          the encoder ``make demo`` trains: GeoCLR + SP (0.5), 50 steps, resnet18 at
                96 px, batch 64, embedded with ``ssl.embed``
  cpu-preset    the CPU preset's GeoCLR encoder (``ssl/reproduce.py`` PRESETS["cpu"]): 120
                steps, resnet18 at 64 px, batch 64

Every step skips what an earlier call finished, so ``prepare`` can be stopped and resumed.
``analyse`` then chooses k with every criterion of ``ssl/mapping/clusters.py`` (CRITERIA) on
each set of features, clusters with k-means at that k as ``ssl.habitats`` does, and scores the
clusters by the adjusted Rand index against the true habitat of each image (the manifest's
``label`` column: the majority habitat in the footprint). It writes the raw numbers as JSON
and the table between the markers of its section in the report.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
BEGIN = "<!-- k-selection: begin -->"
END = "<!-- k-selection: end -->"
FEATURES = ("handcrafted", "demo", "cpu-preset")
TRAIN = {
    "demo": ["--objective", "geoclr", "--sp", "0.5", "--steps", "50", "--backbone", "resnet18",
             "--image-size", "96", "--batch-size", "64"],
    "cpu-preset": ["--objective", "geoclr", "--steps", "120", "--backbone", "resnet18",
                   "--image-size", "64", "--batch-size", "64"],
}
HANDCRAFTED_SIZE = 64


def _seeds(text: str) -> list[int]:
    return [int(t) for t in text.split(",") if t.strip()]


def _run(cmd: list[str]) -> None:
    print("[k-selection] $ " + " ".join(cmd[1:]), flush=True)
    subprocess.run(cmd, check=True, cwd=REPO)


def surveys(args: argparse.Namespace) -> list[tuple[str, str, int, Path]]:
    """(name, kind, seed, folder) of every survey of the study."""
    work = Path(args.work)
    out = [(f"demo-s{s}", "demo", s, work / f"demo-s{s}") for s in _seeds(args.demo_seeds)]
    out += [(f"bench-s{s}", "benchmark", s, work / f"bench-s{s}")
            for s in _seeds(args.bench_seeds)]
    return out


def make_survey(kind: str, seed: int, folder: Path) -> None:
    if (folder / "manifests" / "pairs.parquet").is_file():
        return
    py = sys.executable
    if kind == "demo":
        _run([py, "-m", "pipeline.synth", "--out", str(folder), "--dives", "3", "--seed",
              str(seed), "--faults"])
    else:
        _run([py, "-m", "pipeline.synth", "--preset", "benchmark", "--out", str(folder),
              "--dives", "4", "--images-per-dive", "800", "--seed", str(seed)])
    _run([py, "-m", "pipeline", "build", "--catalog", str(folder / "catalog.yaml")])


def features_file(folder: Path, feat: str) -> Path:
    return folder / "features" / f"{feat}.npz"


def make_features(folder: Path, feat: str) -> None:
    """features/<feat>.npz: X (n, d), label (n,), anchor, positive (the r_loc pairs)."""
    dest = features_file(folder, feat)
    if dest.is_file():
        return
    dest.parent.mkdir(parents=True, exist_ok=True)
    pairs = folder / "manifests" / "pairs.parquet"
    from seafloor_ssl.data.manifest import load_manifest

    manifest = load_manifest(pairs)
    if feat == "handcrafted":
        from seafloor_ssl.data.store import ImageStore
        from seafloor_ssl.evaluation import handcrafted

        X = handcrafted.extract(ImageStore.open(manifest), HANDCRAFTED_SIZE)
    else:
        run = folder / "runs" / feat
        if not (run / "last.pt").is_file():
            _run([sys.executable, "-m", "ssl.train", "--manifest", str(pairs), *TRAIN[feat],
                  "--seed", "0", "--device", "cpu", "--out", str(run), "--overwrite"])
        emb_path = run / "embeddings.parquet"
        if not emb_path.is_file():
            _run([sys.executable, "-m", "ssl.embed", "--checkpoint", str(run / "last.pt"),
                  "--manifest", str(pairs), "--device", "cpu", "--out", str(emb_path)])
        from seafloor_ssl.data.embeddings import read_embeddings

        emb = read_embeddings(emb_path)
        if emb.n != len(manifest.label) or not np.array_equal(emb.idx, np.arange(emb.n)):
            raise SystemExit(f"{emb_path}: rows are not the manifest's images in order")
        X = emb.X
    label = np.array(["" if v is None else str(v) for v in manifest.label])
    np.savez(dest, X=np.asarray(X, dtype=np.float32), label=label,
             anchor=np.asarray(manifest.anchor), positive=np.asarray(manifest.positive))


def prepare(args: argparse.Namespace) -> None:
    feats = [f for f in args.features.split(",") if f]
    todo = surveys(args)
    for _, kind, seed, folder in todo:
        make_survey(kind, seed, folder)
    # cheapest first: every survey's hand-crafted features, then one encoder at a time
    for feat in feats:
        for name, _, _, folder in todo:
            t = time.perf_counter()
            make_features(folder, feat)
            print(f"[k-selection] {name} {feat}: {time.perf_counter() - t:.0f} s", flush=True)


def measure(folder: Path, feat: str, ks: list[int], dims: int = 32, seed: int = 0) -> dict:
    """One survey's features: ARI of k-means at every k, and each criterion's k (cached)."""
    from seafloor_ssl.mapping.clusters import CRITERIA, choose_k, kmeans, reduce
    from sklearn.metrics import adjusted_rand_score

    cache = folder / "features" / f"{feat}.k_selection.json"
    if cache.is_file():
        got = json.loads(cache.read_text())
        if got.get("criteria_names") == list(CRITERIA) and got.get("ks") == ks:
            return got
    d = np.load(features_file(folder, feat))
    label, graph = d["label"], (d["anchor"], d["positive"])
    has = label != ""
    truth = np.unique(label[has], return_inverse=True)[1]
    Z = reduce(d["X"], dims, seed)  # as ssl.habitats: every image, L2-normalised, PCA
    ari = {}
    for k in ks:
        labels, _ = kmeans(Z, k, seed)
        ari[k] = float(adjusted_rand_score(truth, labels[has]))
    out = {"n": int(len(Z)), "labelled": int(has.sum()), "true_k": int(truth.max() + 1),
           "ks": ks, "ari": {str(k): v for k, v in ari.items()}, "criteria": {},
           "criteria_names": list(CRITERIA)}
    for name in CRITERIA:
        t = time.perf_counter()
        got = choose_k(Z, ks, name, seed, graph)
        out["criteria"][name] = {"k": int(got.k), "ari": ari[got.k],
                                 "scores": {str(k): v for k, v in got.scores.items()},
                                 "seconds": round(time.perf_counter() - t, 1)}
        print(f"[k-selection] {folder.name} {feat} {name}: k = {got.k}, ARI {ari[got.k]:.3f} "
              f"({time.perf_counter() - t:.0f} s)", flush=True)
    cache.write_text(json.dumps(out, indent=1))
    return out


def _ms(v: list[float]) -> str:
    if not v:
        return "—"
    return (f"{np.mean(v):.2f} ± {np.std(v, ddof=1):.2f}" if len(v) > 1 else f"{v[0]:.2f}")


def analyse(args: argparse.Namespace) -> None:
    from seafloor_ssl.evaluation.stats import judge, summarize
    from seafloor_ssl.mapping.clusters import (
        CRITERIA,
        DEFAULT_CRITERION,
        GAP_REFERENCES,
        K_RANGE,
    )

    t0 = time.perf_counter()
    ks = list(range(K_RANGE[0], K_RANGE[1] + 1))
    feats = [f for f in args.features.split(",") if f]
    cells: dict[tuple[str, str], list[tuple[str, dict]]] = {}  # (feature, kind) -> seeds
    for name, kind, _, folder in surveys(args):
        for feat in feats:
            if features_file(folder, feat).is_file():
                cells.setdefault((feat, kind), []).append((name, measure(folder, feat, ks)))
    if not cells:
        raise SystemExit("no features yet: run the prepare stage first")
    cols = [(f, k) for f in FEATURES for k in ("demo", "benchmark") if (f, k) in cells]
    rows = list(CRITERIA) + ["true number of habitats", "best k in hindsight"]

    def values(row: str, col) -> tuple[list[float], list[int]]:
        res = [r for _, r in cells[col]]
        if row == "true number of habitats":
            return [r["ari"][str(r["true_k"])] for r in res], [r["true_k"] for r in res]
        if row == "best k in hindsight":
            best = [max(r["ari"], key=lambda k, r=r: r["ari"][k]) for r in res]
            return [r["ari"][k] for r, k in zip(res, best, strict=True)], [int(k) for k in best]
        return ([r["criteria"][row]["ari"] for r in res], [r["criteria"][row]["k"] for r in res])

    # the pooled comparison: every (survey seed, features) is one unit
    units = [(col, name) for col in cols for name, _ in cells[col]]
    by = {(col, name): r for col in cols for name, r in cells[col]}
    pooled = {c: [by[u]["criteria"][c]["ari"] for u in units] for c in CRITERIA}
    ranking = sorted(CRITERIA, key=lambda c: -float(np.mean(pooled[c])))
    best = ranking[0]

    def vs(other: str):
        p = summarize([a - b for a, b in zip(pooled[best], pooled[other], strict=True)])
        return p, judge(p)

    header = "| criterion | " + " | ".join(f"{f}, {k} survey" for f, k in cols) + " | all |"
    lines = [header, "|---|" + "---|" * (len(cols) + 1)]
    for row in rows:
        cells_txt = []
        for col in cols:
            v, kk = values(row, col)
            cells_txt.append(f"{_ms(v)} (k = {', '.join(map(str, kk))})")
        allv = ([] if row not in CRITERIA else pooled[row])
        lab = f"**{row}**" if row == best else row
        lines.append(f"| {lab} | " + " | ".join(cells_txt) + f" | {_ms(allv)} |")
    seeds_txt = "; ".join(f"{f}, {k}: {', '.join(n for n, _ in cells[(f, k)])}" for f, k in cols)
    comps = []
    for other in ranking[1:]:
        p, verdict = vs(other)
        shown = {"reproduced": "lead shown", "contradicted": "behind"}.get(verdict, verdict)
        comps.append(f"| {best} − {other} | {p.text(pct=False).replace('training seeds', 'units')}"
                     f" | {shown} |")
    missing = [f"{f} on the {k} survey" for f in FEATURES for k in ("demo", "benchmark")
               if (f, k) not in cells]
    verdicts = {other: vs(other)[1] for other in ranking[1:]}
    ahead = [o for o, v in verdicts.items() if v == "reproduced"]
    level = [o for o, v in verdicts.items() if v != "reproduced"]
    decision = (
        f"`{best}` has the highest mean ARI over the {len(units)} units"
        + (f"; its lead is shown (95 % interval above zero) over {', '.join(ahead)}" if ahead
           else "")
        + (f"; over {', '.join(level)} it is **not shown** (the interval includes zero)"
           if level else "")
        + f". The default of `--k-criterion` is `{DEFAULT_CRITERION}`.")
    raw = {"ks": ks, "cells": {f"{f}|{k}": dict(cells[(f, k)]) for f, k in cols},
           "ranking": ranking, "best": best, "default": DEFAULT_CRITERION}
    Path(args.json or Path(args.work) / "k_selection.json").write_text(json.dumps(raw, indent=1))
    text = "\n".join([
        BEGIN,
        "## How many habitats: choosing k against the simulator's truth",
        "",
        f"`ssl.habitats --k auto` tries k = {ks[0]}..{ks[-1]} on the L2-normalised embeddings "
        "reduced by PCA to 32 dimensions and keeps the k a criterion prefers "
        "(`--k-criterion`, `ssl/mapping/clusters.py`). Each criterion's k is scored here by the "
        "adjusted Rand index (ARI) of the k-means clustering at that k against the true habitat "
        "of every image (the majority habitat in its footprint). Surveys from the generator: "
        "the demo survey (`--dives 3 --faults`, 1,200 images, 6 habitats) and the benchmark "
        "survey (`--preset benchmark --dives 4 --images-per-dive 800`, 3,200 images, 8 "
        "habitats), one survey per seed. Features: hand-crafted (64 px); `demo`: the encoder "
        "`make demo` trains (GeoCLR + SP, 50 steps, resnet18 at 96 px); `cpu-preset`: the CPU "
        "preset's GeoCLR encoder (120 steps, resnet18 at 64 px); one training run (seed 0) per "
        f"survey. Gap statistic: {GAP_REFERENCES} uniform references, 1-SE rule. Cells: ARI "
        "mean ± sd over survey seeds, then the k chosen on each seed; `all`: mean ± sd over "
        "every (survey, features) unit. Bold: the highest mean ARI.",
        "",
        f"Survey seeds: {seeds_txt}.",
        "",
        *lines,
        "",
        "Paired differences in ARI over the units (each unit one survey seed with one set of "
        "features; units of one survey share its images, so the interval is optimistic), 95 % "
        "Student t interval:",
        "",
        "| comparison | difference | verdict |",
        "|---|---|---|",
        *comps,
        "",
        decision,
        "",
        ("Not measured in this run: " + "; ".join(missing) + "." if missing else ""),
        *([args.note, ""] if args.note else []),
        f"`benchmarks/k_selection.py` wrote this in {(time.perf_counter() - t0) / 60:.1f} min "
        "(analysis only).",
        END,
    ])
    from seafloor_ssl.files import replace_section

    replace_section(Path(args.report), text, BEGIN, END)
    print(text)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("stage", choices=["prepare", "analyse"])
    p.add_argument("--work", required=True, help="folder for the surveys, runs and features")
    p.add_argument("--demo-seeds", default="0,1,2")
    p.add_argument("--bench-seeds", default="7,8,9")
    p.add_argument("--features", default=",".join(FEATURES))
    p.add_argument("--report", default=str(REPO / "REPRODUCTION.md"))
    p.add_argument("--note", default="", help="analyse: a paragraph added to the section "
                                              "(e.g. why a cell was not measured)")
    p.add_argument("--json", default=None, help="raw numbers (default: WORK/k_selection.json)")
    args = p.parse_args(argv)
    if args.stage == "prepare":
        prepare(args)
    else:
        from seafloor_ssl.files import ReportError, check_report
        from threadpoolctl import threadpool_limits

        try:  # a report this study may not write into is refused before the analysis
            check_report(args.report, BEGIN, END)
            with threadpool_limits(limits=1):  # small k-means fits: threads only contend
                analyse(args)
        except ReportError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
