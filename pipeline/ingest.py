"""Per-dive ingest: find the dive's images and navigation, give every image a pose or a reason.

Every image found on disk ends in the dive's location rows or in its quarantine rows, never
nowhere. Positions are interpolated in metres (a transverse Mercator frame centred on the
dive), depth and altitude linearly, heading on the circle; nothing is extrapolated.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import posixpath
import re
import time as _time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from pyproj import CRS, Transformer

from . import reasons
from .catalog import Catalog, NavSource
from .images import ImageCheck, check_images
from .output import MARKER as OUTPUT_MARKER
from .readers import NavFormatError, image_time_from_name, read_nav

DIVE_COLUMNS = ["image_id", "dive", "path", "timestamp", "lat", "lon", "depth_m", "altitude_m",
                "heading_deg", "width", "height"]
QUARANTINE_COLUMNS = ["dive", "source", "reason", "detail"]
JUMP_WINDOW = 5  # poses in the running median that a per-image pose is compared with
JUMP_LIMIT_M = 10.0  # further than this from the running median: a GPS/USBL jump


@dataclass
class DiveResult:
    dive: str
    nav_format: str | None
    locations: pd.DataFrame  # DIVE_COLUMNS, timestamp in unix seconds
    quarantine: pd.DataFrame  # QUARANTINE_COLUMNS
    shards: list[tuple[str, bytes]] = field(default_factory=list)  # (image_id, jpeg)
    images_found: int = 0


_WILDCARD = re.compile(r"[*?\[]")


def _dive_pattern(cat: Catalog) -> list[str]:
    return [p for p in posixpath.normpath(cat.dives.replace("\\", "/")).split("/") if p != "."]


def dive_folders(cat: Catalog) -> list[Path]:
    """The folders under the root matching the catalog's ``dives`` glob, sorted.

    A folder that is a builder's output (it holds the output marker) is never a dive."""
    return sorted(Path(p) for p in glob.glob(str(cat.root / cat.dives))
                  if Path(p).is_dir() and not (Path(p) / OUTPUT_MARKER).exists())


def dive_id_of(cat: Catalog, rel: str) -> str:
    """The dive id of a dive folder (its path relative to the root): the parts matched by the
    wildcards of ``dives`` (``raw/*/*/*`` -> ``2019/c01/d07``), or the folder name when the
    pattern has none."""
    pattern, parts = _dive_pattern(cat), rel.split("/")
    picked = [part for seg, part in zip(pattern, parts, strict=False) if _WILDCARD.search(seg)]
    return "/".join(picked) if picked else parts[-1]


def dive_rel(cat: Catalog, dive: str) -> str:
    """The dive folder's path relative to the root, from its id (the inverse of dive_id_of)."""
    pattern = _dive_pattern(cat)
    ids = dive.split("/")
    if not any(_WILDCARD.search(seg) for seg in pattern):
        return "/".join(pattern)
    out, k = [], 0
    for seg in pattern:
        if _WILDCARD.search(seg):
            out.append(ids[k] if k < len(ids) else seg)
            k += 1
        else:
            out.append(seg)
    return "/".join(out)


def discover_dives(cat: Catalog) -> list[str]:
    """Dive ids (see dive_id_of), in the sorted order of their folders."""
    root = Path(os.path.realpath(cat.root))
    return [dive_id_of(cat, folder.relative_to(cat.root).as_posix()) for folder in dive_folders(cat)
            # a dive folder that resolves outside the root (a symlink) is never read
            if Path(os.path.realpath(folder)).is_relative_to(root)]


def expand(template: str, cat: Catalog, dive: str) -> str:
    """A template with ``{dive}`` (the dive folder's path from the root) and ``{dive_id}``."""
    return template.format(dive=dive_rel(cat, dive), dive_id=dive)


def _any_case_extension(template: str) -> str:
    """``*.jpg`` -> ``*.[jJ][pP][gG]``: cameras and copies write ``.JPG`` as often as ``.jpg``."""
    m = re.search(r"\.([A-Za-z0-9]+)$", template)
    if not m:
        return template
    ext = "".join(f"[{c.lower()}{c.upper()}]" if c.isalpha() else c for c in m.group(1))
    return template[: m.start(1)] + ext


def _matches(cat: Catalog, template: str, dive: str, images: bool = False) -> list[Path]:
    """Files a template matches for a dive, sorted (globs allowed).

    Images: the extension matches in any case, and a symlink counts even when it dangles (it is
    then quarantined as unreadable, never dropped). Catalogs written when ``{dive}`` stood for
    the dive folder's *name* (``dives/{dive}/...`` with ``dives: "dives/*"``) still match: when
    the template as written finds nothing, the name is tried in place of ``{dive}``."""
    def found(pattern: str) -> list[Path]:
        if images:
            pattern = _any_case_extension(pattern)
        keep = (lambda q: q.is_symlink() or q.is_file()) if images else (lambda q: q.is_file())
        if _WILDCARD.search(pattern):
            return sorted({Path(p) for p in glob.glob(str(cat.root / pattern)) if keep(Path(p))})
        path = cat.root / pattern
        return [path] if keep(path) else []

    hits = found(expand(template, cat, dive))
    name = dive_rel(cat, dive).rsplit("/", 1)[-1]
    if not hits and "{dive}" in template and name != dive_rel(cat, dive):
        hits = found(template.format(dive=name, dive_id=dive))
    return hits


