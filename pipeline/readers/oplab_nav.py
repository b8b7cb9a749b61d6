"""oplab vehicle navigation CSV (format ``oplab-nav-csv``): the 10 Hz vehicle time series.

Header (case and spaces in names are ignored; extra columns may follow)::

    timestamp [s],northing [m],easting [m],depth [m],roll [deg],pitch [deg],heading [deg],
    altitude [m],latitude [deg],longitude [deg]

oplab_pipeline 1.2.0's ``auv_ekf_centre.csv`` names its first column ``timestamp`` (no unit)
and adds twelve ``vehicle_std_*`` columns. Heading is as in the camera CSV (see
:mod:`pipeline.readers.oplab_camera`): the EKF yaw in degrees, 0 = north, clockwise, not wrapped
(returned in [0, 360)).

Real logs contain NaN rows, repeated timestamps, rows out of order and position jumps (GPS or
USBL fixes far off the track). :func:`clean_track` turns them into a clean series: no NaN
position or time, strictly increasing timestamps, no sample that implies a speed above
``max_speed_m_s`` to its neighbours. Images are matched to this series by the capture time in
their file names (see :func:`pipeline.readers.image_time_from_name`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from . import NavData
from ._common import DEGREES, METRES, UNIX_S
from .oplab_camera import read_oplab_columns

COLUMNS = {
    "timestamp": (("timestamp [s]", "timestamp", "epoch_timestamp"), True, UNIX_S),
    "lat": (("latitude [deg]", "latitude"), True, DEGREES),
    "lon": (("longitude [deg]", "longitude"), True, DEGREES),
    "depth_m": (("depth [m]", "depth"), True, METRES),
    "altitude_m": (("altitude [m]", "altitude"), False, METRES),
    "heading_deg": (("heading [deg]", "heading"), False, DEGREES),
}

MAX_SPEED_M_S = 3.0  # an AUV surveys at 0.5-2 m/s
MIN_JUMP_M = 0.5  # steps shorter than this never count as jumps (timestamp jitter, noise)
_MEDIAN_HALF_WINDOW = 10  # samples each side of the running median (2 s at 10 Hz)
_EARTH_RADIUS_M = 6_371_008.8
_RUN_LOOKAHEAD = 256  # samples examined each side of a violation (25 s at 10 Hz)


def read_oplab_nav(
    path: Path, max_speed_m_s: float = MAX_SPEED_M_S, min_jump_m: float = MIN_JUMP_M
) -> NavData:
    """Read and clean an oplab vehicle navigation CSV (see :func:`clean_track`)."""
    path = Path(path)
    raw = read_oplab_columns(path, COLUMNS)
    table, notes = clean_track(raw, max_speed_m_s=max_speed_m_s, min_jump_m=min_jump_m)
    return NavData(table=table, per_image=False, path=path, format="oplab-nav-csv", notes=notes)


def local_xy(lat: np.ndarray, lon: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Metres east/north of the median position (equirectangular; fine over a few km)."""
    lat0, lon0 = float(np.median(lat)), float(np.median(lon))
    dlon = np.mod(lon - lon0 + 180.0, 360.0) - 180.0
    x = np.deg2rad(dlon) * _EARTH_RADIUS_M * np.cos(np.deg2rad(lat0))
    y = np.deg2rad(lat - lat0) * _EARTH_RADIUS_M
    return x, y


def clean_track(
    table: pd.DataFrame, max_speed_m_s: float = MAX_SPEED_M_S, min_jump_m: float = MIN_JUMP_M
) -> tuple[pd.DataFrame, dict[str, int]]:
    """A vehicle time series made usable for interpolation.

    1. rows without timestamp, latitude or longitude are dropped;
    2. rows are sorted by timestamp (stable: file order among equal times);
    3. repeated timestamps keep their first row;
    4. position jumps are removed: a step between consecutive samples longer than
       ``max_speed_m_s * dt + min_jump_m`` is a violation. First every sample is compared with
       a running median of the track (21 samples): one further from it than the vehicle could
       have travelled within the window is dropped, which removes bursts of several jumped
       samples at once. Then, while a violating step remains: the violating steps cut the track
       into consistent segments, and a segment shorter than both neighbours, which join up
       without it, is dropped (a longer burst). Where that settles nothing, the samples on one
       side of each violating step that the other end could not have reached are dropped: the
       side with the shorter such run, on a tie the end further from the running median.

    Returns the cleaned table (index reset) and counts of what was dropped.
    """
    notes = {}
    t = table["timestamp"].to_numpy()
    valid = np.isfinite(t) & np.isfinite(table["lat"].to_numpy()) & np.isfinite(table["lon"].to_numpy())
    notes["nan_rows"] = int((~valid).sum())
    df = table.loc[valid]
    t = df["timestamp"].to_numpy()
    notes["out_of_order_rows"] = int((np.diff(t) < 0).sum())
    df = df.iloc[np.argsort(t, kind="stable")]
    dup = df["timestamp"].duplicated(keep="first").to_numpy()
    notes["duplicate_timestamps"] = int(dup.sum())
    df = df.loc[~dup].reset_index(drop=True)
    keep = jump_free(
        df["timestamp"].to_numpy(), df["lat"].to_numpy(), df["lon"].to_numpy(),
        max_speed_m_s=max_speed_m_s, min_jump_m=min_jump_m,
    )
    notes["position_jumps"] = int((~keep).sum())
    if not keep.all():
        df = df.loc[keep].reset_index(drop=True)
    return df, notes


