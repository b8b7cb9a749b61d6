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
position or time, strictly increasing timestamps, no fix off the track of its neighbours
(:mod:`pipeline.track`). Images are matched to this series by the capture time in
their file names (see :func:`pipeline.readers.image_time_from_name`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..track import MotionLimits, pose_jumps, position_steps
from . import NavData
from ._common import DEGREES, METRES, UNIX_S, count_kinds, leave_out_bad_rows
from .oplab_camera import read_oplab_columns

COLUMNS = {
    "timestamp": (("timestamp [s]", "timestamp", "epoch_timestamp"), True, UNIX_S),
    "lat": (("latitude [deg]", "latitude"), True, DEGREES),
    "lon": (("longitude [deg]", "longitude"), True, DEGREES),
    "depth_m": (("depth [m]", "depth"), True, METRES),
    "altitude_m": (("altitude [m]", "altitude"), False, METRES),
    "heading_deg": (("heading [deg]", "heading"), False, DEGREES),
}

MAX_SPEED_M_S = MotionLimits.max_speed_m_s
MIN_JUMP_M = MotionLimits.position_noise_m  # steps shorter than this never count as jumps
_EARTH_RADIUS_M = 6_371_008.8


def read_oplab_nav(
    path: Path, max_speed_m_s: float = MAX_SPEED_M_S, min_jump_m: float = MIN_JUMP_M,
    max_accel_m_s2: float = MotionLimits.max_accel_m_s2,
) -> NavData:
    """Read and clean an oplab vehicle navigation CSV (see :func:`clean_track`)."""
    path = Path(path)
    raw, faults = read_oplab_columns(path, COLUMNS)
    raw, row_faults = leave_out_bad_rows(path, raw, faults, False, "oplab-nav-csv")
    table, notes = clean_track(raw, max_speed_m_s=max_speed_m_s, min_jump_m=min_jump_m,
                               max_accel_m_s2=max_accel_m_s2)
    return NavData(table=table, per_image=False, path=path, format="oplab-nav-csv",
                   notes={**count_kinds(row_faults), **notes}, row_faults=row_faults)


def local_xy(lat: np.ndarray, lon: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Metres east/north of the median position (equirectangular; fine over a few km)."""
    lat0, lon0 = float(np.median(lat)), float(np.median(lon))
    dlon = np.mod(lon - lon0 + 180.0, 360.0) - 180.0
    x = np.deg2rad(dlon) * _EARTH_RADIUS_M * np.cos(np.deg2rad(lat0))
    y = np.deg2rad(lat - lat0) * _EARTH_RADIUS_M
    return x, y


def clean_track(
    table: pd.DataFrame, max_speed_m_s: float = MAX_SPEED_M_S, min_jump_m: float = MIN_JUMP_M,
    max_accel_m_s2: float = MotionLimits.max_accel_m_s2,
) -> tuple[pd.DataFrame, dict[str, int]]:
    """A vehicle time series made usable for interpolation.

    1. rows without timestamp, latitude or longitude are dropped (``nan_rows``);
    2. rows are sorted by timestamp (stable: file order among equal times;
       ``out_of_order_rows`` counts the rows that came before an earlier time, none dropped);
    3. repeated timestamps keep their first row (``duplicate_timestamps``);
    4. position jumps are removed (``position_jumps``): fixes the vehicle could not have reached
       from its neighbours in time, judged by :func:`pipeline.track.pose_jumps` from the local
       motion (top speed ``max_speed_m_s``, acceleration ``max_accel_m_s2``, fix noise
       ``min_jump_m``). A step after which the track goes on from the new place is kept and
       counted in ``position_steps``: no stretch of valid navigation is ever dropped for it.

    Returns the cleaned table (index reset) and the counts. The time span of the rows with a
    time, before any was dropped, is kept in ``table.attrs["raw_span_s"]`` so an image outside
    the cleaned span can be told that its fixes were dropped.
    """
    limits = MotionLimits(max_speed_m_s=max_speed_m_s, max_accel_m_s2=max_accel_m_s2,
                          position_noise_m=min_jump_m)
    notes = {}
    t = table["timestamp"].to_numpy()
    timed = t[np.isfinite(t)]
    span = (float(timed.min()), float(timed.max())) if len(timed) else None
    valid = np.isfinite(t) & np.isfinite(table["lat"].to_numpy()) & np.isfinite(table["lon"].to_numpy())
    notes["nan_rows"] = int((~valid).sum())
    df = table.loc[valid]
    t = df["timestamp"].to_numpy()
    notes["out_of_order_rows"] = int((np.diff(t) < 0).sum())
    df = df.iloc[np.argsort(t, kind="stable")]
    dup = df["timestamp"].duplicated(keep="first").to_numpy()
    notes["duplicate_timestamps"] = int(dup.sum())
    df = df.loc[~dup].reset_index(drop=True)
    t = df["timestamp"].to_numpy()
    x, y = local_xy(df["lat"].to_numpy(), df["lon"].to_numpy()) if len(df) else (t, t)
    jump = pose_jumps(t, x, y, limits)
    notes["position_jumps"] = int(jump.sum())
    notes["position_steps"] = len(position_steps(t[~jump], x[~jump], y[~jump], limits))
    if jump.any():
        df = df.loc[~jump].reset_index(drop=True)
    df.attrs["raw_span_s"] = span
    return df, notes


def sniff(head):
    """oplab_pipeline's vehicle navigation CSV: the required columns of :data:`COLUMNS` and no
    image column (that would be the camera CSV)."""
    from .oplab_camera import COLUMNS as CAMERA_COLUMNS
    from .sniffing import Sniff, has_suffix, header_roles

    verdict = Sniff("oplab-nav-csv", 0.0, per_image=False)
    if not has_suffix(head, ".csv"):
        return verdict
    found = header_roles(head.lines, COLUMNS)
    if found is None or header_roles(head.lines, {"image": CAMERA_COLUMNS["image"]}) is not None:
        return verdict
    return Sniff("oplab-nav-csv", 0.96, per_image=False, found=found,
                 note="oplab vehicle navigation, matched by the time in image names")
