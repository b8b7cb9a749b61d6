"""Synthetic survey generation rate: images/s at a given size, 1 core vs all cores, one run.

    python benchmarks/synth.py [--images-per-dive 400] [--size 320x240] [--preset benchmark]
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
from pathlib import Path

from pipeline.synth import SynthConfig, generate
from pipeline.synth import _size as parse_size
from pipeline.synth.survey import PRESETS


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--images-per-dive", type=int, default=400)
    ap.add_argument("--dives", type=int, default=3)
    ap.add_argument("--size", type=parse_size, default=(320, 240))
    ap.add_argument("--preset", choices=PRESETS, default="default")
    args = ap.parse_args()
    cores = os.cpu_count() or 1
    rates = {}
    for workers in sorted({1, cores}):
        with tempfile.TemporaryDirectory() as tmp:
            s = generate(SynthConfig(out=Path(tmp) / "site", dives=args.dives, seed=0,
                                     images_per_dive=args.images_per_dive, size=args.size,
                                     faults=True, workers=workers, preset=args.preset))
            rates[workers] = s["render_images_per_s"]
            print(f"{workers} worker(s): {s['images']} images {args.size[0]}x{args.size[1]} "
                  f"rendered at {rates[workers]:.0f} images/s")
    print(f"machine: {platform.processor() or platform.machine()}, {cores} cores")
    if len(rates) > 1:
        print(f"speed-up {cores} cores vs 1: {rates[cores] / rates[1]:.2f}x")


if __name__ == "__main__":
    main()
