"""Init's own navigation sniff, kept only until every reader sniffs its own format
(``pipeline.readers.sniff_file``): then :func:`pipeline.scaffold.scan.sniff_nav` calls that and
this module goes. It returns the same :class:`Sniff` records, so nothing else changes."""

from __future__ import annotations

import csv
import datetime as dt
import difflib
import math
import re
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from ..readers import oplab_camera, oplab_nav
from ..readers._common import norm_name

_IFDO_PREFIX = 4 << 20  # bytes of a JSON/YAML file searched for the iFDO header key
_CSV_SUFFIXES = {".csv", ".tsv", ".txt"}
IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".tif", ".tiff")


@dataclass
class Sniff:
    format: str
    confidence: float
    per_image: bool
    columns: dict | None = None
    options: dict = field(default_factory=dict)
    found: dict[str, str] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)
    candidates: dict[str, list[str]] = field(default_factory=dict)
    note: str = ""


def head_lines(path: Path, n: int = 60) -> list[str] | None:
    """The first n lines of a text file, or None when it is not UTF-8 text."""
    try:
        with open(path, encoding="utf-8-sig", newline="") as fh:
            lines = []
            for line in fh:
                lines.append(line.rstrip("\r\n"))
                if len(lines) >= n:
                    break
            return lines
    except (UnicodeDecodeError, OSError):
        return None


def sniff_path(path: Path) -> list[Sniff]:
    """Every format the file may be, best first (empty: not navigation)."""
    suffix = path.suffix.lower()
    if suffix in (".json", ".yaml", ".yml"):
        try:
            with open(path, "rb") as fh:
                head = fh.read(_IFDO_PREFIX)
        except OSError:
            return []
        return [Sniff("ifdo", 0.95, True)] if b"image-set-header" in head else []
    lines = head_lines(path)
    if not lines:
        return []
    acfr = _acfr(path, lines)
    if acfr:
        return [acfr]
    if suffix not in _CSV_SUFFIXES:
        return []
    first = next((ln for ln in lines if ln.strip()), "")
    delimiter = max((",", ";", "\t"), key=first.count)
    header = next(csv.reader([first], delimiter=delimiter))
    names = {norm_name(h) for h in header}
    if delimiter == ",":
        if _has_columns(names, oplab_camera.COLUMNS):
            return [Sniff("oplab-camera-csv", 0.95, True)]
        image_aliases = {norm_name(a) for a in oplab_camera.COLUMNS["image"][0]}
        if _has_columns(names, oplab_nav.COLUMNS) and not names & image_aliases:
            return [Sniff("oplab-nav-csv", 0.95, False)]
    return [guess_csv(header, lines[1:], delimiter)]


def _has_columns(names: set[str], spec: dict) -> bool:
    return all(any(norm_name(a) in names for a in aliases)
               for aliases, required, _ in spec.values() if required)


def _acfr(path: Path, lines: list[str]) -> Sniff | None:
    named = path.name.lower() == "stereo_pose_est.data"
    yaws = []
    for line in lines:
        s = line.strip()
        if s.upper().startswith("% STEREO_POSE_FILE"):
            named = True
        if not s or s.startswith("%"):
            continue
        fields = s.split()
        if fields[0] in ("ORIGIN_LATITUDE", "ORIGIN_LONGITUDE"):
            named = True
        elif len(fields) == 15 and fields[10].lower().endswith(IMAGE_EXTS):
            named = True
            try:
                yaws.append(float(fields[9]))
            except ValueError:
                pass
        elif not named:
            return None
    if not named:
        return None
    # radians never leave [-2pi, 2pi]; oplab-pipeline's writer puts degrees there
    degrees = any(abs(y) > 2 * math.pi for y in yaws if math.isfinite(y))
    return Sniff("acfr-stereo-pose", 0.95, True, options={"yaw_unit": "deg"} if degrees else {})


