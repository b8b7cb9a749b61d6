"""``python -m pipeline build --catalog catalogs/seafloor.yaml``: the pipeline without a server."""

from __future__ import annotations

import argparse
import sys

from .build import BuildLocked, build
from .catalog import CatalogError, find_catalog, load_catalog


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m pipeline", description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="catalog -> locations, pairs, quarantine manifests",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    b.add_argument("--catalog", required=True, help="catalog YAML, or a name in catalogs/")
    b.add_argument("--out", default=None, help="output folder (default: the catalog's 'output')")
    b.add_argument("--r-loc", type=float, default=None, help="override pairs.r_loc_m (metres)")
    b.add_argument("--full-rebuild", action="store_true", help="ignore the per-dive cache")
    b.add_argument("--workers", type=int, default=None, help="image processes (default: all cores)")
    return p


def summary_table(report: dict) -> str:
    lines = [f"catalog {report['catalog']} -> {report.get('output', '')}",
             f"CRS {report['crs']}",
             "",
             "| dive | nav format | images | located | quarantined |",
             "|---|---|---:|---:|---:|"]
    for dive, d in report["per_dive"].items():
        lines.append(f"| {dive} | {d['nav_format'] or '-'} | {d['found']} | {d['located']} | {d['quarantined']} |")
    lines.append(f"| **all** | | {report['images_found']} | {report['images_located']} | {report['quarantined']} |")
    if report["per_reason"]:
        lines.append("")
        lines.append("quarantined by reason: " + ", ".join(f"{k} {v}" for k, v in report["per_reason"].items()))
    lines.append("")
    lines.append(f"pairs within {report['pair_policy']['r_loc_m']:g} m: {report['pairs']} "
                 f"({report['cross_dive_pairs']} cross-dive); neighbours mean "
                 f"{report['neighbours_mean']:.1f}, max {report['neighbours_max']}, "
                 f"{report['images_without_neighbours']} images without neighbours")
    secs = report.get("seconds", {})
    lines.append("seconds: " + ", ".join(f"{k} {v:.2f}" for k, v in secs.items()))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        cat = load_catalog(find_catalog(args.catalog))
        from tqdm import tqdm

        def bar(dive):
            return tqdm(desc=f"images {dive}", unit="img", disable=None, leave=False)

        report = build(cat, out=args.out, r_loc_m=args.r_loc, full_rebuild=args.full_rebuild,
                       workers=args.workers, progress_factory=bar)
    except (CatalogError, BuildLocked) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if report.get("no_change"):
        print(f"{cat.name}: no change; manifests in {report['output']} left untouched")
        return 0
    print(summary_table(report))
    return 0
