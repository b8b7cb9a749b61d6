"""Synthetic AUV survey generator: ``python -m pipeline.synth --out data/seafloor``.

Writes images, navigation in real formats (oplab, ACFR, iFDO v2, raw 10 Hz vehicle CSV),
labels.csv, truth.csv, faults.json, survey.json, site.png and a catalog.yaml for the pipeline.
``--preset benchmark`` makes habitats hard to tell apart from pixels alone (see mixture.py and
imaging.py) and adds contact_sheet.png.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from .navformats import FORMATS
from .survey import DEFAULT_LAT, DEFAULT_LON, PRESETS, SynthConfig, SynthRefused, generate

__all__ = ["SynthConfig", "generate", "main"]


def _size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT such as 320x240, got {text!r}") from None
    if not (32 <= w <= 1360 and 32 <= h <= 1024):
        raise argparse.ArgumentTypeError(f"size {w}x{h} outside 32x32 .. 1360x1024")
    return w, h


def _formats(text: str) -> list[str]:
    items = [t.strip() for t in text.split(",") if t.strip()]
    bad = [t for t in items if t not in FORMATS]
    if bad or not items:
        raise argparse.ArgumentTypeError(f"unknown format(s) {bad}; expected a comma list of {', '.join(FORMATS)}")
    return items


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m pipeline.synth",
        description="Generate a synthetic AUV survey (images + navigation) for the pipeline.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--out", type=Path, required=True, help="output folder (created)")
    p.add_argument("--dives", type=int, default=3, help="number of dives; dive 2 revisits dive 1")
    p.add_argument("--images-per-dive", type=int, default=400, help="camera frames per dive (1 Hz)")
    p.add_argument("--seed", type=int, default=0, help="seed for habitat map, tracks and noise")
    p.add_argument("--size", type=_size, default=(320, 240), help="image size WxH (up to 1360x1024)")
    p.add_argument("--formats", type=_formats, default=list(FORMATS),
                   help="navigation format per dive, cycled: comma list of " + ", ".join(FORMATS))
    p.add_argument("--faults", action="store_true",
                   help="inject real-survey faults (recorded in faults.json)")
    p.add_argument("--nav-only", action="store_true",
                   help="navigation only, no images (huge surveys for pair-search benchmarks)")
    p.add_argument("--lat", type=float, default=DEFAULT_LAT, help="site centre latitude")
    p.add_argument("--lon", type=float, default=DEFAULT_LON, help="site centre longitude")
    p.add_argument("--workers", type=int, default=None, help="render processes (default: all cores)")
    p.add_argument("--preset", choices=PRESETS, default="default",
                   help="benchmark: habitats as mixtures of shared elements, terrain-following "
                        "altitude and per-dive water, white balance, exposure and motion blur")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cfg = SynthConfig(
        out=args.out, dives=args.dives, images_per_dive=args.images_per_dive, seed=args.seed,
        size=args.size, formats=args.formats, faults=args.faults, nav_only=args.nav_only,
        lat=args.lat, lon=args.lon, workers=args.workers, preset=args.preset,
    )
    t0 = time.perf_counter()
    try:
        summary = generate(cfg)
    except SynthRefused as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    secs = time.perf_counter() - t0
    print(f"wrote {summary['images']} images in {len(summary['dives'])} dives to {args.out} "
          f"in {secs:.1f} s; CRS {summary['crs']}")
    if summary.get("render_images_per_s"):
        print(f"  rendering: {summary['render_images_per_s']:.0f} images/s "
              f"({summary['render_seconds']:.1f} s, {args.workers or 'all'} cores)")
    for d in summary["dives"]:
        extra = f", revisits {d['revisits']}" if d["revisits"] else ""
        print(f"  {d['name']}: {d['images']} images, navigation {d['format']}{extra}")
    print(f"catalog: {Path(args.out) / 'catalog.yaml'}")
    return 0
