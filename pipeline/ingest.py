"""Per-dive ingest: find the dive's images and navigation, give every image a pose or a reason.

Every image found on disk ends in the dive's location rows or in its quarantine rows, never
nowhere. Positions are interpolated in metres (a transverse Mercator frame centred on the
dive), depth and altitude linearly, heading on the circle; nothing is extrapolated.
"""

from __future__ import annotations

import dataclasses
import json
import os
import posixpath
import time as _time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from . import crs as crs_policy
from . import reasons
from .catalog import Catalog, NavSource
from .dive_checks import (
    blame_dropped_fixes,
    judge_dive,
    lines_by_time,
    local_frame,
    pose_faults,
    utc,
)
from .dives import (
    discover_dives,
    dive_images,
    dive_nav_source,
    dive_rel,
    expand,
    first_dive,
    nav_candidates,
)
from .images import ImageCheck, check_images, outside_root
from .readers import NavData, NavFormatError, image_time_from_name, read_nav
from .readers.imagetime import patterns_tried

DIVE_COLUMNS = ["image_id", "dive", "path", "timestamp", "lat", "lon", "depth_m", "altitude_m",
                "heading_deg", "width", "height"]
QUARANTINE_COLUMNS = ["dive", "source", "reason", "detail"]


@dataclass
class DiveResult:
    dive: str
    nav_format: str | None
    locations: pd.DataFrame  # DIVE_COLUMNS, timestamp in unix seconds
    quarantine: pd.DataFrame  # QUARANTINE_COLUMNS
    shards: list[tuple[str, bytes]] = field(default_factory=list)  # (image_id, jpeg)
    images_found: int = 0
    # navigation rows the reader's cleaner dropped, per reason (vehicle time series; per-image
    # formats quarantine each image instead), what else the reader noted, and warnings
    nav_rows_dropped: dict[str, int] = field(default_factory=dict)
    nav_notes: dict[str, int] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


def no_time_detail(cat: Catalog, nav_rel: str) -> str:
    """Why an image of a vehicle-navigation dive has no time, and what to do about it."""
    tried = "; ".join(patterns_tried(cat.image_time))
    return (f"the file name carries no capture time to match {nav_rel} by (patterns tried: "
            f"{tried}); set `image_time:` in the catalog to the pattern of these names, "
            "strftime-style such as \"%Y_%m_%d_%H-%M-%S\" or a regex with named groups "
            "(?P<year>...)")


def _reader_options(cat: Catalog, src: NavSource, dive: str, folder_rel: str,
                    good: list[ImageCheck], reject=None) -> dict:
    """What the format's reader needs besides the file: where image paths are taken from,
    the catalog's per-source options. ``reject(source, reason, detail)`` gets the files an
    exif path names that resolve outside the root (never read)."""
    if src.format == "ifdo":
        # a shared iFDO names images from the root (or its own folder); a dive's from the dive
        return {"dive_dir": cat.root if src.shared else cat.root / folder_rel, "root": cat.root}
    if src.format == "acfr-stereo-pose":
        return {"yaw_unit": src.yaw_unit or "rad",
                "cameras": tuple(src.cameras or ("left", "right"))}
    if src.format == "exif":
        files = ([p.relative_to(cat.root).as_posix() for p in nav_candidates(cat, src, dive)]
                 if src.path is not None else [c.path for c in good])
        if src.path is not None:  # (the images of `good` were resolved by check_image)
            inside = []
            for f in files:
                why = outside_root(cat.root, f)
                if why is None:
                    inside.append(f)
                elif reject is not None:
                    reject(f, reasons.UNSAFE_PATH, f"key 'nav' (exif path): {why}")
            files = inside
        return {"images": [posixpath.relpath(f, folder_rel) for f in files],
                "timezone": src.timezone or "UTC"}
    if src.format in ("qgc-csv", "biigle-csv"):
        return {"timezone": src.timezone or "UTC"}
    return {}


# the last shared navigation file read (key: format, path, size, mtime, options): every dive
# of a site reads the same dataset-wide file, parsed once per process instead of once per dive
_SHARED_READ: dict[tuple, NavData] = {}


