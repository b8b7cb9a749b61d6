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
from . import reasons, schema
from .catalog import MAX_RADIUS_M, Catalog, CatalogError
from .dives import (
    discover_dives,
    dive_fingerprint,
    dive_folders,
    dive_images,
    dive_nav_source,
    dive_rel,
    dives_outside_root,
    expand,
    images_in_one_dive,
    nav_choice,
)
from .index import hilbert_distance, row_group_rows, to_geoparquet_table
from .ingest import DiveResult, ingest_dive
from .manifest import base_metadata, file_sha256, with_metadata
from .output import (
    CACHE,
    CURRENT,
    ENTRY_DONE,
    ENTRY_FILES,
    FILE_OVERHEAD,
    GEN_FILES,
    GEN_MANIFEST,
    GENERATIONS,
    LOCK_NAME,
    MANIFEST_FILES,
    DiskFull,
    OutputFolder,
    OutputRefused,
    begin_entry,
    begin_generation,
    check_entry,
    check_links,
    check_overlap,
    check_space,
    claim,
    discard_generation,
    disk_full_while_writing,
    dive_key,
    finish_entry,
    finish_generation,
    is_no_space,
    link_names,
    prune,
    remove_entry,
    remove_temps,
    retire_legacy,
    switch_current,
    verify_generation,
    write_atomic,
)
from .pairs import find_pairs
from .schema import shard_name, store_name


class BuildLocked(RuntimeError):
    """Another build holds the output folder's lock."""


class SettingsError(ValueError):
    """A catalog setting or option that cannot work; checked before any ingest."""


class NothingLocated(ValueError):
    """No image of the site could be located: the catalog does not describe the survey."""


# a user's mistake, reported as one message (exit code 2 in the CLIs), never a traceback
USER_ERRORS = (CatalogError, BuildLocked, NothingLocated, OutputRefused, DiskFull, SettingsError,
               crs_policy.CRSError)


def _nothing_located(cat: Catalog, parts: list[DiveResult], quar: pd.DataFrame) -> str:
    where = f"{cat.source or cat.name}"
    outside = dives_outside_root(cat)
    if not parts and outside:
        return "\n".join([f"{where}: key 'dives': {cat.dives!r} matches only folders outside the "
                          f"catalog root {cat.root}, which are never read:"]
                         + [f"  dive {d}: {why}" for d, why in outside.items()])
    if not parts:
        return (f"{where}: key 'dives': {cat.dives!r} matches no folder under {cat.root}; expected "
                "a glob of the dive folders relative to 'root' (e.g. \"dive*\", \"dives/*\", "
                "\"raw/*/*/*\"); fix 'root' or 'dives'")
    lines = [f"{where}: no image of the {len(parts)} dive(s) could be located:"]
    for p in parts[:10]:
        if p.images_found == 0 and cat.images is not None:
            why = f"key 'images': {expand(cat.images, cat, p.dive)!r} matches no file"
        elif _nav_refused(p):  # a file was found and read, and refused (a wrong column map)
            first = p.quarantine[p.quarantine["reason"] == reasons.NAV_UNREADABLE].iloc[0]
            why = f"navigation refused: {first['detail']}"
        elif p.nav_format is None:
            why = "key 'nav': no template matches a file (" + ", ".join(
                repr(expand(n.path, cat, p.dive)) for n in cat.nav if n.path) + ")"
        else:
            top = p.quarantine["reason"].value_counts().head(3)
            why = (f"{p.images_found} images, navigation {p.nav_format}; quarantined: "
                   + ", ".join(f"{r} x{n}" for r, n in top.items()))
        lines.append(f"  dive {p.dive}: {why}")
    if len(parts) > 10:
        lines.append(f"  ... and {len(parts) - 10} more dives")
    if len(quar):
        lines.append("per quarantine reason, the count and the first case:")
        for reason, group in quar.groupby("reason", sort=False):
            first = group.iloc[0]
            lines.append(f"  {reason} x{len(group)}: {first['source']}: {first['detail']}")
    hints = [_HINTS[r] for r in dict.fromkeys(quar["reason"]) if r in _HINTS] if len(quar) else []
    if any(p.images_found == 0 or (p.nav_format is None and not _nav_refused(p))
           for p in parts):
        hints.append(_HINTS["templates"])
    lines += [f"hint: {h}" for h in dict.fromkeys(hints)]
    return "\n".join(lines)


def _nav_refused(p: DiveResult) -> bool:
    """The dive's navigation file was found but refused as a whole (not a template problem)."""
    q = p.quarantine
    return bool(len(q)) and bool((q["reason"] == reasons.NAV_UNREADABLE).any())


