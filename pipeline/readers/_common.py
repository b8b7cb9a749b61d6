"""Shared pieces of the readers: header matching, numeric columns, the normalised table."""

from __future__ import annotations

import csv
import re
import warnings
from collections.abc import Collection, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from . import NAV_COLUMNS, NavFormatError

# what a column holds, for "expected ..." in error messages
DEGREES = "a number in degrees"
RADIANS = "a number in radians"
METRES = "a number in metres"
UNIX_S = "a unix time in seconds"

_CHUNK_ROWS = 1_000_000  # rows per block while reading (bounds memory on 10M-row logs)
_MISSING_WORDS = {"", "nan", "-nan", "na", "n/a", "null", "none", "<na>", "#n/a"}


def norm_name(name: object) -> str:
    """Header name compared without case or whitespace: ' Latitude [deg]' == 'latitude[deg]'."""
    return "".join(str(name).split()).lower()


def bare_name(name: object) -> str:
    """Header name without case, spaces or a bracketed unit: 'Latitude (deg)' -> 'latitude',
    'Depth [m]' -> 'depth', 'gps.lat' stays 'gps.lat'."""
    s = re.sub(r"\[[^\]]*\]|\([^)]*\)", "", str(name)).strip().lower()
    return re.sub(r"[\s-]+", "_", s).strip("_")


def match_column(header: Sequence[str], name: str) -> int | None:
    """Position of the header column called ``name``: exactly first, then ignoring case and
    spaces, then also ignoring a bracketed unit ('Depth [m]' for 'depth'); None if absent."""
    if name in header:
        return list(header).index(name)
    for key in (norm_name, bare_name):
        wanted = key(name)
        keys = [key(h) for h in header]
        if wanted and wanted in keys:
            return keys.index(wanted)
    return None


def is_missing(value: object, extra: Collection[str] = ()) -> bool:
    """A missing-value marker: empty, one of the built-in words (nan, NA, null, ...) or one of
    the ``extra`` tokens a file uses (QGroundControl writes '--.--')."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return True
    text = str(value).strip()
    return text.lower() in _MISSING_WORDS or text in extra


def read_header(path: Path, delimiter: str) -> list[str]:
    """Column names of a delimited text file's first line."""
    try:
        with open(path, encoding="utf-8-sig", newline="") as fh:
            first = fh.readline()
    except UnicodeDecodeError as exc:
        raise NavFormatError(
            f"{path}: line 1, header: found bytes that are not UTF-8 text ({exc.reason}); "
            "expected a text file with a header row"
        ) from None
    if not first.strip():
        raise NavFormatError(
            f"{path}: line 1, header: found {'an empty file' if not first else 'an empty line'}; "
            "expected a header row with column names"
        )
    return next(csv.reader([first.rstrip("\r\n")], delimiter=delimiter))


def find_column(
    path: Path, header: Sequence[str], names: Sequence[str], required: bool = True
) -> int | None:
    """Position of the first header column matching one of ``names`` (case/space-blind)."""
    normalised = [norm_name(h) for h in header]
    for name in names:
        key = norm_name(name)
        if key in normalised:
            return normalised.index(key)
    if not required:
        return None
    also = f" (or {', '.join(repr(n) for n in names[1:])})" if len(names) > 1 else ""
    raise NavFormatError(
        f"{path}: line 1, column '{names[0]}': found no such column in the header "
        f"(columns found: {list(header)}); expected a column named '{names[0]}'{also}, "
        "case and spaces ignored"
    )


