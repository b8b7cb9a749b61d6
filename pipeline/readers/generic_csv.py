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
case and spaces, then ignoring a bracketed unit as well ("Depth [m]" for "depth"); a name the
header lacks is refused naming the key, the name and the file's columns.

A bad row costs only itself (see :func:`read_generic_csv`): it is left out and described in
``NavData.row_faults`` (file, line, column, what was found and expected). The file is refused as
a whole only when more than half of its rows are bad, or a vehicle time series keeps fewer than
2 good rows. The last line of a file that ends without a newline is judged cut short when it has
fewer fields than the header, an empty field where the column is never empty, or a number with
fewer decimals than every one of the up to 50 values above it in its column.

Declared units are checked against the values: ``heading_unit: rad`` with headings beyond 2*pi
(at least 10% of them; fewer are bad rows) is refused as likely degrees; headings read as
degrees that all lie within +-2*pi along a turning track whose course they follow only when
read as radians are refused as likely radians; ``time_unit`` unix_s on milliseconds (or
unix_ms on seconds) is refused with the likely unit. ``depth_unit`` (m or dbar, about 0.99 m
per dbar) cannot be told from the values.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..track import MotionLimits
from . import BAD_VALUE_ROWS, OUT_OF_RANGE_ROWS, NavData, NavFormatError
from ._common import (
    _MISSING_WORDS,
    DEGREES,
    METRES,
    RADIANS,
    RowFaults,
    check_latlon,
    image_values,
    leave_out_bad_rows,
    match_column,
    nav_table,
    numbers,
    read_header,
    read_rows,
)
from ._times import _ZONE_END, TIME_UNITS, describe, parse_timezone, unix_seconds
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
    raises ValueError; a file that does not match it (a column it names is not in the header,
    a declared unit the values contradict, more than half of the rows bad) raises
    NavFormatError. ``format_name`` is the format reported in the result (named formats such as
    ``qgc-csv`` read through here).

    A bad row costs only itself: a value that is not what its column holds, a latitude or
    longitude off the globe, a heading beyond the declared unit's range, a row with more or
    fewer fields than the header, or a last line cut short (:func:`._common.cut_last_line`) is
    left out and described in ``row_faults`` (counted in ``notes`` by kind). In a per-image file
    such a row that still names its image is kept without time or position, so the image is
    quarantined naming the row. With ``ragged_rows`` a row whose number of fields is not the
    header's is only counted (``notes["rows_wrong_field_count"]``), as QGroundControl's logs
    need.
    """
    path = Path(path)
    spec = column_map(columns)
    header = read_header(path, spec["delimiter"])
    use_latlon = spec["lat"] is not None
    times = spec["time"]
    keys = ["depth", "image", "altitude", "heading"]
    keys += ["lat", "lon"] if use_latlon else ["easting", "northing"]
    positions = {f"time{i}": _find(path, header, name, "time") for i, name in enumerate(times)}
    positions.update({k: _find(path, header, spec[k], k) for k in keys if spec[k] is not None})
    text = [k for k in positions if k == "image"
            or (k.startswith("time") and spec["time_unit"] in ("iso8601", "format"))]
    ragged: list[int] | None = [] if ragged_rows else None
    faults = RowFaults()
    rows, lines = read_rows(path, len(header), positions, text=text, delimiter=spec["delimiter"],
                            dropped=ragged, faults=faults)
    n = len(rows)
    missing = tuple(spec["missing_values"])

    def num(key: str, expected: str) -> np.ndarray | None:
        if key not in positions:
            return None
        return numbers(path, rows[key], lines, spec[key], expected, missing=missing, faults=faults)

    t_text = rows["time0"]
    for i in range(1, len(times)):
        t_text = t_text.str.strip() + " " + rows[f"time{i}"].str.strip()
    t = _times(path, t_text, lines, " + ".join(times), spec, missing, faults)
    check_time_unit(path, t, lines, " + ".join(times), spec["time_unit"], faults)
    if use_latlon:
        lat, lon = num("lat", DEGREES), num("lon", DEGREES)
        check_latlon(path, lat, lon, lines, spec["lat"], spec["lon"], faults=faults)
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
    if heading is not None:
        check_heading_unit(path, heading, lines, spec["heading"], spec["heading_unit"], t, lat,
                           lon, faults)
        if spec["heading_unit"] == "rad":
            heading = np.degrees(heading)
    per_image = "image" in positions
    image = (image_values(path, rows["image"].to_numpy(), lines, spec["image"], faults=faults)
             if per_image else None)
    table = nav_table(n, t, lat, lon, depth, lines, altitude_m=num("altitude", METRES),
                      heading_deg=heading, image=image)
    table, row_faults = leave_out_bad_rows(path, table, faults, per_image, format_name)
    for f in row_faults:
        notes[f.kind] = notes.get(f.kind, 0) + 1
    if not per_image:
        table, cleaned = clean_track(table, max_speed_m_s=max_speed_m_s, min_jump_m=min_jump_m,
                                     max_accel_m_s2=max_accel_m_s2)
        notes.update(cleaned)
    return NavData(table=table, per_image=per_image, path=path, format=format_name, notes=notes,
                   row_faults=row_faults)


def _times(path: Path, text: pd.Series, lines: np.ndarray, column: str, spec: dict,
           missing: tuple[str, ...], faults: RowFaults) -> np.ndarray:
    """The time column(s) as unix seconds; a value that is no time is recorded in ``faults``
    (its row bad) and NaN.

    Text times: when the column does not parse as a whole, the values that do not parse at all
    are found in one vectorised pass; the rest is parsed a block at a time, a block that still
    fails (a local time a daylight-saving change skips) split until its rows are found."""
    unit = spec["time_unit"]
    if unit in ("unix_s", "unix_ms"):
        t = numbers(path, text, lines, column, describe(unit), missing=missing, faults=faults)
        return t / 1000.0 if unit == "unix_ms" else t
    text = pd.Series(text, dtype=object).reset_index(drop=True)

    def parse(idx: np.ndarray) -> np.ndarray:
        return unix_seconds(path, text.iloc[idx].reset_index(drop=True), lines[idx], column,
                            unit, spec["time_format"], spec["timezone"], missing)

    n = len(text)
    everything = np.arange(n)
    try:
        return parse(everything)
    except NavFormatError:
        pass
    out = np.full(n, np.nan)
    stripped = text.str.strip()
    absent = (stripped.isna() | stripped.str.lower().isin(_MISSING_WORDS)
              | stripped.isin(list(missing))).to_numpy(dtype=bool)
    present = np.flatnonzero(~absent)
    values = stripped.iloc[present].astype(str)
    parsed = pd.to_datetime(values, errors="coerce", utc=True,
                            format="ISO8601" if unit == "iso8601" else spec["time_format"])
    unparsed = present[parsed.isna().to_numpy()]
    expected = describe(unit, spec["time_format"])
    where = _columns(column)
    for i in unparsed:
        faults.add(lines[i], BAD_VALUE_ROWS,
                   f"line {int(lines[i])}, {where}: found '{stripped.iloc[i]}'; expected {expected}")
    todo = [np.setdiff1d(everything, unparsed)]
    while todo:
        idx = todo.pop()
        if not len(idx):
            continue
        try:
            out[idx] = parse(idx)
        except NavFormatError as exc:
            if len(idx) == 1:
                faults.add(lines[idx[0]], BAD_VALUE_ROWS, _time_fault(
                    path, exc, text.iloc[idx[0]], lines[idx[0]], column, spec))
            else:
                mid = len(idx) // 2
                todo += [idx[mid:], idx[:mid]]
    return out


def _columns(column: str) -> str:
    """"column 'Time'", or "columns 'Date' + 'Time'" for a date and time split in two."""
    names = column.split(" + ")
    return f"column '{column}'" if len(names) == 1 else "columns " + " + ".join(
        f"'{n}'" for n in names)


def _time_fault(path: Path, exc: Exception, value: object, line: int, column: str,
                spec: dict) -> str:
    """The detail of one time that does not parse. A value that carries its own zone ('Z',
    '+10:00') is never a daylight-saving gap of the map's timezone, whatever unix_seconds
    guessed: it is a time that does not parse."""
    detail = str(exc).removeprefix(f"{path}: ")
    text = str(value).strip()
    if "daylight-saving" in detail and (text.endswith(("Z", "z")) or _ZONE_END.search(text)):
        detail = (f"line {int(line)}, {_columns(column)}: found '{text}'; expected "
                  f"{describe(spec['time_unit'], spec['time_format'])}")
    return detail


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


def _find(path: Path, header: list[str], name: str, key: str) -> int:
    pos = match_column(header, name)
    if pos is not None:
        return pos
    from .sniffing import nearest

    close = nearest(header, [name, key] + list(_KEY_WORDS.get(key, ())))
    hint = f" (nearest: {', '.join(repr(c) for c in close)})" if close else ""
    raise NavFormatError(
        f"{path}: line 1, column map key '{key}': found no column '{name}' in the header "
        f"(matched exactly, then ignoring case, spaces and a bracketed unit); the file's columns "
        f"are {header}; expected '{key}' to name one of them{hint}"
    )


# words that name a key's column, for the nearest header names in a message
_KEY_WORDS = {"lat": ("latitude",), "lon": ("longitude",), "time": ("timestamp", "date"),
              "heading": ("yaw",), "image": ("filename", "path")}


_TWO_PI = 2.0 * np.pi
HEADING_TOLERANCE_RAD = 0.01  # a radian heading may overshoot 2*pi by rounding, no more
UNIT_SHARE = 0.1  # of the values beyond a unit's range: the unit is wrong, not a few rows
MIN_TURN_ROWS = 20  # headings needed before radians declared as degrees can be told
_TURN_STEP_M = 2.0  # track points this far apart give its course (below: fix noise)
_MIN_TURN_STEPS = 10
_AGREE_DEG = 40.0  # median heading-course difference of a heading that fits the track
_DISAGREE_DEG = 60.0


def check_heading_unit(path: Path, heading: np.ndarray, lines: np.ndarray, column: str,
                       unit: str, t: np.ndarray, lat: np.ndarray, lon: np.ndarray,
                       faults: RowFaults) -> None:
    """The declared ``heading_unit`` checked against the values (NavFormatError naming the
    likely unit), before anything is converted.

    ``rad``: values beyond 2*pi (0.01 rad of tolerance) are degrees when at least UNIT_SHARE of
    the headings are; fewer are rows of their own, left out (``out_of_range_rows``).
    ``deg``: all of at least MIN_TURN_ROWS headings within +-2*pi, along a track whose course
    over ground they follow when read as radians and not when read as degrees (judged where the
    two readings point more than 60 degrees apart, at track points 2 m apart), are radians (a
    vehicle heading within 6 degrees of north while its track turns is not what a log says).
    """
    ok = np.isfinite(heading)
    h = heading[ok]
    if not len(h):
        return
    if unit == "rad":
        beyond = np.abs(heading) > _TWO_PI + HEADING_TOLERANCE_RAD
        k = int(beyond.sum())
        if k and k >= UNIT_SHARE * len(h):
            top = float(np.abs(h).max())
            raise NavFormatError(
                f"{path}: column map key 'heading_unit': found 'rad', but {k} of {len(h)} values "
                f"of column '{column}' lie beyond 2*pi (up to {top:g}; first at line "
                f"{int(lines[np.flatnonzero(beyond)[0]])}): degrees? expected headings in "
                "radians within +-2*pi; set heading_unit: deg if the column holds degrees")
        for i in np.flatnonzero(beyond):
            faults.add(lines[i], OUT_OF_RANGE_ROWS,
                       f"line {int(lines[i])}, column '{column}': found {float(heading[i])!r}; "
                       "expected a heading in radians, within +-2*pi (heading_unit: rad)")
        return
    if len(h) < MIN_TURN_ROWS or np.abs(h).max() > _TWO_PI + HEADING_TOLERANCE_RAD:
        return
    fit = _course_fit(t, lat, lon, heading)
    if fit is None:
        return
    as_rad, as_deg, turn = fit
    if as_rad <= _AGREE_DEG and as_deg >= _DISAGREE_DEG:
        raise NavFormatError(
            f"{path}: column map key 'heading_unit': found 'deg' (the default when not given), but all {len(h)} "
            f"values of column '{column}' lie within +-2*pi (from {float(h.min()):g} to "
            f"{float(h.max()):g}) while the track turns through {turn:.0f} degrees: radians? "
            f"read as radians they follow the track's course (median difference "
            f"{as_rad:.0f} degrees), read as degrees they do not ({as_deg:.0f}); set "
            "heading_unit: rad if the column holds radians")


def _course_fit(t, lat, lon, heading) -> tuple[float, float, float] | None:
    """(median difference from the course over ground of the headings read as radians, the
    same read as degrees, how far the course turns) in degrees; None when the track is too
    short or too still to say."""
    from .oplab_nav import local_xy

    ok = np.isfinite(t) & np.isfinite(lat) & np.isfinite(lon) & np.isfinite(heading)
    if ok.sum() < MIN_TURN_ROWS:
        return None
    order = np.argsort(t[ok], kind="stable")
    x, y = local_xy(lat[ok][order], lon[ok][order])
    h = heading[ok][order]
    walked = np.concatenate([[0.0], np.cumsum(np.hypot(np.diff(x), np.diff(y)))])
    marks = np.flatnonzero(np.diff(np.floor(walked / _TURN_STEP_M), prepend=-1.0) > 0)
    if len(marks) <= _MIN_TURN_STEPS:
        return None
    course = np.degrees(np.arctan2(np.diff(x[marks]), np.diff(y[marks]))) % 360.0
    at = h[marks[:-1]]

    def off(a, b):
        return np.abs((a - b + 180.0) % 360.0 - 180.0)

    as_rad, as_deg = np.degrees(at) % 360.0, at % 360.0
    # only where the two readings point apart does the course tell them apart (a leg due north
    # reads 0 either way)
    apart = off(as_rad, as_deg) > _DISAGREE_DEG
    if apart.sum() < _MIN_TURN_STEPS:
        return None
    turn = float(np.ptp(np.unwrap(np.radians(course))) * 180.0 / np.pi)
    return (float(np.median(off(as_rad, course)[apart])),
            float(np.median(off(as_deg, course)[apart])), turn)


_MS_RANGE = (6.3e11, 4.2e12)  # unix milliseconds, 1990 .. 2103
_S_RANGE = (6.3e8, 4.2e9)  # unix seconds, 1990 .. 2103


def check_time_unit(path: Path, t: np.ndarray, lines: np.ndarray, column: str, unit: str,
                    faults: RowFaults) -> None:
    """A declared ``time_unit`` of unix_s or unix_ms that more than half of the times
    contradict (milliseconds read as seconds, or seconds declared as milliseconds): refused
    with the likely unit."""
    if unit not in ("unix_s", "unix_ms"):
        return
    bad_rows = faults.mask(lines)
    v = t[np.isfinite(t) & ~bad_rows]
    if not len(v):
        return
    raw = v * 1000.0 if unit == "unix_ms" else v
    other, rng, name, key = ((_S_RANGE, _MS_RANGE, "unix seconds", "unix_s") if unit == "unix_ms"
                             else (_MS_RANGE, _S_RANGE, "unix milliseconds", "unix_ms"))
    fits_other = (raw >= other[0]) & (raw <= other[1])
    fits_own = (raw >= rng[0]) & (raw <= rng[1])
    if fits_other.sum() * 2 > len(raw) and not fits_own.any():
        med = float(np.median(raw))
        raise NavFormatError(
            f"{path}: column map key 'time_unit': found {unit!r}, but column '{column}' holds "
            f"values such as {med:.0f}, which as {unit} are no date between 1990 and 2103: "
            f"{name}? expected {unit} values; set time_unit: {key} if the column holds {name}")


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
