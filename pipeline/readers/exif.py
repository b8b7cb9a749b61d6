"""Navigation from the images themselves (format ``exif``): EXIF time and GPS tags, via Pillow.

Tags read (EXIF 2.32 / CIPA DC-008):

- time: ``DateTimeOriginal`` ("YYYY:MM:DD HH:MM:SS", Exif IFD) with ``SubSecTimeOriginal``
  (digits of a fraction of a second) and ``OffsetTimeOriginal`` ("+10:00"); without an offset
  the time is read in ``timezone`` (UTC by default). Without ``DateTimeOriginal``:
  ``DateTimeDigitized`` (with its SubSec/Offset tags), then the GPS IFD's ``GPSDateStamp`` +
  ``GPSTimeStamp`` (UTC by definition), counted in ``notes``;
- position: ``GPSLatitude``/``GPSLongitude`` (degrees, minutes, seconds) with
  ``GPSLatitudeRef`` "N"/"S" and ``GPSLongitudeRef`` "E"/"W";
- depth: ``GPSAltitude`` (metres) with ``GPSAltitudeRef`` 0 = above sea level, 1 = below it;
  depth = -(signed altitude), so an image 12 m below the surface has depth 12;
- heading: ``GPSImgDirection`` (degrees) where ``GPSImgDirectionRef`` is "T" (true north) or
  absent; a magnetic ("M") direction is not used (``notes["exif_magnetic_heading"]``).

One row per image, in the order given (``line`` = 1-based position in the list). An image that
cannot be opened, or lacks a time or a position, keeps NaN there (the caller quarantines it with
a reason) and is counted in ``notes``; one bad image never stops the others.
"""

from __future__ import annotations

import datetime as dt
import io
import logging
import re
from collections import Counter
from pathlib import Path

import numpy as np

from . import NavData
from ._common import nav_table
from ._times import parse_timezone
from .sniffing import Head, Sniff

log = logging.getLogger(__name__)

EXIF_IFD, GPS_IFD = 0x8769, 0x8825
DATETIME_ORIGINAL, SUBSEC_ORIGINAL, OFFSET_ORIGINAL = 0x9003, 0x9291, 0x9011
DATETIME_DIGITIZED, SUBSEC_DIGITIZED, OFFSET_DIGITIZED = 0x9004, 0x9292, 0x9012
GPS_LAT_REF, GPS_LAT, GPS_LON_REF, GPS_LON = 1, 2, 3, 4
GPS_ALT_REF, GPS_ALT, GPS_TIME, GPS_DATE = 5, 6, 7, 29
GPS_DIR_REF, GPS_DIR = 16, 17
_OFFSET = re.compile(r"^([+-])(\d{2}):?(\d{2})$")


def read_exif_images(dive_dir: Path, images: list[str], timezone: str = "UTC") -> NavData:
    """Time, position, depth and heading of each image from its own EXIF tags.

    ``images`` are paths relative to ``dive_dir``; they come back in ``image`` as given.
    ``timezone`` (see :func:`pipeline.readers._times.parse_timezone`) applies to times written
    without an offset; a bad zone raises ValueError before any image is read.
    """
    dive_dir = Path(dive_dir)
    tz = parse_timezone(timezone)
    n = len(images)
    cols = {k: np.full(n, np.nan) for k in ("t", "lat", "lon", "depth", "heading")}
    notes: Counter = Counter()
    for i, rel in enumerate(images):
        try:
            values = image_tags(dive_dir / rel, tz, notes)
        except Exception as exc:  # one unreadable image costs only itself
            log.info("exif: %s: %s: %s", dive_dir / rel, type(exc).__name__, exc)
            notes["exif_unreadable"] += 1
            continue
        for key, value in values.items():
            cols[key][i] = value
    notes["exif_no_time"] = int(np.isnan(cols["t"]).sum())
    notes["exif_no_position"] = int((np.isnan(cols["lat"]) | np.isnan(cols["lon"])).sum())
    notes["exif_no_depth"] = int(np.isnan(cols["depth"]).sum())
    table = nav_table(n, cols["t"], cols["lat"], cols["lon"], cols["depth"],
                      np.arange(1, n + 1), heading_deg=cols["heading"], image=list(images))
    return NavData(table=table, per_image=True, path=dive_dir, format="exif",
                   notes={k: int(v) for k, v in notes.items() if v})


