"""Catalog -> manifests: per-dive ingest (cached), site index and pairs, atomic publish.

The steps are separate functions so an orchestrator (the Prefect flow) can run them as tasks:
``plan`` -> ``ingest_cached`` per changed dive -> ``assemble_site`` -> ``publish``.
``build`` runs them in order in one process (``python -m pipeline build``).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from filelock import FileLock, Timeout

from . import crs as crs_policy
from . import schema
from .catalog import Catalog
from .index import hilbert_distance, row_group_rows, to_geoparquet_table
from .ingest import DiveResult, discover_dives, dive_fingerprint, ingest_dive
from .manifest import (
    base_metadata,
    file_sha256,
    remove_stale_temps,
    with_metadata,
    write_parquet_temp,
    write_text_atomic,
)
from .pairs import find_pairs

LOCK_NAME = ".build.lock"


class BuildLocked(RuntimeError):
    """Another build holds the output folder's lock."""


@dataclass
class BuildPlan:
    catalog: Catalog
    output: Path
    dives: dict[str, str]  # dive -> fingerprint
    cached: list[str]  # dives whose cached ingest is reused
    changed: list[str]  # dives to ingest now
    removed: list[str]  # dives in the previous build but gone now
    state: dict  # what the published manifests were built from
    no_change: bool


@dataclass
class Site:
    locations: pa.Table
    pairs: pa.Table
    quarantine: pa.Table
    crs: str
    projjson: dict
    report: dict = field(default_factory=dict)


def output_dir(cat: Catalog, out: str | Path | None = None) -> Path:
    return Path(out).resolve() if out else cat.output


def lock(out: Path) -> FileLock:
    """Exclusive lock on an output folder; a second build fails at once with a clear error."""
    out.mkdir(parents=True, exist_ok=True)
    return FileLock(str(out / LOCK_NAME), timeout=0)


def acquire(lk: FileLock, out: Path) -> None:
    try:
        lk.acquire()
    except Timeout:
        raise BuildLocked(f"another build holds the lock on {out} ({out / LOCK_NAME}); "
                          "wait for it to finish, or remove the lock file if no build runs") from None


def _cache_dir(out: Path, dive: str, fp: str) -> Path:
    return out / "dives" / dive / fp[:16]


def plan(cat: Catalog, out: Path, r_loc_m: float | None = None, full_rebuild: bool = False) -> BuildPlan:
    dives = {d: dive_fingerprint(cat, d) for d in discover_dives(cat)}
    policy = _policy(cat, r_loc_m)
    labels = cat.root / cat.labels if cat.labels else None
    state = {"catalog_sha256": cat.sha256, "dives": dives, "pair_policy": policy,
             "labels_sha256": file_sha256(labels) if labels and labels.exists() else None}
    previous = {}
    report_path = out / "report.json"
    if report_path.exists():
        previous = json.loads(report_path.read_text()).get("state", {})
    cached = [d for d, fp in dives.items()
              if not full_rebuild and (_cache_dir(out, d, fp) / "done").exists()]
    changed = [d for d in dives if d not in cached]
    removed = sorted(set(previous.get("dives", {})) - set(dives))
    published = all((out / f).exists() for f in ("locations.parquet", "pairs.parquet", "quarantine.parquet"))
    no_change = (not full_rebuild and published and previous == state and not changed)
    return BuildPlan(cat, out, dives, cached, changed, removed, state, no_change)


def _policy(cat: Catalog, r_loc_m: float | None) -> dict:
    p = cat.pairs.model_dump()
    if r_loc_m is not None:
        p["r_loc_m"] = float(r_loc_m)
    return p


def ingest_cached(cat: Catalog, out: Path, dive: str, fingerprint: str, workers=None, progress=None) -> Path:
    """Ingest one dive into its cache folder (keyed by the fingerprint); returns the folder."""
    res = ingest_dive(cat, dive, workers=workers, progress=progress)
    folder = _cache_dir(out, dive, fingerprint)
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    pq.write_table(pa.Table.from_pandas(res.locations, preserve_index=False), folder / "locations.parquet")
    pq.write_table(pa.Table.from_pandas(res.quarantine, preserve_index=False), folder / "quarantine.parquet")
    shard = pa.table({"image_id": [s[0] for s in res.shards], "jpeg": [s[1] for s in res.shards]},
                     schema=schema.IMAGE_SHARD)
    pq.write_table(shard, folder / "images.parquet", row_group_size=256)
    (folder / "summary.json").write_text(json.dumps(
        {"dive": dive, "nav_format": res.nav_format, "images_found": res.images_found}))
    (folder / "done").write_text(fingerprint)
    # older fingerprints of this dive are superseded
    for old in (out / "dives" / dive).iterdir():
        if old != folder and old.is_dir():
            shutil.rmtree(old, ignore_errors=True)
    return folder


