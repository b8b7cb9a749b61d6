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
image: 0 = north, clockwise seen from above (rotation about the down axis of the
North-East-Down frame), converted to degrees in [0, 360). The format's header defines the
angles as those of the stereo rig's frame (z along the optical axis, x to the image's right),
which differs from the vehicle heading by an offset that depends on how the rig is mounted;
oplab_pipeline 1.2.0's own parser adds 90 deg for its SeaXerocks3 rig, while its writer writes
the camera record's heading unchanged. This reader takes the field as the heading, as the
writers do.

Yaw unit (``yaw_unit``, the catalog's ``nav[].yaw_unit``): radians by default, as the format
says. oplab_pipeline 1.2.0's ``AcfrStereoPoseWriter`` writes roll, pitch and yaw in DEGREES
(see tests/data/README.md); such a file is read with ``yaw_unit="deg"``. Without it the units
are never guessed: a yaw outside [-2*pi, 2*pi] raises :class:`NavFormatError` naming the file,
the line, the field, the likely unit and the option (``yaw_unit: deg``). With ``"deg"`` a yaw
outside [-720, 720] is refused the same way.

Cameras (``cameras``): each row names the left and the right image of one stereo pair, taken at
the same instant; the pose is the rig's (the left camera's frame). Every chosen camera's image
gets the row's pose (the right camera sits a stereo baseline, some 0.1 m, from the left one,
below what the navigation resolves): with ``("left", "right")`` the table has one row per image, the right
image's row a copy of its pair's (same ``line``). An image of a camera left out is never dropped
silently: it is listed in ``NavData.not_located`` with the reason, for the caller to
quarantine. The reader's default is the left camera only (one row per line, as callers of the
reader have always had); the catalog's default is both.

ACFR files list bare file names; the images live in the dive's ``images/`` folder, so a name
without a folder part becomes ``images/<name>`` (the ``image_dir`` argument). A name that
already has a folder part (absolute or relative) is kept as written.
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
    9: ("yaw", "a number (radians, or degrees with yaw_unit: deg)"),
    12: ("altitude", "a number in metres"),
}


CAMERAS = ("left", "right")
YAW_UNITS = ("rad", "deg")


def read_acfr_stereo_pose(path: Path, image_dir: str = "images", yaw_unit: str = "rad",
                          cameras: tuple[str, ...] | list[str] = ("left",)) -> NavData:
    """Read an ACFR stereo pose file; ``image`` is ``image_dir/<name>`` for bare names.

    One row per chosen camera's image of each line, left images first (in file order), then
    right ones; ``yaw_unit`` is ``"rad"`` or ``"deg"``. Latitude/longitude written as ``nan``
    come back as NaN (the row is kept).
    """
    path = Path(path)
    if yaw_unit not in YAW_UNITS:
        raise ValueError(f"yaw_unit {yaw_unit!r}: expected one of {', '.join(YAW_UNITS)}")
    unknown = [c for c in cameras if c not in CAMERAS]
    if unknown or not cameras:
        raise ValueError(f"cameras {list(cameras)!r}: expected one or both of {list(CAMERAS)}")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise NavFormatError(
            f"{path}: found bytes that are not UTF-8 text ({exc.reason}); "
            "expected an ACFR stereo_pose_est.data text file"
        ) from None
    cols: dict[int, list[float]] = {i: [] for i in _NUMERIC}
    names: dict[str, list[str]] = {"left": [], "right": []}
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
        names["left"].append(_image_path(fields[10], image_dir))
        names["right"].append(_image_path(fields[11], image_dir))
        lines.append(number)
    yaw = np.array(cols[9], dtype=np.float64)
    _check_yaw(path, yaw, lines, yaw_unit)
    heading = yaw if yaw_unit == "deg" else np.degrees(yaw)
    lat, lon = np.array(cols[2], dtype=np.float64), np.array(cols[3], dtype=np.float64)
    line_arr = np.array(lines, dtype=np.int64)
    check_latlon(path, lat, lon, line_arr, "latitude", "longitude")
    chosen = [c for c in CAMERAS if c in cameras]
    k = len(chosen)

    def each(values) -> np.ndarray:
        return np.tile(np.asarray(values, dtype=np.float64), k)

    table = nav_table(
        len(lines) * k, each(cols[1]), each(lat), each(lon), each(cols[6]),
        np.tile(line_arr, k), altitude_m=each(cols[12]), heading_deg=each(heading),
        image=[name for c in chosen for name in names[c]],
    )
    not_located = {
        name: (f"{path.name} line {line} lists it as the {c} camera's image; this navigation "
               f"source locates only the {' and '.join(chosen)} camera (its 'cameras' key)")
        for c in CAMERAS if c not in chosen for name, line in zip(names[c], lines, strict=True)
    }
    notes = {"acfr_cameras_located": k}
    return NavData(table=table, per_image=True, path=path, format="acfr-stereo-pose",
                   notes=notes, not_located=not_located)