def _read_shared(fmt: str, path: Path, columns: dict | None, options: dict) -> NavData:
    st = path.stat()
    key = (fmt, str(path), st.st_size, st.st_mtime_ns,
           json.dumps([columns, options], sort_keys=True, default=str))
    data = _SHARED_READ.get(key)
    if data is None:
        data = read_nav(fmt, path, columns=columns, **options)
        _SHARED_READ.clear()
        _SHARED_READ[key] = data
    # each dive gets its own copy: ingest may change the table or the notes
    return dataclasses.replace(data, table=data.table.copy(), notes=dict(data.notes),
                               not_located=dict(data.not_located))


def _image_bases(src: NavSource, folder_rel: str, nav_rel: str) -> list[str]:
    """Folders (from the root) a navigation file's image paths may be relative to, in order."""
    if not src.shared:
        return [folder_rel]
    if src.format == "ifdo":  # the reader already resolved them, relative to the root
        return [""]
    nav_folder = posixpath.dirname(nav_rel)
    return list(dict.fromkeys(["", nav_folder]))


def _in_folder(rel: str, folder: str) -> bool:
    return not folder or rel.startswith(folder.rstrip("/") + "/")


def _other_dive_folders(cat: Catalog, dive: str) -> list[str]:
    return [dive_rel(cat, d) for d in discover_dives(cat) if d != dive]


def _not_located(listed: dict[str, str], bases: list[str], root: Path,
                 good: list[ImageCheck]) -> dict[str, str]:
    """Images (path from the root) a reader was told not to locate -> why: by path, or by
    file name where the name is listed once (ACFR files list bare names)."""
    if not listed:
        return {}
    by_path: dict[str, str] = {}
    by_name: dict[str, list[str]] = {}
    for img, why in listed.items():
        for b in bases:
            rel = _safe_relpath(b, img, root)
            if rel is not None:
                by_path.setdefault(rel, why)
        by_name.setdefault(posixpath.basename(img.replace("\\", "/")), []).append(why)
    out = {}
    for c in good:
        why = by_path.get(c.path)
        whys = by_name.get(posixpath.basename(c.path), [])
        if why is None and len(whys) == 1:
            why = whys[0]
        if why is not None:
            out[c.path] = why
    return out


def _safe_relpath(dive_rel: str, image: str, root: Path | None = None) -> str | None:
    """Image path relative to the root, or None when it escapes the root.

    A relative path is taken from the dive folder. An absolute path (oplab writes them for
    ACFR-named images) is accepted when it lies inside the root, and made relative to it;
    anything else absolute (another machine's root, a drive letter) is None."""
    if not image:
        return None
    if image.startswith("/") and root is not None:
        norm = posixpath.normpath(image)
        for base in {Path(root).as_posix(), Path(os.path.realpath(root)).as_posix()}:
            if norm.startswith(base.rstrip("/") + "/"):
                return norm[len(base.rstrip("/")) + 1:]
        return None
    if os.path.isabs(image) or image.startswith(("/", "\\")) or ":" in image[:3]:
        return None
    joined = posixpath.normpath(posixpath.join(dive_rel, image.replace("\\", "/")))
    if joined == ".." or joined.startswith("../") or joined.startswith("/"):
        return None
    return joined


PLAUSIBLE_FROM_YEAR = 1990
_T1990 = 631152000.0  # 1990-01-01T00:00:00Z


def _plausible(t) -> np.ndarray:
    """Unix seconds from 1990 to a day from now (AUV imagery, not the year 56172)."""
    return (np.asarray(t) >= _T1990) & (np.asarray(t) <= _time.time() + 86400.0)


def _implausible_times(nav_rel: str, t: np.ndarray) -> np.ndarray:
    """Rows whose time is outside the plausible window; NavFormatError when most are (a unit
    mistake: milliseconds read as seconds, a time offset), naming the likely unit."""
    ok = _plausible(t) | ~np.isfinite(t)
    bad = ~ok
    if len(t) and bad.sum() > 0.5 * len(t):
        med = float(np.nanmedian(t[bad]))
        guess = next((unit for unit, f in (("milliseconds", 1e3), ("microseconds", 1e6),
                                          ("nanoseconds", 1e9)) if _plausible(med / f)), None)
        year = 1970 + med / 31557600.0
        hint = (f"they look like {guess} since 1970, read as seconds" if guess else
                "check the time column and its unit")
        raise NavFormatError(
            f"{nav_rel}: {int(bad.sum())} of {len(t)} timestamps lie outside "
            f"{PLAUSIBLE_FROM_YEAR}..now (median {med:.6g}, i.e. the year {year:.0f}); expected "
            f"unix seconds; {hint}")
    return bad


