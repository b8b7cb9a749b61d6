"""The ``format: csv`` sniff: guess a column map from a delimited file's header and first rows.

Columns are recognised by name (case, spaces and bracketed units ignored) against the aliases
of each role below, then checked against their values: a time column must hold times (unix
seconds or milliseconds, ISO 8601, or a date and time in one of :data:`DATE_FORMATS` x
:data:`TIME_FORMATS`); of several time columns the one holding a full date and time wins, and a
column holding only times of day is paired with a date column (``time: [Date, Time]``).
Depth comes from a depth column (its sign from the values), else a pressure column in dbar
(``Pres`` of towed cameras and CTDs), else a height such as QGroundControl's
``altitudeRelative`` (negative below the surface). Tokens without digits found where numbers
belong ("--.--", "-") become ``missing_values``.
"""

from __future__ import annotations

import datetime as dt
import re
import statistics
from collections.abc import Sequence

from ._common import bare_name, is_missing
from .sniffing import Head, Sniff, has_suffix, nearest, split_header

ALIASES: dict[str, tuple[str, ...]] = {
    "time": ("timestamp", "time", "datetime", "date_time", "recorded_time", "unix_time",
             "unixtime", "epoch", "epoch_timestamp", "utc", "utc_time", "time_utc", "timestamp_s",
             "time_s", "timestamp_ms", "time_ms", "gps_time", "time_stamp", "taken_at",
             "sub_datetime", "datetime_utc", "recordedtime"),
    "date": ("date", "date_utc", "utc_date", "gps_date", "day"),
    "lat": ("latitude", "lat", "lat_deg", "latitude_deg", "gps.lat", "usbllatitude",
            "usbl_latitude", "usbl_lat", "ugps_lat", "locator_lat", "rov_lat", "vehicle_lat",
            "sub_latitude", "lat_dd", "latitude_dd"),
    "lon": ("longitude", "lon", "long", "lng", "lon_deg", "longitude_deg", "gps.lon",
            "usbllongitude", "usbl_longitude", "usbl_lon", "ugps_lon", "locator_lon", "rov_lon",
            "vehicle_lon", "sub_longitude", "lon_dd", "longitude_dd"),
    "depth": ("depth", "depth_m", "vehicle_depth", "depth_below_surface", "usbldepth",
              "usbl_depth", "rov_depth", "locator_depth", "ugps_depth", "z_depth"),
    "pressure": ("pres", "pressure", "pressure_dbar", "pres_dbar", "prdm", "sea_pressure"),
    "height": ("altituderelative", "altitudeamsl", "gps_altitude", "sub_altitude"),
    "altitude": ("altitude", "altitude_m", "alt", "height_above_seabed", "altitude_above_seabed",
                 "distance_to_ground", "dvl_altitude", "sub_distance"),
    "heading": ("heading", "heading_deg", "yaw", "yaw_deg", "heading_rad", "yaw_rad", "hdg",
                "sub_heading", "compass_heading"),
    "image": ("image", "image_path", "image_name", "image_file", "filename", "file_name", "file",
              "relative_path", "path", "imagename", "name", "photo", "photo_name",
              "media_path", "image_filename"),
    "easting": ("easting", "utm_easting", "easting_m", "x_utm", "utm_x"),
    "northing": ("northing", "utm_northing", "northing_m", "y_utm", "utm_y"),
}
DATE_FORMATS = ("%Y-%m-%d", "%Y/%m/%d", "%d/%m/%Y", "%m/%d/%Y", "%d.%m.%Y", "%d-%m-%Y", "%Y%m%d")
TIME_FORMATS = ("%H:%M:%S.%f", "%H:%M:%S", "%H:%M")
_IMAGE_EXT = re.compile(r"\.(jpe?g|png|tiff?|bmp|raw|dng|nef|cr2)$", re.IGNORECASE)
_UNIX_S = (6.3e8, 4.2e9)  # 1990 .. 2103
_SAMPLE = 50


