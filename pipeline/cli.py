"""The pipeline without a server: ``python -m pipeline build --catalog catalogs/seafloor.yaml``
builds the manifests; ``python -m pipeline init SURVEY_DIR`` proposes a catalog for a survey;
``python -m pipeline export ifdo --catalog C`` writes an iFDO of a built site."""

from __future__ import annotations

import argparse
import sys

from .build import BuildLocked, NothingLocated, SettingsError, build
from .catalog import CatalogError, find_catalog, load_catalog
from .crs import CRSError
from .output import OutputRefused, os_error_message
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
    e = sub.add_parser("export", help="files of a built site for other tools (iFDO)")
    fmt = e.add_subparsers(dest="format", required=True)
    x = fmt.add_parser("ifdo", help="an iFDO v2 file of the located images",
                       description="Write an iFDO v2 file (image FAIR Digital Object) of the "
                       "located images of a built site into its output folder: time, position, "
                       "depth, altitude and heading of every image, a stable image-uuid and the "
                       "SHA-256 of each original file.",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    x.add_argument("--catalog", required=True, help="catalog YAML, or a name in catalogs/")
    x.add_argument("--out", default=None, metavar="FILE",
                   help="the file, in the output folder: a name ending _iFDO.json, or "
                        "_iFDO.yaml for YAML, or a path in a folder the pipeline built for the "
                        "catalog; None: <output>/<catalog>_iFDO.json")
    x.add_argument("--no-hash", action="store_true",
                   help="leave out image-hash-sha256 (no image file is read)")
    return p


def run_export(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from .export import ExportError, export_ifdo

    try:
        cat = load_catalog(find_catalog(args.catalog))

        def bar(total):
            return tqdm(total=total, desc="hashing images", unit="img", disable=None,
                        leave=False)

        done = export_ifdo(cat, args.out, hash_files=not args.no_hash,
                           progress_factory=None if args.no_hash else bar)
    except (CatalogError, BuildLocked, OutputRefused, ExportError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a folder it may not write to, a full disk: one message
        print(f"error: {os_error_message(exc)}", file=sys.stderr)
        return 2
    hashed = ("no files read (--no-hash)" if args.no_hash else
              f"{done['hashed']} files hashed"
              + (f", {done['missing']} not found under the catalog root" if done["missing"]
                 else ""))
    keyed = "; keyed by path from the catalog root" if done["keyed_by_path"] else ""
    print(f"{cat.name}: wrote {done['path']}: iFDO v2 of {done['n']} located images "
          f"({hashed}{keyed})")
    if done["to_complete"]:
        print(f"{cat.name}: header fields to complete before publishing: "
              + ", ".join(done["to_complete"]))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "init":
        from .scaffold import run_init

        try:
            return run_init(args)
        except OSError as exc:  # a catalog it cannot write (read-only, no space): one message
            print(f"error: {os_error_message(exc)}", file=sys.stderr)
            return 2
    if args.command == "export":
        return run_export(args)
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
    except OSError as exc:  # a folder it may not write to, a full disk: one message
        print(f"error: {os_error_message(exc)}", file=sys.stderr)
        return 2
    if report.get("no_change"):
        print(f"{cat.name}: no change; manifests in {report['output']} left untouched")
        return 0
    print(summary_markdown(report))
    return 0