def _unique(rows: list[int] | None) -> int:
    return rows[0] if rows and len(rows) == 1 else -1


def _interpolate(nav: pd.DataFrame, t: np.ndarray, max_gap_s: float):
    """Interpolate vehicle navigation at image times; reason per image (None when located)."""
    tn = nav["timestamp"].to_numpy()
    fwd, inv = local_frame(nav["lat"].to_numpy(), nav["lon"].to_numpy())
    x, y = fwd.transform(nav["lon"].to_numpy(), nav["lat"].to_numpy())
    reason = np.full(len(t), None, dtype=object)
    detail = np.full(len(t), None, dtype=object)
    outside = (t < tn[0]) | (t > tn[-1])
    reason[outside] = reasons.OUTSIDE_NAV_SPAN
    for i in np.flatnonzero(outside):
        detail[i] = f"image time {t[i]:.3f} outside navigation {tn[0]:.3f}..{tn[-1]:.3f}"
    hi = np.clip(np.searchsorted(tn, t, side="left"), 1, len(tn) - 1)
    lo = hi - 1
    exact = tn[hi] == t
    lo = np.where(exact, hi, lo)
    gap = tn[hi] - tn[lo]
    gapped = ~outside & (gap > max_gap_s)
    reason[gapped] = reasons.NAV_GAP
    for i in np.flatnonzero(gapped):
        detail[i] = f"navigation gap {gap[i]:.2f} s > max_interp_gap_s {max_gap_s}"
    w = np.where(gap > 0, (t - tn[lo]) / np.where(gap > 0, gap, 1), 0.0)

    def lerp(a):
        return a[lo] + (a[hi] - a[lo]) * w

    lon_i, lat_i = inv.transform(lerp(x), lerp(y))
    h = np.deg2rad(nav["heading_deg"].to_numpy())
    heading = np.degrees(np.arctan2(lerp(np.sin(h)), lerp(np.cos(h)))) % 360.0
    return {
        "timestamp": t, "lat": np.asarray(lat_i), "lon": np.asarray(lon_i),
        "depth_m": lerp(nav["depth_m"].to_numpy()), "altitude_m": lerp(nav["altitude_m"].to_numpy()),
        "heading_deg": heading,
    }, reason, detail


def _check_xy_crs(cat: Catalog, src: NavSource, nav_rel: str, table: pd.DataFrame) -> None:
    """The CRS the catalog declares for a csv file's easting/northing (``columns.xy_crs``)
    must fit the coordinates, as the site's ``crs`` must fit the site (crs.choose_crs): local
    metres declared as a UTM zone, or coordinates far outside the CRS's area of use, are
    refused with one message (CRSError), unless ``crs_force``. The reader has turned them into
    latitude and longitude; projecting those back gives the file's coordinates again."""
    cols = src.columns
    if cols is None or cols.xy_crs is None or cols.lat is not None or cat.crs_force:
        return
    lat = table["lat"].to_numpy(np.float64)
    lon = table["lon"].to_numpy(np.float64)
    ok = np.isfinite(lat) & np.isfinite(lon)
    if not ok.any():
        return
    x, y = crs_policy.project(lon[ok], lat[ok], cols.xy_crs)
    why = crs_policy.check_declared_positions(cols.xy_crs, x, y)
    if why is not None:
        key = f"nav.{cat.nav.index(src)}.columns.xy_crs"
        raise crs_policy.CRSError(
            f"{cat.source or cat.name}: key '{key}': found {cols.xy_crs!r} for {nav_rel}: {why}; "
            "if the coordinates really are in this CRS, set crs_force: true in the catalog")


