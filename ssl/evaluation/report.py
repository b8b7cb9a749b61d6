"""What an evaluation writes: metrics.json, table.md and the figures.

Figures (matplotlib, Agg backend): ``per_class_f1.png`` (bars), ``confusion.png`` (row-
normalised, counts written in the cells), ``map_true.png`` / ``map_pred.png`` (survey positions
coloured by true habitat, and by the reference probe's prediction on the test side),
``embedding_2d.png`` (the standardised features' first two principal components, coloured by
habitat; at most 20,000 points, a seeded sample of larger surveys). Habitat colours come from
the project's one palette (``ssl/palette.py``), so a habitat has the same colour in every
figure, these and the synthetic site's map alike; grey is unlabelled or untested.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from ..labels import labelled_mask
from ..palette import UNLABELLED, habitat_colours

FIGURES = ("per_class_f1.png", "confusion.png", "map_true.png", "map_pred.png",
           "embedding_2d.png")
FEATURE_ORDER = ("image", "location", "fused")


def _cell(summary: dict) -> str:
    mean, std = summary.get("mean"), summary.get("std")
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "—"
    return f"{mean:.3f} ± {std:.3f}"


def markdown_table(metrics: dict | Sequence[dict], metric: str = "macro_f1") -> str:
    """A markdown table of ``metric`` (mean ± std over seeds): one row per features/probe/dims,
    one column per labels-per-class regime. ``metrics`` is an evaluation dict (its "results",
    plus "location_results" when present) or a list of result rows."""
    if isinstance(metrics, dict):
        rows = list(metrics.get("results", [])) + list(metrics.get("location_results", []))
    else:
        rows = list(metrics)
    regimes: list[str] = []
    for r in rows:
        if r["regime"] not in regimes:
            regimes.append(r["regime"])
    order = {f: i for i, f in enumerate(FEATURE_ORDER)}
    keys: list[tuple] = []
    cells: dict[tuple, dict] = {}
    for r in rows:
        key = (r.get("features", "image"), r["probe"], r["dims"])
        if key not in cells:
            keys.append(key)
            cells[key] = {}
        cells[key][r["regime"]] = r[metric]
    keys.sort(key=lambda k: order.get(k[0], len(order)))
    with_features = any(k[0] != "image" for k in keys)

    def head(reg: str) -> str:
        return "all labels" if reg == "all" else f"{reg} / class"

    left = ["features", "probe", "dims"] if with_features else ["probe", "dims"]
    lines = ["| " + " | ".join(left + [head(g) for g in regimes]) + " |",
             "|" + "|".join(["---"] * len(left) + ["---:"] * len(regimes)) + "|"]
    for key in keys:
        name = list(key) if with_features else list(key[1:])
        vals = [_cell(cells[key][g]) if g in cells[key] else "—" for g in regimes]
        lines.append("| " + " | ".join(name + vals) + " |")
    return "\n".join(lines) + "\n"


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def class_colours(classes: Sequence[str]) -> dict[str, str]:
    """{class: "#rrggbb"} from the project's habitat palette (``palette.habitat_colours``), so
    a habitat has the same colour in every figure; in the order of ``classes``, blanks left
    out."""
    colours = habitat_colours(classes)
    return {c: colours[c] for c in classes if c in colours}


def _per_class(path: Path, per_class_f1: dict, colours: dict) -> None:
    names = list(per_class_f1)
    vals = [np.nan if per_class_f1[c] is None else per_class_f1[c] for c in names]
    fig, ax = plt.subplots(figsize=(max(4.0, 0.9 * len(names) + 1.5), 3.5))
    ax.bar(range(len(names)), np.nan_to_num(vals), color=[colours.get(c) for c in names])
    for i, v in enumerate(vals):
        ax.text(i, 0.01 if np.isnan(v) else v + 0.01, "n/a" if np.isnan(v) else f"{v:.2f}",
                ha="center", va="bottom", fontsize=7)
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=8)
    ax.set_ylim(0, 1.08)
    ax.set_ylabel("F1")
    ax.set_title("per-class F1 (reference probe, mean over seeds)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _confusion(path: Path, confusion: dict) -> None:
    labels = confusion["labels"]
    m = np.asarray(confusion["matrix"], dtype=np.float64).reshape(len(labels), len(labels))
    rows = m.sum(1, keepdims=True)
    norm = np.divide(m, rows, out=np.zeros_like(m), where=rows > 0)
    size = max(4.0, 0.7 * len(labels) + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    for i in range(len(labels)):
        for j in range(len(labels)):
            ax.text(j, i, f"{int(m[i, j])}", ha="center", va="center", fontsize=7,
                    color="white" if norm[i, j] > 0.5 else "black")
    ax.set_xticks(range(len(labels)), labels, rotation=40, ha="right", fontsize=7)
    ax.set_yticks(range(len(labels)), labels, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title("confusion (reference probe, first seed)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _map(path: Path, xy: np.ndarray, values: np.ndarray, colours: dict, title: str,
         grey: np.ndarray | None = None, grey_label: str = "") -> None:
    xy = np.asarray(xy, dtype=np.float64)
    xy = xy - (xy.min(0) + xy.max(0)) / 2 if len(xy) else xy
    fig, ax = plt.subplots(figsize=(6, 5.5))
    if grey is not None and grey.any():
        ax.scatter(xy[grey, 0], xy[grey, 1], s=4, color=UNLABELLED, label=grey_label)
    for c, col in colours.items():
        sel = np.array([v == c for v in values], dtype=bool)
        if sel.any():
            ax.scatter(xy[sel, 0], xy[sel, 1], s=7, color=col, label=c)
    ax.set_aspect("equal")
    ax.set_xlabel("easting from site centre (m)")
    ax.set_ylabel("northing from site centre (m)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, markerscale=2, loc="best", framealpha=0.8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _embedding(path: Path, embedding: np.ndarray, labels: np.ndarray, colours: dict,
               max_points: int = 20_000) -> None:
    X = np.asarray(embedding)
    labels = np.asarray(labels, dtype=object)
    if len(X) > max_points:  # a seeded sample keeps large surveys quick to plot
        keep = np.sort(np.random.default_rng(0).choice(len(X), max_points, replace=False))
        X, labels = X[keep], labels[keep]
    X = X.astype(np.float64)
    has = labelled_mask(labels)
    fig, ax = plt.subplots(figsize=(5.5, 5))
    if len(X) >= 2 and X.shape[1] >= 1:
        Z = (X - X.mean(0)) / (X.std(0) + 1e-8)
        _, _, vt = np.linalg.svd(Z, full_matrices=False)
        P = Z @ vt[:2].T
        if P.shape[1] < 2:
            P = np.concatenate([P, np.zeros((len(P), 1))], axis=1)
        if (~has).any():
            ax.scatter(P[~has, 0], P[~has, 1], s=3, color=UNLABELLED, label="unlabelled")
        for c, col in colours.items():
            sel = has & np.array([str(v) == c for v in labels], dtype=bool)
            if sel.any():
                ax.scatter(P[sel, 0], P[sel, 1], s=5, color=col, label=c)
        ax.legend(fontsize=7, markerscale=2, loc="best", framealpha=0.8)
    ax.set_xlabel("PC 1")
    ax.set_ylabel("PC 2")
    ax.set_title("frozen features, first two principal components", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_outputs(out_dir: str | Path | Callable[[str], Path], metrics: dict, *, classes: Sequence[str], xy: np.ndarray,
                  labels: np.ndarray, predictions: np.ndarray, test_mask: np.ndarray,
                  embedding: np.ndarray, per_class_f1: dict, confusion: dict) -> dict:
    """Write metrics.json (``metrics`` without its numpy ``arrays``), table.md and the figures
    into ``out_dir`` (created), or where ``out_dir(name)`` says (an owned folder's recorder).
    Returns {name: path} of everything written."""
    if callable(out_dir):
        file = out_dir
    else:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)

        def file(name: str) -> Path:
            return out / name
    classes = [str(c) for c in classes]
    colours = class_colours(classes)
    labels = np.asarray(labels, dtype=object)
    predictions = np.asarray(predictions, dtype=object)
    test_mask = np.asarray(test_mask, dtype=bool)
    written = {}

    doc = _jsonable({k: v for k, v in metrics.items() if k != "arrays"})
    path = file("metrics.json")
    path.write_text(json.dumps(doc, indent=1, allow_nan=False) + "\n")
    written["metrics.json"] = path

    table = markdown_table(metrics)
    path = file("table.md")
    proto = metrics.get("protocol", {})
    split = proto.get("split", "blocked")
    note = (f"Macro-F1, mean ± std over seeds {proto.get('seeds')}; {split} split"
            + (f" (blocks of {proto['block_m']:g} m, buffer r_loc = {proto['r_loc_m']:g} m)"
               if split == "blocked" and proto.get("block_m") else "") + ".\n\n")
    path.write_text(note + table)
    written["table.md"] = path

    _per_class(file("per_class_f1.png"), per_class_f1, colours)
    _confusion(file("confusion.png"), confusion)
    shown = labelled_mask(labels)
    true_vals = np.array([str(v) if s else None for v, s in zip(labels, shown, strict=True)],
                         dtype=object)
    _map(file("map_true.png"), xy, true_vals, colours, "true habitat",
         grey=~shown, grey_label="unlabelled")
    pred_vals = np.array([str(v) if t and v is not None else None
                          for v, t in zip(predictions, test_mask, strict=True)], dtype=object)
    _map(file("map_pred.png"), xy, pred_vals, colours,
         "predicted habitat on the test side (grey: not tested)", grey=~test_mask,
         grey_label="train / buffer / unlabelled")
    _embedding(file("embedding_2d.png"), embedding, labels, colours)
    for name in FIGURES:
        written[name] = file(name)
    return written
