"""ACFR ``stereo_pose_est.data``, VERSION 2 (format ``acfr-stereo-pose``): one row per image pair.

Lines starting with ``%`` are comments; ``ORIGIN_LATITUDE <deg>`` and ``ORIGIN_LONGITUDE <deg>``
give the mission origin. Every other non-blank line has 15 whitespace-separated fields (spaces,
tabs, or oplab_pipeline's space-and-tab):

    pose id, time (unix s), latitude, longitude, X north (m), Y east (m), Z depth (m),
    roll, pitch, yaw (radians), left image name, right image name,
    altitude (m), approximate image radius (m), cross-over flag (0/1)

Angles: the header that ACFR's format prints (reproduced by oplab_pipeline 1.2.0's
``auv_nav/parsers/acfr_stereo_pose.py``) says the three Euler angles are "in radians, relative to
local nav frame", the frame being North, East, Down. Yaw is read as the heading of the
image: radians, 0 = north, clockwise seen from above (rotation about the down axis of the
North-East-Down frame), converted to degrees in [0, 360). The format's header defines the
angles as those of the stereo rig's frame (z along the optical axis, x to the image's right),
which differs from the vehicle heading by an offset that depends on how the rig is mounted;
oplab_pipeline 1.2.0's own parser adds 90 deg for its SeaXerocks3 rig, while its writer writes
the camera record's heading unchanged. This reader takes the field as the heading, as the
writers do.

oplab_pipeline 1.2.0's ``AcfrStereoPoseWriter`` writes roll, pitch and yaw in DEGREES (see
tests/data/README.md). Degrees are refused, never converted: a yaw outside [-2*pi, 2*pi]
raises :class:`NavFormatError` naming the file, the line, the field and the likely unit. A
file whose yaws all lie within [-2*pi, 2*pi] is read as radians.

The left image is the one located. ACFR files list bare file names; the images live in the
dive's ``images/`` folder, so a name without a folder part becomes ``images/<name>`` (the
``image_dir`` argument). A name that already has a folder part (absolute or relative) is kept
as written.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from . import NavData, NavFormatError
from ._common import check_latlon, nav_table

N_FIELDS = 15
# field position -> name used in error messages, what it must hold
_NUMERIC = {
    1: ("time", "a unix time in seconds"),
    2: ("latitude", "a number in degrees"),
    3: ("longitude", "a number in degrees"),
    6: ("Z depth", "a number in metres"),
    9: ("yaw", "a number in radians, within [-2*pi, 2*pi]"),
    12: ("altitude", "a number in metres"),
}


def read_acfr_stereo_pose(path: Path, image_dir: str = "images") -> NavData:
    """Read an ACFR stereo pose file; ``image`` is ``image_dir/<left name>`` for bare names.

    Latitude/longitude written as ``nan`` come back as NaN (the row is kept).
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise NavFormatError(
            f"{path}: found bytes that are not UTF-8 text ({exc.reason}); "
            "expected an ACFR stereo_pose_est.data text file"
        ) from None
    cols: dict[int, list[float]] = {i: [] for i in _NUMERIC}
    images: list[str] = []
    lines: list[int] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("%"):
            continue
        fields = line.split()
        if fields[0] in ("ORIGIN_LATITUDE", "ORIGIN_LONGITUDE"):
            _origin(path, number, fields)
            continue
        if len(fields) != N_FIELDS:
            raise NavFormatError(
                f"{path}: line {number}, fields: found {len(fields)} fields "
                f"({_preview(line)}); expected {N_FIELDS} whitespace-separated fields "
                "(pose id, time, latitude, longitude, X, Y, Z, roll, pitch, yaw, left image, "
                "right image, altitude, image radius, cross-over flag)"
            )
        for i, (name, expected) in _NUMERIC.items():
            cols[i].append(_number(path, number, name, fields[i], expected))
        images.append(_image_path(fields[10], image_dir))
        lines.append(number)
    n = len(lines)
    _check_yaw_radians(path, np.array(cols[9], dtype=np.float64), lines)
    lat, lon = np.array(cols[2], dtype=np.float64), np.array(cols[3], dtype=np.float64)
    line_arr = np.array(lines, dtype=np.int64)
    check_latlon(path, lat, lon, line_arr, "latitude", "longitude")
    table = nav_table(
        n, np.array(cols[1], dtype=np.float64), lat, lon, np.array(cols[6], dtype=np.float64),
        line_arr, altitude_m=np.array(cols[12], dtype=np.float64),
        heading_deg=np.degrees(np.array(cols[9], dtype=np.float64)), image=images,
    )
    return NavData(table=table, per_image=True, path=path, format="acfr-stereo-pose")


YAW_LIMIT = 2.0 * math.pi


def _check_yaw_radians(path: Path, yaw: np.ndarray, lines: list[int]) -> None:
    """Refuse yaw written in degrees (oplab_pipeline 1.2.0's writer does) instead of radians."""
    bad = np.flatnonzero(np.abs(np.nan_to_num(yaw)) > YAW_LIMIT)
    if not len(bad):
        return
    i = int(bad[0])
    unit = ("looks like degrees" if abs(yaw[i]) <= 720.0 else
            "is no angle in radians or degrees")
    raise NavFormatError(
        f"{path}: line {lines[i]}, field 'yaw': found {float(yaw[i])!r}, which {unit} "
        f"({len(bad)} of {len(yaw)} yaw values lie outside [-2*pi, 2*pi]); expected radians, "
        "as the ACFR format says (oplab_pipeline's stereo_pose_est.data writer puts degrees "
        "there: convert the file, the reader does not guess units)"
    )


def _number(path: Path, line: int, name: str, text: str, expected: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise NavFormatError(
            f"{path}: line {line}, field '{name}': found '{text}'; expected {expected}"
        ) from None
    return value


def _origin(path: Path, line: int, fields: list[str]) -> float:
    if len(fields) != 2:
        raise NavFormatError(
            f"{path}: line {line}, field '{fields[0]}': found {len(fields) - 1} values; "
            "expected one number in degrees"
        )
    value = _number(path, line, fields[0], fields[1], "a number in degrees")
    if not math.isfinite(value):
        raise NavFormatError(
            f"{path}: line {line}, field '{fields[0]}': found '{fields[1]}'; "
            "expected a finite number in degrees"
        )
    return value


def _image_path(name: str, image_dir: str) -> str:
    name = name.replace("\\", "/")
    if "/" in name or not image_dir:
        return name
    return f"{image_dir.rstrip('/')}/{name}"


def _preview(line: str, limit: int = 60) -> str:
    return repr(line if len(line) <= limit else line[: limit - 3] + "...")