def sniff_csv(head: Head) -> Sniff:
    """The csv verdict: a column map when time, latitude and longitude are found; otherwise
    what is missing and the header names nearest to it. Never raises."""
    none = Sniff("csv", 0.0, per_image=False)
    if not has_suffix(head, ".csv", ".tsv", ".txt") or head.lines is None:
        return none
    split = split_header(head.lines)
    if split is None:
        return none
    header, delimiter, rows = split
    if len(header) < 2:
        return none
    rows = [r for r in rows if len(r) == len(header)][:_SAMPLE]
    col = {h: [r[i].strip() for r in rows] for i, h in enumerate(header)}
    bare = [bare_name(h) for h in header]
    columns: dict = {}
    found: dict[str, str] = {}
    notes: list[str] = []
    missing_tokens: set[str] = set()

    def hits(role: str) -> list[str]:
        return [header[i] for a in ALIASES[role] for i, b in enumerate(bare) if b == a]

    time = _guess_time(header, bare, col, hits, notes)
    if time:
        columns.update(time)
        t = time["time"]
        found["time"] = " + ".join(t) if isinstance(t, list) else t
    for role in ("lat", "lon", "image", "heading", "easting", "northing"):
        names = hits(role)
        if names:
            found[role] = columns[role] = names[0]
    depth_role = _guess_depth(hits, col, columns, notes)
    if depth_role:
        found["depth"] = columns["depth"]
    for name in hits("altitude"):
        if name != columns.get("depth"):
            found["altitude"] = columns["altitude"] = name
            break
    if "heading" in columns:
        _heading_unit(columns, col, notes)
    for role in ("lat", "lon", "depth", "altitude", "heading"):
        if role in columns:
            missing_tokens |= _placeholders(col[columns[role]])
    if missing_tokens:
        columns["missing_values"] = sorted(missing_tokens)
    if delimiter != ",":
        columns["delimiter"] = delimiter
    per_image = "image" in columns and any(_IMAGE_EXT.search(v) for v in col[columns["image"]])
    if "image" in columns and not per_image:
        notes.append(f"column {columns['image']!r} holds no image file names: not used")
        del columns["image"], found["image"]
    if "time" not in columns and per_image:
        _date_only(header, bare, col, hits, columns, found, notes)
    has_xy = "easting" in columns and "northing" in columns
    if "lat" in columns and "lon" in columns:
        columns.pop("easting", None), columns.pop("northing", None)
        found.pop("easting", None), found.pop("northing", None)
    elif has_xy:
        notes.append("easting/northing only: the column map needs their CRS as xy_crs (an EPSG code)")
    missing = _missing_roles(columns, has_xy)
    candidates = {role.split(" ")[0]: nearest(header, _wanted(role)) for role in missing}
    candidates = {k: v for k, v in candidates.items() if v}
    missing_text = [_looked_for(role) for role in missing]
    if "depth" not in columns and not missing:
        notes.append("no depth column: depth will be unknown (NaN)")
    if missing:
        if not found and has_suffix(head, ".txt"):  # text with a comma in its first line
            return none
        confidence = min(0.3, 0.05 + 0.08 * len({"time", "lat", "lon"} & set(found)))
        return Sniff("csv", confidence, per_image=per_image, columns=columns or None, found=found,
                     missing=missing_text, candidates=candidates, note="; ".join(notes))
    confidence = 0.6 + (0.1 if "depth" in columns else 0.0)
    confidence += 0.05 if ("heading" in columns or "altitude" in columns) else 0.0
    confidence += 0.05 if per_image else 0.0
    problem = _check(columns)
    if problem:
        notes.append(problem)
        confidence = 0.2
    return Sniff("csv", round(min(confidence, 0.8), 2), per_image=per_image, columns=columns,
                 found=found, note="; ".join(notes))


# ---------------------------------------------------------------- time


