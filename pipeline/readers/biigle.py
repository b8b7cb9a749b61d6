"""BIIGLE image metadata CSV (format ``biigle-csv``): one row per image.

BIIGLE's manual ("File metadata", biigle/core) defines a comma-separated file with a header;
every column but the file name is optional, and some have synonyms (the first name is BIIGLE's
own, ``SUB_*`` are the names of Schoening et al. 2018's workflow)::

    filename | file                                 the image's file name (mandatory)
    taken_at | SUB_datetime                          date and time, e.g. 2016-12-19 12:49:00
    lng | lon | longitude | SUB_longitude            WGS84 degrees (EPSG:4326)
    lat | latitude | SUB_latitude                   WGS84 degrees
    gps_altitude | SUB_altitude                     metres, negative below sea level
    distance_to_ground | SUB_distance               metres above the seabed
    area                                             square metres the image shows (not read)
    yaw | SUB_heading                                degrees, 0 = north, 90 = east

So depth = -gps_altitude, altitude = distance_to_ground, heading = yaw (returned in [0, 360)).
``taken_at`` is ISO 8601 ("2016-12-19 17:09:00", fractions of a second and a zone allowed);
times without a zone are read in ``timezone`` (UTC unless the source says otherwise). A row
without latitude/longitude (or time) is kept with NaN so the caller quarantines its image with
a reason. ``filename`` is the image's path relative to the dive folder, passed through as
written. BIIGLE's timestamped video metadata (several rows per video file) is not image
navigation and is not supported: a file name listed twice is refused.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from . import NavData, NavFormatError
from ._common import (
    DEGREES,
    METRES,
    check_latlon,
    image_values,
    nav_table,
    norm_name,
    numbers,
    read_header,
    read_rows,
)
from ._times import unix_seconds
from .sniffing import Head, Sniff, comma_header, nearest

# role -> accepted header names, BIIGLE's own first
COLUMNS = {
    "image": ("filename", "file"),
    "time": ("taken_at", "SUB_datetime"),
    "lon": ("lng", "lon", "longitude", "SUB_longitude"),
    "lat": ("lat", "latitude", "SUB_latitude"),
    "gps_altitude": ("gps_altitude", "SUB_altitude"),
    "distance_to_ground": ("distance_to_ground", "SUB_distance"),
    "yaw": ("yaw", "SUB_heading"),
}
# names only BIIGLE's format uses: one of them (with a file name column) identifies it
_DISTINCT = {norm_name(n) for n in ("taken_at", "SUB_datetime", "lng", "gps_altitude",
                                    "SUB_altitude", "distance_to_ground", "SUB_distance",
                                    "SUB_latitude", "SUB_longitude", "SUB_heading")}


def read_biigle_csv(path: Path, timezone: str = "UTC") -> NavData:
    """Read a BIIGLE metadata CSV; rows without a position or time are kept (NaN)."""
    path = Path(path)
    header = read_header(path, ",")
    positions, names = _positions(path, header)
    text = [k for k in ("image", "time") if k in positions]
    rows, lines = read_rows(path, len(header), positions, text=text)
    n = len(rows)

    def num(key: str, expected: str) -> np.ndarray | None:
        return numbers(path, rows[key], lines, names[key], expected) if key in positions else None

    images = image_values(path, rows["image"].to_numpy(), lines, names["image"])
    _no_repeats(path, images, lines, names["image"])
    t = (unix_seconds(path, rows["time"], lines, names["time"], "iso8601", timezone=timezone)
         if "time" in positions else None)
    lat, lon = num("lat", DEGREES), num("lon", DEGREES)
    if lat is not None:
        check_latlon(path, lat, lon, lines, names["lat"], names["lon"])
    height = num("gps_altitude", METRES)
    table = nav_table(
        n, t, lat, lon, None if height is None else -height, lines,
        altitude_m=num("distance_to_ground", METRES), heading_deg=num("yaw", DEGREES), image=images,
    )
    notes = {f"no_{key}": 1 for key, role in (("time", "time"), ("depth", "gps_altitude"),
                                              ("position", "lat")) if role not in positions}
    return NavData(table=table, per_image=True, path=path, format="biigle-csv", notes=notes)


def _positions(path: Path, header: list[str]) -> tuple[dict[str, int], dict[str, str]]:
    normalised = [norm_name(h) for h in header]
    positions, names = {}, {}
    for key, aliases in COLUMNS.items():
        for alias in aliases:
            if norm_name(alias) in normalised:
                positions[key] = normalised.index(norm_name(alias))
                names[key] = header[positions[key]].strip()
                break
    if "image" not in positions:
        raise NavFormatError(
            f"{path}: line 1, column 'filename': found no such column in the header (columns "
            f"found: {header}); expected BIIGLE's mandatory 'filename' (or 'file') column"
        )
    if ("lat" in positions) != ("lon" in positions):
        have, lack = ("lat", "lng") if "lat" in positions else ("lng", "lat")
        raise NavFormatError(
            f"{path}: line 1, column '{lack}': found '{have}' without '{lack}'; expected both "
            "'lat' and 'lng' (BIIGLE requires them together)"
        )
    return positions, names


def _no_repeats(path: Path, images: list[str], lines: np.ndarray, column: str) -> None:
    seen: dict[str, int] = {}
    for name, line in zip(images, lines, strict=True):
        if name in seen:
            raise NavFormatError(
                f"{path}: line {int(line)}, column '{column}': found '{name}' again (first on "
                f"line {seen[name]}); expected one row per image (BIIGLE's timestamped video "
                "metadata, several rows per file, is not image navigation)"
            )
        seen[name] = int(line)


def sniff(head: Head) -> Sniff:
    """A BIIGLE metadata CSV: a file name column and at least one column only BIIGLE names."""
    verdict = Sniff("biigle-csv", 0.0, per_image=True)
    header = comma_header(head)
    if header is None:
        return verdict
    normalised = {norm_name(h): h for h in header}
    found = {}
    for key, aliases in COLUMNS.items():
        hit = next((normalised[norm_name(a)] for a in aliases if norm_name(a) in normalised), None)
        if hit:
            found[key] = hit
    if "image" not in found or not (_DISTINCT & set(normalised)):
        return verdict
    missing, candidates, notes = [], {}, []
    for key, what in (("lat", "latitude"), ("lon", "longitude"), ("time", "date and time")):
        if key not in found:
            missing.append(f"a {what} column (looked for: {', '.join(COLUMNS[key])})")
            near = nearest(header, COLUMNS[key])
            if near:
                candidates[key] = near
    if "gps_altitude" not in found:
        notes.append("no gps_altitude: depth will be unknown (NaN)")
    if "time" in found:
        notes.append("taken_at without a zone is read as UTC unless the source's timezone says otherwise")
    return Sniff("biigle-csv", 0.96 if "lat" in found else 0.5, per_image=True, found=found,
                 missing=missing, candidates=candidates, note="; ".join(notes))
