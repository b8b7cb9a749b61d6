"""Plain delimited navigation (format ``csv``) described by a column map.

Column map keys (names of columns in the file, plus units):

- ``time`` (required): one column, or a list of columns joined with a space before parsing
  (a date and a time of day split in two: ``[Date, Time]``);
- ``time_unit``: "unix_s" (default for one column), "unix_ms" (milliseconds), "iso8601"
  (default for a list of columns) or "format" (implied by ``time_format``);
- ``time_format``: a strftime format such as "%m/%d/%Y %H:%M:%S" ("%f" reads fractions of a
  second, "%z" a zone written in the value);
- ``timezone``: the zone of times written without one: "UTC" (default), an offset such as
  "+10:00" or an IANA name such as "Australia/Hobart";
- ``missing_values``: extra tokens read as missing, besides the built-in empty/nan/NA/null
  (QGroundControl writes "--.--");
- ``image`` (optional): image path relative to the dive folder; with it every row is the pose
  of one image (``per_image``), without it the file is a vehicle time series and is cleaned
  like oplab navigation (see :func:`pipeline.readers.oplab_nav.clean_track`);
- ``lat`` and ``lon`` (WGS84 degrees), or ``easting``, ``northing`` and ``xy_crs`` (e.g.
  "EPSG:32755") when the file has projected coordinates only;
- ``depth`` (optional), ``depth_positive``: "down" (default) or "up" (values negated), and
  ``depth_unit``: "m" (default) or "dbar" (sea pressure, as CTDs and towed cameras log it as
  ``Pres``). Without a depth column depth_m is NaN and ``notes["no_depth"]`` is 1;
- ``altitude``, ``heading`` (optional) and ``heading_unit``: "deg" (default) or "rad";
- ``delimiter``: "," by default.

Pressure to depth: dbar are converted with the UNESCO 1983 formula (Fofonoff and Millard,
UNESCO technical papers in marine science 44; Saunders' fit of the standard ocean), which uses
the row's latitude (45 degrees where the row has none): about 0.99 m per dbar near the
surface. Sea pressure (without the atmosphere's 10.1 dbar) is expected, as CTDs log it.

Keys given as None count as absent. Column names are matched exactly first, then ignoring
case and spaces, then ignoring a bracketed unit as well ("Depth [m]" for "depth").
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ..track import MotionLimits
from . import NavData, NavFormatError
from ._common import (
    DEGREES,
    METRES,
    RADIANS,
    check_latlon,
    image_values,
    match_column,
    nav_table,
    numbers,
    read_header,
    read_rows,
)
from ._times import TIME_UNITS, parse_timezone, unix_seconds
from .oplab_nav import MAX_SPEED_M_S, MIN_JUMP_M, clean_track

DBAR = "a sea pressure in decibar"
_DEFAULTS = {
    "time": None, "time_unit": None, "time_format": None, "timezone": "UTC",
    "missing_values": (), "image": None, "lat": None, "lon": None, "easting": None,
    "northing": None, "xy_crs": None, "depth": None, "depth_positive": "down", "depth_unit": "m",
    "altitude": None, "heading": None, "heading_unit": "deg", "delimiter": ",",
}
_CHOICES = {
    "time_unit": TIME_UNITS, "depth_positive": ("down", "up"), "depth_unit": ("m", "dbar"),
    "heading_unit": ("deg", "rad"),
}
_NAME_KEYS = ("image", "lat", "lon", "easting", "northing", "depth", "altitude", "heading")


def read_generic_csv(
    path: Path,
    columns: Mapping[str, Any],
    max_speed_m_s: float = MAX_SPEED_M_S,
    min_jump_m: float = MIN_JUMP_M,
    format_name: str = "csv",
    max_accel_m_s2: float = MotionLimits.max_accel_m_s2,
    ragged_rows: bool = False,
) -> NavData:
    """Read a delimited navigation file through a column map (see the module docstring).

    A column map that is itself wrong (unknown key, missing ``time``, no position columns)
    raises ValueError; a file that does not match it raises NavFormatError. ``format_name`` is
    the format reported in the result (named formats such as ``qgc-csv`` read through here).
    With ``ragged_rows`` a row whose number of fields is not the header's is left out and
    counted (``notes["rows_wrong_field_count"]``) instead of refusing the file.
    """
    path = Path(path)
    spec = column_map(columns)
    header = read_header(path, spec["delimiter"])
    use_latlon = spec["lat"] is not None
    times = spec["time"]
    keys = ["depth", "image", "altitude", "heading"]
    keys += ["lat", "lon"] if use_latlon else ["easting", "northing"]
    positions = {f"time{i}": _find(path, header, name) for i, name in enumerate(times)}
    positions.update({k: _find(path, header, spec[k]) for k in keys if spec[k] is not None})
    text = [k for k in positions if k == "image"
            or (k.startswith("time") and spec["time_unit"] in ("iso8601", "format"))]
    ragged: list[int] | None = [] if ragged_rows else None
    rows, lines = read_rows(path, len(header), positions, text=text, delimiter=spec["delimiter"],
                            dropped=ragged)
    n = len(rows)
    missing = tuple(spec["missing_values"])

    def num(key: str, expected: str) -> np.ndarray | None:
        if key not in positions:
            return None
        return numbers(path, rows[key], lines, spec[key], expected, missing=missing)

    t_text = rows["time0"]
    for i in range(1, len(times)):
        t_text = t_text.str.strip() + " " + rows[f"time{i}"].str.strip()
    t = unix_seconds(path, t_text, lines, " + ".join(times), spec["time_unit"],
                     spec["time_format"], spec["timezone"], missing)
    if use_latlon:
        lat, lon = num("lat", DEGREES), num("lon", DEGREES)
        check_latlon(path, lat, lon, lines, spec["lat"], spec["lon"])
    else:
        lat, lon = _project(spec["xy_crs"], num("easting", METRES), num("northing", METRES))
    notes: dict[str, int] = {"rows_wrong_field_count": len(ragged)} if ragged else {}
    depth = num("depth", DBAR if spec["depth_unit"] == "dbar" else METRES)
    if depth is None:
        depth = np.full(n, np.nan)
        notes["no_depth"] = 1
    else:
        if spec["depth_positive"] == "up":
            depth = -depth
        if spec["depth_unit"] == "dbar":
            depth = dbar_to_metres(depth, lat)
    heading = num("heading", RADIANS if spec["heading_unit"] == "rad" else DEGREES)
    if heading is not None and spec["heading_unit"] == "rad":
        heading = np.degrees(heading)
    per_image = "image" in positions
    image = image_values(path, rows["image"].to_numpy(), lines, spec["image"]) if per_image else None
    table = nav_table(n, t, lat, lon, depth, lines, altitude_m=num("altitude", METRES),
                      heading_deg=heading, image=image)
    if not per_image:
        table, cleaned = clean_track(table, max_speed_m_s=max_speed_m_s, min_jump_m=min_jump_m,
                                     max_accel_m_s2=max_accel_m_s2)
        notes.update(cleaned)
    return NavData(table=table, per_image=per_image, path=path, format=format_name, notes=notes)


def dbar_to_metres(pressure_dbar: np.ndarray, lat_deg: np.ndarray | None = None) -> np.ndarray:
    """Depth (m) of a sea pressure (dbar), UNESCO 1983 (Fofonoff and Millard), at the given
    latitudes (45 degrees where unknown). Negative pressures give negative depths."""
    p = np.asarray(pressure_dbar, dtype=np.float64)
    lat = np.full(p.shape, 45.0) if lat_deg is None else np.asarray(lat_deg, dtype=np.float64)
    lat = np.where(np.isfinite(lat), lat, 45.0)
    x = np.sin(np.deg2rad(lat)) ** 2
    g = 9.780318 * (1.0 + (5.2788e-3 + 2.36e-5 * x) * x) + 1.092e-6 * p
    return ((((-1.82e-15 * p + 2.279e-10) * p - 2.2512e-5) * p + 9.72659) * p) / g


def column_map(columns: Mapping[str, Any] | Any) -> dict[str, Any]:
    """The column map with defaults filled in; ValueError when it cannot describe a file.

    ``time`` comes back as a list of column names, ``time_unit`` resolved ("format" when a
    ``time_format`` is given; "iso8601" for a list of columns; "unix_s" otherwise) and
    ``missing_values`` as a tuple.
    """
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
    spec["time"] = _time_columns(spec["time"])
    if spec["time_format"] is not None:
        if not isinstance(spec["time_format"], str) or "%" not in spec["time_format"]:
            raise ValueError(f"column map, key 'time_format': found {spec['time_format']!r}; "
                             "expected a strftime format such as '%m/%d/%Y %H:%M:%S'")
        if spec["time_unit"] not in (None, "format"):
            raise ValueError(f"column map, keys 'time_unit'/'time_format': found time_unit "
                             f"{spec['time_unit']!r} with a time_format; expected time_unit "
                             "'format' (or no time_unit) when a time_format is given")
        spec["time_unit"] = "format"
    elif spec["time_unit"] is None:
        spec["time_unit"] = "iso8601" if len(spec["time"]) > 1 else "unix_s"
    for key, choices in _CHOICES.items():
        if spec[key] not in choices:
            raise ValueError(f"column map, key '{key}': found {spec[key]!r}; expected one of {choices}")
    if spec["time_unit"] == "format" and spec["time_format"] is None:
        raise ValueError("column map, key 'time_format': found nothing; expected a strftime "
                         "format such as '%m/%d/%Y %H:%M:%S' with time_unit 'format'")
    if len(spec["time"]) > 1 and spec["time_unit"] in ("unix_s", "unix_ms"):
        raise ValueError(f"column map, key 'time': found several columns {spec['time']} with "
                         f"time_unit {spec['time_unit']!r}; expected one column for unix times, "
                         "or a time_format for a date and time split in columns")
    try:
        parse_timezone(spec["timezone"])
    except ValueError as exc:
        raise ValueError(f"column map, key 'timezone'{str(exc).removeprefix('timezone')}") from None
    spec["missing_values"] = _tokens(spec["missing_values"])
    for key in _NAME_KEYS + ("xy_crs",):
        if spec[key] is not None and (not isinstance(spec[key], str) or not spec[key].strip()):
            raise ValueError(f"column map, key '{key}': found {spec[key]!r}; expected a column name")
    if (spec["lat"] is None) != (spec["lon"] is None):
        raise ValueError("column map, keys 'lat'/'lon': found only one of them; expected both")
    if spec["lat"] is None and any(spec[k] is None for k in ("easting", "northing", "xy_crs")):
        raise ValueError("column map: found neither 'lat'/'lon' nor all of 'easting', 'northing' "
                         "and 'xy_crs'; expected one way to locate the rows")
    if not isinstance(spec["delimiter"], str) or len(spec["delimiter"]) != 1:
        raise ValueError(f"column map, key 'delimiter': found {spec['delimiter']!r}; "
                         "expected a single character")
    return spec


def _time_columns(value: Any) -> list[str]:
    names = [value] if isinstance(value, str) else value
    if (not isinstance(names, (list, tuple)) or not names
            or not all(isinstance(n, str) and n.strip() for n in names)):
        raise ValueError(f"column map, key 'time': found {value!r}; expected the name of the "
                         "time column, or a list of column names such as [Date, Time]")
    return list(names)


def _tokens(value: Any) -> tuple[str, ...]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)) or not all(isinstance(v, str) for v in items):
        raise ValueError(f"column map, key 'missing_values': found {value!r}; expected a list "
                         "of text tokens such as ['--.--', '-']")
    return tuple(v.strip() for v in items)


def _find(path: Path, header: list[str], name: str) -> int:
    pos = match_column(header, name)
    if pos is not None:
        return pos
    raise NavFormatError(
        f"{path}: line 1, column '{name}': found no such column in the header "
        f"(columns found: {header}); expected the column named in the column map"
    )


def sniff(head):
    """This format's verdict on a file (see :mod:`pipeline.readers.csv_guess`)."""
    from .csv_guess import sniff_csv

    return sniff_csv(head)


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