def read_rows(
    path: Path, ncols: int, positions: dict[str, int], text: Sequence[str] = (), delimiter: str = ",",
    dropped: list[int] | None = None,
) -> tuple[pd.DataFrame, np.ndarray]:
    """Read the columns at ``positions`` (key -> column position) below a one-line header.

    Returns a frame with one column per key and the 1-based line number of every row. Blank
    lines are skipped (their numbers are not reused); a row with more fields than the header
    raises. Columns named in ``text`` are strings; others are left as pandas parses them and
    go through :func:`numbers`.

    With a ``dropped`` list, a row whose number of fields is not the header's is left out and
    its line number appended to the list instead (a logger that adds columns as it runs, as
    QGroundControl does when a fact group appears, shifts every value after the new ones).
    """
    used = sorted(set(positions.values()))
    text_pos = {positions[k] for k in text}
    parts = []
    skip: list[int] = [0]
    if dropped is not None:
        bad = _ragged_lines(path, ncols, delimiter)
        dropped.extend(bad)
        skip += [ln - 1 for ln in bad]  # 0-based file rows for pandas
    try:
        with warnings.catch_warnings():
            # pandas warns (and drops data) when the first row has more fields than the header
            warnings.simplefilter("error", pd.errors.ParserWarning)
            with pd.read_csv(
                path, sep=delimiter, header=None, skiprows=skip if len(skip) > 1 else 1,
                names=list(range(ncols)),
                index_col=False, dtype={p: str for p in text_pos}, skip_blank_lines=False,
                encoding="utf-8-sig", engine="c", chunksize=_CHUNK_ROWS,
            ) as reader:
                parts = [chunk[used] for chunk in reader]
    except pd.errors.ParserWarning:
        _too_many_fields(path, ncols, delimiter, _first_long_line(path, ncols, delimiter), None)
    except pd.errors.ParserError as exc:
        m = re.search(r"line (\d+), saw (\d+)", str(exc))
        if m:
            _too_many_fields(path, ncols, delimiter, int(m.group(1)), int(m.group(2)))
        raise NavFormatError(
            f"{path}: line ?, fields: found text the CSV parser rejects ({exc}); "
            f"expected {ncols} {delimiter!r}-separated fields per line, as in the header"
        ) from None
    except UnicodeDecodeError as exc:
        raise NavFormatError(
            f"{path}: line ?, content: found bytes that are not UTF-8 text ({exc.reason}); "
            "expected a text file"
        ) from None
    df = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=used)
    lines = np.arange(len(df), dtype=np.int64) + 2
    if len(skip) > 1:  # the numbers of the lines read, the left-out ones skipped
        kept = np.setdiff1d(np.arange(2, len(df) + len(skip) + 1), np.asarray(skip[1:]) + 1)
        lines = kept[:len(df)].astype(np.int64)
    blank = df.isna().all(axis=1).to_numpy()
    if blank.any():
        df, lines = df.loc[~blank], lines[~blank]
    out = pd.DataFrame({key: df[pos].to_numpy() for key, pos in positions.items()})
    return out, lines


def _ragged_lines(path: Path, ncols: int, delimiter: str) -> list[int]:
    """Line numbers (1-based) below the header whose number of fields is not ``ncols``."""
    bad = []
    with open(path, encoding="utf-8-sig", newline="") as fh:
        for number, line in enumerate(fh, start=1):
            if number > 1 and line.strip():
                fields = next(csv.reader([line.rstrip("\r\n")], delimiter=delimiter))
                if len(fields) != ncols:
                    bad.append(number)
    return bad


def _first_long_line(path: Path, ncols: int, delimiter: str) -> int | None:
    with open(path, encoding="utf-8-sig", newline="") as fh:
        for number, row in enumerate(csv.reader(fh, delimiter=delimiter), start=1):
            if number > 1 and len(row) > ncols:
                return number
    return None


def _too_many_fields(path: Path, ncols: int, delimiter: str, line: int | None, saw: int | None):
    found = f"{saw} fields" if saw else "more fields than the header has columns"
    raise NavFormatError(
        f"{path}: line {line if line else '?'}, fields: found {found}; expected {ncols} "
        f"{delimiter!r}-separated fields per line, as in the header (quote values that contain "
        f"{delimiter!r})"
    )


