"""What the labelling list is worth: macro-F1 of the predicted habitat map when an annotator
labels the N images ``ssl.habitats`` proposes, against N images drawn at random.

    python -m ssl.labelling_payoff --embeddings simclr=runs/simclr/embeddings.parquet \\
        geoclr=runs/geoclr/embeddings.parquet --n 6,30,60,120 --seeds 0-9 \\
        --out runs/payoff --report REPRODUCTION.md

For each encoder, seed and N: the habitat clusters (``--k``, default auto) and the labelling
list are computed as ``ssl.habitats`` does; the random draw takes N images uniformly. Each set
gets its true labels (the embeddings' label column, or ``--labels``), trains the same logistic
regression on the reduced embeddings, and predicts every image. Both maps are scored on the same
images: every labelled image that neither set contains. A seed moves the k-means starts, the
random draw and the classifier, so list and random are paired by seed; the difference is judged
with a 95 % Student t interval over seeds ("not shown" when it includes zero).

Everything the command writes goes into ``--out``, a folder it owns (``labelling_payoff.json``
records each file it wrote there): a new or empty folder, or an earlier run's with
``--overwrite``, which removes only the files that record lists. ``--report`` is a Markdown file
(``.md``, UTF-8 text) that does not exist yet or into which the section is written between two
markers (appended at the end the first time, after the part of the file that ``ssl.reproduce``
regenerates), replacing an earlier section; nothing outside the markers changes. The section
links to the plot in ``--out`` by a path relative to the report. The inputs, ``--out`` and
``--report`` are checked before any computing.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from pathlib import Path

import numpy as np

from .data.embeddings import EmbeddingsError, read_embeddings
from .evaluation.stats import judge, summarize
from .files import (
    FolderError,
    OwnedFolder,
    ReportError,
    check_report,
    replace_section,
    write_atomic,
    write_text_atomic,
)
from .flags import k_flag, positive_int, run_reporting
from .labels import LabelsError, has_label, labelled_mask, read_labels_csv
from .mapping.clusters import ClusterError, cluster
from .mapping.labelling import classify, labelling_list

BEGIN = "<!-- labelling payoff: written by python -m ssl.labelling_payoff; replaced when it runs again -->"
END = "<!-- /labelling payoff -->"
MARKER = "labelling_payoff.json"  # the record of the --out folder (ssl/files.py OwnedFolder)
TOOL = "ssl.labelling_payoff"
MAX_SEED = 2**32 - 1  # numpy's and scikit-learn's random states
MAX_VALUES = 10_000  # values one --n or --seeds range may list
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*")


class PayoffError(RuntimeError):
    """Inputs that cannot be compared (one message, exit status 2)."""


def _named(text: str) -> tuple[str, str]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected NAME=FILE, got {text!r}")
    name, path = (t.strip() for t in text.split("=", 1))
    if not NAME.fullmatch(name):
        raise argparse.ArgumentTypeError(f"{text!r}: the encoder's name must be letters, digits "
                                         "and . _ + - (starting with a letter or digit), e.g. "
                                         "geoclr=FILE")
    if not path:
        raise argparse.ArgumentTypeError(f"{text!r}: no file after '='; expected NAME=FILE")
    return name, path


def _int_list(text: str, lo: int, hi: int, what: str, rule: str) -> list[int]:
    """'0,1,2' or '0-9' (or both: '0-4,9') -> the integers, each in [lo, hi] (``rule`` says
    so in words), none twice."""
    out: list[int] = []
    for t in (t.strip() for t in text.split(",")):
        if not t:
            continue
        try:
            if "-" in t[1:]:
                a, b = (int(v) for v in t.split("-", 1))
                if b < a:
                    raise argparse.ArgumentTypeError(f"{t!r}: a range runs upwards, e.g. "
                                                     f"{b}-{a}")
                if b - a >= MAX_VALUES:
                    raise argparse.ArgumentTypeError(f"{t!r}: more than {MAX_VALUES} values")
                out.extend(range(a, b + 1))
            else:
                out.append(int(t))
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what} like 0,1,2 or 0-9, got "
                                             f"{text!r}") from None
    if not out:
        raise argparse.ArgumentTypeError(f"expected at least one of {what}, got {text!r}")
    bad = [v for v in out if not lo <= v <= hi]
    if bad:
        raise argparse.ArgumentTypeError(f"{bad[0]} is out of range: {rule}")
    twice = sorted({v for v in out if out.count(v) > 1})
    if twice:
        raise argparse.ArgumentTypeError(f"{twice[0]} is given twice in {text!r}; give each "
                                         "value once")
    return out


def _counts(text: str) -> list[int]:
    """--n: numbers of images, each at least 1 (the data bound a run checks later)."""
    return _int_list(text, 1, 10**9, "numbers of images", "each number of images labelled "
                     "must be at least 1")


def _seeds(text: str) -> list[int]:
    return _int_list(text, 0, MAX_SEED, "seeds", f"a seed is a whole number from 0 to "
                     f"{MAX_SEED}")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m ssl.labelling_payoff",
                                description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--embeddings", type=_named, nargs="+", action="extend", required=True,
                   metavar="NAME=FILE",
                   help="embeddings files of the encoders to compare (python -m ssl.embed), "
                        "each under its own name")
    p.add_argument("--labels", default=None, metavar="CSV",
                   help="CSV image_id,label with the true habitats; None: the embeddings' "
                        "label column")
    p.add_argument("--n", type=_counts, default="6,30,60,120",
                   help="numbers of images labelled, each >= 1 and at most half the labelled "
                        "images")
    p.add_argument("--seeds", type=_seeds, default="0-9",
                   help=f"seeds from 0 to {MAX_SEED}, each once, e.g. 0-9 or 0,1,2")
    p.add_argument("--k", type=k_flag, default="auto",
                   help="habitat clusters: an integer >= 2, or auto")
    p.add_argument("--dims", type=positive_int, default=32, help="PCA components (>= 1)")
    p.add_argument("--out", required=True, metavar="DIR",
                   help=f"folder for payoff.json and payoff.png: a new or empty one, or an "
                        f"earlier run's with --overwrite ({MARKER} records what it wrote)")
    p.add_argument("--overwrite", action="store_true",
                   help=f"replace an earlier run in --out (only the files its {MARKER} lists "
                        "are removed)")
    p.add_argument("--report", default=None, metavar="MD",
                   help="Markdown file (.md, UTF-8) whose labelling-payoff section is written "
                        "or replaced; new, or one whose text outside the section is kept as it "
                        "is")
    return p


def macro_f1(y_true: np.ndarray, y_pred: np.ndarray, classes: list[str]) -> float:
    from sklearn.metrics import f1_score

    return float(f1_score(y_true, y_pred, labels=classes, average="macro", zero_division=0))


def compare(X: np.ndarray, xy: np.ndarray, truth: np.ndarray, ns: list[int], seeds: list[int],
            k: int | None, dims: int, log=print, graph=None) -> dict:
    """{n: {"list": [f1 per seed], "random": [...], "covered": [...]}} for one encoder;
    ``graph``: the neighbour pairs (anchor, positive) the default k criterion of ssl.habitats
    averages over (without them, --k auto uses its plain form)."""
    has = labelled_mask(truth)
    lab = np.flatnonzero(has)
    classes = sorted({str(v) for v in truth[has]})
    res: dict[int, dict[str, list]] = {n: {"list": [], "random": [], "classes_list": [],
                                           "classes_random": []} for n in ns}
    for seed in seeds:
        clu = cluster(X, k, dims=dims, seed=seed, graph=graph)
        rng = np.random.default_rng(seed)
        for n in ns:
            # the annotator can only label images that have a true label here
            exclude = ~has
            chosen = labelling_list(clu.reduced, clu.labels, xy, n, seed=seed, exclude=exclude)
            rand = rng.choice(lab, size=min(n, len(lab)), replace=False)
            test = np.setdiff1d(lab, np.union1d(chosen, rand))
            y_test = truth[test].astype(str)
            for name, train in (("list", chosen), ("random", rand)):
                pred, _, _ = classify(clu.reduced, train, truth[train], seed)
                res[n][name].append(macro_f1(y_test, pred[test].astype(str), classes))
                res[n][f"classes_{name}"].append(len({str(v) for v in truth[train]}))
        log(f"seed {seed}: k = {clu.k}; " + ", ".join(
            f"N={n} list {res[n]['list'][-1]:.3f} random {res[n]['random'][-1]:.3f}"
            for n in ns))
    return {"classes": classes, "by_n": {str(n): v for n, v in res.items()}}


def _plot(path: Path, results: dict, ns: list[int]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=110)
    colours = plt.cm.tab10(np.arange(len(results)) % 10)
    for (name, r), col in zip(results.items(), colours, strict=True):
        for kind, style in (("list", "-o"), ("random", "--s")):
            vals = [np.asarray(r["by_n"][str(n)][kind]) for n in ns]
            mean = np.array([v.mean() for v in vals])
            sd = np.array([v.std(ddof=1) if len(v) > 1 else 0.0 for v in vals])
            ax.plot(ns, mean, style, color=col, label=f"{name}, {'labelling list' if kind == 'list' else 'random'}")
            ax.fill_between(ns, mean - sd, mean + sd, color=col, alpha=0.12 if kind == "list" else 0.06)
    ax.set_xscale("log")
    ax.set_xticks(ns)
    ax.set_xticklabels([str(n) for n in ns])
    ax.set_xlabel("images labelled (N)")
    ax.set_ylabel("macro-F1 of the predicted map")
    ax.set_title("labelling list vs random images (mean ± std over seeds)", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def section(results: dict, ns: list[int], seeds: list[int], meta: dict) -> str:
    lines = [BEGIN, "## Which images to label first: the labelling list against random images",
             "",
             f"{meta['survey']}; {meta['n_images']} located images, {meta['n_classes']} "
             f"habitats. Encoders: {meta['encoders']}. For each seed ({len(seeds)} seeds: "
             f"{seeds[0]}–{seeds[-1]}) and N, `ssl.habitats`' clusters (k {meta['k']}) and "
             "labelling list pick N images, and N images are drawn at random; each set's true "
             "labels train the same logistic regression on the PCA-reduced embeddings, which "
             "predicts every image. Macro-F1 on the labelled images neither set contains. "
             "Difference list − random paired by seed, 95 % Student t interval over seeds. "
             "Each encoder is one training run: the interval covers the choice of images, the "
             "k-means starts and the classifier, not the training. "
             f"`python -m ssl.labelling_payoff` wrote this in {meta['seconds'] / 60:.1f} min.",
             "",
             "| encoder | N | labelling list | random | list − random | verdict | habitats "
             "in the labelled set (list / random) |",
             "|---|---:|---:|---:|---|---|---:|"]
    for name, r in results.items():
        for n in ns:
            a = np.asarray(r["by_n"][str(n)]["list"])
            b = np.asarray(r["by_n"][str(n)]["random"])
            p = summarize((a - b).tolist(), float(b.mean()))
            verdict = judge(p) if p is not None and p.n > 1 else "not shown"
            diff = (f"{p.mean:+.3f}, 95 % CI [{p.lo:+.3f}, {p.hi:+.3f}]" if p.n > 1
                    else f"{p.mean:+.3f} (one seed: no interval)")
            verdict = {"reproduced": "list better", "contradicted": "random better"}.get(
                verdict, verdict)
            ca = np.mean(r["by_n"][str(n)]["classes_list"])
            cb = np.mean(r["by_n"][str(n)]["classes_random"])
            lines.append(f"| {name} | {n} | {a.mean():.3f} ± {a.std(ddof=1) if len(a) > 1 else 0:.3f} "
                         f"| {b.mean():.3f} ± {b.std(ddof=1) if len(b) > 1 else 0:.3f} | {diff} "
                         f"| {verdict} | {ca:.1f} / {cb:.1f} |")
    m = len(results) * len(ns)
    lines += ["", f"{m} comparisons, each at 95 % and not corrected for multiplicity: about "
              f"{0.05 * m:.1f} of them would exclude zero by chance alone if the list made no "
              "difference, so a single \"list better\" or \"random better\" is weak evidence "
              "on its own.", "", f"![labelling list against random]({meta['figure']})", "", END]
    return "\n".join(lines) + "\n"


def write_section(report: Path, text: str) -> None:
    """Replace this command's section of ``report`` (append it when there is none); ReportError
    for a report `check_inputs` refuses."""
    replace_section(report, text, BEGIN, END)


def check_inputs(args: argparse.Namespace) -> None:
    """What can be refused before any computing (PayoffError, one message): an encoder name
    given twice, a --report this command may not write into or that is one of its inputs, an
    --out folder it may not write to."""
    seen: dict[str, str] = {}
    for name, path in args.embeddings:
        if name in seen:
            raise PayoffError(f"--embeddings: the name {name!r} is given twice ({seen[name]} "
                              f"and {path}); give each encoder its own name")
        seen[name] = path
    if args.report:
        try:
            check_report(args.report, BEGIN, END)
        except ReportError as exc:
            raise PayoffError(str(exc)) from None
        report = Path(os.path.abspath(args.report))
        inputs = [*(p for _, p in args.embeddings), *([args.labels] if args.labels else [])]
        for path in inputs:
            if Path(os.path.abspath(path)) == report:
                raise PayoffError(f"--report {args.report}: also given as an input; the report "
                                  "must be another file: choose another .md file")
    try:
        OwnedFolder.check(args.out, TOOL, MARKER, args.overwrite)
    except FolderError as exc:
        raise PayoffError(str(exc)) from None


def figure_link(report: Path, figure: Path) -> str:
    """``figure`` as the report links to it: relative to the report's folder."""
    try:
        rel = os.path.relpath(os.path.abspath(figure), os.path.abspath(report.parent))
    except ValueError:  # another drive: no relative path exists
        rel = os.path.abspath(figure)
    return Path(rel).as_posix()