def ingest_dive(cat: Catalog, dive: str, workers: int | None = None, progress=None,
                rels: list[str] | None = None) -> DiveResult:
    """Read one dive's navigation and images; returns located rows, quarantine and shards."""
    rels = dive_images(cat, dive) if rels is None else rels  # the plan's list: globbed once
    quarantine: list[dict] = []

    def reject(source: str, reason: str, detail: str | None) -> None:
        quarantine.append({"dive": dive, "source": source, "reason": reason, "detail": detail})

    if cat.images is not None and not rels:
        reject(expand(cat.images, cat, dive), reasons.DIVE_EMPTY,
               f"the images template matches no file for dive {dive}")
    checks = check_images(cat.root, rels, cat.train_size, cat.validate_images == "decode",
                          workers=workers, progress=progress)
    nav_only = cat.images is None
    good = [c for c in checks if c.reason is None]
    for c in checks:
        if c.reason is not None:
            reject(c.path, c.reason, c.detail)
    nav = dive_nav_source(cat, dive)
    pose: dict[str, np.ndarray] = {}
    located = np.zeros(len(good), bool)
    if nav is None:
        tried = ", ".join(expand(s.path, cat, dive) if s.path is not None else
                          f"the images' own {s.format}" for s in cat.nav)
        for c in good:
            reject(c.path, reasons.NO_NAV, f"no navigation file for the dive (tried {tried})")
        return _result(dive, None, good, located, pose, quarantine, len(rels))
    src, nav_path = nav
    folder_rel = dive_rel(cat, dive)
    if src.format == "exif":  # the dive's images carry the navigation
        nav_path = cat.root / folder_rel
    options = _reader_options(cat, src, dive, folder_rel, good, reject)
    if src.format in ("oplab-nav-csv", "csv", "qgc-csv"):  # vehicle series: cleaned as read
        options.update(max_speed_m_s=cat.nav_checks.max_speed_m_s,
                       min_jump_m=cat.nav_checks.position_noise_m,
                       max_accel_m_s2=cat.nav_checks.max_accel_m_s2)
    nav_rel = nav_path.relative_to(cat.root).as_posix()
    try:
        if not Path(os.path.realpath(nav_path)).is_relative_to(Path(os.path.realpath(cat.root))):
            raise NavFormatError(f"{nav_rel}: a symlink to {os.path.realpath(nav_path)}, outside "
                                 "the catalog root; the pipeline never reads outside it")
        columns = src.columns.model_dump() if src.columns else None
        data = (_read_shared(src.format, nav_path, columns, options) if src.shared else
                read_nav(src.format, nav_path, columns=columns, **options))
        table = data.table
        raw_span = table.attrs.get("raw_span_s")  # before the cleaner dropped any fix
        usable = (np.isfinite(table["timestamp"].to_numpy(np.float64))
                  & np.isfinite(table["lat"].to_numpy(np.float64))
                  & np.isfinite(table["lon"].to_numpy(np.float64)))
        if not usable.any():
            first = (f" (line {table['line'].iat[0]} has none)"
                     if len(table) and "line" in table else "")
            raise NavFormatError(f"{nav_rel}: no row with a time, latitude and longitude"
                                 f"{first}; expected a {src.format} file")
        bad_time = _implausible_times(nav_rel, table["timestamp"].to_numpy(np.float64))
    except (NavFormatError, OSError, UnicodeDecodeError, ValueError) as exc:
        # the whole dive is quarantined with the reason; the rest of the site is still built
        detail = str(exc) if nav_rel in str(exc) else f"{nav_rel}: {exc}"
        for c in good:
            reject(c.path, reasons.NAV_UNREADABLE, detail)
        if not good:
            reject(nav_rel, reasons.NAV_UNREADABLE, detail)
        return _result(dive, src.format, good, located, pose, quarantine, len(rels))
    _check_xy_crs(cat, src, nav_rel, table)
    if bad_time.any():
        table = table.copy()
        table.loc[bad_time, ["lat", "lon"]] = np.nan  # those rows locate nothing (nav_invalid)
        if not data.per_image:
            table = table[~bad_time].reset_index(drop=True)
            data.notes["implausible_time_rows"] = int(bad_time.sum())  # counted with the drops
    if data.per_image:
        # where the file's image paths are taken from: the dive folder; for a file shared by
        # every dive, the root (iFDO: the reader resolved them from there) or the file's folder
        bases = _image_bases(src, folder_rel, nav_rel)
        # a shared file's rows that no dive can use are reported by one dive, not by each
        report_rows = not src.shared or dive == first_dive(cat)
        elsewhere = _other_dive_folders(cat, dive) if src.shared else []
        by_path: dict[str, int] = {}
        row_rels: dict[int, list[str]] = {}
        for i, (img, line) in enumerate(zip(table["image"], table["line"], strict=True)):
            row_paths = list(dict.fromkeys(
                r for r in (_safe_relpath(b, str(img), cat.root) if img is not None else None
                            for b in bases) if r is not None))
            if not row_paths:
                if report_rows:
                    reject(f"{nav_rel}:{line}", reasons.UNSAFE_PATH,
                           f"image path {img!r} lies outside the catalog root {cat.root}")
                continue
            row_rels[i] = row_paths
            for rel in row_paths:
                by_path.setdefault(rel, i)
        if nav_only:  # navigation-only catalog: every pose row (of this dive) stands for an image
            paths = []
            for row_paths in row_rels.values():
                inside = ([r for r in row_paths if _in_folder(r, folder_rel)] if src.shared
                          else row_paths)
                paths += inside[:1]
            good = [ImageCheck(p, None, None, None, None, None) for p in dict.fromkeys(paths)]
        t_nav = table["timestamp"].to_numpy()
        t_ok = t_nav[_plausible(t_nav)]
        span = (np.nanmin(t_ok), np.nanmax(t_ok)) if len(t_ok) else (np.inf, -np.inf)
        # a pose file that names its images under another folder than the one they are in
        # (ACFR's stereo_pose_est.data lists bare names; i*_cv/ vs images/) still matches them
        # by file name, where the name is unique in the file (a shared file's row whose path
        # lies in another dive's folder belongs to that dive, never to a namesake here)
        not_located = _not_located(data.not_located, bases, cat.root, good)
        names: dict[str, list[int]] = {}
        for rel, i in by_path.items():
            if not any(_in_folder(r, f) for r in row_rels[i] for f in elsewhere):
                rows_of_name = names.setdefault(posixpath.basename(rel), [])
                if i not in rows_of_name:
                    rows_of_name.append(i)
        rows = np.array([by_path.get(c.path, -1) for c in good], dtype=np.int64)
        claimed = set(rows[rows >= 0].tolist())
        by_name: dict[int, list[int]] = {}  # nav row -> unmatched images of that file name
        for k, c in enumerate(good):
            if rows[k] < 0:
                r = _unique(names.get(posixpath.basename(c.path)))
                if r >= 0 and r not in claimed:
                    by_name.setdefault(r, []).append(k)
        for r, ks in by_name.items():
            if len(ks) == 1:  # one image, one pose: never two images on one pose
                rows[ks[0]] = r
        lat = table["lat"].to_numpy()
        lon = table["lon"].to_numpy()
        has = rows >= 0
        valid = has.copy()
        valid[has] = np.isfinite(lat[rows[has]]) & np.isfinite(lon[rows[has]])
        late, shared, jump = (np.zeros(len(good), bool) for _ in range(3))
        idx = np.flatnonzero(valid)
        late[idx], shared[idx], jump[idx] = pose_faults(
            cat, t_nav[rows[idx]], lat[rows[idx]], lon[rows[idx]], rows[idx], data.notes)
        shared_lines = lines_by_time(t_nav, table["line"].to_numpy(), rows[idx])
        for k, c in enumerate(good):
            line = table["line"].iat[rows[k]] if rows[k] >= 0 else None
            if not has[k]:
                t = image_time_from_name(Path(c.path).name, cat.image_time)
                left_out = not_located.get(c.path)
                if left_out is not None:
                    reject(c.path, reasons.NO_NAV, f"{nav_rel}: {left_out}")
                elif t is not None and (t < span[0] or t > span[1]):
                    reject(c.path, reasons.OUTSIDE_NAV_SPAN,
                           f"image time {t:.3f} outside {nav_rel} span {span[0]:.3f}..{span[1]:.3f}")
                else:
                    reject(c.path, reasons.NO_NAV, f"no entry in {nav_rel}")
            elif not valid[k]:
                t_row = t_nav[rows[k]]
                why = (f"timestamp {t_row:.3f} outside {PLAUSIBLE_FROM_YEAR}..now"
                       if not _plausible(t_row) else "latitude/longitude missing or NaN")
                reject(c.path, reasons.NAV_INVALID, f"{nav_rel}:{line}: {why}")
            elif late[k]:
                reject(c.path, reasons.TIME_ORDER,
                       f"{nav_rel}:{line}: time {utc(t_nav[rows[k]])} is out of the file's "
                       "order while the positions, in the file's order, form a smooth track "
                       "that this time does not fit: the item's time is wrong, not its position")
            elif shared[k]:
                others = [n for n in shared_lines[t_nav[rows[k]]] if n != line]
                reject(c.path, reasons.TIME_ORDER,
                       f"{nav_rel}:{line}: shares its time {utc(t_nav[rows[k]])} with line(s) "
                       f"{', '.join(map(str, others[:5]))} but lies more than "
                       f"{cat.nav_checks.position_noise_m:g} m from them (nav_checks."
                       "position_noise_m): one time for several places")
            elif jump[k]:
                reject(c.path, reasons.NAV_JUMP,
                       f"{nav_rel}:{line}: position off the track of its neighbours in time "
                       f"(further than the vehicle reaches at up to "
                       f"{cat.nav_checks.max_speed_m_s:g} m/s and "
                       f"{cat.nav_checks.max_accel_m_s2:g} m/s^2 with "
                       f"{cat.nav_checks.position_noise_m:g} m of fix noise; nav_checks)")
        located = valid & ~jump & ~late & ~shared
        sel = rows[located]
        pose = {k: table[k].to_numpy()[sel] for k in
                ("timestamp", "lat", "lon", "depth_m", "altitude_m", "heading_deg")}
    else:
        times = np.array([image_time_from_name(Path(c.path).name, cat.image_time) for c in good],
                         dtype=object)
        has_t = np.array([t is not None for t in times], bool)
        for c in np.asarray(good, dtype=object)[~has_t]:
            reject(c.path, reasons.NO_TIME, no_time_detail(cat, nav_rel))
        t = times[has_t].astype(np.float64)
        if len(table) < 2:
            for c in np.asarray(good, dtype=object)[has_t]:
                reject(c.path, reasons.NO_NAV, f"{nav_rel} has fewer than 2 valid samples")
        else:
            interp, reason, detail = _interpolate(table, t, cat.max_interp_gap_s)
            blame_dropped_fixes(t, reason, detail, raw_span, data.notes, nav_rel)
            idx_t = np.flatnonzero(has_t)
            for j in np.flatnonzero(reason != None):  # noqa: E711 (object array)
                reject(good[idx_t[j]].path, reason[j], detail[j])
            ok = reason == None  # noqa: E711
            located[idx_t[ok]] = True
            pose = {k: v[ok] for k, v in interp.items()}
    res = _result(dive, src.format, good, located, pose, quarantine, len(rels) or len(good))
    return judge_dive(cat, res, data)


