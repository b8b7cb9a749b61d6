"""Navigation readers: every supported format comes back as the same normalised table.

``read_nav(format, path)`` returns a :class:`NavData` whose ``table`` has exactly the columns
of :data:`NAV_COLUMNS`:

==============  =======  ===========================================================
column          dtype    meaning
==============  =======  ===========================================================
timestamp       float64  unix seconds, UTC
lat, lon        float64  WGS84 degrees; NaN where the source row has none
depth_m         float64  metres below the sea surface (positive down)
altitude_m      float64  metres above the seabed; NaN if unknown
heading_deg     float64  0 = north, clockwise, in [0, 360); NaN if unknown
image           object   image path relative to the dive folder, as the file writes it;
                         None for vehicle navigation
line            int64    1-based line number in the source file (item number for iFDO)
==============  =======  ===========================================================

Camera-pose formats (one row per image: oplab-camera-csv, acfr-stereo-pose, ifdo, csv with an
image column) keep rows whose position is missing, so the caller can quarantine those images
with a reason. Vehicle time series (oplab-nav-csv, csv without an image column) come back
cleaned: no NaN positions, strictly increasing timestamps, position jumps removed.

A file that cannot be read raises :class:`NavFormatError`, whose message names the file, the
line, the column or key, what was found and what was expected. The column-mapped CSV reader
(``csv``, and ``qgc-csv`` through it) leaves a bad row out instead (a value that is not what its
column holds, a position off the globe, a row with the wrong number of fields, a last line cut
short): each such row comes back in :attr:`NavData.row_faults`, and only a file with more than
half of its rows bad (or a vehicle time series left with fewer than 2 good rows) is refused.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

__all__ = [
    "FORMATS",
    "Head",
    "NAV_COLUMNS",
    "NavData",
    "NavFormatError",
    "RowFault",
    "Sniff",
    "image_time_from_name",
    "read_nav",
    "sniff_file",
]


class NavFormatError(ValueError):
    """A navigation file that cannot be read; the message says where and what was expected."""


NAV_COLUMNS = [
    "timestamp", "lat", "lon", "depth_m", "altitude_m", "heading_deg", "image", "line",
]


@dataclass(frozen=True)
class RowFault:
    """One row of a navigation file left out, and why (the rest of the file is used).

    ``detail`` names the line, the column, what was found and what was expected, without the
    file's path (the caller prefixes the path it reports). ``kind`` is the count it adds to
    (``notes[kind]``, reported per dive as rows dropped). ``kept``: the row stays in a
    per-image table without time or position, so the image it names is quarantined with this
    detail; otherwise the row is not in the table at all.
    """

    line: int
    kind: str
    detail: str
    kept: bool = False


# kinds of row faults (the notes they are counted in)
BAD_VALUE_ROWS = "bad_value_rows"  # a value that is not what its column holds
OUT_OF_RANGE_ROWS = "out_of_range_rows"  # a number outside what its column can hold
WRONG_FIELD_COUNT_ROWS = "rows_wrong_field_count"  # more or fewer fields than the header
CUT_LAST_LINE_ROWS = "cut_last_line_rows"  # the file's last line, cut short
ROW_FAULT_KINDS = (BAD_VALUE_ROWS, OUT_OF_RANGE_ROWS, WRONG_FIELD_COUNT_ROWS, CUT_LAST_LINE_ROWS)


@dataclass
class NavData:
    """One navigation file, normalised.

    ``per_image`` is True when every row is the pose of one image (``image`` is set), False for
    a vehicle time series that images are matched against by time. ``notes`` counts what a
    reader dropped or changed (for example ``{"position_jumps": 6}``), for the caller's log.
    """

    table: pd.DataFrame
    per_image: bool
    path: Path
    format: str
    notes: dict[str, int] = field(default_factory=dict)
    # images the file lists that this source was told not to locate (an ACFR stereo file's
    # camera left out by ``cameras``) -> why, so the caller quarantines them with that reason
    not_located: dict[str, str] = field(default_factory=dict)
    # rows left out of the table (or kept without a position), one each, in line order
    row_faults: list[RowFault] = field(default_factory=list)


# format name -> (module, reader function)
_READERS = {
    "oplab-camera-csv": ("oplab_camera", "read_oplab_camera"),
    "oplab-nav-csv": ("oplab_nav", "read_oplab_nav"),
    "acfr-stereo-pose": ("acfr", "read_acfr_stereo_pose"),
    "ifdo": ("ifdo", "read_ifdo"),
    "csv": ("generic_csv", "read_generic_csv"),
    "biigle-csv": ("biigle", "read_biigle_csv"),
    "qgc-csv": ("qgc", "read_qgc_csv"),
    # read_nav("exif", dive_dir, images=[...]): the images themselves are the navigation
    "exif": ("exif", "read_exif_images"),
}
FORMATS = tuple(_READERS)


def read_nav(format: str, path: Path, columns: dict | None = None, **options: Any) -> NavData:
    """Read one navigation file of the given format into the normalised table.

    ``columns`` is the column map of format ``"csv"`` (and only of that format). ``options``
    go to the format's reader: ``dive_dir`` and ``root`` for ``"ifdo"`` (image paths relative
    to the dive folder, never resolved outside the root), ``image_dir``, ``yaw_unit`` ("rad" |
    "deg") and ``cameras`` (("left",) by default; ("left", "right")) for
    ``"acfr-stereo-pose"``, ``max_speed_m_s``, ``min_jump_m`` and ``max_accel_m_s2``
    for the vehicle time series (``"oplab-nav-csv"``, ``"csv"`` without an image column),
    ``timezone`` for ``"biigle-csv"``, ``"qgc-csv"`` and ``"exif"``; for ``"exif"`` ``path`` is
    the dive folder and ``images`` the image paths relative to it.
    """
    if format not in _READERS:
        raise ValueError(f"unknown navigation format {format!r}; expected one of {', '.join(FORMATS)}")
    module_name, func_name = _READERS[format]
    reader = getattr(importlib.import_module(f"{__name__}.{module_name}"), func_name)
    path = Path(path)
    if format == "csv":
        if columns is None:
            raise ValueError("format 'csv' needs a column map (time, lat/lon or easting/northing, depth)")
        return reader(path, columns, **options)
    if columns is not None:
        raise ValueError(f"a column map is only for format 'csv', not {format!r}")
    return reader(path, **options)


# image_time_from_name lives in .imagetime (with its patterns); re-exported here, where callers
# have always imported it from
from .imagetime import image_time_from_name  # noqa: E402

# what a file holds, judged by its content: one ``sniff`` per reader module, gathered here
from .sniffing import Head, Sniff, sniff_file  # noqa: E402