def load_cached(out: Path, dive: str, fingerprint: str) -> DiveResult:
    folder = _cache_dir(out, dive, fingerprint)
    summary = json.loads((folder / "summary.json").read_text())
    return DiveResult(
        dive=dive, nav_format=summary["nav_format"],
        locations=pq.read_table(folder / "locations.parquet").to_pandas(),
        quarantine=pq.read_table(folder / "quarantine.parquet").to_pandas(),
        images_found=summary["images_found"],
    )


def _labels(cat: Catalog) -> dict[str, str]:
    if not cat.labels:
        return {}
    path = cat.root / cat.labels
    if not path.exists():
        return {}
    df = pd.read_csv(path, dtype=str)
    if not {"image_id", "label"} <= set(df.columns):
        raise ValueError(f"{path}: expected columns image_id,label; found {', '.join(df.columns)}")
    return dict(zip(df["image_id"], df["label"], strict=True))


def assemble_site(bp: BuildPlan, r_loc_m: float | None = None) -> Site:
    """Site-wide CRS, Hilbert-ordered locations, pairs and quarantine from the dive caches."""
    cat = bp.catalog
    t0 = time.perf_counter()
    parts = [load_cached(bp.output, d, fp) for d, fp in bp.dives.items()]
    locs = pd.concat([p.locations for p in parts], ignore_index=True) if parts else pd.DataFrame()
    quar = pd.concat([p.quarantine for p in parts], ignore_index=True) if parts else pd.DataFrame()
    if len(locs) == 0:
        raise ValueError(f"catalog {cat.name}: no located images (dives found: {len(parts)}); "
                         "check 'dives', 'images' and 'nav' in the catalog")
    lon, lat = locs["lon"].to_numpy(), locs["lat"].to_numpy()
    site_crs = crs_policy.choose_crs(lon, lat, cat.crs)
    x, y = crs_policy.project(lon, lat, site_crs)
    locs["easting"], locs["northing"] = x, y
    order = np.lexsort((locs["path"].to_numpy(), hilbert_distance(x, y)))
    locs = locs.iloc[order].reset_index(drop=True)
    labels = _labels(cat)
    n = len(locs)
    t_ms = time.perf_counter()
    table = pa.table({
        "idx": pa.array(np.arange(n, dtype=np.int32)),
        "image_id": pa.array(locs["image_id"], pa.string()),
        "dive": pa.array(locs["dive"], pa.string()).dictionary_encode(),
        "path": pa.array(locs["path"], pa.string()),
        "timestamp": pa.array(np.round(locs["timestamp"].to_numpy() * 1e6).astype("int64"),
                              pa.timestamp("us", tz="UTC")),
        "lat": locs["lat"].to_numpy(np.float64), "lon": locs["lon"].to_numpy(np.float64),
        "easting": locs["easting"].to_numpy(np.float64), "northing": locs["northing"].to_numpy(np.float64),
        "depth_m": locs["depth_m"].to_numpy(np.float32),
        "altitude_m": pa.array(locs["altitude_m"].to_numpy(np.float32), from_pandas=True),
        "heading_deg": pa.array(locs["heading_deg"].to_numpy(np.float32), from_pandas=True),
        "width": pa.array(locs["width"], pa.int32(), from_pandas=True),
        "height": pa.array(locs["height"], pa.int32(), from_pandas=True),
        "label": pa.array([labels.get(i) for i in locs["image_id"]], pa.string()),
    }).cast(schema.LOCATIONS)
    policy = bp.state["pair_policy"]
    dive_codes = pd.Categorical(locs["dive"]).codes.astype(np.int32)
    depth = locs["depth_m"].to_numpy(np.float64)
    t_pairs = time.perf_counter()
    pairs = find_pairs(
        np.column_stack([locs["easting"].to_numpy(), locs["northing"].to_numpy()]),
        r_loc_m=policy["r_loc_m"], r_min_m=policy["r_min_m"], dive=dive_codes,
        timestamp_s=locs["timestamp"].to_numpy(np.float64), depth_m=depth,
        cross_dive=policy["cross_dive"], use_depth=policy["use_depth"],
        min_time_gap_s=policy["min_time_gap_s"], max_neighbours=policy["max_neighbours"],
        seed=policy["seed"],
    )
    t_done = time.perf_counter()
    qt = pa.Table.from_pandas(quar[["dive", "source", "reason", "detail"]], preserve_index=False)
    qt = qt.cast(schema.QUARANTINE) if len(qt) else schema.QUARANTINE.empty_table()
    deg = np.bincount(np.concatenate([pairs.column("anchor").to_numpy(),
                                      pairs.column("positive").to_numpy()]), minlength=n)
    report = {
        "catalog": cat.name, "crs": crs_policy.crs_epsg_string(site_crs),
        "images_found": int(sum(p.images_found for p in parts)), "images_located": n,
        "quarantined": int(len(quar)),
        "per_dive": {p.dive: {"nav_format": p.nav_format, "found": p.images_found,
                              "located": int(len(p.locations)), "quarantined": int(len(p.quarantine))}
                     for p in parts},
        "per_reason": {str(k): int(v) for k, v in quar["reason"].value_counts().sort_index().items()}
        if len(quar) else {},
        "pairs": int(pairs.num_rows), "pair_policy": policy,
        "cross_dive_pairs": int((~pairs.column("same_dive").to_numpy(zero_copy_only=False)).sum()),
        "neighbours_mean": float(deg.mean()) if n else 0.0,
        "neighbours_max": int(deg.max()) if n else 0,
        "images_without_neighbours": int((deg == 0).sum()),
        "seconds": {"load_dives": round(t_ms - t0, 3), "project_index": round(t_pairs - t_ms, 3),
                    "pairs": round(t_done - t_pairs, 3)},
    }
    return Site(table, pairs, qt, crs_policy.crs_epsg_string(site_crs), crs_policy.crs_projjson(site_crs), report)