# what to do, for the causes a hint fits (the first case above says what was found)
_HINTS = {
    "templates": "templates resolve from the root: {dive} is the dive folder's path from the "
                 "root (e.g. dives/r00), {dive_id} the part the wildcards of 'dives' matched",
    "no_time": "the image names carry no time the built-in patterns read: set 'image_time:' "
               "in the catalog (strftime-style or a regex with named groups)",
    "unsafe_path": "the navigation file names images outside the catalog root: check 'root' "
                   "and where the file's image paths are relative to",
    "no_nav": "the navigation file lists none of these images by path or file name: check "
              "'images' and the file's image column",
    "outside_nav_span": "the image times lie outside the navigation's time span: check the "
                        "time zone of the image names and of the navigation",
    "time_order": "item times are out of the file's order: fix the times in the navigation file",
}


CROWDED = 20  # images at one position (to 1 cm) beyond any camera rig: called out


def crowded_positions(locs: pd.DataFrame, limit: int = CROWDED) -> list[str]:
    """A warning per position that holds ``limit`` or more images: each is a positive of every
    other, which poisons location positives (a frozen fix, a log without positions)."""
    key = pd.DataFrame({"x": np.round(locs["easting"].to_numpy(), 2),
                        "y": np.round(locs["northing"].to_numpy(), 2), "dive": locs["dive"]})
    counts = key.groupby(["x", "y"]).agg(n=("dive", "size"), dives=("dive", "unique"))
    crowded = counts[counts["n"] >= limit].sort_values("n", ascending=False)
    return [f"{int(r.n)} images share one position (E {x:.2f}, N {y:.2f}; dive(s) "
            f"{', '.join(map(str, r.dives[:3]))}): every one is a positive of every other; "
            "check the navigation (nav_checks.degenerate: quarantine leaves such dives out)"
            for (x, y), r in crowded.head(5).iterrows()]


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
    repairs: list[str] = field(default_factory=list)  # damage found in the output, to repair
    images: dict[str, list[str]] = field(default_factory=dict)  # dive -> its image files


@dataclass
class Site:
    locations: pa.Table
    pairs: pa.Table
    quarantine: pa.Table
    crs: str
    projjson: dict
    report: dict = field(default_factory=dict)
    wkt: str | None = None  # the site CRS as WKT1 (GDAL), recorded on locations.parquet


def output_dir(cat: Catalog, out: str | Path | None = None) -> Path:
    return Path(out).resolve() if out else cat.output


def check_output(cat: Catalog, out: Path) -> None:
    """Refuse an output folder that overlaps the survey's inputs (OutputRefused)."""
    if out.exists() and not out.is_dir():
        raise OutputRefused(f"output {out} is a file, not a folder; set 'output' (or --out) to a "
                            "folder")
    root, real = Path(os.path.realpath(cat.root)), Path(os.path.realpath(out))
    if root == real or root.is_relative_to(real):
        raise OutputRefused(
            f"output folder {real} {'is' if root == real else 'holds'} the catalog root {root}, "
            "where the survey's dives are; the builder must never write among its inputs. Set "
            "'output' in the catalog (or --out) to a folder of its own, e.g. <root>/manifests")
    if not real.is_relative_to(root):
        return  # disjoint trees: no input can be inside the output, nor the output in a dive
    dives = discover_dives(cat)
    folders = {"dive folder": dive_folders(cat)}
    inputs: dict[str, list[Path]] = {"navigation file": [], "image": []}
    for d in dives:
        nav = dive_nav_source(cat, d)
        if nav:
            inputs["navigation file"].append(nav[1])
        inputs["image"] += [cat.root / rel for rel in dive_images(cat, d)]
    if cat.labels:
        inputs["labels file"] = [cat.root / cat.labels]
    check_overlap(real, inputs, folders)


def check_settings(cat: Catalog, r_loc_m: float | None = None) -> None:
    """What can be checked before any ingest: the root, the explicit CRS, the labels file,
    --r-loc."""
    if not cat.root.is_dir():
        what = "is not a folder" if cat.root.exists() else "does not exist"
        raise SettingsError(f"{cat.source}: key 'root': {cat.root} {what}; expected the survey's "
                            "top folder (the one that holds the dive folders), relative to the "
                            "catalog file: fix 'root'")
    try:
        crs_policy.check_explicit(cat.crs)
    except crs_policy.CRSError as exc:
        raise SettingsError(f"{cat.source}: key 'crs': {exc}") from None
    if r_loc_m is not None and not (np.isfinite(r_loc_m) and cat.pairs.r_min_m < r_loc_m
                                    <= MAX_RADIUS_M):
        raise SettingsError(f"--r-loc {r_loc_m}: expected a distance in metres above "
                            f"pairs.r_min_m ({cat.pairs.r_min_m}) and at most {MAX_RADIUS_M:g}")
    _labels(cat)


