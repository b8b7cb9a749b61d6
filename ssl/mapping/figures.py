"""Figures of ``ssl.habitats``: the survey map coloured by cluster or predicted habitat, contact
sheets of images, and the silhouette curve behind ``--k auto``. Colours come from
:mod:`palette`, the project's one habitat palette."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from ..palette import UNLABELLED, cluster_colours, habitat_colours

THUMB = 128  # px, square thumbnails
MAX_POINTS = 200_000  # a seeded sample of larger surveys is drawn
MAX_MARKS = 500  # more circled images than this hide the map


def _sample(n: int, seed: int = 0) -> np.ndarray:
    if n <= MAX_POINTS:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, MAX_POINTS, replace=False))


def _axes(xy: np.ndarray, crs: str, title: str):
    fig, ax = plt.subplots(figsize=(8.0, 6.5), dpi=110)
    x0, y0 = (np.floor(xy.min(axis=0)) if len(xy) else (0.0, 0.0))
    ax.set_xlabel(f"metres east of E {x0:.0f} ({crs})")
    ax.set_ylabel(f"metres north of N {y0:.0f}")
    ax.set_aspect("equal", adjustable="datalim")
    ax.set_title(title, fontsize=10)
    return fig, ax, np.array([x0, y0])


def _finish(fig, ax, path: Path) -> None:
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False,
              markerscale=2.0)
    fig.tight_layout()
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)


def cluster_map(path: Path, xy: np.ndarray, labels: np.ndarray, k: int, crs: str,
                title: str, marks: np.ndarray | None = None) -> None:
    """Every image as a point coloured by its cluster; ``marks`` (indices) circled in black
    (the labelling list)."""
    colours = cluster_colours(k)
    fig, ax, o = _axes(xy, crs, title)
    keep = _sample(len(xy))
    for j in range(k):
        sel = keep[labels[keep] == j]
        ax.scatter(xy[sel, 0] - o[0], xy[sel, 1] - o[1], s=5, color=colours[j],
                   label=f"cluster {j} ({int((labels == j).sum())})", linewidths=0)
    if marks is not None and len(marks):
        ax.scatter(xy[marks, 0] - o[0], xy[marks, 1] - o[1], s=40, facecolors="none",
                   edgecolors="black", linewidths=0.9, label=f"to label ({len(marks)})")
    _finish(fig, ax, path)


def prediction_map(path: Path, xy: np.ndarray, predicted: np.ndarray, confidence: np.ndarray,
                   classes: Sequence[str], crs: str, title: str, threshold: float = 0.5,
                   labelled: np.ndarray | None = None) -> None:
    """Points coloured by predicted habitat; below ``threshold`` confidence drawn faded."""
    colours = habitat_colours(classes)
    fig, ax, o = _axes(xy, crs, title)
    keep = _sample(len(xy))
    for cls in classes:
        sel = keep[predicted[keep] == cls]
        sure = sel[confidence[sel] >= threshold]
        unsure = sel[confidence[sel] < threshold]
        ax.scatter(xy[sure, 0] - o[0], xy[sure, 1] - o[1], s=5, color=colours[cls],
                   linewidths=0, label=f"{cls.replace('_', ' ')} ({int((predicted == cls).sum())})")
        ax.scatter(xy[unsure, 0] - o[0], xy[unsure, 1] - o[1], s=5, color=colours[cls],
                   alpha=0.25, linewidths=0)
    if labelled is not None and 0 < len(labelled) <= MAX_MARKS:
        ax.scatter(xy[labelled, 0] - o[0], xy[labelled, 1] - o[1], s=30, facecolors="none",
                   edgecolors="black", linewidths=0.8, label=f"labelled ({len(labelled)})")
    elif labelled is not None and len(labelled):
        ax.scatter([], [], s=30, facecolors="none", edgecolors="none",
                   label=f"labelled: {len(labelled)} (too many to circle)")
    ax.scatter([], [], s=5, color=UNLABELLED, alpha=0.5,
               label=f"faded: confidence < {threshold:g}")
    _finish(fig, ax, path)


K_SCORE = {"silhouette": ("mean silhouette", "highest"),
           "gmm_bic": ("BIC of a diagonal Gaussian mixture", "lowest"),
           "gap": ("gap statistic", "1-SE rule")}


def k_curve(path: Path, scores: dict[int, float], chosen: int, criterion: str) -> None:
    """The score of every k tried by ``criterion`` (a name of clusters.CRITERIA), the chosen k
    marked; a k whose score is not finite (a mixture that failed) is left out."""
    import math

    base = criterion.removesuffix("_spatial")
    what, rule = K_SCORE.get(base, (base, ""))
    if criterion.endswith("_spatial"):
        what += ", neighbour-averaged"
    ks = [k for k in sorted(scores) if math.isfinite(scores[k])]
    fig, ax = plt.subplots(figsize=(5.0, 3.2), dpi=110)
    ax.plot(ks, [scores[k] for k in ks], "o-", color="0.3")
    if chosen in ks:
        ax.plot([chosen], [scores[chosen]], "o", color="crimson", ms=9,
                label=f"chosen k = {chosen}")
        ax.legend(fontsize=8)
    ax.set_xlabel("k (clusters)")
    ax.set_ylabel(what, fontsize=8)
    ax.set_xticks(sorted(scores))
    ax.set_title(f"--k auto, {criterion}: {rule}".rstrip(": "), fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def contact_sheet(path: Path, jpegs: Sequence[bytes], captions: Sequence[str], title: str,
                  per_row: int = 6, colour: str = "#000000") -> None:
    """Thumbnails in rows of ``per_row`` with a caption under each and a title bar in
    ``colour`` (the cluster's or habitat's). An image that cannot be decoded is drawn as a
    grey tile saying so."""
    import io

    from PIL import Image, ImageDraw

    n = max(len(jpegs), 1)
    rows = -(-n // per_row)
    cap_h, title_h, pad = 14, 24, 2
    sheet = Image.new("RGB", (per_row * (THUMB + pad) + pad,
                              title_h + rows * (THUMB + cap_h + pad) + pad), "white")
    draw = ImageDraw.Draw(sheet)
    draw.rectangle([0, 0, sheet.width, title_h - 4], fill=colour)
    rgb = tuple(int(colour.lstrip("#")[i:i + 2], 16) for i in (0, 2, 4))
    text_fill = "black" if sum(rgb) > 380 else "white"
    draw.text((6, 5), title, fill=text_fill)
    for i, (data, cap) in enumerate(zip(jpegs, captions, strict=True)):
        r, col = divmod(i, per_row)
        x, y = pad + col * (THUMB + pad), title_h + r * (THUMB + cap_h + pad)
        try:
            with Image.open(io.BytesIO(data)) as im:
                im = im.convert("RGB")
                im.thumbnail((THUMB, THUMB))
                sheet.paste(im, (x + (THUMB - im.width) // 2, y + (THUMB - im.height) // 2))
        except OSError:
            draw.rectangle([x, y, x + THUMB, y + THUMB], fill=UNLABELLED)
            draw.text((x + 4, y + THUMB // 2), "cannot decode", fill="black")
        draw.text((x + 2, y + THUMB + 1), cap[:24], fill="black")
    sheet.save(path)