def image_tags(path: Path | io.BytesIO, tz: dt.tzinfo, notes: Counter) -> dict[str, float]:
    """The navigation values one image's EXIF holds (keys t, lat, lon, depth, heading)."""
    from PIL import Image

    with Image.open(path) as img:
        exif = img.getexif()
    sub = exif.get_ifd(EXIF_IFD)
    gps = exif.get_ifd(GPS_IFD)
    out: dict[str, float] = {}
    t = _time(sub.get(DATETIME_ORIGINAL), sub.get(SUBSEC_ORIGINAL), sub.get(OFFSET_ORIGINAL), tz)
    if t is None:
        t = _time(sub.get(DATETIME_DIGITIZED), sub.get(SUBSEC_DIGITIZED),
                  sub.get(OFFSET_DIGITIZED), tz)
        notes["exif_time_digitized"] += t is not None
    if t is None:
        t = _gps_time(gps.get(GPS_DATE), gps.get(GPS_TIME))
        notes["exif_time_from_gps"] += t is not None
    if t is not None:
        out["t"] = t
    lat = _dms(gps.get(GPS_LAT), gps.get(GPS_LAT_REF), "N", "S")
    lon = _dms(gps.get(GPS_LON), gps.get(GPS_LON_REF), "E", "W")
    if lat is not None and lon is not None and -90 <= lat <= 90 and -180 <= lon <= 360:
        out["lat"], out["lon"] = lat, lon
    elif lat is not None or lon is not None:
        notes["exif_bad_position"] += 1
    alt = _number(gps.get(GPS_ALT))
    if alt is not None:
        below = _ref_byte(gps.get(GPS_ALT_REF)) == 1
        out["depth"] = alt if below else -alt
    direction = _number(gps.get(GPS_DIR))
    if direction is not None:
        if _text(gps.get(GPS_DIR_REF)).upper() in ("", "T"):
            out["heading"] = direction
        else:
            notes["exif_magnetic_heading"] += 1
    return out


def _text(value: object) -> str:
    if isinstance(value, bytes):
        value = value.decode("ascii", errors="replace")
    return str(value).strip("\x00 ") if value is not None else ""


def _number(value: object) -> float | None:
    try:
        x = float(value)
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    return x if np.isfinite(x) else None


def _ref_byte(value: object) -> int | None:
    if isinstance(value, bytes):
        return value[0] if value else None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _dms(value: object, ref: object, plus: str, minus: str) -> float | None:
    if not isinstance(value, tuple) or len(value) != 3:
        return None
    parts = [_number(v) for v in value]
    if any(p is None for p in parts):
        return None
    deg = parts[0] + parts[1] / 60.0 + parts[2] / 3600.0
    r = _text(ref).upper()
    if r == minus:
        return -deg
    return deg if r in (plus, "") else None


def _time(stamp: object, subsec: object, offset: object, tz: dt.tzinfo) -> float | None:
    text = _text(stamp)
    try:
        when = dt.datetime.strptime(text, "%Y:%m:%d %H:%M:%S")
    except ValueError:
        return None
    digits = re.sub(r"\D", "", _text(subsec))
    frac = int(digits) / 10 ** len(digits) if digits else 0.0
    m = _OFFSET.match(_text(offset))
    if m:
        delta = dt.timedelta(hours=int(m.group(2)), minutes=int(m.group(3)))
        zone = dt.timezone(delta if m.group(1) == "+" else -delta)
    else:
        zone = tz
    return when.replace(tzinfo=zone).timestamp() + frac


def _gps_time(date: object, time: object) -> float | None:
    try:
        day = dt.datetime.strptime(_text(date), "%Y:%m:%d")
        h, m, s = (float(v) for v in time)
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    return day.replace(tzinfo=dt.UTC).timestamp() + h * 3600 + m * 60 + s


def sniff(head: Head) -> Sniff:
    """An image (JPEG or TIFF) whose EXIF holds a capture time and a GPS position."""
    verdict = Sniff("exif", 0.0, per_image=True)
    if not (head.prefix.startswith(b"\xff\xd8") or head.prefix[:4] in (b"II*\x00", b"MM\x00*")):
        return verdict
    notes: Counter = Counter()
    try:
        values = image_tags(io.BytesIO(head.prefix), dt.UTC, notes)
    except Exception:  # a truncated or odd image: not judged
        return verdict
    found = {}
    if "t" in values:
        found["time"] = ("GPSDateStamp/GPSTimeStamp" if notes["exif_time_from_gps"] else
                         "DateTimeDigitized" if notes["exif_time_digitized"] else "DateTimeOriginal")
    if "lat" in values:
        found["lat"], found["lon"] = "GPSLatitude", "GPSLongitude"
    if "depth" in values:
        found["depth"] = "GPSAltitude"
    missing = [what for key, what in (("time", "a capture time (DateTimeOriginal)"),
                                      ("lat", "a position (GPSLatitude/GPSLongitude)"))
               if key not in found]
    if not found:
        return verdict
    confidence = 0.9 if not missing else 0.3
    note = "" if "time" not in found else ("times without OffsetTimeOriginal are read as UTC "
                                           "unless the source's timezone says otherwise")
    return Sniff("exif", confidence, per_image=True, found=found, missing=missing,
                 options={"timezone": "UTC"}, note=note)