def prepare_output(cat: Catalog, out: Path) -> OutputFolder:
    """Check the output against the inputs, then create and mark it or recognise it as ours."""
    check_output(cat, out)
    return claim(out, cat.name, cat.source, cat.root)


def lock(out: Path) -> FileLock:
    """Exclusive lock on an output folder; a second build fails at once with a clear error."""
    out.mkdir(parents=True, exist_ok=True)
    return FileLock(str(out / LOCK_NAME), timeout=0)


def acquire(lk: FileLock, out: Path) -> None:
    try:
        lk.acquire()
    except Timeout:
        raise BuildLocked(f"another build holds the lock on {out} ({out / LOCK_NAME}); "
                          "wait for it to finish") from None


def _cache_dir(out: Path, dive: str, fp: str) -> Path:
    return out / CACHE / dive_key(dive) / fp[:16]


def adopt_entry(src_out: Path, out: Path, dive: str, fp: str) -> bool:
    """Fill this output's cache entry of a dive from another output folder's entry for the same
    inputs (same fingerprint, verified against its done.json): hard links, a copy where the
    filesystem has none. The other folder is only read. Returns whether it was adopted."""
    src = _cache_dir(src_out, dive, fp)
    if check_entry(src, fp, CACHE_FILES) is not None:
        return False
    entry = _cache_dir(out, dive, fp)
    begin_entry(entry, list(CACHE_FILES))
    try:
        for name in CACHE_FILES:
            try:
                (entry / name).hardlink_to(src / name)
            except OSError:
                shutil.copyfile(src / name, entry / name)
        finish_entry(entry, fp, list(CACHE_FILES))
    except OSError:
        remove_entry(entry)
        return False
    return True


def check_cache_from(src_out: Path, out: Path) -> Path:
    """The folder given to --cache-from: an existing builder output other than --out."""
    src = Path(src_out).resolve()
    if src == Path(out).resolve():
        raise SettingsError(f"--cache-from {src}: that is the output folder itself; give "
                            "another build's output folder (the one whose cache to reuse)")
    if not (src / CACHE).is_dir():
        raise SettingsError(f"--cache-from {src}: no '{CACHE}' folder there, so no build wrote "
                            "it; give the output folder of an earlier build of this catalog "
                            "(e.g. the catalog's 'output')")
    return src


def plan(cat: Catalog, out: Path, r_loc_m: float | None = None, full_rebuild: bool = False,
         cache_from: Path | None = None) -> BuildPlan:
    """What to ingest and whether anything changed, after checking the published set and the
    cache against what was recorded when they were written (damage is repaired, not reused).
    ``cache_from``: another output folder whose cache entries for the same inputs are adopted
    instead of ingesting those dives again (cheap builds of the same survey with other pair
    settings, e.g. an r_loc sweep)."""
    folder = claim(out, cat.name, cat.source, cat.root)
    folder.own(CACHE)
    images = {d: dive_images(cat, d) for d in discover_dives(cat)}  # each dive globbed once
    images_in_one_dive(cat, images)
    dives = {d: dive_fingerprint(cat, d, rels) for d, rels in images.items()}
    policy = _policy(cat, r_loc_m)
    labels = cat.root / cat.labels if cat.labels else None
    # the schema version is part of what a set was built from: a set an earlier builder
    # published is republished even when every dive's cache entry is already this builder's
    state = {"catalog_sha256": cat.sha256, "dives": dives, "pair_policy": policy,
             "labels_sha256": file_sha256(labels) if labels and labels.exists() else None,
             "schema_version": schema.SCHEMA_VERSION}
    outside = dives_outside_root(cat)
    if outside:  # reported in the quarantine; a change of them is a change of the set
        state["dives_outside_root"] = outside
    gen = folder.current()
    repairs = []
    if gen is not None:
        repairs += verify_generation(gen) + check_links(folder)
    previous = gen.state if gen is not None and not repairs else {}
    cached, changed = [], []
    for d, fp in dives.items():
        why = None if full_rebuild else check_entry(_cache_dir(out, d, fp), fp, CACHE_FILES)
        if why == "absent" and cache_from is not None and adopt_entry(cache_from, out, d, fp):
            why = None
        if full_rebuild or why is not None:
            changed.append(d)
            if why not in (None, "absent"):
                repairs.append(f"cache of dive {d} ({_cache_dir(out, d, fp)}): {why}; "
                               "ingesting the dive again")
        else:
            cached.append(d)
    removed = sorted(set(previous.get("dives", {})) - set(dives))
    no_change = (not full_rebuild and gen is not None and not repairs and previous == state
                 and not changed)
    return BuildPlan(cat, out, dives, cached, changed, removed, state, no_change, repairs, images)


