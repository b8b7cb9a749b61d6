"""What a build produced, for people: a markdown summary table and a survey map picture.

Both read only the build report and the published tables, so the command line, the Prefect
artifacts and the README show the same thing.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pyarrow as pa

__all__ = ["summary_markdown", "survey_map_png"]


def summary_markdown(report: dict) -> str:
    """Markdown: per-dive counts, quarantine reasons, pairs, neighbours, CRS and stage seconds."""
    lines = [f"catalog **{report['catalog']}** -> {report.get('output', '')}",
             "",
             f"CRS {report['crs']}",
             "",
             "| dive | nav format | images | located | quarantined |",
             "|---|---|---:|---:|---:|"]
    for dive, d in report["per_dive"].items():
        lines.append(f"| {dive} | {d['nav_format'] or '-'} | {d['found']} | {d['located']} "
                     f"| {d['quarantined']} |")
    lines.append(f"| **all** | | {report['images_found']} | {report['images_located']} "
                 f"| {report['quarantined']} |")
    if report["per_reason"]:
        lines += ["", "| quarantine reason | entries (images; navigation rows for nav_row_invalid) |",
                  "|---|---:|"]
        lines += [f"| {k} | {v} |" for k, v in report["per_reason"].items()]
    dropped = {d: v.get("nav_rows_dropped") for d, v in report["per_dive"].items()
               if v.get("nav_rows_dropped")}
    if dropped:
        lines += ["", "| dive | navigation rows dropped (bad rows the reader left out, each in "
                  "the quarantine table; rows the cleaner dropped) |", "|---|---|"]
        lines += [f"| {d} | " + ", ".join(f"{n} {k}" for k, n in v.items()) + " |"
                  for d, v in dropped.items()]
    noted = {d: v.get("nav_notes") for d, v in report["per_dive"].items() if v.get("nav_notes")}
    if noted:
        lines += ["", "| dive | what the navigation reader noted |", "|---|---|"]
        lines += [f"| {d} | " + ", ".join(f"{k} x{n}" for k, n in v.items()) + " |"
                  for d, v in noted.items()]
    if report.get("warnings"):
        lines += ["", "**warnings**", ""] + [f"- {w}" for w in report["warnings"]]
    policy = report["pair_policy"]
    lines += ["",
              f"pairs within {policy['r_loc_m']:g} m: {report['pairs']} "
              f"({report['cross_dive_pairs']} cross-dive); neighbours mean "
              f"{report['neighbours_mean']:.1f}, max {report['neighbours_max']}; "
              f"{report['images_without_neighbours']} images without neighbours"]
    secs = report.get("seconds", {})
    if secs:
        lines += ["", "| stage | seconds |", "|---|---:|"]
        lines += [f"| {k} | {v:.2f} |" for k, v in secs.items()]
    return "\n".join(lines)


def survey_map_png(locations: pa.Table, pairs: pa.Table, path: str | Path | None = None,
                   max_links: int = 3000, seed: int = 0, title: str | None = None) -> bytes:
    """Tracks coloured by dive (in the site CRS) with a random sample of neighbour links.

    Returns the PNG bytes, and writes them to `path` when given."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.collections import LineCollection

    x = locations.column("easting").to_numpy()
    y = locations.column("northing").to_numpy()
    dive = np.asarray(locations.column("dive").to_pylist(), dtype=object)
    t = locations.column("timestamp").cast(pa.int64()).to_numpy()
    x0 = float(x.min()) if x.size else 0.0
    y0 = float(y.min()) if y.size else 0.0
    fig, ax = plt.subplots(figsize=(7.5, 6.5), dpi=100)
    a = pairs.column("anchor").to_numpy()
    p = pairs.column("positive").to_numpy()
    if a.size:
        pick = np.random.default_rng(seed).choice(a.size, min(max_links, a.size), replace=False)
        segs = np.stack([np.column_stack([x[a[pick]] - x0, y[a[pick]] - y0]),
                         np.column_stack([x[p[pick]] - x0, y[p[pick]] - y0])], axis=1)
        cross = ~pairs.column("same_dive").to_numpy(zero_copy_only=False)[pick]
        ax.add_collection(LineCollection(segs[~cross], colors="0.6", lw=0.4, alpha=0.6,
                                         label=f"same-dive links ({(~cross).sum()} shown)"))
        ax.add_collection(LineCollection(segs[cross], colors="crimson", lw=0.5, alpha=0.7,
                                         label=f"cross-dive links ({cross.sum()} shown)"))
    for k, name in enumerate(sorted(set(dive))):
        sel = np.flatnonzero(dive == name)
        sel = sel[np.argsort(t[sel], kind="stable")]
        ax.plot(x[sel] - x0, y[sel] - y0, "-", lw=0.9, color=plt.cm.tab10(k % 10),
                label=f"{name} ({sel.size} images)")
    ax.set_aspect("equal")
    ax.autoscale_view()
    ax.set_xlabel(f"metres east of E {x0:.0f}")
    ax.set_ylabel(f"metres north of N {y0:.0f}")
    ax.set_title(title or f"Survey: {locations.num_rows} images, {pairs.num_rows} pairs")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    plt.close(fig)
    png = buf.getvalue()
    if path is not None:
        Path(path).write_bytes(png)
    return png