def numbers(
    path: Path, values: pd.Series | np.ndarray, lines: np.ndarray, column: str, expected: str,
    missing: Collection[str] = (),
) -> np.ndarray:
    """A column as float64; a value that is neither a number nor a missing marker (built-in
    words or the ``missing`` tokens) raises."""
    s = pd.Series(values)
    if pd.api.types.is_numeric_dtype(s.dtype) and not pd.api.types.is_bool_dtype(s.dtype):
        return s.to_numpy(dtype=np.float64, na_value=np.nan)
    stripped = s.astype(object).where(s.notna(), None).map(
        lambda v: v.strip() if isinstance(v, str) else v
    )
    num = pd.to_numeric(stripped, errors="coerce")
    bad = (num.isna() & stripped.notna()).to_numpy().copy()
    if bad.any():
        words = stripped[bad].map(lambda v: is_missing(v, missing)).to_numpy(dtype=bool)
        bad[np.flatnonzero(bad)[words]] = False
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise NavFormatError(
            f"{path}: line {int(lines[i])}, column '{column}': found '{s.iloc[i]}'; expected {expected}"
        )
    return num.to_numpy(dtype=np.float64, na_value=np.nan)


def check_latlon(path: Path, lat: np.ndarray, lon: np.ndarray, lines: np.ndarray,
                 lat_col: str, lon_col: str, where: str = "line") -> None:
    """Coordinates outside the globe (or infinite) are a format problem, not a missing fix."""
    checks = ((lat, lat_col, -90.0, 90.0, "latitude"), (lon, lon_col, -180.0, 360.0, "longitude"))
    for values, col, lo, hi, what in checks:
        bad = np.isinf(values) | (np.nan_to_num(values) < lo) | (np.nan_to_num(values) > hi)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise NavFormatError(
                f"{path}: {where} {int(lines[i])}, column '{col}': found {float(values[i])!r}; "
                f"expected a WGS84 {what} in degrees, within [{lo:g}, {hi:g}]"
            )


def wrap_heading(deg: np.ndarray) -> np.ndarray:
    """Headings in [0, 360); NaN stays NaN."""
    h = np.mod(np.asarray(deg, dtype=np.float64), 360.0)
    h[h >= 360.0] = 0.0  # np.mod(-1e-15, 360) == 360.0
    return h


def wrap_lon(lon: np.ndarray) -> np.ndarray:
    """Longitudes in [-180, 180)."""
    lon = np.asarray(lon, dtype=np.float64)
    out = np.mod(lon + 180.0, 360.0) - 180.0
    return np.where((lon >= -180.0) & (lon <= 180.0), lon, out)


def nav_table(
    n: int,
    timestamp: np.ndarray,
    lat: np.ndarray,
    lon: np.ndarray,
    depth_m: np.ndarray,
    lines: np.ndarray,
    altitude_m: np.ndarray | None = None,
    heading_deg: np.ndarray | None = None,
    image: Sequence[str | None] | np.ndarray | None = None,
) -> pd.DataFrame:
    """The normalised table, columns in NAV_COLUMNS order and with their dtypes."""
    nan = np.full(n, np.nan)

    def f64(v):
        return nan.copy() if v is None else np.asarray(v, dtype=np.float64).reshape(n)

    images = np.empty(n, dtype=object)
    if image is not None:
        images[:] = list(image)
    table = pd.DataFrame({
        "timestamp": f64(timestamp),
        "lat": f64(lat),
        "lon": wrap_lon(f64(lon)),
        "depth_m": f64(depth_m),
        "altitude_m": f64(altitude_m),
        "heading_deg": wrap_heading(f64(heading_deg)),
        "image": pd.Series(images, dtype=object),
        "line": np.asarray(lines, dtype=np.int64).reshape(n),
    })
    return table[NAV_COLUMNS]


def image_values(path: Path, values: np.ndarray, lines: np.ndarray, column: str) -> list[str]:
    """Image paths of a per-image file: text, never empty."""
    out = []
    for i, v in enumerate(values):
        if v is None or (isinstance(v, float) and np.isnan(v)) or not str(v).strip():
            raise NavFormatError(
                f"{path}: line {int(lines[i])}, column '{column}': found an empty value; "
                "expected the image's path"
            )
        out.append(str(v).strip())
    return out