def dive_images(cat: Catalog, dive: str) -> list[str]:
    """Image paths relative to the catalog root, sorted, forward slashes."""
    if cat.images is None:
        return []
    return [p.relative_to(cat.root).as_posix() for p in _matches(cat, cat.images, dive, images=True)]


def nav_candidates(cat: Catalog, src: NavSource, dive: str) -> list[Path]:
    """The files one navigation source's template matches for a dive, sorted (globs allowed)."""
    return _matches(cat, src.path, dive)


def dive_nav_source(cat: Catalog, dive: str) -> tuple[NavSource, Path] | None:
    """The first navigation source whose template matches a file; of several matches the last
    in sorted order (the newest of date-stamped folders such as oplab's json_renav_*)."""
    for src in cat.nav:
        found = nav_candidates(cat, src, dive)
        if found:
            return src, found[-1]
    return None


def nav_choice(cat: Catalog, dive: str) -> str | None:
    """A line for the log when a navigation template matched several files, naming the one used."""
    for src in cat.nav:
        found = nav_candidates(cat, src, dive)
        if found:
            if len(found) == 1:
                return None
            return (f"dive {dive}: {len(found)} files match {expand(src.path, cat, dive)}; using "
                    f"the last in sorted order, {found[-1].relative_to(cat.root).as_posix()}")
    return None


