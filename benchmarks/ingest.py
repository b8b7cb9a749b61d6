"""Ingest rate: images/s, and per core, for 320x240 and 1360x1024 source JPEGs, including the
shard write; 1 worker vs all cores, side by side in one run.

    python benchmarks/ingest.py [--small 3x512] [--large 2x128] [--repeat 3]

For each source size a synthetic survey (no faults) is generated with `python -m pipeline.synth`
in a temporary folder (not timed), then `pipeline.build.build` runs on its catalog.yaml into a
fresh output folder once per worker count. The rate is images found / the build's "ingest"
seconds: for every dive, ingest_cached = ingest_dive (find the images and the navigation, open
and fully decode every JPEG, re-encode it at the catalog's training size 256x192, interpolate
the poses) plus writing the dive cache (locations, quarantine and the images.parquet shard).
The site stage that follows (pairs, manifests) is not counted. Large JPEGs are decoded in PIL's
draft mode (DCT scaling to at least the training size), which makes a 1360x1024 source much
cheaper than a full decode would. Each measurement is the best of --repeat runs.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CORES = os.cpu_count() or 1


def _counts(text: str) -> tuple[int, int]:
    dives, per = text.lower().split("x")
    return int(dives), int(per)


def synth(out: Path, size: str, dives: int, per_dive: int) -> Path:
    subprocess.run(
        [sys.executable, "-m", "pipeline.synth", "--out", str(out), "--dives", str(dives),
         "--images-per-dive", str(per_dive), "--size", size, "--workers", str(CORES)],
        cwd=REPO, check=True, capture_output=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    return out / "catalog.yaml"


def ingest_rate(catalog: Path, workers: int, out: Path) -> tuple[int, float]:
    """Images found and seconds of the build's ingest step, into a fresh output folder."""
    from pipeline.build import build
    from pipeline.catalog import load_catalog

    report = build(load_catalog(catalog), out=out, workers=workers, log=lambda *a: None)
    return int(report["images_found"]), float(report["seconds"]["ingest"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--small", type=_counts, default=(3, 512),
                    help="dives x images per dive at 320x240 (default 3x512)")
    ap.add_argument("--large", type=_counts, default=(2, 128),
                    help="dives x images per dive at 1360x1024 (default 2x128)")
    ap.add_argument("--repeat", type=int, default=3, help="runs per measurement, best kept")
    args = ap.parse_args()

    rows = []
    with tempfile.TemporaryDirectory(prefix="ingest-bench-") as tmp:
        for size, (dives, per_dive) in (("320x240", args.small), ("1360x1024", args.large)):
            catalog = synth(Path(tmp) / f"site-{size}", size, dives, per_dive)
            for workers in sorted({1, CORES}):
                best = None
                for rep in range(max(args.repeat, 1)):
                    images, secs = ingest_rate(catalog, workers,
                                               Path(tmp) / f"out-{size}-{workers}-{rep}")
                    best = secs if best is None else min(best, secs)
                rate = images / best
                rows.append((size, workers, images, best, rate))
                print(f"  {size} workers={workers}: {images} images, ingest {best:.2f} s, "
                      f"{rate:.0f} images/s, {rate / workers:.0f} images/s per core",
                      file=sys.stderr)

    print(f"\nmachine: {platform.machine()}, {CORES} cores, "
          f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB; "
          f"Python {platform.python_version()}\n")
    print("| source size | workers | images | ingest s | images/s | images/s per core "
          "| speed-up vs 1 worker |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for size, workers, images, secs, rate in rows:
        one = next(r[4] for r in rows if r[0] == size and r[1] == 1)
        print(f"| {size} | {workers} | {images:,} | {secs:.2f} | {rate:.0f} "
              f"| {rate / workers:.0f} | {rate / one:.2f}x |")


if __name__ == "__main__":
    main()