YAW_LIMIT = 2.0 * math.pi
YAW_LIMIT_DEG = 720.0


def _check_yaw(path: Path, yaw: np.ndarray, lines: list[int], unit: str) -> None:
    """Refuse yaws that cannot be in the declared unit; name the option that reads them."""
    limit = YAW_LIMIT if unit == "rad" else YAW_LIMIT_DEG
    bad = np.flatnonzero(np.abs(np.nan_to_num(yaw)) > limit)
    if not len(bad):
        return
    i = int(bad[0])
    span = "[-2*pi, 2*pi]" if unit == "rad" else "[-720, 720]"
    if unit == "deg":
        raise NavFormatError(
            f"{path}: line {lines[i]}, field 'yaw': found {float(yaw[i])!r}, which is no angle "
            f"in degrees ({len(bad)} of {len(yaw)} yaw values lie outside {span}); expected "
            "degrees, as this nav source's yaw_unit says")
    unit_guess = ("looks like degrees" if abs(yaw[i]) <= YAW_LIMIT_DEG else
                  "is no angle in radians or degrees")
    fix = ("if the file was written with degrees (oplab_pipeline's stereo_pose_est.data writer "
           "puts degrees there), add `yaw_unit: deg` to this nav source; the reader never "
           "guesses units" if abs(yaw[i]) <= YAW_LIMIT_DEG else "check the file's yaw column")
    raise NavFormatError(
        f"{path}: line {lines[i]}, field 'yaw': found {float(yaw[i])!r}, which {unit_guess} "
        f"({len(bad)} of {len(yaw)} yaw values lie outside {span}); expected radians, "
        f"as the ACFR format says: {fix}"
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


def sniff(head):
    """ACFR stereo poses: the file name ``stereo_pose_est.data``, the format's header comment,
    an ORIGIN_LATITUDE/ORIGIN_LONGITUDE line, or a first data line of 15 fields whose 11th is
    an image file name."""
    from .sniffing import Sniff

    verdict = Sniff("acfr-stereo-pose", 0.0, per_image=True)
    if head.lines is None:
        return verdict
    by_name = head.path.name.lower() == "stereo_pose_est.data"
    for line in head.lines:
        s = line.strip()
        if s.upper().startswith("% STEREO_POSE_FILE"):
            by_name = True
            break
        if not s or s.startswith("%"):
            continue
        fields = s.split()
        if fields[0] in ("ORIGIN_LATITUDE", "ORIGIN_LONGITUDE"):
            by_name = True
        elif len(fields) == N_FIELDS and fields[10].lower().endswith(
                (".jpg", ".jpeg", ".png", ".tif", ".tiff")):
            by_name = True
        break
    if not by_name:
        return verdict
    return Sniff("acfr-stereo-pose", 0.96, per_image=True,
                 found={"time": "field 2", "lat": "field 3", "lon": "field 4", "depth": "field 7",
                        "heading": "field 10 (yaw)", "image": "field 11 (left image)"},
                 note="ACFR stereo poses, one row per image pair")
