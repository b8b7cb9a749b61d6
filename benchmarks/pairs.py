"""Radius-pair search and the whole site stage on nav-only-like lawnmower layouts, side by side
in one run: the pipeline's site stage (projection, index, pairs, Parquet writes),
pipeline.pairs.find_pairs alone, a plain cKDTree.query_pairs and geopandas
sjoin(predicate="dwithin").

    python benchmarks/pairs.py [--sizes 100000,1000000,10000000] [--sjoin-max 200000]
                               [--full-max 1000000] [--big-methods stage,ours]

Layout: about 1 point per square metre, survey lines 2 m apart with a point every 0.5 m along
them and 5 cm of noise, in UTM zone 55S (EPSG:32755), near 43.3 S 147 E. Every measurement
runs in a fresh subprocess; its peak resident memory is reset just before the timed call
(Linux /proc/self/clear_refs, else ru_maxrss of the process), and "extra" is that peak above
what the process held before the call (interpreter, imports and the inputs), result included.

"stage" starts from WGS 84 lon/lat in a DataFrame shaped like the dive caches that
pipeline.build.assemble_site concatenates (image_id, dive, path, timestamp, lat, lon, depth,
...; 10 dives, no labels, no image sizes as in a nav-only catalog); building that frame is not
timed. It then times, mirroring assemble_site and publish step by step:
  project  choose_crs ("auto": the UTM zone of the site centre) and project
  index    Hilbert order (ties by path), the LOCATIONS table, the GeoParquet geometry and bbox
  pairs    find_pairs with the pipeline's arguments, r_loc 5 m, max_neighbours 32 (1 thread)
  write    locations.parquet (zstd, Hilbert row groups) and its SHA-256, pairs.parquet (zstd),
           each fsynced, as publish writes them
Loading the dive caches, the quarantine table, report.json and the image shard links are left
out.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

R_M = 5.0
K = 32
SITE_EPSG = 32755  # UTM 55S: the layout's eastings and northings are taken in this zone
DIVES = 10
REPO = Path(__file__).resolve().parents[1]
CORES = os.cpu_count() or 1
METHODS = {
    "stage": f"site stage: project + index + find_pairs r={R_M:g} max_neighbours={K} + write",
    "ours": f"find_pairs r={R_M:g} max_neighbours={K}",
    "ours_mt": f"find_pairs r={R_M:g} max_neighbours={K}, workers={CORES}",
    "ours_all": f"find_pairs r={R_M:g} (no limit)",
    "kdtree": f"cKDTree.query_pairs r={R_M:g}",
    "sjoin": f"geopandas sjoin dwithin {R_M:g} (incl. points_from_xy)",
}
PARTS = ("project", "index", "pairs", "write")
SJOIN_TIMEOUT_S = 600


def lawnmower(n: int, seed: int = 0) -> np.ndarray:
    """n positions (easting, northing) in metres: lines 2 m apart, 0.5 m along, 5 cm noise."""
    side = np.sqrt(n)  # n m^2 at 1 point per m^2
    per_line = max(int(round(2.0 * side)), 1)
    k = np.arange(n)
    line, along = k // per_line, (k % per_line) * 0.5
    along = np.where(line % 2 == 1, (per_line - 1) * 0.5 - along, along)  # back and forth
    xy = np.column_stack([line * 2.0, along]) + np.array([500_000.0, 5_200_000.0])
    return xy + np.random.default_rng(seed).normal(0.0, 0.05, (n, 2))


def site_frame(n: int, seed: int = 0):
    """The located images of a nav-only site as assemble_site gets them from the dive caches:
    WGS 84 lon/lat of the lawnmower layout, 10 dives along the track, 2 images/s."""
    import pandas as pd

    from pipeline.crs import unproject

    xy = lawnmower(n, seed)
    lon, lat = unproject(xy[:, 0], xy[:, 1], SITE_EPSG)
    k = np.arange(n)
    dive = k * DIVES // max(n, 1)
    names = [f"dive_{d:02d}" for d in range(DIVES)]
    paths = [f"{names[d]}/img_{i:08d}.jpg" for d, i in zip(dive.tolist(), k.tolist(), strict=True)]
    per_line = max(int(round(2.0 * np.sqrt(n))), 1)
    rng = np.random.default_rng(seed + 1)
    no_size = pd.arrays.IntegerArray(np.zeros(n, np.int32), np.ones(n, bool))  # all missing
    return pd.DataFrame({
        "image_id": paths,  # "{dive}/{path inside the dive}" == path, as ingest sets it
        "dive": pd.Series(np.array(names, dtype=object)[dive]),
        "path": paths,
        "timestamp": 1.7e9 + 0.5 * k,
        "lat": lat, "lon": lon,
        "depth_m": (100.0 + rng.normal(0.0, 2.0, n)).astype(np.float32),
        "altitude_m": np.full(n, 2.0, np.float32),
        "heading_deg": np.where((k // per_line) % 2 == 1, 180.0, 0.0).astype(np.float32),
        "width": no_size, "height": no_size.copy(),
    })


def stage(locs, out: Path) -> tuple[int, dict]:
    """assemble_site (from the projection on) and publish's two manifest writes, step by step.
    Returns the number of pairs and the seconds of each part."""
    import pandas as pd
    import pyarrow as pa

    from pipeline import crs as crs_policy
    from pipeline import schema
    from pipeline.index import hilbert_distance, row_group_rows, to_geoparquet_table
    from pipeline.manifest import base_metadata, file_sha256, with_metadata, write_parquet_temp
    from pipeline.pairs import find_pairs

    policy = {"r_loc_m": R_M, "r_min_m": 0.0, "cross_dive": True, "use_depth": False,
              "min_time_gap_s": 0.0, "max_neighbours": K, "seed": 0}
    secs = {}
    t0 = time.perf_counter()
    lon, lat = locs["lon"].to_numpy(), locs["lat"].to_numpy()
    site_crs = crs_policy.choose_crs(lon, lat, "auto")
    x, y = crs_policy.project(lon, lat, site_crs)
    locs["easting"], locs["northing"] = x, y
    t1 = time.perf_counter()
    secs["project"] = t1 - t0

    order = np.lexsort((locs["path"].to_numpy(), hilbert_distance(x, y)))
    locs = locs.iloc[order].reset_index(drop=True)
    labels: dict[str, str] = {}
    n = len(locs)
    table = pa.table({
        "idx": pa.array(np.arange(n, dtype=np.int32)),
        "image_id": pa.array(locs["image_id"], pa.string()),
        "dive": pa.array(locs["dive"], pa.string()).dictionary_encode(),
        "path": pa.array(locs["path"], pa.string()),
        "timestamp": pa.array(np.round(locs["timestamp"].to_numpy() * 1e6).astype("int64"),
                              pa.timestamp("us", tz="UTC")),
        "lat": locs["lat"].to_numpy(np.float64), "lon": locs["lon"].to_numpy(np.float64),
        "easting": locs["easting"].to_numpy(np.float64),
        "northing": locs["northing"].to_numpy(np.float64),
        "depth_m": locs["depth_m"].to_numpy(np.float32),
        "altitude_m": pa.array(locs["altitude_m"].to_numpy(np.float32), from_pandas=True),
        "heading_deg": pa.array(locs["heading_deg"].to_numpy(np.float32), from_pandas=True),
        "width": pa.array(locs["width"], pa.int32(), from_pandas=True),
        "height": pa.array(locs["height"], pa.int32(), from_pandas=True),
        "label": pa.array([labels.get(i) for i in locs["image_id"]], pa.string()),
    }).cast(schema.LOCATIONS)
    projjson = crs_policy.crs_projjson(site_crs)
    geo = to_geoparquet_table(table, projjson)
    t2 = time.perf_counter()
    secs["index"] = t2 - t1

    dive_codes = pd.Categorical(locs["dive"]).codes.astype(np.int32)
    depth = locs["depth_m"].to_numpy(np.float64)
    pairs = find_pairs(
        np.column_stack([locs["easting"].to_numpy(), locs["northing"].to_numpy()]),
        r_loc_m=policy["r_loc_m"], r_min_m=policy["r_min_m"], dive=dive_codes,
        timestamp_s=locs["timestamp"].to_numpy(np.float64), depth_m=depth,
        cross_dive=policy["cross_dive"], use_depth=policy["use_depth"],
        min_time_gap_s=policy["min_time_gap_s"], max_neighbours=policy["max_neighbours"],
        seed=policy["seed"],
    )
    t3 = time.perf_counter()
    secs["pairs"] = t3 - t2

    counts = {"images": n, "located": n, "quarantined": 0, "pairs": pairs.num_rows}
    meta = base_metadata("bench", "", crs_policy.crs_epsg_string(site_crs), counts)
    loc_tmp = write_parquet_temp(with_metadata(geo, meta), out / "locations.parquet",
                                 compression="zstd", row_group_size=row_group_rows(n))
    pair_meta = {**meta, schema.META_PAIR_POLICY: json.dumps(policy, sort_keys=True),
                 schema.META_LOCATIONS_SHA256: file_sha256(loc_tmp),
                 schema.META_LOCATIONS_PATH: "locations.parquet"}
    pairs_tmp = write_parquet_temp(with_metadata(pairs, pair_meta), out / "pairs.parquet",
                                   compression="zstd")
    os.replace(loc_tmp, out / "locations.parquet")
    os.replace(pairs_tmp, out / "pairs.parquet")
    secs["write"] = time.perf_counter() - t3
    return pairs.num_rows, secs


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
    parts: dict = {}
    files: dict = {}
    with tempfile.TemporaryDirectory(prefix="pairs-bench-") as tmp:
        if method == "stage":
            stage(site_frame(2000, seed=1), Path(tmp))  # warm-up: imports, first-call costs
            inputs = site_frame(n)
        else:
            call(method, lawnmower(2000, seed=1))
            inputs = lawnmower(n)
        reset = _reset_peak()
        before = _status_mb("VmRSS")
        t0 = time.perf_counter()
        if method == "stage":
            pairs, parts = stage(inputs, Path(tmp))
        else:
            pairs = call(method, inputs)
        secs = time.perf_counter() - t0
        # without the reset, ru_maxrss is the peak of the whole process, inputs included
        peak = _status_mb("VmHWM") if reset else resource.getrusage(
            resource.RUSAGE_SELF).ru_maxrss / 1024.0
        for name in ("locations.parquet", "pairs.parquet"):
            if (Path(tmp) / name).exists():
                files[name] = (Path(tmp) / name).stat().st_size / 2**20
    return {"method": method, "n": n, "pairs": pairs, "seconds": secs, "peak_mb": peak,
            "extra_mb": max(peak - before, 0.0), "parts": parts, "files_mb": files}


def run_fresh(method: str, n: int, timeout: float | None = None) -> dict | None:
    """The measurement in a fresh process; None when it ran past `timeout` seconds."""
    try:
        res = subprocess.run(
            [sys.executable, __file__, "--measure", method, str(n)], cwd=REPO,
            capture_output=True, text=True, timeout=timeout,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )
    except subprocess.TimeoutExpired:
        return None
    if res.returncode != 0:
        raise RuntimeError(f"{method} n={n} failed:\n{res.stderr[-2000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="100000,1000000",
                    help="comma-separated numbers of points (default 100000,1000000)")
    ap.add_argument("--sjoin-max", type=int, default=200_000,
                    help="run geopandas sjoin only up to this many points (default 200000); "
                         f"a run past {SJOIN_TIMEOUT_S} s is stopped and reported as such")
    ap.add_argument("--full-max", type=int, default=1_000_000,
                    help="above this many points run only --big-methods (default 1000000)")
    ap.add_argument("--big-methods", default="stage,ours",
                    help="methods for sizes above --full-max (default stage,ours)")
    ap.add_argument("--methods", default=",".join(METHODS),
                    help=f"methods to run (default all: {','.join(METHODS)})")
    ap.add_argument("--measure", nargs=2, metavar=("METHOD", "N"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure[0], int(args.measure[1]))))
        return

    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    chosen = [m for m in args.methods.split(",") if m]
    big = set(args.big_methods.split(","))
    for m in chosen + sorted(big):
        if m not in METHODS:
            raise SystemExit(f"unknown method {m!r}; choose from {', '.join(METHODS)}")
    rows, unfinished = [], []
    for n in sizes:
        for method in chosen:
            if ((method == "sjoin" and n > args.sjoin_max) or (method == "ours_mt" and CORES == 1)
                    or (n > args.full_max and method not in big)):
                continue
            r = run_fresh(method, n, SJOIN_TIMEOUT_S if method == "sjoin" else None)
            if r is None:
                unfinished.append((method, n))
                print(f"  {METHODS[method]:<36} n={n:>10,}: did not finish in "
                      f"{SJOIN_TIMEOUT_S} s", file=sys.stderr)
                continue
            rows.append(r)
            extra = "".join(f", {p} {r['parts'][p]:.2f} s" for p in PARTS if p in r["parts"])
            print(f"  {METHODS[method]:<36} n={n:>10,}: {r['seconds']:8.2f} s, "
                  f"{r['pairs']:>12,} pairs, peak {r['peak_mb']:8.0f} MB{extra}", file=sys.stderr)

    print(f"\nmachine: {platform.machine()}, {CORES} cores, "
          f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB; "
          f"Python {platform.python_version()}, numpy {np.__version__}\n")
    for n in sizes:  # the exact methods must find the same pairs; so must ours with 1 and
        # more threads. The stage's rows are in Hilbert order, and the max_neighbours keys hash
        # the row numbers, so it keeps a different (equally sized on average) subset.
        counts = {r["method"]: r["pairs"] for r in rows if r["n"] == n and r["method"] in (
            "ours_all", "kdtree", "sjoin")}
        capped = {r["method"]: r["pairs"] for r in rows if r["n"] == n and r["method"] in (
            "ours", "ours_mt")}
        agree = "agree" if len(set(counts.values())) <= 1 else "DISAGREE"
        agree_k = "agree" if len(set(capped.values())) <= 1 else "DISAGREE"
        print(f"n={n:,}: unlimited pair counts {agree}: {counts}; "
              f"max_neighbours={K} pair counts {agree_k}: {capped}")
    for method, n in unfinished:
        print(f"n={n:,}: {METHODS[method]} did not finish in {SJOIN_TIMEOUT_S} s")
    print()
    print("| points | method | pairs | seconds | pairs/s | peak RSS MB | extra MB "
          "| speed-up vs sjoin | time vs plain cKDTree |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        same_n = {x["method"]: x for x in rows if x["n"] == r["n"]}
        sj, kd = same_n.get("sjoin"), same_n.get("kdtree")
        vs_sjoin = f"{sj['seconds'] / r['seconds']:.1f}x" if sj else "n/a"
        vs_kd = f"{r['seconds'] / kd['seconds']:.2f}x" if kd else "n/a"
        print(f"| {r['n']:,} | {METHODS[r['method']]} | {r['pairs']:,} | {r['seconds']:.2f} "
              f"| {r['pairs'] / r['seconds']:,.0f} | {r['peak_mb']:,.0f} | {r['extra_mb']:,.0f} "
              f"| {vs_sjoin} | {vs_kd} |")
    stages = [r for r in rows if r["method"] == "stage"]
    if stages:
        print()
        print("| points | project s | index s | pairs s | write s | total s | pairs/s "
              "| peak RSS MB | extra MB | locations.parquet MB | pairs.parquet MB |")
        print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for r in stages:
            p, f = r["parts"], r["files_mb"]
            print(f"| {r['n']:,} | " + " | ".join(f"{p[k]:.2f}" for k in PARTS)
                  + f" | {r['seconds']:.2f} | {r['pairs'] / r['seconds']:,.0f} "
                  f"| {r['peak_mb']:,.0f} | {r['extra_mb']:,.0f} "
                  f"| {f.get('locations.parquet', 0):,.0f} | {f.get('pairs.parquet', 0):,.0f} |")


if __name__ == "__main__":
    main()
