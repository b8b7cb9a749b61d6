"""What a dive's navigation is worth (pipeline.track applied to one dive): wrong item times,
position jumps, rows the cleaner dropped, an image that lost its fixes, degenerate tracks."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from pyproj import CRS, Transformer

from . import reasons
from .catalog import Catalog
from .track import MotionLimits, degenerate, pose_jumps, time_faults

if TYPE_CHECKING:
    from .ingest import DiveResult


def local_frame(lat: np.ndarray, lon: np.ndarray) -> tuple[Transformer, Transformer]:
    lat0 = float(np.nanmedian(lat)) if np.isfinite(lat).any() else 0.0
    lon0 = float(np.nanmedian(lon)) if np.isfinite(lon).any() else 0.0
    crs = CRS.from_proj4(f"+proj=tmerc +lat_0={lat0} +lon_0={lon0} +k=1 +ellps=WGS84 +units=m")
    return (Transformer.from_crs(4326, crs, always_xy=True),
            Transformer.from_crs(crs, 4326, always_xy=True))


# rows a reader or its cleaner removes
_DROPPED = ("rows_wrong_field_count", "bad_value_rows", "out_of_range_rows", "cut_last_line_rows",
            "nan_rows", "implausible_time_rows", "duplicate_timestamps", "position_jumps")
# of those, the rows a reader left out one by one (each also in the quarantine table)
_ROW_FAULTS = ("rows_wrong_field_count", "bad_value_rows", "out_of_range_rows",
               "cut_last_line_rows")

NAV_ROW_INVALID = reasons.NAV_ROW_INVALID  # source "<navigation file>:<line>"


def limits_of(cat: Catalog) -> MotionLimits:
    c = cat.nav_checks
    return MotionLimits(max_speed_m_s=c.max_speed_m_s, max_accel_m_s2=c.max_accel_m_s2,
                        position_noise_m=c.position_noise_m)


def _xy(lat: np.ndarray, lon: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    fwd, _ = local_frame(lat, lon)
    x, y = fwd.transform(lon, lat)
    return np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)


COARSE_SHARE = 0.2  # of poses sharing a time with poses metres away: the times are coarse


def pose_faults(cat: Catalog, t, lat, lon, file_pos, notes: dict):
    """(out of order, shared time, jump) masks of per-image poses; ``file_pos`` is each pose's
    row in the file, whose order time faults are judged against (pipeline.track).

    Times too coarse to order the track (dates only, as a CoralNet metadata file has; whole
    seconds at several frames a second) judge nothing: when more than COARSE_SHARE of the
    poses share their time with poses further away than the fix noise, no pose is blamed and
    ``notes["item_times_too_coarse"]`` counts them (a warning in the report)."""
    n = len(t)
    late, shared, jump = (np.zeros(n, bool) for _ in range(3))
    if n < 3:
        return late, shared, jump
    limits = limits_of(cat)
    x, y = _xy(lat, lon)
    order = np.argsort(file_pos, kind="stable")
    faults = time_faults(t[order], x[order], y[order], limits)
    if faults.shared_time.sum() > COARSE_SHARE * n:
        notes["item_times_too_coarse"] = int(faults.shared_time.sum())
        return late, shared, jump
    late[order], shared[order] = faults.out_of_order, faults.shared_time
    rest = ~(late | shared)
    jump[rest] = pose_jumps(t[rest], x[rest], y[rest], limits)
    return late, shared, jump


def lines_by_time(t_nav: np.ndarray, lines: np.ndarray, rows: np.ndarray) -> dict[float, list]:
    out: dict[float, list] = {}
    for r in rows:
        out.setdefault(t_nav[r], []).append(int(lines[r]))
    return out


def utc(t: float) -> str:
    return dt.datetime.fromtimestamp(float(t), dt.UTC).isoformat(timespec="milliseconds")


def blame_dropped_fixes(t, reason, detail, raw_span, notes: dict, nav_rel: str) -> None:
    """An image outside the cleaned span but inside the file's own span lost its fixes to the
    cleaner: say so, with the file's span, instead of blaming the image's time."""
    if not raw_span:
        return
    dropped = ", ".join(f"{notes[k]} {k}" for k in _DROPPED if notes.get(k))
    for j in np.flatnonzero(reason == reasons.OUTSIDE_NAV_SPAN):
        if raw_span[0] <= t[j] <= raw_span[1]:
            detail[j] = (f"{detail[j]}; {nav_rel} itself spans {raw_span[0]:.3f}.."
                         f"{raw_span[1]:.3f}: the fixes at this time were dropped by the "
                         f"navigation cleaner ({dropped or 'rows without time or position'}; "
                         "see nav_rows_dropped in report.json)")


def _nav_rel(cat: Catalog, path) -> str:
    from pathlib import Path

    try:
        return Path(path).relative_to(cat.root).as_posix()
    except ValueError:
        return str(path)


def _shared_file(cat: Catalog, dive: str) -> tuple[bool, bool]:
    """(whether the dive's navigation file is one shared by every dive, whether this dive
    reports that file's bad rows): each row is reported once, by the first dive."""
    from .dives import dive_nav_source, first_dive

    found = dive_nav_source(cat, dive)
    shared = found is not None and found[0].shared
    return shared, not shared or dive == first_dive(cat)


def quarantine_bad_rows(cat: Catalog, res: DiveResult, data) -> None:
    """The rows the reader left out one by one (``data.row_faults``) in the quarantine table.

    A per-image row that still names its image was kept without a position, so ingest
    quarantined that image as nav_invalid: its detail becomes the row's fault. Every other bad
    row is an entry of its own, source "<file>:<line>", reason NAV_ROW_INVALID (a file shared by
    every dive: reported by the first dive only). A warning says how many rows were left out
    and why."""
    faults = getattr(data, "row_faults", None) or []
    if not faults:
        return
    nav_rel = _nav_rel(cat, data.path)
    shared, reports = _shared_file(cat, res.dive)
    q = res.quarantine
    rows = []
    for f in faults:
        said = f"{nav_rel}: {f.detail} (only this row is left out)"
        if f.kept:
            hit = ((q["reason"] == reasons.NAV_INVALID)
                   & q["detail"].astype(str).str.startswith(f"{nav_rel}:{f.line}: "))
            if hit.any():
                q.loc[hit, "detail"] = said
                continue
            if shared:
                continue  # a shared file's row naming another dive's image
        elif not reports:
            continue
        rows.append({"dive": res.dive, "source": f"{nav_rel}:{f.line}",
                     "reason": NAV_ROW_INVALID, "detail": said})
    unnamed = [f.line for f in faults if not f.kept]
    if data.per_image and unnamed:
        # an image the file does not list may be the one a row left out would have named
        hit = (q["reason"] == reasons.NO_NAV) & (q["detail"] == f"no entry in {nav_rel}")
        shown = ", ".join(map(str, unnamed[:5])) + (" ..." if len(unnamed) > 5 else "")
        q.loc[hit, "detail"] = (f"no entry in {nav_rel}; the file has bad row(s) that name no "
                                f"image, left out (line(s) {shown}, see their own entries): "
                                "one of them may be this image's")
    if rows:
        q = pd.concat([q, pd.DataFrame(rows, columns=list(q.columns))], ignore_index=True)
    res.quarantine = q
    if reports:
        kinds: dict[str, int] = {}
        for f in faults:
            kinds[f.kind] = kinds.get(f.kind, 0) + 1
        first = faults[0]
        res.warnings.append(
            f"{len(faults)} row(s) of {nav_rel} left out, the rest of the file used ("
            + ", ".join(f"{n} {k}" for k, n in kinds.items())
            + f"; first: {first.detail}): each is in quarantine.parquet")


def judge_dive(cat: Catalog, res: DiveResult, data) -> DiveResult:  # data: readers.NavData
    """What the dive's navigation lost and how fit it is: dropped rows, the reader's notes,
    degenerate navigation (a warning, or the dive quarantined: catalog nav_checks)."""
    notes = dict(data.notes)
    if not data.per_image:
        res.nav_rows_dropped = {k: int(notes[k]) for k in _DROPPED if notes.get(k)}
    else:  # a per-image file's bad rows (their images are quarantined naming the row)
        res.nav_rows_dropped = {k: int(notes[k]) for k in _ROW_FAULTS if notes.get(k)}
    quarantine_bad_rows(cat, res, data)
    res.nav_notes = {k: int(v) for k, v in notes.items()
                     if k not in _DROPPED and isinstance(v, int | np.integer) and v}
    if notes.get("position_steps"):
        res.warnings.append(f"{notes['position_steps']} step(s) in the navigation the vehicle "
                            "could not have made, after which the track goes on from the new "
                            "place (a fix re-locking): kept, check the track in survey_map.png")
    if notes.get("item_times_too_coarse"):
        res.warnings.append(f"{notes['item_times_too_coarse']} items share their time with "
                            "items metres away (dates only, or whole seconds at several frames "
                            "a second): time order and jumps were not checked for this dive")
    if notes.get("no_depth"):
        res.warnings.append("the navigation has no depth: depth_m is null for this dive")
    loc = res.locations
    if not len(loc):
        return res
    x, y = _xy(loc["lat"].to_numpy(), loc["lon"].to_numpy())
    found = degenerate(loc["timestamp"].to_numpy(), x, y, loc["depth_m"].to_numpy(),
                       loc["altitude_m"].to_numpy())
    res.warnings += [f"degenerate navigation: {w}" for w in found]
    if found and cat.nav_checks.degenerate == "quarantine":
        why = "; ".join(found) + " (nav_checks.degenerate: quarantine)"
        q = pd.DataFrame({"dive": res.dive, "source": loc["path"],
                          "reason": reasons.NAV_DEGENERATE, "detail": why})
        res.quarantine = pd.concat([res.quarantine, q[list(res.quarantine.columns)]], ignore_index=True)
        res.locations = loc.iloc[:0]
        res.shards = []
    return res