def _policy(cat: Catalog, r_loc_m: float | None) -> dict:
    p = cat.pairs.model_dump()
    if r_loc_m is not None:
        p["r_loc_m"] = float(r_loc_m)
    return p


ENTRY_SHARD = "images.parquet"  # the dive's (image_id, jpeg) shard, published as shard_name
ENTRY_STORE = "images.arrow"  # the same rows as an uncompressed Arrow IPC file (store_name)
ENTRY_SUMMARY = "summary.json"  # nav format, images found, the shard's content digest
CACHE_FILES = ("locations.parquet", "quarantine.parquet", ENTRY_SHARD, ENTRY_STORE, ENTRY_SUMMARY)
# an entry whose done.json records other names (builder 0.1.x wrote no images.arrow and no
# digest) fails check_entry against CACHE_FILES, so its dive is ingested again


def write_image_store(table: pa.Table, path: Path) -> None:
    """``table`` (IMAGE_STORE) as an uncompressed Arrow IPC file (each image one contiguous byte range).

    Opened with ``open`` so the file is created like every other the builder writes."""
    opts = pa.ipc.IpcWriteOptions(compression=None)
    with open(path, "wb") as fh, pa.ipc.new_file(fh, schema.IMAGE_STORE, options=opts) as w:
        w.write_table(table)


def ingest_cached(cat: Catalog, out: Path, dive: str, fingerprint: str, workers=None, progress=None,
                  rels: list[str] | None = None) -> Path:
    """Ingest one dive into its cache entry (keyed by the fingerprint); returns the entry.

    The entry lists its files before writing them and records their sizes last (done.json), so
    a killed ingest leaves an incomplete entry that the next build ingests again. Entries of the
    dive's older fingerprints are removed by their own lists.

    Before writing, the free space of the output folder is checked against the in-memory
    tables (DiskFull when they do not fit); a write that still fails for lack of space, or
    fails in any other way, removes the entry by its own list."""
    res = ingest_dive(cat, dive, workers=workers, progress=progress, rels=rels)
    entry = _cache_dir(out, dive, fingerprint)
    locations = pa.Table.from_pandas(res.locations, preserve_index=False)
    quarantine = pa.Table.from_pandas(res.quarantine, preserve_index=False)
    ids, jpegs = [s[0] for s in res.shards], [s[1] for s in res.shards]
    shard = pa.table({"image_id": ids, "jpeg": jpegs}, schema=schema.IMAGE_SHARD)
    store = shard.cast(schema.IMAGE_STORE)  # the same rows in the same order, 64-bit offsets
    summary = json.dumps({"dive": dive, "nav_format": res.nav_format,
                          "images_found": res.images_found,
                          "nav_rows_dropped": res.nav_rows_dropped, "nav_notes": res.nav_notes,
                          "warnings": res.warnings,
                          "shard_digest": schema.shard_digest(ids, jpegs)})
    payload = (locations.nbytes + quarantine.nbytes + shard.nbytes + store.nbytes + len(summary)
               + (len(CACHE_FILES) + 2) * FILE_OVERHEAD)
    check_space(out, payload, f"cache the ingest of dive {dive} ({len(res.shards)} images)",
                "nothing of this dive was written, the published manifests are unchanged")
    writing = entry / ENTRY_FILES
    try:
        begin_entry(entry, list(CACHE_FILES))
        writing = entry / "locations.parquet"
        pq.write_table(locations, writing)
        writing = entry / "quarantine.parquet"
        pq.write_table(quarantine, writing)
        writing = entry / ENTRY_SHARD
        pq.write_table(shard, writing, row_group_size=256)
        writing = entry / ENTRY_STORE
        write_image_store(store, writing)
        writing = entry / ENTRY_SUMMARY
        writing.write_text(summary)
        writing = entry / ENTRY_DONE
        finish_entry(entry, fingerprint, list(CACHE_FILES))
    except BaseException as exc:
        try:
            remove_entry(entry)
        except OSError:
            pass  # an incomplete entry: the next build ingests the dive again
        if is_no_space(exc):
            raise disk_full_while_writing(
                _failed_file(exc, writing, out), out, exc, payload,
                f"the incomplete cache entry {entry} was removed "
                "and the published manifests are unchanged") from exc
        raise
    for old in entry.parent.iterdir():  # older fingerprints of this dive are superseded
        if old != entry and old.is_dir():
            remove_entry(old)
    return entry


def load_cached(out: Path, dive: str, fingerprint: str) -> DiveResult:
    folder = _cache_dir(out, dive, fingerprint)
    summary = json.loads((folder / ENTRY_SUMMARY).read_text())  # checked by plan (check_entry)
    return DiveResult(
        dive=dive, nav_format=summary["nav_format"],
        locations=pq.read_table(folder / "locations.parquet").to_pandas(),
        quarantine=pq.read_table(folder / "quarantine.parquet").to_pandas(),
        images_found=summary["images_found"],
        nav_rows_dropped=summary.get("nav_rows_dropped", {}),
        nav_notes=summary.get("nav_notes", {}),
        warnings=summary.get("warnings", []),
    )