def classify_time(values: Sequence[str]) -> tuple[str, str | None] | None:
    """What a column of time values holds: ("unix_s"|"unix_ms"|"iso8601", None), ("datetime",
    fmt), ("date", fmt) or ("tod", fmt); None when not every sampled value is a time."""
    vals = [v for v in values if v and not is_missing(v) and any(c.isdigit() for c in v)]
    if not vals:
        return None
    try:
        nums = [float(v) for v in vals]
    except ValueError:
        nums = None
    if nums is not None:
        if all(_UNIX_S[0] <= x <= _UNIX_S[1] for x in nums):
            return "unix_s", None
        if all(_UNIX_S[0] * 1e3 <= x <= _UNIX_S[1] * 1e3 for x in nums):
            return "unix_ms", None
        if not all(re.fullmatch(r"\d{8}", v) for v in vals):  # 20240313 is a date
            return None
    if all(("T" in v or " " in v) and ":" in v and _iso(v) for v in vals):
        return "iso8601", None
    full = [f"{d}{sep}{t}" for d in DATE_FORMATS for t in TIME_FORMATS for sep in (" ", "T")]
    for kind, formats in (("datetime", full), ("date", DATE_FORMATS), ("tod", TIME_FORMATS)):
        fmt = _best_format(vals, formats)
        if fmt:
            return kind, fmt
    return None


