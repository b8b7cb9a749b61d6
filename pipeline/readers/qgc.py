"""QGroundControl telemetry CSV (format ``qgc-csv``): an ROV's (ArduSub's) time series.

QGroundControl's "Save CSV log of telemetry" writes one row a second (``Vehicle::_writeCsvLine``):
a ``Timestamp`` column, then the vehicle's facts (``roll``, ``pitch``, ``heading``,
``altitudeRelative``, ``altitudeAMSL``, ``groundSpeed``, ``flightTime``, ...) and the facts of
its fact groups named ``<group>.<fact>`` (``gps.lat``, ``gps.lon``, ``gps.hdop``,
``gps.courseOverGround``, ``gps.count``, ``gps.lock``, ...). Values are the facts' display
strings; a value never received is written ``--.--`` (read as missing).

- ``Timestamp``: ``QDateTime::currentDateTime()`` formatted "yyyy-MM-dd hh:mm:ss.zzz", i.e. the
  ground station's LOCAL clock, without a zone. It is read in ``timezone`` ("UTC" by default):
  set the source's timezone to the ground station's zone.
- ``gps.lat``/``gps.lon``: WGS84 degrees of the vehicle's GPS fact group; on an ROV this is the
  position an underwater positioning system (Water Linked UGPS, a USBL) feeds the autopilot.
- Depth: a ``depth`` column where the file has one (metres, positive down); otherwise
  depth = -``altitudeRelative``, the height relative to the home position (ArduSub's home is at
  the surface, so it is negative below it). With neither, depth is NaN (``notes["no_depth"]``).
- ``heading``: degrees, 0 = north, clockwise.

QGroundControl adds the columns of a fact group that appears while it logs (a second battery,
a new sensor) without rewriting the header, and groups are written in name order, so the new
values shift those after them: a row whose number of fields is not the header's is left out
and counted (``notes["rows_wrong_field_count"]``, reported per dive), never read shifted.

Rows without a position (``--.--`` before the first fix) are dropped as the vehicle time series
is cleaned (counted in ``notes["nan_rows"]``); images are matched by time. The file is read
through :func:`pipeline.readers.generic_csv.read_generic_csv` with the column map
:func:`column_map_for` builds, so its rules and messages are those of ``format: csv``.
"""

from __future__ import annotations

from pathlib import Path

from ..track import MotionLimits
from . import NavData
from ._common import match_column, read_header
from .generic_csv import read_generic_csv
from .oplab_nav import MAX_SPEED_M_S, MIN_JUMP_M
from .sniffing import Head, Sniff, comma_header

TIME_FORMAT = "%Y-%m-%d %H:%M:%S.%f"  # Qt's "yyyy-MM-dd hh:mm:ss.zzz"
MISSING = ["--.--"]


def column_map_for(header: list[str], timezone: str = "UTC") -> dict:
    """The ``format: csv`` column map of a QGroundControl telemetry header."""
    columns = {"time": "Timestamp", "time_format": TIME_FORMAT, "timezone": timezone,
               "missing_values": MISSING, "lat": "gps.lat", "lon": "gps.lon"}
    if match_column(header, "depth") is not None:
        columns["depth"] = header[match_column(header, "depth")]
    elif match_column(header, "altitudeRelative") is not None:
        columns["depth"] = "altitudeRelative"
        columns["depth_positive"] = "up"
    if match_column(header, "heading") is not None:
        columns["heading"] = "heading"
    return columns


def read_qgc_csv(
    path: Path, timezone: str = "UTC", max_speed_m_s: float = MAX_SPEED_M_S,
    min_jump_m: float = MIN_JUMP_M, max_accel_m_s2: float = MotionLimits.max_accel_m_s2,
) -> NavData:
    """Read a QGroundControl telemetry CSV (times in ``timezone``) as a vehicle time series."""
    path = Path(path)
    columns = column_map_for(read_header(path, ","), timezone)
    return read_generic_csv(path, columns, max_speed_m_s=max_speed_m_s, min_jump_m=min_jump_m,
                            max_accel_m_s2=max_accel_m_s2,
                            format_name="qgc-csv", ragged_rows=True)


def sniff(head: Head) -> Sniff:
    """QGroundControl's header: ``Timestamp`` first, ``gps.lat`` and ``gps.lon`` among the facts."""
    verdict = Sniff("qgc-csv", 0.0, per_image=False)
    header = comma_header(head)
    if header is None:
        return verdict
    if not header or header[0] != "Timestamp" or not {"gps.lat", "gps.lon"} <= set(header):
        return verdict
    columns = column_map_for(header)
    found = {"time": "Timestamp", "lat": "gps.lat", "lon": "gps.lon"}
    notes = ["Timestamp is the ground station's local time: set timezone to its zone "
             "(read as UTC otherwise)"]
    if "depth" in columns:
        found["depth"] = columns["depth"]
        if columns["depth"] == "altitudeRelative":
            notes.append("depth = -altitudeRelative (height relative to the surface home)")
    else:
        notes.append("no depth or altitudeRelative column: depth will be unknown (NaN)")
    if "heading" in columns:
        found["heading"] = "heading"
    return Sniff("qgc-csv", 0.97, per_image=False, found=found, options={"timezone": "UTC"},
                 note="; ".join(notes))