def cached_shard_digest(out: Path, dive: str, fingerprint: str) -> str:
    """The content digest (contract.shard_digest) of a dive's cached image shard, taken at
    ingest while its bytes were in memory (an entry of this builder always records it)."""
    summary = json.loads((_cache_dir(out, dive, fingerprint) / ENTRY_SUMMARY).read_text())
    return summary["shard_digest"]


def _labels(cat: Catalog, notes: list | None = None) -> dict[str, str]:
    """image_id (or an annotation tool's image name) -> label from the catalog's labels file
    (SettingsError when it cannot be used); ties and disagreements of a tool's votes go to
    ``notes``."""
    if not cat.labels:
        return {}
    path = cat.root / cat.labels
    real = Path(os.path.realpath(path))
    if not real.is_relative_to(Path(os.path.realpath(cat.root))):  # checked before it is read
        raise SettingsError(f"{cat.source}: key 'labels': {path} leads to {real}, outside the "
                            f"catalog root {cat.root} (through a symlink); the pipeline never "
                            "reads outside the root: put the labels file itself inside the root")
    if not path.is_file():
        raise SettingsError(f"{cat.source}: key 'labels': {path} does not exist; expected a CSV "
                            "with columns image_id,label or an annotation tool's export; fix "
                            "the path or remove the key")
    labels = schema.load_trainer_module("labels")
    try:
        return labels.read_labels_table(path, flag=f"{cat.source}: key 'labels':",
                                        log=None if notes is None else notes.append)
    except labels.LabelsError as exc:
        raise SettingsError(str(exc)) from None


def _label_column(cat: Catalog, given: dict[str, str], image_id, notes: list) -> list:
    """The labels aligned with the located images: by image_id, or (an annotation tool's
    export, whose names are file names) by file name, as ssl.habitats matches them."""
    labels = schema.load_trainer_module("labels")
    try:
        return labels.align_table(given, image_id, f"{cat.source}: key 'labels':",
                                  cat.root / cat.labels if cat.labels else "", log=notes.append)
    except labels.LabelsError as exc:
        raise SettingsError(str(exc)) from None


def assemble_site(bp: BuildPlan, r_loc_m: float | None = None) -> Site:
    """Site-wide CRS, Hilbert-ordered locations, pairs and quarantine from the dive caches."""
    cat = bp.catalog
    t0 = time.perf_counter()
    parts = [load_cached(bp.output, d, fp) for d, fp in bp.dives.items()]
    locs = pd.concat([p.locations for p in parts], ignore_index=True) if parts else pd.DataFrame()
    quar = pd.concat([p.quarantine for p in parts], ignore_index=True) if parts else pd.DataFrame()
    outside = bp.state.get("dives_outside_root", {})
    if outside:  # dive folders that lead out of the root: one quarantine row each
        rows = pd.DataFrame([{"dive": d, "source": dive_rel(cat, d), "reason": reasons.UNSAFE_PATH,
                              "detail": why} for d, why in outside.items()])
        quar = pd.concat([quar, rows], ignore_index=True) if len(quar) else rows
    if len(locs) == 0:
        raise NothingLocated(_nothing_located(cat, parts, quar))
    lon, lat = locs["lon"].to_numpy(), locs["lat"].to_numpy()
    site_crs = crs_policy.choose_crs(lon, lat, cat.crs, force=cat.crs_force)
    x, y = crs_policy.project(lon, lat, site_crs)
    locs["easting"], locs["northing"] = x, y
    order = np.lexsort((locs["path"].to_numpy(), hilbert_distance(x, y)))
    locs = locs.iloc[order].reset_index(drop=True)
    label_notes: list[str] = []
    labels = _labels(cat, label_notes)
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
        "label": pa.array(_label_column(cat, labels, locs["image_id"].to_numpy(object),
                                        label_notes), pa.string()),
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
                              "located": int(len(p.locations)), "quarantined": int(len(p.quarantine)),
                              "nav_rows_dropped": p.nav_rows_dropped, "nav_notes": p.nav_notes,
                              "warnings": p.warnings}
                     for p in parts},
        "warnings": [f"dive {p.dive}: {w}" for p in parts for w in p.warnings]
        + [f"dive {d}: not read: {why}" for d, why in outside.items()]
        + crowded_positions(locs) + [f"labels: {note}" for note in label_notes],
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
    return Site(table, pairs, qt, crs_policy.crs_epsg_string(site_crs),
                crs_policy.crs_projjson(site_crs), report, wkt=crs_policy.crs_wkt(site_crs))