def _iso(v: str) -> bool:
    try:
        dt.datetime.fromisoformat(v.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        return False
    return True


def _best_format(vals: Sequence[str], formats: Sequence[str]) -> str | None:
    """The format every value matches; of several (day/month order) the one whose times span
    the shortest interval, as consecutive rows of a log lie close together."""
    fitting = []
    for fmt in formats:
        try:
            parsed = [dt.datetime.strptime(v, fmt) for v in vals]
        except ValueError:
            continue
        fitting.append((max(parsed) - min(parsed), len(fitting), fmt))
    if not fitting:
        return None
    return min(fitting)[2]


def _ambiguous(vals: Sequence[str], fmt: str) -> str | None:
    """The day/month-swapped twin of ``fmt`` when the values fit it equally well."""
    if "%d" not in fmt or "%m" not in fmt:
        return None
    twin = fmt.replace("%d", "\0").replace("%m", "%d").replace("\0", "%m")
    try:
        a = [dt.datetime.strptime(v, fmt) for v in vals]
        b = [dt.datetime.strptime(v, twin) for v in vals]
    except ValueError:
        return None
    return twin if max(a) - min(a) == max(b) - min(b) else None


def _guess_time(header, bare, col, hits, notes) -> dict | None:
    named = hits("time") + [h for h, b in zip(header, bare, strict=True) if ("time" in b or "date" in b)]
    dates = hits("date") + [h for h, b in zip(header, bare, strict=True) if "date" in b]
    kinds = {}
    for name in dict.fromkeys(named + dates):
        kind = classify_time([v for v in col[name] if v])
        if kind:
            kinds[name] = kind
    for wanted in (("iso8601", "datetime"), ("unix_s", "unix_ms")):
        for name in dict.fromkeys(named):
            kind = kinds.get(name)
            if kind and kind[0] in wanted:
                return _time_map([name], kind[0], kind[1], col[name], notes)
    tod = next((n for n in dict.fromkeys(named) if kinds.get(n, ("",))[0] == "tod"), None)
    day = next((n for n in dict.fromkeys(dates) if kinds.get(n, ("",))[0] == "date"), None)
    if tod and day:
        fmt = f"{kinds[day][1]} {kinds[tod][1]}"
        joined = [f"{a} {b}" for a, b in zip(col[day], col[tod], strict=True) if a and b]
        return _time_map([day, tod], "datetime", fmt, joined, notes)
    if tod:
        notes.append(f"column {tod!r} holds times of day but no column holds the date")
    return None


def _date_only(header, bare, col, hits, columns, found, notes) -> None:
    """A per-image file whose only time is a date (CoralNet's metadata CSV): the date stands
    for the time, at midnight; poses are located by image, and the build skips the time checks
    such coarse times cannot support (it says so)."""
    dates = hits("date") + [h for h, b in zip(header, bare, strict=True) if "date" in b]
    for name in dict.fromkeys(dates):
        kind = classify_time([v for v in col[name] if v])
        if kind and kind[0] == "date":
            columns["time"], columns["time_format"] = name, kind[1]
            found["time"] = name
            notes.append(f"column {name!r} holds dates only: each image's time is its date at "
                         "midnight, too coarse for the time checks (the build says so)")
            return


def _time_map(names, kind, fmt, values, notes) -> dict:
    out: dict = {"time": names[0] if len(names) == 1 else names}
    if kind in ("unix_ms", "iso8601"):
        out["time_unit"] = kind
    elif kind == "datetime":
        out["time_format"] = fmt
        twin = _ambiguous([v for v in values if v and not is_missing(v)], fmt)
        if twin:
            notes.append(f"dates fit both {fmt!r} and {twin!r} (day and month order): "
                         f"chose {fmt!r}, check it")
    zoned = kind == "iso8601" and all(re.search(r"(Z|[+-]\d{2}:?\d{2})$", v) for v in values if v)
    if kind in ("iso8601", "datetime") and not zoned:
        notes.append("times carry no zone: read as UTC unless the map's timezone says otherwise")
    return out


# ---------------------------------------------------------------- depth, heading, tokens


def _numbers(values: Sequence[str]) -> list[float]:
    out = []
    for v in values:
        try:
            out.append(float(v))
        except ValueError:
            pass
    return out


def _guess_depth(hits, col, columns, notes) -> str | None:
    for role in ("depth", "pressure", "height"):
        names = hits(role)
        if not names:
            continue
        name = names[0]
        columns["depth"] = name
        values = _numbers(col[name])
        if role == "pressure":
            columns["depth_unit"] = "dbar"
            notes.append(f"depth from pressure {name!r} in dbar (UNESCO 1983 conversion)")
        elif role == "height":
            columns["depth_positive"] = "up"
            notes.append(f"depth = -{name} (a height, negative below the surface)")
        if role != "height" and values and statistics.median(values) < 0:
            columns["depth_positive"] = "up"
        return role
    return None


def _heading_unit(columns, col, notes) -> None:
    name = columns["heading"]
    if "rad" in name.lower():
        columns["heading_unit"] = "rad"
        return
    values = _numbers(col[name])
    if len(values) >= 5 and max(abs(v) for v in values) <= 6.3 and len(set(values)) > 1:
        notes.append(f"heading {name!r} stays within +-2*pi: if it is in radians, set heading_unit: rad")


def _placeholders(values: Sequence[str]) -> set[str]:
    """Tokens where numbers belong that hold no digit and are no built-in missing word."""
    return {v for v in values if v and not any(c.isdigit() for c in v) and not is_missing(v)}


def _missing_roles(columns: dict, has_xy: bool) -> list[str]:
    missing = []
    if "time" not in columns:
        missing.append("time")
    if not ("lat" in columns and "lon" in columns):
        if has_xy:
            missing.append("xy_crs")
        else:
            missing += [r for r in ("lat", "lon") if r not in columns]
    return missing


def _wanted(role: str) -> tuple[str, ...]:
    return ALIASES["time"] + ALIASES["date"] if role == "time" else ALIASES.get(role, ())


def _looked_for(role: str) -> str:
    what = {"time": "a time column", "lat": "a latitude column", "lon": "a longitude column",
            "xy_crs": "the CRS of easting/northing (xy_crs, e.g. EPSG:32755)"}[role]
    if role == "xy_crs":
        return what
    names = _wanted(role)
    shown = ", ".join(names[:8]) + (", ..." if len(names) > 8 else "")
    extra = " (unix seconds or ms, ISO 8601, or a date and time)" if role == "time" else ""
    return f"{what}{extra} (looked for: {shown})"


def _check(columns: dict) -> str:
    from .generic_csv import column_map

    try:
        column_map(columns)
    except ValueError as exc:
        return f"the guessed map is not valid: {exc}"
    return ""