def jump_free(
    t: np.ndarray, lat: np.ndarray, lon: np.ndarray,
    max_speed_m_s: float = MAX_SPEED_M_S, min_jump_m: float = MIN_JUMP_M,
) -> np.ndarray:
    """Mask of samples to keep so that no step implies more than ``max_speed_m_s``.

    ``t`` must be strictly increasing and the positions finite.
    """
    n = len(t)
    keep = np.ones(n, dtype=bool)
    if n < 3:
        return keep
    x, y = local_xy(lat, lon)
    h = _MEDIAN_HALF_WINDOW
    w = 2 * h + 1
    mx = pd.Series(x).rolling(w, center=True, min_periods=1).median().to_numpy()
    my = pd.Series(y).rolling(w, center=True, min_periods=1).median().to_numpy()
    dev = np.hypot(x - mx, y - my)
    # A good sample is within max_speed * |dt| of every good sample in its window; while good
    # samples are the majority, the median of each coordinate lies within that range too, so
    # the median point is within sqrt(2) * max_speed * span of a good sample.
    idx = np.arange(n)
    span = np.maximum(t - t[np.maximum(idx - h, 0)], t[np.minimum(idx + h, n - 1)] - t)
    keep &= dev <= np.sqrt(2.0) * max_speed_m_s * span + min_jump_m
    while True:
        k = np.flatnonzero(keep)
        if len(k) < 2:
            break
        step = np.hypot(np.diff(x[k]), np.diff(y[k]))
        bad = np.flatnonzero(step > max_speed_m_s * np.diff(t[k]) + min_jump_m)
        if not len(bad):
            break
        drop = _spikes(k, bad, t, x, y, max_speed_m_s, min_jump_m)
        if not drop.any():
            drop = _enclosed_segments(k, bad, t, x, y, max_speed_m_s, min_jump_m)
        if drop.any():
            keep[k[drop]] = False
            continue
        a, b = k[bad], k[bad + 1]
        # the side of the step that is off the track is the shorter run of samples the other
        # end cannot reach; on a tie, the end further from the running median
        fwd_cand, fwd_run = _unreachable_run(k, bad + 1, a, 1, t, x, y, max_speed_m_s, min_jump_m)
        back_cand, back_run = _unreachable_run(k, bad, b, -1, t, x, y, max_speed_m_s, min_jump_m)
        forward = (fwd_run < back_run) | ((fwd_run == back_run) & (dev[b] >= dev[a]))
        m = np.arange(fwd_cand.shape[1])[None, :]
        keep[fwd_cand[forward][m < fwd_run[forward][:, None]]] = False
        keep[back_cand[~forward][m < back_run[~forward][:, None]]] = False
    return keep


def _spikes(k, bad, t, x, y, max_speed_m_s, min_jump_m) -> np.ndarray:
    """Positions in ``k`` of single samples that violate towards both neighbours, while the
    neighbours are consistent with each other."""
    drop = np.zeros(len(k), dtype=bool)
    both = bad[1:][np.diff(bad) == 1]  # steps j-1 -> j and j -> j+1 both violate: j = bad
    if len(both):
        i, j = k[both - 1], k[both + 1]
        joins = np.hypot(x[j] - x[i], y[j] - y[i]) <= max_speed_m_s * (t[j] - t[i]) + min_jump_m
        drop[both[joins]] = True
    return drop


def _enclosed_segments(k, bad, t, x, y, max_speed_m_s, min_jump_m) -> np.ndarray:
    """Positions in ``k`` of segments that are off the track between two violating steps.

    The violating steps split the kept samples into segments that are each consistent. A
    segment is dropped when it is shorter than both neighbours and the neighbours join up
    without it; a first or last segment when it is shorter than its neighbour and than
    _RUN_LOOKAHEAD samples (a bad first or last fix, not half of a dive).
    """
    starts = np.concatenate([[0], bad + 1])
    ends = np.concatenate([bad, [len(k) - 1]])
    size = ends - starts + 1
    flag = np.zeros(len(size), dtype=bool)
    if len(size) >= 3:
        i, j = k[ends[:-2]], k[starts[2:]]  # end of the segment before, start of the one after
        joins = np.hypot(x[j] - x[i], y[j] - y[i]) <= max_speed_m_s * (t[j] - t[i]) + min_jump_m
        flag[1:-1] = joins & (size[1:-1] < size[:-2]) & (size[1:-1] < size[2:])
    flag[0] |= (size[0] < size[1]) & (size[0] < _RUN_LOOKAHEAD)
    flag[-1] |= (size[-1] < size[-2]) & (size[-1] < _RUN_LOOKAHEAD)
    edges = np.zeros(len(k) + 1, dtype=np.int64)
    np.add.at(edges, starts[flag], 1)
    np.add.at(edges, ends[flag] + 1, -1)
    return np.cumsum(edges[:-1]) > 0


def _unreachable_run(k, start, anchor, sign, t, x, y, max_speed_m_s, min_jump_m):
    """Samples from ``start`` onwards (direction ``sign``) that ``anchor`` cannot reach.

    ``k`` holds the kept sample indices and ``start`` positions in ``k``. Returns the candidate
    sample indices (one row per violation, _RUN_LOOKAHEAD wide) and the length of each leading
    run of unreachable samples (at least 1: the violating sample itself).
    """
    m = np.arange(_RUN_LOOKAHEAD)
    pos = start[:, None] + sign * m[None, :]
    inside = (pos >= 0) & (pos < len(k))
    cand = k[np.clip(pos, 0, len(k) - 1)]
    dist = np.hypot(x[cand] - x[anchor][:, None], y[cand] - y[anchor][:, None])
    reach = max_speed_m_s * np.abs(t[cand] - t[anchor][:, None]) + min_jump_m
    off = (dist > reach) & inside
    off[:, 0] = True
    run = np.where(off.all(axis=1), _RUN_LOOKAHEAD, np.argmin(off, axis=1))
    return cand, run