def _same_device(a: Path, b: Path) -> bool:
    """Whether a hard link from ``a`` into folder ``b`` can work at all (one filesystem)."""
    try:
        return os.stat(a).st_dev == os.stat(b).st_dev
    except OSError:
        return False


def _publish_payload(site: Site, geo: pa.Table, bp: BuildPlan) -> int:
    """An upper estimate of the bytes a publish writes besides shard copies: the Arrow sizes
    of the tables (Parquet with zstd is smaller, but for the footer and schema metadata that
    FILE_OVERHEAD covers) and the JSON records (report.json, manifest.json, files.json)."""
    records = len(json.dumps(site.report, default=str)) + 2 * len(json.dumps(bp.state))
    return (geo.nbytes + site.pairs.nbytes + site.quarantine.nbytes + records
            + (len(MANIFEST_FILES) + 2) * FILE_OVERHEAD + 512 * len(bp.dives))


def _is_current(folder: OutputFolder, gen: Path | None) -> bool:
    cur = folder.current()
    return gen is not None and cur is not None and cur.folder == gen.resolve()


def _undo_publish(folder: OutputFolder, gen: Path | None) -> bool:
    """After a publish failed: remove its generation by its files.json unless ``current``
    already points at it, and the temporary names of the builder's files. Returns whether
    ``gen`` is published. A clean-up that fails itself leaves only listed files, which the
    next build's prune removes; it never hides the error that made the publish fail."""
    published = False
    try:
        published = _is_current(folder, gen)
        if gen is not None and not published:
            discard_generation(gen)  # only what this publish listed before writing it
        remove_temps(folder, _own_folders(folder))
    except OSError:
        pass
    return published


def _own_folders(folder: OutputFolder) -> list[tuple[Path, str]]:
    """Every generation and cache entry, each with its record of names (for remove_temps)."""
    return ([(g, GEN_FILES) for g in folder.generations()]
            + [(e, ENTRY_FILES) for entries in folder.cache_dives().values() for e in entries])


def _failed_file(exc: OSError, writing: Path, out: Path) -> Path:
    """The file a failed write was making: the name the error carries when it lies in the
    output folder (the destination of a link, rename or copy; a temporary name as the file it
    stood for), else ``writing``, the file of the step that failed."""
    where = getattr(exc, "filename2", None) or getattr(exc, "filename", None)
    if not where or not Path(where).is_relative_to(out):
        return writing
    path = Path(where)
    name = path.name
    if name.startswith(".") and name.endswith(".tmp") and len(name) > 5:
        return path.with_name(name[1:-4])
    return path


def image_validation(cat: Catalog) -> str:
    """META_IMAGE_VALIDATION: how the images were checked ("decode": decoded and shards
    written; "header": headers only, empty shards), "none" for a navigation-only catalog."""
    return "none" if cat.images is None else cat.validate_images


def _dataset_identity(bp: BuildPlan, site: Site, policy: dict) -> dict:
    """contract.dataset_identity of the set ``publish`` writes: the locations in idx order,
    the pairs, the pair policy as written to META_PAIR_POLICY, and the shard digest of each
    dive that has located images (a dive whose images were all quarantined adds nothing a
    trainer reads, so it does not change the identity)."""
    loc = site.locations
    dive_col = loc.column("dive")
    if pa.types.is_dictionary(dive_col.type):
        dive_col = dive_col.cast(dive_col.type.value_type)
    image_id, dive = loc.column("image_id").to_pylist(), dive_col.to_pylist()
    xy = np.column_stack([loc.column("easting").to_numpy(), loc.column("northing").to_numpy()])
    shards = {d: cached_shard_digest(bp.output, d, bp.dives[d]) for d in sorted(set(dive))}
    return schema.dataset_identity(image_id, dive, xy, site.pairs.column("anchor").to_numpy(),
                                   site.pairs.column("positive").to_numpy(), policy, shards)