def publish(bp: BuildPlan, site: Site, timings: dict | None = None) -> dict:
    """Write the manifests atomically (temp file + os.replace), shards, then report.json."""
    cat, out = bp.catalog, bp.output
    t0 = time.perf_counter()
    counts = {"images": site.report["images_found"], "located": site.locations.num_rows,
              "quarantined": site.quarantine.num_rows, "pairs": site.pairs.num_rows}
    meta = base_metadata(cat.name, cat.sha256 or "", site.crs, counts)
    # image shards first: a hard link of the cached shard under a temp name, then a rename
    (out / "images").mkdir(parents=True, exist_ok=True)
    for dive, fp in bp.dives.items():
        src = _cache_dir(out, dive, fp) / "images.parquet"
        dst = out / "images" / f"{dive}.parquet"
        tmp = dst.with_name(f".{dst.name}.tmp")
        tmp.unlink(missing_ok=True)
        try:
            tmp.hardlink_to(src)
        except OSError:
            shutil.copyfile(src, tmp)
        tmp.replace(dst)
    for stale in (out / "images").glob("*.parquet"):
        if stale.stem not in bp.dives:
            stale.unlink()
    for dive in bp.removed:
        shutil.rmtree(out / "dives" / dive, ignore_errors=True)
    # All three manifests are written completely under temporary names first, then moved into
    # place one after the other: a crash while writing leaves the previous set intact.
    loc_path = out / "locations.parquet"
    geo = with_metadata(to_geoparquet_table(site.locations, site.projjson), meta)
    loc_tmp = write_parquet_temp(geo, loc_path, compression="zstd",
                                 row_group_size=row_group_rows(site.locations.num_rows))
    pair_meta = {**meta, schema.META_PAIR_POLICY: json.dumps(site.report["pair_policy"], sort_keys=True),
                 schema.META_LOCATIONS_SHA256: file_sha256(loc_tmp),
                 schema.META_LOCATIONS_PATH: "locations.parquet"}
    pairs_tmp = write_parquet_temp(with_metadata(site.pairs, pair_meta), out / "pairs.parquet",
                                   compression="zstd")
    quar_tmp = write_parquet_temp(with_metadata(site.quarantine, meta), out / "quarantine.parquet")
    for tmp, final in ((loc_tmp, loc_path), (pairs_tmp, out / "pairs.parquet"),
                       (quar_tmp, out / "quarantine.parquet")):
        os.replace(tmp, final)
    report = {**site.report, "output": str(out), "created_utc": meta[schema.META_CREATED],
              "state": bp.state}
    report["seconds"] = {**(timings or {}), **report["seconds"], "publish": round(time.perf_counter() - t0, 3)}
    write_text_atomic(json.dumps(report, indent=1), out / "report.json")
    return report


def build(cat: Catalog, out: str | Path | None = None, r_loc_m: float | None = None,
          full_rebuild: bool = False, workers: int | None = None, log=print, progress_factory=None) -> dict:
    """Run the whole pipeline for one catalog under the output folder's lock."""
    out_dir = output_dir(cat, out)
    lk = lock(out_dir)
    acquire(lk, out_dir)
    try:
        t0 = time.perf_counter()
        remove_stale_temps(out_dir)
        bp = plan(cat, out_dir, r_loc_m, full_rebuild)
        if bp.no_change:
            log(f"{cat.name}: no change ({len(bp.dives)} dives cached); manifests left untouched")
            report = json.loads((out_dir / "report.json").read_text())
            report["no_change"] = True
            return report
        timings = {"plan": round(time.perf_counter() - t0, 3)}
        t1 = time.perf_counter()
        for dive in bp.changed:
            log(f"{cat.name}: ingesting {dive}")
            bar = progress_factory(dive) if progress_factory else None
            ingest_cached(cat, out_dir, dive, bp.dives[dive], workers=workers,
                          progress=bar.update if bar is not None else None)
            if bar is not None:
                bar.close()
        timings["ingest"] = round(time.perf_counter() - t1, 3)
        site = assemble_site(bp)
        report = publish(bp, site, timings)
        report["ingested"], report["reused"], report["removed"] = bp.changed, bp.cached, bp.removed
        report["no_change"] = False
        return report
    finally:
        lk.release()