def _pairs_graph(emb):
    """The neighbour pairs of the manifest the embeddings were computed for, as ssl.habitats
    uses them to choose k; None (with a note) when that manifest cannot be read or differs."""
    from .data.manifest import ManifestError, load_manifest

    try:
        m = load_manifest(emb.pairs)
    except ManifestError as exc:
        print(f"[payoff] note: {exc}; --k auto uses the plain form of its criterion", flush=True)
        return None
    if m.n != emb.n or not np.array_equal(m.image_id, emb.image_id):
        print(f"[payoff] note: {emb.pairs} does not list the embeddings' images in order; "
              "--k auto uses the plain form of its criterion", flush=True)
        return None
    return m.anchor, m.positive


def run(args: argparse.Namespace) -> dict:
    t0 = time.perf_counter()
    check_inputs(args)
    k = args.k
    results, first = {}, None
    for name, path in args.embeddings:
        try:
            emb = read_embeddings(path)
        except EmbeddingsError as exc:
            raise PayoffError(str(exc)) from None
        if first is None:
            first = emb
        elif emb.dataset != first.dataset:
            raise PayoffError(f"{path}: embeddings of another dataset than {first.path}; compare "
                              "encoders on the same manifest")
        truth = (read_labels_csv(args.labels, emb.image_id) if args.labels
                 else np.asarray(emb.label, dtype=object))
        truth = np.array([v if has_label(v) else None for v in truth], dtype=object)
        n_lab = int(labelled_mask(truth).sum())
        if n_lab < max(args.n) * 2:
            raise PayoffError(f"{path}: {n_lab} labelled images; comparing N up to {max(args.n)} "
                              "needs at least twice as many (pass --labels or smaller --n)")
        print(f"[payoff] {name}: {emb.n} images, {emb.X.shape[1]} dims", flush=True)
        graph = _pairs_graph(emb) if k is None else None
        try:
            results[name] = compare(emb.X, emb.xy, truth, args.n, args.seeds, k, args.dims,
                                    log=lambda s, name=name: print(f"[payoff] {name} {s}",
                                                                  flush=True), graph=graph)
        except ClusterError as exc:
            raise PayoffError(f"{path}: {exc}") from None
        results[name]["encoder"] = emb.encoder
        results[name]["embeddings"] = str(path)
    try:
        folder = OwnedFolder.claim(args.out, TOOL, MARKER,
                                   {"embeddings": dict(args.embeddings), "labels": args.labels,
                                    "report": args.report}, args.overwrite)
    except FolderError as exc:
        raise PayoffError(str(exc)) from None
    png = folder.file("payoff.png")
    write_atomic(png, lambda tmp: _plot(tmp, results, args.n))
    seconds = time.perf_counter() - t0
    doc = {"n": args.n, "seeds": args.seeds, "k": args.k, "dims": args.dims,
           "results": results, "seconds": round(seconds, 1)}
    write_text_atomic(folder.file("payoff.json"), json.dumps(doc, indent=1) + "\n")
    if args.report:
        report = Path(args.report)
        classes = results[next(iter(results))]["classes"]
        encs = "; ".join(f"{nm} ({r['encoder'].get('backbone')}, {r['encoder'].get('image_size')}"
                         f" px, step {r['encoder'].get('step')})" for nm, r in results.items())
        meta = {"survey": first.meta.get("catalog") and f"survey `{first.meta['catalog']}`"
                or "survey", "n_images": first.n, "n_classes": len(classes), "encoders": encs,
                "k": "auto" if args.k is None else args.k, "seconds": seconds,
                "figure": figure_link(report, png)}
        try:
            write_section(report, section(results, args.n, args.seeds, meta))
        except ReportError as exc:
            raise PayoffError(str(exc)) from None
    folder.finish({"seconds": round(seconds, 1)})
    return doc


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _, rc = run_reporting(lambda: run(args), (PayoffError, LabelsError))
    if rc:
        return rc
    print(f"[payoff] wrote {Path(args.out) / 'payoff.json'}"
          + (f" and the section of {args.report}" if args.report else ""), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