def publish(bp: BuildPlan, site: Site, timings: dict | None = None) -> dict:
    """Publish the manifest set as one new generation, then switch ``current`` to it.

    Every file is written inside a new generation folder (listed in its files.json first),
    fsynced, and recorded with its size and digest in manifest.json; only then does one
    os.replace point ``current`` at it. Generations other than the new and the previous one,
    and cache entries of dives that are gone, are removed by their own lists.

    Before writing, the free space of the output folder is checked against an upper estimate
    of the set (the tables, shard copies where a hard link is impossible, a margin): DiskFull
    when it does not fit. A publish that fails before the switch (a full disk, or any other
    error) removes its generation by its files.json and its temporary files, and leaves the
    published set as it was; a write that failed for lack of space is raised as DiskFull
    naming the file. No temporary name is left by a publish that succeeds either.

    Each dive's cached shard is published twice, as ``images/<dive>.parquet`` and as the
    uncompressed ``images/<dive>.arrow`` (contract.shard_name, contract.store_name). The
    pairs metadata records the dataset identity (contract.dataset_identity: images, positions,
    pairs, policy and each dive's shard digest, so a rebuild of unchanged inputs keeps it) and
    how the catalog validated the images."""
    cat, out = bp.catalog, bp.output
    t0 = time.perf_counter()
    folder = claim(out, cat.name, cat.source, cat.root)
    counts = {"images": site.report["images_found"], "located": site.locations.num_rows,
              "quarantined": site.quarantine.num_rows, "pairs": site.pairs.num_rows}
    meta = base_metadata(cat.name, cat.sha256 or "", site.crs, counts)
    # destination in the generation -> the cache entry's file it is a hard link of
    sources = {}
    for d, fp in bp.dives.items():
        sources[shard_name(d)] = _cache_dir(out, d, fp) / ENTRY_SHARD
        sources[store_name(d)] = _cache_dir(out, d, fp) / ENTRY_STORE
    shards = list(sources)
    policy_json = json.dumps(site.report["pair_policy"], sort_keys=True)
    identity = json.dumps(_dataset_identity(bp, site, json.loads(policy_json)), sort_keys=True)
    # only locations.parquet records the CRS as WKT too (for trainer-side GeoPackage export)
    loc_meta = {**meta, schema.META_CRS_WKT: site.wkt} if site.wkt else meta
    geo = with_metadata(to_geoparquet_table(site.locations, site.projjson), loc_meta)
    payload = _publish_payload(site, geo, bp) + len(identity)  # the identity: pairs footer
    gens = out / GENERATIONS if (out / GENERATIONS).is_dir() else out
    cross = sum(src.stat().st_size for src in sources.values() if not _same_device(src, gens))
    unchanged = "nothing was written, the published manifests are unchanged"
    what = f"publish the manifests of {len(bp.dives)} dives"
    check_space(out, payload + cross, what, unchanged)
    gen, writing = None, out / GENERATIONS
    try:
        gen = begin_generation(folder, [*MANIFEST_FILES, *shards])
        # image shards and stores: hard links of the cached files (no bytes copied), a copy
        # where the filesystem has no hard links; check_entry verified each cached file in
        # plan. The links go straight to their final names in the fresh folder: no temporary
        # name.
        copies = []
        for name, src in sources.items():
            writing = dst = gen / name
            dst.parent.mkdir(parents=True, exist_ok=True)
            try:
                dst.hardlink_to(src)
            except OSError as exc:
                if is_no_space(exc):
                    raise
                copies.append((src, dst))
        if copies:
            copied = sum(src.stat().st_size for src, _ in copies)
            if copied > cross:  # links refused on one filesystem: the copies need room too
                check_space(out, payload + copied, f"{what} ({len(copies)} image files copied, the "
                            "filesystem refused hard links)", "the published manifests are "
                            "unchanged (the unfinished generation was removed)")
            for src, dst in copies:
                writing = dst
                shutil.copyfile(src, dst)
        writing = gen / schema.LOCATIONS_FILE
        pq.write_table(geo, writing, compression="zstd",
                       row_group_size=row_group_rows(site.locations.num_rows))
        pair_meta = {**meta, schema.META_PAIR_POLICY: policy_json,
                     schema.META_LOCATIONS_SHA256: file_sha256(gen / schema.LOCATIONS_FILE),
                     schema.META_LOCATIONS_PATH: schema.LOCATIONS_FILE,
                     schema.META_DATASET: identity,
                     schema.META_IMAGE_VALIDATION: image_validation(cat)}
        writing = gen / schema.PAIRS_FILE
        pq.write_table(with_metadata(site.pairs, pair_meta), writing, compression="zstd")
        writing = gen / schema.QUARANTINE_FILE
        pq.write_table(with_metadata(site.quarantine, meta), writing)
        report = {**site.report, "output": str(out), "generation": gen.name,
                  "created_utc": meta[schema.META_CREATED], "state": bp.state,
                  "repaired": bp.repairs}
        report["seconds"] = {**(timings or {}), **report["seconds"], "publish": round(time.perf_counter() - t0, 3)}
        writing = gen / "report.json"
        writing.write_text(json.dumps(report, indent=1))
        writing = gen / GEN_MANIFEST
        finish_generation(gen, bp.state, shards)
        writing = out / CURRENT
        switch_current(folder, gen)  # the one atomic step: readers now see the new set
        writing = out
        link_names(folder)
        retire_legacy(folder)
        link_names(folder)
        prune(folder)
        kept = {dive_key(d) for d in bp.dives}
        for key, entries in folder.cache_dives().items():
            if key not in kept:
                for entry in entries:
                    remove_entry(entry)
    except BaseException as exc:
        published = _undo_publish(folder, gen)
        if isinstance(exc, DiskFull) or not is_no_space(exc):
            raise
        file = _failed_file(exc, writing, out)
        if published:
            undone = (f"the new manifests were published ({out / CURRENT} -> {gen.name}), "
                      "but the links and clean-up after it did not finish")
        else:
            undone = ("the unfinished generation was removed and the published manifests "
                      "are unchanged")
        raise disk_full_while_writing(file, out, exc, payload, undone) from exc
    remove_temps(folder, _own_folders(folder))
    return report