def dive_fingerprint(cat: Catalog, dive: str, rels: list[str] | None = None) -> str:
    """Changes when anything that affects this dive's ingest changes (cache key)."""
    h = hashlib.sha256()
    nav = dive_nav_source(cat, dive)
    settings = {
        "builder": "ingest-1", "images": cat.images, "validate": cat.validate_images,
        "max_interp_gap_s": cat.max_interp_gap_s, "train_size": list(cat.train_size),
        "nav": nav[0].model_dump() if nav else None,
        "nav_file": nav[1].relative_to(cat.root).as_posix() if nav else None,
        "dive_folder": dive_rel(cat, dive),
    }
    h.update(json.dumps(settings, sort_keys=True).encode())
    if nav:
        h.update(hashlib.sha256(nav[1].read_bytes()).digest())
    for rel in dive_images(cat, dive) if rels is None else rels:
        try:
            st = (cat.root / rel).stat()
            h.update(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        except OSError:  # a dangling symlink: quarantined as unreadable, still part of the key
            h.update(f"{rel}\0dangling\n".encode())
    return h.hexdigest()


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


def _local_frame(lat: np.ndarray, lon: np.ndarray) -> tuple[Transformer, Transformer]:
    lat0 = float(np.nanmedian(lat)) if np.isfinite(lat).any() else 0.0
    lon0 = float(np.nanmedian(lon)) if np.isfinite(lon).any() else 0.0
    crs = CRS.from_proj4(f"+proj=tmerc +lat_0={lat0} +lon_0={lon0} +k=1 +ellps=WGS84 +units=m")
    return (Transformer.from_crs(4326, crs, always_xy=True),
            Transformer.from_crs(crs, 4326, always_xy=True))


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


def _jumps(t: np.ndarray, lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
    """Per-image poses far from the track of their neighbours in time, the first and last of a
    dive included: each pose is compared with the median of its JUMP_WINDOW nearest neighbours
    (itself left out), allowing for the distance the vehicle travels in the time between."""
    n = len(t)
    if n < 3:
        return np.zeros(n, bool)
    fwd, _ = _local_frame(lat, lon)
    order = np.argsort(t, kind="stable")
    ts = t[order].astype(np.float64)
    x, y = fwd.transform(lon[order], lat[order])
    x, y = np.asarray(x), np.asarray(y)
    w = min(JUMP_WINDOW + 1, n)
    start = np.clip(np.arange(n) - w // 2, 0, n - w)
    idx = start[:, None] + np.arange(w)[None, :]
    self_ = idx == np.arange(n)[:, None]
    mx = np.nanmedian(np.where(self_, np.nan, x[idx]), axis=1)
    my = np.nanmedian(np.where(self_, np.nan, y[idx]), axis=1)
    mt = np.nanmedian(np.where(self_, np.nan, ts[idx]), axis=1)
    step = np.hypot(np.diff(x), np.diff(y))
    dt = np.diff(ts)
    speed = float(np.median(step[dt > 0] / dt[dt > 0])) if (dt > 0).any() else 0.0
    allowed = JUMP_LIMIT_M + speed * np.abs(ts - mt)
    out = np.zeros(n, bool)
    out[order] = np.hypot(x - mx, y - my) > allowed
    return out


def _unique(rows: list[int] | None) -> int:
    return rows[0] if rows and len(rows) == 1 else -1


def _interpolate(nav: pd.DataFrame, t: np.ndarray, max_gap_s: float):
    """Interpolate vehicle navigation at image times; reason per image (None when located)."""
    tn = nav["timestamp"].to_numpy()
    fwd, inv = _local_frame(nav["lat"].to_numpy(), nav["lon"].to_numpy())
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
        tried = ", ".join(expand(s.path, cat, dive) for s in cat.nav)
        for c in good:
            reject(c.path, reasons.NO_NAV, f"no navigation file for the dive (tried {tried})")
        return _result(dive, None, good, located, pose, quarantine, len(rels))
    src, nav_path = nav
    folder_rel = dive_rel(cat, dive)
    options = {"dive_dir": cat.root / folder_rel} if src.format == "ifdo" else {}
    nav_rel = nav_path.relative_to(cat.root).as_posix()
    try:
        if not Path(os.path.realpath(nav_path)).is_relative_to(Path(os.path.realpath(cat.root))):
            raise NavFormatError(f"{nav_rel}: a symlink to {os.path.realpath(nav_path)}, outside "
                                 "the catalog root; the pipeline never reads outside it")
        data = read_nav(src.format, nav_path,
                        columns=src.columns.model_dump() if src.columns else None, **options)
        table = data.table
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
    if bad_time.any():
        table = table.copy()
        table.loc[bad_time, ["lat", "lon"]] = np.nan  # those rows locate nothing (nav_invalid)
        if not data.per_image:
            table = table[~bad_time].reset_index(drop=True)
    if data.per_image:
        by_path: dict[str, int] = {}
        for i, (img, line) in enumerate(zip(table["image"], table["line"], strict=True)):
            rel = _safe_relpath(folder_rel, str(img), cat.root) if img is not None else None
            if rel is None:
                reject(f"{nav_rel}:{line}", reasons.UNSAFE_PATH,
                       f"image path {img!r} lies outside the catalog root {cat.root}")
                continue
            by_path.setdefault(rel, i)
        if nav_only:  # navigation-only catalog: every pose row stands for an image
            good = [ImageCheck(p, None, None, None, None, None) for p in by_path]
        t_nav = table["timestamp"].to_numpy()
        t_ok = t_nav[_plausible(t_nav)]
        span = (np.nanmin(t_ok), np.nanmax(t_ok)) if len(t_ok) else (np.inf, -np.inf)
        # a pose file that names its images under another folder than the one they are in
        # (ACFR's stereo_pose_est.data lists bare names; i*_cv/ vs images/) still matches them
        # by file name, where the name is unique in the dive
        names: dict[str, list[int]] = {}
        for rel, i in by_path.items():
            names.setdefault(posixpath.basename(rel), []).append(i)
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
        jump = np.zeros(len(good), bool)
        idx = np.flatnonzero(valid)
        jump[idx] = _jumps(t_nav[rows[idx]], lat[rows[idx]], lon[rows[idx]])
        for k, c in enumerate(good):
            line = table["line"].iat[rows[k]] if rows[k] >= 0 else None
            if not has[k]:
                t = image_time_from_name(Path(c.path).name)
                if t is not None and (t < span[0] or t > span[1]):
                    reject(c.path, reasons.OUTSIDE_NAV_SPAN,
                           f"image time {t:.3f} outside {nav_rel} span {span[0]:.3f}..{span[1]:.3f}")
                else:
                    reject(c.path, reasons.NO_NAV, f"no entry in {nav_rel}")
            elif not valid[k]:
                t_row = t_nav[rows[k]]
                why = (f"timestamp {t_row:.3f} outside {PLAUSIBLE_FROM_YEAR}..now"
                       if not _plausible(t_row) else "latitude/longitude missing or NaN")
                reject(c.path, reasons.NAV_INVALID, f"{nav_rel}:{line}: {why}")
            elif jump[k]:
                reject(c.path, reasons.NAV_JUMP,
                       f"{nav_rel}:{line}: position > {JUMP_LIMIT_M:g} m from its neighbours' track")
        located = valid & ~jump
        sel = rows[located]
        pose = {k: table[k].to_numpy()[sel] for k in
                ("timestamp", "lat", "lon", "depth_m", "altitude_m", "heading_deg")}
    else:
        times = np.array([image_time_from_name(Path(c.path).name) for c in good], dtype=object)
        has_t = np.array([t is not None for t in times], bool)
        for c in np.asarray(good, dtype=object)[~has_t]:
            reject(c.path, reasons.NO_TIME, "the file name carries no capture time to match navigation by")
        t = times[has_t].astype(np.float64)
        if len(table) < 2:
            for c in np.asarray(good, dtype=object)[has_t]:
                reject(c.path, reasons.NO_NAV, f"{nav_rel} has fewer than 2 valid samples")
        else:
            interp, reason, detail = _interpolate(table, t, cat.max_interp_gap_s)
            idx_t = np.flatnonzero(has_t)
            for j in np.flatnonzero(reason != None):  # noqa: E711 (object array)
                reject(good[idx_t[j]].path, reason[j], detail[j])
            ok = reason == None  # noqa: E711
            located[idx_t[ok]] = True
            pose = {k: v[ok] for k, v in interp.items()}
    return _result(dive, src.format, good, located, pose, quarantine, len(rels) or len(good))


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
