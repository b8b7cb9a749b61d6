"""Radius-pair search on nav-only-like lawnmower layouts: pipeline.pairs.find_pairs vs a plain
cKDTree.query_pairs vs geopandas sjoin(predicate="dwithin"), side by side in one run.

    python benchmarks/pairs.py [--sizes 100000,1000000[,10000000]] [--sjoin-max 200000]

Layout: about 1 point per square metre, survey lines 2 m apart with a point every 0.5 m along
them and 5 cm of noise. Every measurement runs in a fresh subprocess; its peak resident memory
is reset just before the call (Linux /proc/self/clear_refs, else ru_maxrss of the process), and
"extra" is that peak above what the process held before the call (interpreter, imports and the
positions), result included.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

R_M = 5.0
K = 32
REPO = Path(__file__).resolve().parents[1]
CORES = os.cpu_count() or 1
METHODS = {
    "ours": f"find_pairs r={R_M:g} max_neighbours={K}",
    "ours_mt": f"find_pairs r={R_M:g} max_neighbours={K}, workers={CORES}",
    "ours_all": f"find_pairs r={R_M:g} (no limit)",
    "kdtree": f"cKDTree.query_pairs r={R_M:g}",
    "sjoin": f"geopandas sjoin dwithin {R_M:g} (incl. points_from_xy)",
}


def lawnmower(n: int, seed: int = 0) -> np.ndarray:
    """n positions (easting, northing) in metres: lines 2 m apart, 0.5 m along, 5 cm noise."""
    side = np.sqrt(n)  # n m^2 at 1 point per m^2
    per_line = max(int(round(2.0 * side)), 1)
    k = np.arange(n)
    line, along = k // per_line, (k % per_line) * 0.5
    along = np.where(line % 2 == 1, (per_line - 1) * 0.5 - along, along)  # back and forth
    xy = np.column_stack([line * 2.0, along]) + np.array([500_000.0, 5_200_000.0])
    return xy + np.random.default_rng(seed).normal(0.0, 0.05, (n, 2))


def _status_mb(field: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024.0  # kB
    raise KeyError(field)


def _reset_peak() -> bool:
    """Reset the process's peak RSS (Linux: VmHWM) so that it measures the call alone."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def call(method: str, xy: np.ndarray) -> int:
    """Positions (numpy) to pairs with one method; returns the number of unordered pairs."""
    if method in ("ours", "ours_mt", "ours_all"):
        from pipeline.pairs import find_pairs

        k = None if method == "ours_all" else K
        workers = CORES if method == "ours_mt" else 1
        return find_pairs(xy, r_loc_m=R_M, max_neighbours=k, workers=workers).num_rows
    if method == "kdtree":
        from scipy.spatial import cKDTree

        return len(cKDTree(xy).query_pairs(R_M, output_type="ndarray"))
    import geopandas as gpd

    gdf = gpd.GeoDataFrame(geometry=gpd.points_from_xy(xy[:, 0], xy[:, 1]))
    j = gpd.sjoin(gdf, gdf, predicate="dwithin", distance=R_M)  # ordered pairs and self pairs
    return int((j.index.to_numpy() < j["index_right"].to_numpy()).sum())


def measure(method: str, n: int) -> dict:
    """One measurement, in this process (the parent runs it in a fresh one)."""
    call(method, lawnmower(2000, seed=1))  # warm-up: imports and first-call costs
    xy = lawnmower(n)
    reset = _reset_peak()
    before = _status_mb("VmRSS")
    t0 = time.perf_counter()
    pairs = call(method, xy)
    secs = time.perf_counter() - t0
    # without the reset, ru_maxrss is the peak of the whole process, layout generation included
    peak = _status_mb("VmHWM") if reset else resource.getrusage(
        resource.RUSAGE_SELF).ru_maxrss / 1024.0
    return {"method": method, "n": n, "pairs": pairs, "seconds": secs, "peak_mb": peak,
            "extra_mb": max(peak - before, 0.0)}


def run_fresh(method: str, n: int) -> dict:
    res = subprocess.run(
        [sys.executable, __file__, "--measure", method, str(n)],
        cwd=REPO, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    if res.returncode != 0:
        raise RuntimeError(f"{method} n={n} failed:\n{res.stderr[-2000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="100000,1000000",
                    help="comma-separated numbers of points (default 100000,1000000)")
    ap.add_argument("--sjoin-max", type=int, default=200_000,
                    help="run geopandas sjoin only up to this many points (default 200000)")
    ap.add_argument("--measure", nargs=2, metavar=("METHOD", "N"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure[0], int(args.measure[1]))))
        return

    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    rows = []
    for n in sizes:
        for method in METHODS:
            if (method == "sjoin" and n > args.sjoin_max) or (method == "ours_mt" and CORES == 1):
                continue
            r = run_fresh(method, n)
            rows.append(r)
            print(f"  {METHODS[method]:<36} n={n:>10,}: {r['seconds']:8.2f} s, "
                  f"{r['pairs']:>12,} pairs, peak {r['peak_mb']:8.0f} MB", file=sys.stderr)

    print(f"\nmachine: {platform.processor() or platform.machine()}, {CORES} cores; "
          f"numpy {np.__version__}\n")
    for n in sizes:  # the exact methods must find the same pairs
        counts = {r["method"]: r["pairs"] for r in rows if r["n"] == n and r["method"] in (
            "ours_all", "kdtree", "sjoin")}
        agree = "agree" if len(set(counts.values())) == 1 else "DISAGREE"
        print(f"n={n:,}: unlimited pair counts {agree}: {counts}")
    print()
    print("| points | method | pairs | seconds | pairs/s | peak RSS MB | extra MB "
          "| speed-up vs sjoin | time vs plain cKDTree |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        same_n = {x["method"]: x for x in rows if x["n"] == r["n"]}
        sj, kd = same_n.get("sjoin"), same_n.get("kdtree")
        vs_sjoin = f"{sj['seconds'] / r['seconds']:.1f}x" if sj else "n/a (skipped)"
        vs_kd = f"{r['seconds'] / kd['seconds']:.2f}x" if kd else "n/a"
        print(f"| {r['n']:,} | {METHODS[r['method']]} | {r['pairs']:,} | {r['seconds']:.2f} "
              f"| {r['pairs'] / r['seconds']:,.0f} | {r['peak_mb']:,.0f} | {r['extra_mb']:,.0f} "
              f"| {vs_sjoin} | {vs_kd} |")


if __name__ == "__main__":
    main()