def tidy(cat: Catalog, out: Path) -> None:
    """Remove old generations that a build killed after its switch left behind, and the
    temporary names of the builder's own files that a failed write left."""
    folder = claim(out, cat.name, cat.source, cat.root)
    prune(folder)
    remove_temps(folder, _own_folders(folder))


def write_extra(catalog: str, out: Path, name: str, data: bytes) -> Path:
    """A file beside the manifests (the survey map): recorded as the builder's, then written
    atomically; a name the builder did not record is never overwritten."""
    folder = claim(out, catalog)
    path = out / name
    if path.exists() and name not in folder.record.get("owned", []):
        raise OutputRefused(f"{path}: a file the builder did not write is in the way; move it "
                            "away and run the build again")
    folder.own(name)
    try:
        write_atomic(path, lambda tmp: tmp.write_bytes(data))
    except BaseException as exc:
        if is_no_space(exc):
            raise disk_full_while_writing(
                path, out, exc, len(data), f"the previous {name} (if any) is unchanged") from exc
        raise
    return path


def ingest_in_process(bp: BuildPlan, workers: int | None = None, log=print,
                      progress_factory=None) -> None:
    """The default ingest runner: each changed dive in turn, its images on a process pool."""
    for dive in bp.changed:
        log(f"{bp.catalog.name}: ingesting {dive}")
        if note := nav_choice(bp.catalog, dive):
            log(f"{bp.catalog.name}: {note}")
        bar = progress_factory(dive) if progress_factory else None
        ingest_cached(bp.catalog, bp.output, dive, bp.dives[dive], workers=workers,
                      progress=bar.update if bar is not None else None, rels=bp.images.get(dive))
        if bar is not None:
            bar.close()


def _run_step(name: str, fn, *args):
    return fn(*args)


def build(cat: Catalog, out: str | Path | None = None, r_loc_m: float | None = None,
          full_rebuild: bool = False, workers: int | None = None, log=print, progress_factory=None,
          ingest=None, step=_run_step, cache_from: str | Path | None = None) -> dict:
    """Run the whole pipeline for one catalog under the output folder's lock.

    ``ingest(bp)`` ingests ``bp.changed`` into the cache (default: in this process; the Prefect
    flow passes one that maps the dives on Dask). ``step(name, fn, *args)`` runs each stage
    (the flow passes one that makes it a task). Damage found in the output is logged through
    ``log`` and repaired."""
    out_dir = output_dir(cat, out)
    check_settings(cat, r_loc_m)
    src = check_cache_from(cache_from, out_dir) if cache_from is not None else None
    prepare_output(cat, out_dir)
    lk = lock(out_dir)
    acquire(lk, out_dir)
    try:
        t0 = time.perf_counter()
        bp = step("plan", plan, cat, out_dir, r_loc_m, full_rebuild, src)
        for problem in bp.repairs:
            log(f"{cat.name}: damaged output, repairing: {problem}")
        for dive, why in bp.state.get("dives_outside_root", {}).items():
            log(f"{cat.name}: dive {dive} not read: {why}")
        if bp.no_change:
            tidy(cat, out_dir)
            log(f"{cat.name}: no change ({len(bp.dives)} dives cached); manifests left untouched")
            report = json.loads((out_dir / "report.json").read_text())
            report["no_change"] = True
            return report
        log(f"{cat.name}: {len(bp.dives)} dives: {len(bp.changed)} to ingest "
            f"({', '.join(bp.changed) or '-'}), {len(bp.cached)} cached, {len(bp.removed)} removed")
        timings = {"plan": round(time.perf_counter() - t0, 3)}
        t1 = time.perf_counter()
        if bp.changed:
            if ingest is None:
                ingest_in_process(bp, workers, log, progress_factory)
            else:
                ingest(bp)
        timings["ingest"] = round(time.perf_counter() - t1, 3)
        site = step("site-index-and-pairs", assemble_site, bp)
        report = step("publish", publish, bp, site, timings)
        report["ingested"], report["reused"], report["removed"] = bp.changed, bp.cached, bp.removed
        report["no_change"] = False
        return report
    finally:
        lk.release()
