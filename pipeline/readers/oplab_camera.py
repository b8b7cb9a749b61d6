"""oplab_pipeline camera pose CSV (format ``oplab-camera-csv``): one row per image.

Header (extra columns may follow; case and spaces in names are ignored)::

    relative_path,northing [m],easting [m],depth [m],roll [deg],pitch [deg],heading [deg],
    altitude [m],timestamp [s],latitude [deg],longitude [deg],...

Positions come from latitude/longitude. Northing/easting are metres from the mission origin
(a local frame, not UTM) and are not used.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from . import NavData
from ._common import (
    DEGREES,
    METRES,
    UNIX_S,
    check_latlon,
    find_column,
    image_values,
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
    """Read an oplab camera CSV; rows with missing latitude/longitude are kept (NaN)."""
    path = Path(path)
    table = read_oplab_columns(path, COLUMNS)
    return NavData(table=table, per_image=True, path=path, format="oplab-camera-csv")


def read_oplab_columns(path: Path, spec: dict) -> pd.DataFrame:
    """Read the columns of ``spec`` from an oplab CSV into the normalised table."""
    header = read_header(path, ",")
    positions, names = {}, {}
    for key, (aliases, required, _) in spec.items():
        pos = find_column(path, header, aliases, required)
        if pos is not None:
            positions[key], names[key] = pos, header[pos].strip()
    text = ["image"] if "image" in positions else []
    rows, lines = read_rows(path, len(header), positions, text=text)
    values = {
        key: numbers(path, rows[key], lines, names[key], spec[key][2])
        for key in positions if key != "image"
    }
    check_latlon(path, values["lat"], values["lon"], lines, names["lat"], names["lon"])
    image = image_values(path, rows["image"].to_numpy(), lines, names["image"]) if text else None
    return nav_table(
        len(rows), values["timestamp"], values["lat"], values["lon"], values["depth_m"], lines,
        altitude_m=values.get("altitude_m"), heading_deg=values.get("heading_deg"), image=image,
    )
