"""The pipeline without a server: ``python -m pipeline build --catalog catalogs/seafloor.yaml``
builds the manifests; ``python -m pipeline init SURVEY_DIR`` proposes a catalog for a survey."""

from __future__ import annotations

import argparse
import sys

from .build import BuildLocked, NothingLocated, SettingsError, build
from .catalog import CatalogError, find_catalog, load_catalog
from .crs import CRSError
from .output import OutputRefused
from .summary import summary_markdown


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m pipeline", description=__doc__.strip(),
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="catalog -> locations, pairs, quarantine manifests",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    b.add_argument("--catalog", required=True, help="catalog YAML, or a name in catalogs/")
    b.add_argument("--out", default=None, help="output folder (default: the catalog's 'output')")
    b.add_argument("--r-loc", type=float, default=None, help="override pairs.r_loc_m (metres)")
    b.add_argument("--full-rebuild", action="store_true", help="ignore the per-dive cache")
    b.add_argument("--cache-from", default=None, metavar="DIR",
                   help="another build's output folder: dives whose inputs are unchanged reuse "
                        "its ingest (hard links) instead of being ingested again, so a build "
                        "with other pair settings (--r-loc) into a new --out only computes pairs")
    b.add_argument("--workers", type=int, default=None, help="image processes (default: all cores)")
    i = sub.add_parser("init", help="scan a survey folder and propose a catalog for it",
                       description="Scan a survey folder (dive folders with images, navigation "
                       "files) and propose a catalog: printed on stdout (the report on stderr), "
                       "or written as SURVEY_DIR/catalog.yaml with --write. Navigation formats "
                       "are recognised by the readers; for a CSV none of them reads, the report "
                       "says which columns it looked for, found and nearly found, and the "
                       "columns: map to write.")
    i.add_argument("survey_dir", metavar="SURVEY_DIR", help="the survey's top folder")
    i.add_argument("--write", action="store_true",
                   help="write SURVEY_DIR/catalog.yaml (never over an existing one)")
    i.add_argument("--force", action="store_true",
                   help="with --write: replace an existing SURVEY_DIR/catalog.yaml")
    i.add_argument("--name", default=None,
                   help="catalog name (default: the survey folder's name)")
    i.add_argument("--output", default=None, metavar="DIR",
                   help="output folder for the manifests, relative to the current folder "
                   "(default: SURVEY_DIR/manifests, or a free name beside it)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "init":
        from .scaffold import run_init

        return run_init(args)
    try:
        cat = load_catalog(find_catalog(args.catalog))
        from tqdm import tqdm

        def bar(dive):
            return tqdm(desc=f"images {dive}", unit="img", disable=None, leave=False)

        report = build(cat, out=args.out, r_loc_m=args.r_loc, full_rebuild=args.full_rebuild,
                       workers=args.workers, progress_factory=bar, cache_from=args.cache_from)
    except (CatalogError, BuildLocked, NothingLocated, OutputRefused, SettingsError,
            CRSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if report.get("no_change"):
        print(f"{cat.name}: no change; manifests in {report['output']} left untouched")
        return 0
    print(summary_markdown(report))
    return 0