def _result(dive, fmt, good, located, pose, quarantine, n_found) -> DiveResult:
    chosen = [c for c, ok in zip(good, located, strict=True) if ok]
    n = len(chosen)
    loc = pd.DataFrame({
        "image_id": [c.path for c in chosen],  # "{dive}/{path inside the dive}" == path from root
        "dive": [dive] * n,
        "path": [c.path for c in chosen],
        "timestamp": pose.get("timestamp", np.zeros(0))[:n].astype(np.float64),
        "lat": pose.get("lat", np.zeros(0)).astype(np.float64),
        "lon": pose.get("lon", np.zeros(0)).astype(np.float64),
        "depth_m": pose.get("depth_m", np.zeros(0)).astype(np.float32),
        "altitude_m": pose.get("altitude_m", np.zeros(0)).astype(np.float32),
        "heading_deg": pose.get("heading_deg", np.zeros(0)).astype(np.float32),
        "width": pd.array([c.width for c in chosen], dtype="Int32"),
        "height": pd.array([c.height for c in chosen], dtype="Int32"),
    }, columns=DIVE_COLUMNS)
    loc = loc.sort_values(["timestamp", "path"], kind="stable").reset_index(drop=True)
    shards = [(c.path, c.jpeg) for c in chosen if c.jpeg is not None]
    q = pd.DataFrame(quarantine, columns=QUARANTINE_COLUMNS)
    return DiveResult(dive, fmt, loc, q, shards, n_found)