ROLE_ALIASES = {
    "time": ("timestamp", "time", "unix_time", "unixtime", "epoch", "epoch_timestamp",
             "datetime", "date_time", "utc", "utc_time", "time_utc", "timestamp_s", "time_s"),
    "lat": ("latitude", "lat", "lat_deg", "latitude_deg"),
    "lon": ("longitude", "lon", "long", "lng", "lon_deg", "longitude_deg"),
    "depth": ("depth", "depth_m", "vehicle_depth", "depth_below_surface"),
    "altitude": ("altitude", "altitude_m", "alt", "height_above_seabed", "altitude_above_seabed"),
    "heading": ("heading", "heading_deg", "yaw", "yaw_deg", "heading_rad", "yaw_rad"),
    "image": ("image", "image_path", "image_name", "image_file", "filename", "file_name",
              "file", "relative_path", "path"),
}
REQUIRED = ("time", "lat", "lon", "depth")


def bare(name: str) -> str:
    """'Latitude (deg)' -> 'latitude': case, spaces and bracketed units ignored."""
    s = re.sub(r"\[[^\]]*\]|\([^)]*\)", "", str(name)).strip().lower()
    return re.sub(r"[\s-]+", "_", s).strip("_")


def _time_kind(value: str) -> str | None:
    """'unix_s' or 'iso8601' for a value a time column can hold, None otherwise."""
    try:
        t = float(value)
    except ValueError:
        try:
            when = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
        return "iso8601" if when.year > 1900 else None
    return "unix_s" if 6.3e8 <= t <= 4.2e9 else None


def guess_csv(header: list[str], rows: list[str], delimiter: str) -> Sniff:
    """A ``format: csv`` column map, or what is missing for one."""
    names = [bare(h) for h in header]
    sample = [r for r in csv.reader([r for r in rows if r.strip()][:50], delimiter=delimiter)
              if len(r) == len(header)]
    hits = {key: [i for a in aliases for i, b in enumerate(names) if b == a]
            for key, aliases in ROLE_ALIASES.items()}
    pos = {k: v[0] for k, v in hits.items() if v}
    columns: dict = {}
    notes = []
    if hits["time"] and sample:
        # Time and datetime both present: the one whose values are a full time wins
        kinds = [(i, _time_kind(sample[0][i].strip())) for i in hits["time"]]
        good = [(i, k) for i, k in kinds if k]
        if good:
            pos["time"] = good[0][0]
            if good[0][1] == "iso8601":
                columns["time_unit"] = "iso8601"
        else:
            del pos["time"]
            notes.append(f"time column(s) {', '.join(repr(header[i]) for i, _ in kinds)} hold "
                         f"{sample[0][hits['time'][0]].strip()!r}: neither unix seconds nor an "
                         "ISO 8601 date-time")
    found = {k: header[i] for k, i in pos.items()}
    missing = [f"a {k} column (looked for: {', '.join(ROLE_ALIASES[k])})"
               for k in REQUIRED if k not in pos]
    if missing or not sample:
        free = [h for h in header if h not in found.values()]
        candidates = {k: nearest(k, free) for k in REQUIRED if k not in pos}
        return Sniff("csv", 0.2 if found else 0.05, "image" in pos, None, {}, found, missing,
                     {k: v for k, v in candidates.items() if v}, "; ".join(notes))
    columns = {**{k: header[i] for k, i in pos.items()}, **columns}
    depths = []
    for r in sample:
        try:
            depths.append(float(r[pos["depth"]]))
        except ValueError:
            pass
    if depths and statistics.median(depths) < 0:
        columns["depth_positive"] = "up"
    if "heading" in pos and "rad" in header[pos["heading"]].lower():
        columns["heading_unit"] = "rad"
    if delimiter != ",":
        columns["delimiter"] = delimiter
    return Sniff("csv", 0.7, "image" in pos, columns, {}, found, [], {}, "; ".join(notes))


def nearest(role: str, header: list[str], n: int = 3) -> list[str]:
    """Header names most like the names a role is looked for under (difflib), best first."""
    scored = {}
    for h in header:
        b = bare(h)
        tokens = set(re.split(r"[_.\s]+", b))
        best = max(difflib.SequenceMatcher(None, b, a).ratio() for a in ROLE_ALIASES[role])
        if tokens & set(ROLE_ALIASES[role]):
            best = max(best, 0.9)
        if best >= 0.6:
            scored[h] = best
    return sorted(scored, key=lambda h: -scored[h])[:n]
