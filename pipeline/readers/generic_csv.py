"""Plain delimited navigation (format ``csv``) described by a column map.

Column map keys (names of columns in the file, plus units):

- ``time`` (required) and ``time_unit``: "unix_s" (default) or "iso8601" (UTC unless a zone
  is written);
- ``image`` (optional): image path relative to the dive folder; with it every row is the pose
  of one image (``per_image``), without it the file is a vehicle time series and is cleaned
  like oplab navigation (see :func:`pipeline.readers.oplab_nav.clean_track`);
- ``lat`` and ``lon`` (WGS84 degrees), or ``easting``, ``northing`` and ``xy_crs`` (e.g.
  "EPSG:32755") when the file has projected coordinates only;
- ``depth`` (required) and ``depth_positive``: "down" (default) or "up" (values negated);
- ``altitude``, ``heading`` (optional) and ``heading_unit``: "deg" (default) or "rad";
- ``delimiter``: "," by default.

Keys given as None count as absent. Column names are matched exactly first, then ignoring
case and spaces.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from . import NavData, NavFormatError
from ._common import (
    DEGREES,
    METRES,
    RADIANS,
    UNIX_S,
    check_latlon,
    image_values,
    nav_table,
    norm_name,
    numbers,
    read_header,
    read_rows,
)
from .oplab_nav import MAX_SPEED_M_S, MIN_JUMP_M, clean_track

_DEFAULTS = {
    "time": None, "time_unit": "unix_s", "image": None, "lat": None, "lon": None,
    "easting": None, "northing": None, "xy_crs": None, "depth": None, "depth_positive": "down",
    "altitude": None, "heading": None, "heading_unit": "deg", "delimiter": ",",
}
_CHOICES = {
    "time_unit": ("unix_s", "iso8601"), "depth_positive": ("down", "up"), "heading_unit": ("deg", "rad"),
}


def read_generic_csv(
    path: Path,
    columns: Mapping[str, Any],
    max_speed_m_s: float = MAX_SPEED_M_S,
    min_jump_m: float = MIN_JUMP_M,
) -> NavData:
    """Read a delimited navigation file through a column map (see the module docstring).

    A column map that is itself wrong (unknown key, missing ``time``/``depth``, no position
    columns) raises ValueError; a file that does not match it raises NavFormatError.
    """
    path = Path(path)
    spec = column_map(columns)
    header = read_header(path, spec["delimiter"])
    use_latlon = spec["lat"] is not None
    keys = ["time", "depth", "image", "altitude", "heading"]
    keys += ["lat", "lon"] if use_latlon else ["easting", "northing"]
    positions = {k: _find(path, header, spec[k]) for k in keys if spec[k] is not None}
    text = [k for k in ("image",) if k in positions]
    if spec["time_unit"] == "iso8601":
        text.append("time")
    rows, lines = read_rows(path, len(header), positions, text=text, delimiter=spec["delimiter"])
    n = len(rows)

    def num(key: str, expected: str) -> np.ndarray | None:
        if key not in positions:
            return None
        return numbers(path, rows[key], lines, spec[key], expected)

    if spec["time_unit"] == "iso8601":
        t = _iso_times(path, rows["time"], lines, spec["time"])
    else:
        t = num("time", UNIX_S)
    depth = num("depth", METRES)
    if spec["depth_positive"] == "up":
        depth = -depth
    if use_latlon:
        lat, lon = num("lat", DEGREES), num("lon", DEGREES)
        check_latlon(path, lat, lon, lines, spec["lat"], spec["lon"])
    else:
        lat, lon = _project(spec["xy_crs"], num("easting", METRES), num("northing", METRES))
    heading = num("heading", RADIANS if spec["heading_unit"] == "rad" else DEGREES)
    if heading is not None and spec["heading_unit"] == "rad":
        heading = np.degrees(heading)
    per_image = "image" in positions
    image = image_values(path, rows["image"].to_numpy(), lines, spec["image"]) if per_image else None
    table = nav_table(n, t, lat, lon, depth, lines, altitude_m=num("altitude", METRES),
                      heading_deg=heading, image=image)
    notes: dict[str, int] = {}
    if not per_image:
        table, notes = clean_track(table, max_speed_m_s=max_speed_m_s, min_jump_m=min_jump_m)
    return NavData(table=table, per_image=per_image, path=path, format="csv", notes=notes)


def column_map(columns: Mapping[str, Any] | Any) -> dict[str, Any]:
    """The column map with defaults filled in; ValueError when it cannot describe a file."""
    if hasattr(columns, "model_dump"):  # a pydantic model from the catalog
        columns = columns.model_dump()
    if not isinstance(columns, Mapping):
        raise ValueError(f"column map: found {type(columns).__name__}; expected a mapping of keys "
                         f"{', '.join(_DEFAULTS)}")
    unknown = sorted(set(columns) - set(_DEFAULTS))
    if unknown:
        raise ValueError(f"column map: found unknown key(s) {unknown}; expected keys among "
                         f"{', '.join(_DEFAULTS)}")
    spec = {k: (v if columns.get(k) is None else columns[k]) for k, v in _DEFAULTS.items()}
    for key, choices in _CHOICES.items():
        if spec[key] not in choices:
            raise ValueError(f"column map, key '{key}': found {spec[key]!r}; expected one of {choices}")
    for key in ("time", "depth"):
        if spec[key] is None:
            raise ValueError(f"column map, key '{key}': found nothing; expected the name of the "
                             f"{key} column")
    if (spec["lat"] is None) != (spec["lon"] is None):
        raise ValueError("column map, keys 'lat'/'lon': found only one of them; expected both")
    if spec["lat"] is None and any(spec[k] is None for k in ("easting", "northing", "xy_crs")):
        raise ValueError("column map: found neither 'lat'/'lon' nor all of 'easting', 'northing' "
                         "and 'xy_crs'; expected one way to locate the rows")
    if not isinstance(spec["delimiter"], str) or len(spec["delimiter"]) != 1:
        raise ValueError(f"column map, key 'delimiter': found {spec['delimiter']!r}; "
                         "expected a single character")
    return spec


def _find(path: Path, header: list[str], name: str) -> int:
    if name in header:
        return header.index(name)
    normalised = [norm_name(h) for h in header]
    if norm_name(name) in normalised:
        return normalised.index(norm_name(name))
    raise NavFormatError(
        f"{path}: line 1, column '{name}': found no such column in the header "
        f"(columns found: {header}); expected the column named in the column map"
    )


def _iso_times(path: Path, values: pd.Series, lines: np.ndarray, column: str) -> np.ndarray:
    text = pd.Series(values, dtype=object).map(lambda v: v.strip() if isinstance(v, str) else v)
    text = text.where(text.map(lambda v: isinstance(v, str) and v != ""), None)
    when = pd.to_datetime(text, utc=True, format="ISO8601", errors="coerce")
    bad = (when.isna() & text.notna()).to_numpy()
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise NavFormatError(
            f"{path}: line {int(lines[i])}, column '{column}': found '{text.iloc[i]}'; "
            "expected an ISO 8601 time such as '2024-03-13T00:40:46.897Z'"
        )
    epoch = pd.Timestamp("1970-01-01", tz="UTC")
    return ((when - epoch) / pd.Timedelta(seconds=1)).to_numpy(dtype=np.float64, na_value=np.nan)


def _project(crs: str, easting: np.ndarray, northing: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    from pyproj import CRS, Transformer
    from pyproj.exceptions import CRSError

    try:
        src = CRS.from_user_input(crs)
    except CRSError as exc:
        raise ValueError(f"column map, key 'xy_crs': found {crs!r}; expected a CRS such as "
                         f"'EPSG:32755' ({exc})") from None
    to_geo = Transformer.from_crs(src, "EPSG:4326", always_xy=True)
    lat = np.full(len(easting), np.nan)
    lon = np.full(len(easting), np.nan)
    ok = np.isfinite(easting) & np.isfinite(northing)
    if ok.any():
        x, y = to_geo.transform(easting[ok], northing[ok])
        lon[ok], lat[ok] = x, y
    bad = ~(np.isfinite(lat) & np.isfinite(lon))
    lat[bad] = lon[bad] = np.nan
    return lat, lon
