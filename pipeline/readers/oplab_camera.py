"""oplab_pipeline camera pose CSV (format ``oplab-camera-csv``): one row per image.

Written by oplab_pipeline's ``auv_nav process`` as ``auv_ekf_<camera>.csv`` (also ``auv_dr_``,
``auv_pf_``). Header (extra columns may follow; case and spaces in names are ignored)::

    relative_path,northing [m],easting [m],depth [m],roll [deg],pitch [deg],heading [deg],
    altitude [m],timestamp [s],latitude [deg],longitude [deg],...

oplab_pipeline 1.2.0 writes 26 columns (velocities and ``vehicle_std_*`` follow), every number
as Python's ``str(float)``, and ``None`` for a value it never filled (read as missing).

Positions come from latitude/longitude. Northing/easting are metres from the mission origin
(a local frame, not UTM) and are not used. oplab_pipeline 1.2.0 computes the camera row's
latitude/longitude from the vehicle centre's northing/easting, not the lever-arm-corrected
camera's (``Camera.fromSyncedBodyVelocity``), so they are the vehicle's position.

Heading: ``heading [deg]`` is the EKF yaw in degrees, 0 = north, clockwise seen from above
(auv_nav's North-East-Down body frame, converted from radians with ``* 180 / pi``). It is not
wrapped: values such as 366.25 or -8 occur; they come back in [0, 360).

``relative_path`` is whatever auv_nav's image parser stored: a path relative to the dive's raw
folder for some cameras, an ABSOLUTE path of the processing machine's raw folder for others
(the ACFR, SeaXerocks and rosbag image parsers). It is passed through unchanged.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from . import NavData
from ._common import (
    DEGREES,
    METRES,
    UNIX_S,
    RowFaults,
    check_latlon,
    count_kinds,
    find_column,
    image_values,
    leave_out_bad_rows,
    nav_table,
    numbers,
    read_header,
    read_rows,
)

# key -> accepted header names (first one is the documented name), required?, expected
COLUMNS = {
    "image": (("relative_path", "image_path", "filename"), True, None),
    "timestamp": (("timestamp [s]", "timestamp", "epoch_timestamp"), True, UNIX_S),
    "lat": (("latitude [deg]", "latitude"), True, DEGREES),
    "lon": (("longitude [deg]", "longitude"), True, DEGREES),
    "depth_m": (("depth [m]", "depth"), True, METRES),
    "altitude_m": (("altitude [m]", "altitude"), False, METRES),
    "heading_deg": (("heading [deg]", "heading"), False, DEGREES),
}


def read_oplab_camera(path: Path) -> NavData:
    """Read an oplab camera CSV; rows with missing latitude/longitude are kept (NaN); a bad row
    (a value that is no number, a position off the globe, a wrong field count) costs only
    itself: its image stays without a pose, named by file and line."""
    path = Path(path)
    table, faults = read_oplab_columns(path, COLUMNS)
    table, row_faults = leave_out_bad_rows(path, table, faults, True, "oplab-camera-csv")
    return NavData(table=table, per_image=True, path=path, format="oplab-camera-csv",
                   notes=count_kinds(row_faults), row_faults=row_faults)


def read_oplab_columns(path: Path, spec: dict) -> tuple[pd.DataFrame, RowFaults]:
    """Read the columns of ``spec`` from an oplab CSV into the normalised table, and its bad
    rows (left in the table; `leave_out_bad_rows` applies the rule)."""
    header = read_header(path, ",")
    positions, names = {}, {}
    for key, (aliases, required, _) in spec.items():
        pos = find_column(path, header, aliases, required)
        if pos is not None:
            positions[key], names[key] = pos, header[pos].strip()
    text = ["image"] if "image" in positions else []
    faults = RowFaults()
    rows, lines = read_rows(path, len(header), positions, text=text, faults=faults)
    values = {
        key: numbers(path, rows[key], lines, names[key], spec[key][2], faults=faults)
        for key in positions if key != "image"
    }
    check_latlon(path, values["lat"], values["lon"], lines, names["lat"], names["lon"],
                 faults=faults)
    image = (image_values(path, rows["image"].to_numpy(), lines, names["image"], faults=faults)
             if text else None)
    table = nav_table(
        len(rows), values["timestamp"], values["lat"], values["lon"], values["depth_m"], lines,
        altitude_m=values.get("altitude_m"), heading_deg=values.get("heading_deg"), image=image,
    )
    return table, faults


def sniff(head):
    """oplab_pipeline's camera CSV: every required column of :data:`COLUMNS` in the header."""
    from .sniffing import Sniff, has_suffix, header_roles

    verdict = Sniff("oplab-camera-csv", 0.0, per_image=True)
    if not has_suffix(head, ".csv"):
        return verdict
    found = header_roles(head.lines, COLUMNS)
    if found is None:
        return verdict
    return Sniff("oplab-camera-csv", 0.97, per_image=True, found=found,
                 note="oplab_pipeline camera poses, one row per image")
