"""Shared pieces of the readers: header matching, numeric columns, the normalised table."""

from __future__ import annotations

import csv
import re
import warnings
from collections.abc import Collection, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from . import (
    BAD_VALUE_ROWS,
    CUT_LAST_LINE_ROWS,
    NAV_COLUMNS,
    OUT_OF_RANGE_ROWS,
    WRONG_FIELD_COUNT_ROWS,
    NavFormatError,
    RowFault,
)

# what a column holds, for "expected ..." in error messages
DEGREES = "a number in degrees"
RADIANS = "a number in radians"
METRES = "a number in metres"
UNIX_S = "a unix time in seconds"

_CHUNK_ROWS = 1_000_000  # rows per block while reading (bounds memory on 10M-row logs)
_MISSING_WORDS = {"", "nan", "-nan", "na", "n/a", "null", "none", "<na>", "#n/a"}


class RowFaults:
    """The bad rows of one file, collected instead of refusing the file (one fault a row: the
    first found). Readers that take one pass it to :func:`read_rows`, :func:`numbers`,
    :func:`check_latlon` and :func:`image_values`, which then record a bad row and go on."""

    def __init__(self) -> None:
        self.by_line: dict[int, RowFault] = {}

    def add(self, line: int, kind: str, detail: str, kept: bool = False) -> None:
        self.by_line.setdefault(int(line), RowFault(int(line), kind, detail, kept))

    def __len__(self) -> int:
        return len(self.by_line)

    def mask(self, lines: np.ndarray) -> np.ndarray:
        """Which of the rows at ``lines`` are bad."""
        if not self.by_line:
            return np.zeros(len(lines), dtype=bool)
        return np.isin(np.asarray(lines, dtype=np.int64), np.fromiter(self.by_line, np.int64))

    def sorted(self) -> list[RowFault]:
        return [self.by_line[k] for k in sorted(self.by_line)]

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for f in self.by_line.values():
            out[f.kind] = out.get(f.kind, 0) + 1
        return out


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


def _parser_refused(path: Path, ncols: int, delimiter: str, exc: Exception) -> NavFormatError:
    return NavFormatError(
        f"{path}: line ?, fields: found text the CSV parser rejects ({exc}); "
        f"expected {ncols} {delimiter!r}-separated fields per line, as in the header")


def _not_text(path: Path, exc: UnicodeDecodeError) -> NavFormatError:
    return NavFormatError(f"{path}: line ?, content: found bytes that are not UTF-8 text "
                          f"({exc.reason}); expected a text file")


def read_rows(
    path: Path, ncols: int, positions: dict[str, int], text: Sequence[str] = (), delimiter: str = ",",
    dropped: list[int] | None = None, faults: RowFaults | None = None,
) -> tuple[pd.DataFrame, np.ndarray]:
    """Read the columns at ``positions`` (key -> column position) below a one-line header.

    Returns a frame with one column per key and the 1-based line number of every row. Blank
    lines are skipped (their numbers are not reused); a row with more fields than the header
    raises. Columns named in ``text`` are strings; others are left as pandas parses them and
    go through :func:`numbers`.

    With a ``dropped`` list, a row whose number of fields is not the header's is left out and
    its line number appended to the list instead (a logger that adds columns as it runs, as
    QGroundControl does when a fact group appears, shifts every value after the new ones).

    With ``faults``, a row with more or fewer fields than the header, and the file's last line
    when it was cut short (see :func:`cut_last_line`), are recorded there, one fault a row, and
    the rest of the file is read: a row with too many fields is left out (its values cannot be
    placed), a row with too few comes back with what it has (NaN for the rest), so the caller
    can still name, say, the image of a per-image row it then leaves out.
    """
    if faults is not None and dropped is None:
        return _read_rows_collecting(path, ncols, positions, text, delimiter, faults)
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
        raise _parser_refused(path, ncols, delimiter, exc) from None
    except UnicodeDecodeError as exc:
        raise _not_text(path, exc) from None
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


_SKIPPED = re.compile(r"Skipping line (\d+): expected \d+ fields, saw (\d+)")


def _read_rows_collecting(
    path: Path, ncols: int, positions: dict[str, int], text: Sequence[str], delimiter: str,
    faults: RowFaults,
) -> tuple[pd.DataFrame, np.ndarray]:
    """:func:`read_rows` that records rows with the wrong number of fields instead of raising.

    The C parser skips a row with too many fields and says which (a ParserWarning); a row with
    too few comes back padded with NaN, so rows whose last field is empty are checked against
    the text. Only when the first row is too long (pandas then drops data) is every line
    counted in Python first."""
    used = sorted(set(positions.values()) | {ncols - 1})
    text_pos = {positions[k] for k in text}
    long_rows: dict[int, int] = {}  # line -> fields found, of rows left out before parsing
    parts = _parse_collecting(path, ncols, used, text_pos, delimiter, [], long_rows)
    if parts is None:
        # the first row is too long and pandas would drop its extra fields: count every line's
        # fields in Python and leave the wrong ones out before parsing
        long_rows = {ln: k for ln, k in _field_counts(path, delimiter).items() if k != ncols}
        parts = _parse_collecting(path, ncols, used, text_pos, delimiter, sorted(long_rows), {})
        parts = parts or []
    df = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=used)
    left_out = np.array(sorted(long_rows), dtype=np.int64)
    lines = np.arange(len(df), dtype=np.int64) + 2
    if len(left_out):
        kept = np.setdiff1d(np.arange(2, len(df) + len(left_out) + 2), left_out)
        lines = kept[:len(df)].astype(np.int64)
    blank = df.isna().all(axis=1).to_numpy()
    short_candidates = ~blank & df[ncols - 1].isna().to_numpy()
    short: dict[int, int] = {}
    if short_candidates.any():
        wanted = set(lines[short_candidates].tolist())
        short = {ln: k for ln, k in _field_counts(path, delimiter, wanted).items() if k < ncols}
    last = cut_last_line(path, ncols, delimiter, int(max(lines.max(initial=1),
                                                         left_out.max(initial=1))))
    if last is not None:
        faults.add(last[0], CUT_LAST_LINE_ROWS, last[1])
    for ln, k in sorted({**long_rows, **short}.items()):
        faults.add(ln, WRONG_FIELD_COUNT_ROWS,
                   f"line {ln}, fields: found {k} field(s); expected {ncols} "
                   f"{delimiter!r}-separated fields, as in the header" + (
                       f" (quote values that contain {delimiter!r})" if k > ncols else ""))
    if blank.any():
        df, lines = df.loc[~blank], lines[~blank]
    out = pd.DataFrame({key: df[pos].to_numpy() for key, pos in positions.items()})
    return out, lines


def _parse_collecting(path: Path, ncols: int, used: list[int], text_pos: set[int],
                      delimiter: str, skip: list[int], long_rows: dict[int, int]):
    """The chunks of the used columns, lines ``skip`` (1-based) left out; rows with too many
    fields are skipped and put in ``long_rows``. None when the first row read is too long."""
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", pd.errors.ParserWarning)
            with pd.read_csv(
                path, sep=delimiter, header=None, skiprows=[0] + [ln - 1 for ln in skip],
                names=list(range(ncols)), index_col=False, dtype={p: str for p in text_pos},
                skip_blank_lines=False, encoding="utf-8-sig", engine="c",
                chunksize=_CHUNK_ROWS, on_bad_lines="warn",
            ) as reader:
                parts = [chunk[used] for chunk in reader]
    except pd.errors.ParserError as exc:
        raise _parser_refused(path, ncols, delimiter, exc) from None
    except UnicodeDecodeError as exc:
        raise _not_text(path, exc) from None
    for w in caught:
        if not issubclass(w.category, pd.errors.ParserWarning):
            continue
        if "Length of header" in str(w.message):
            return None
        long_rows.update({int(a): int(b) for a, b in _SKIPPED.findall(str(w.message))})
    return parts


def _field_counts(path: Path, delimiter: str, wanted: set[int] | None = None) -> dict[int, int]:
    """Fields per line (1-based, header and blank lines left out): every line, or the
    ``wanted`` ones (reading stops after the last of them)."""
    out: dict[int, int] = {}
    if wanted is not None and not wanted:
        return out
    stop = max(wanted) if wanted else None
    with open(path, encoding="utf-8-sig", newline="") as fh:
        for number, line in enumerate(fh, start=1):
            if stop is not None and number > stop:
                break
            if number > 1 and line.strip() and (wanted is None or number in wanted):
                out[number] = len(next(csv.reader([line.rstrip("\r\n")], delimiter=delimiter)))
    return out


_TAIL_BYTES = 1 << 16  # the end of a file read to judge its last line
_TAIL_ROWS = 50  # rows before the last line its values are compared with


def _digits(value: str) -> tuple[int, int] | None:
    """(digits before the point, digits after it) of a plain decimal number; None otherwise."""
    m = re.fullmatch(r"[+-]?(\d*)(?:\.(\d*))?", value.strip())
    if not m or not (m.group(1) or m.group(2)):
        return None
    return len(m.group(1)), len(m.group(2) or "")


# how many decimals (digits, for whole numbers) fewer than the fewest of the values above make a
# last line cut: writers that drop trailing zeros (Python's str(float), %g) lose k decimals with
# a chance of 10^-k, so one or two fewer happen in complete files; a cut that moves a position
# by metres takes off four or more
CUT_DECIMALS = 3
CUT_DIGITS = 2


def cut_last_line(path: Path, ncols: int, delimiter: str, line: int) -> tuple[int, str] | None:
    """(line, detail) when the file's last line (number ``line``) was cut short, else None.

    A file that ends without a newline may have been cut while it was written or copied. Its
    last line counts as cut when it has fewer fields than the header, when a field that is never
    empty above it is empty, or when a number in it has at least CUT_DECIMALS fewer decimals than
    the fewest of the up to 50 values above it in its column (CUT_DIGITS fewer digits, in a
    column of whole numbers): the cut took the digits off."""
    with open(path, "rb") as fh:
        fh.seek(0, 2)
        size = fh.tell()
        if size == 0:
            return None
        fh.seek(max(0, size - _TAIL_BYTES))
        tail = fh.read()
    if tail.endswith((b"\n", b"\r")):
        return None
    text = tail.decode("utf-8", errors="replace")
    rows = text.splitlines()
    if size > _TAIL_BYTES:
        rows = rows[1:]  # the first one may start mid-line
    elif rows:
        rows = rows[1:]  # the header
    rows = [r for r in rows if r.strip()]
    if not rows:
        return None
    parsed = list(csv.reader(rows[-(_TAIL_ROWS + 1):], delimiter=delimiter))
    last, above = parsed[-1], [r for r in parsed[:-1] if len(r) == ncols]
    header = read_header(path, delimiter)
    cut = "and the file ends without a newline: last line cut short"
    if len(last) < ncols:
        return line, (f"line {line}, fields: found {len(last)} of {ncols} fields {cut}; expected "
                      f"{ncols} {delimiter!r}-separated fields, as in the header")
    if len(last) != ncols or len(above) < 3:
        return None
    for i, value in enumerate(last):
        column = [r[i].strip() for r in above]
        if not value.strip() and all(column):
            return line, (f"line {line}, {_field(header, i)}: found it empty where the {len(above)} "
                          f"rows above have a value, {cut}; expected a complete line")
        mine = _digits(value)
        theirs = [_digits(v) for v in column]
        if mine is None or any(t is None for t in theirs):
            continue
        if any(t[1] for t in theirs):
            fewest = min(t[1] for t in theirs)
            # far fewer decimals, or a number that stops at its decimal point
            if mine[1] <= fewest - CUT_DECIMALS or value.strip().endswith("."):
                return line, (f"line {line}, {_field(header, i)}: found '{value.strip()}' with "
                              f"{mine[1]} decimal(s) where the {len(above)} values above it "
                              f"have {fewest} or more, {cut}; expected a complete line")
        else:
            fewest = min(t[0] for t in theirs)
            if mine[0] <= fewest - CUT_DIGITS:
                return line, (f"line {line}, {_field(header, i)}: found '{value.strip()}' with "
                              f"{mine[0]} digit(s) where the {len(above)} values above it "
                              f"have {fewest} or more, {cut}; expected a complete line")
    return None


def _field(header: Sequence[str], i: int) -> str:
    return f"column '{header[i]}'" if i < len(header) and str(header[i]).strip() else f"field {i + 1}"


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
    missing: Collection[str] = (), faults: RowFaults | None = None,
) -> np.ndarray:
    """A column as float64; a value that is neither a number nor a missing marker (built-in
    words or the ``missing`` tokens) raises, or with ``faults`` is recorded there (its row
    bad) and comes back NaN. Infinite values are bad too."""
    s = pd.Series(values)
    if pd.api.types.is_numeric_dtype(s.dtype) and not pd.api.types.is_bool_dtype(s.dtype):
        out = np.array(s.to_numpy(dtype=np.float64, na_value=np.nan), dtype=np.float64)
        if faults is not None and np.isinf(out).any():
            for i in np.flatnonzero(np.isinf(out)):
                faults.add(lines[i], BAD_VALUE_ROWS,
                           f"line {int(lines[i])}, column '{column}': found '{s.iloc[i]}'; "
                           f"expected {expected}")
            out[np.isinf(out)] = np.nan
        return out
    stripped = s.astype(object).where(s.notna(), None).map(
        lambda v: v.strip() if isinstance(v, str) else v
    )
    num = pd.to_numeric(stripped, errors="coerce")
    bad = (num.isna() & stripped.notna()).to_numpy().copy()
    if bad.any():
        words = stripped[bad].map(lambda v: is_missing(v, missing)).to_numpy(dtype=bool)
        bad[np.flatnonzero(bad)[words]] = False
    out = np.array(num.to_numpy(dtype=np.float64, na_value=np.nan), dtype=np.float64)
    if faults is not None:
        bad |= np.isinf(out)
        for i in np.flatnonzero(bad):
            faults.add(lines[i], BAD_VALUE_ROWS,
                       f"line {int(lines[i])}, column '{column}': found '{s.iloc[i]}'; "
                       f"expected {expected}")
        out[bad] = np.nan
        return out
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise NavFormatError(
            f"{path}: line {int(lines[i])}, column '{column}': found '{s.iloc[i]}'; expected {expected}"
        )
    return out


def check_latlon(path: Path, lat: np.ndarray, lon: np.ndarray, lines: np.ndarray,
                 lat_col: str, lon_col: str, where: str = "line",
                 faults: RowFaults | None = None) -> None:
    """Coordinates outside the globe (or infinite) are a format problem, not a missing fix:
    raised, or with ``faults`` recorded there (the rows bad)."""
    checks = ((lat, lat_col, -90.0, 90.0, "latitude"), (lon, lon_col, -180.0, 360.0, "longitude"))
    for values, col, lo, hi, what in checks:
        bad = np.isinf(values) | (np.nan_to_num(values) < lo) | (np.nan_to_num(values) > hi)
        if faults is not None:
            for i in np.flatnonzero(bad):
                faults.add(lines[i], OUT_OF_RANGE_ROWS,
                           f"{where} {int(lines[i])}, column '{col}': found "
                           f"{float(values[i])!r}; expected a WGS84 {what} in degrees, within "
                           f"[{lo:g}, {hi:g}]")
            continue
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


def image_values(path: Path, values: np.ndarray, lines: np.ndarray, column: str,
                 faults: RowFaults | None = None) -> list[str | None]:
    """Image paths of a per-image file: text, never empty (raised, or with ``faults`` recorded
    there and None in the list)."""
    out: list[str | None] = []
    for i, v in enumerate(values):
        if v is None or (isinstance(v, float) and np.isnan(v)) or not str(v).strip():
            if faults is not None:
                faults.add(lines[i], BAD_VALUE_ROWS, f"line {int(lines[i])}, column '{column}': "
                           "found an empty value; expected the image's path")
                out.append(None)
                continue
            raise NavFormatError(
                f"{path}: line {int(lines[i])}, column '{column}': found an empty value; "
                "expected the image's path"
            )
        out.append(str(v).strip())
    return out


MIN_GOOD_ROWS = 2  # a vehicle time series needs two rows to interpolate between
_SHOWN_LINES = 5  # bad lines named in a refusal besides the first one described


def leave_out_bad_rows(path: Path, table: pd.DataFrame, faults: RowFaults, per_image: bool,
               format_name: str) -> tuple[pd.DataFrame, list[RowFault]]:
    """Every reader's rule for bad rows (collected in ``faults``): the table without its bad rows (a per-image row that names its image is kept without
    time or position), and the faults; NavFormatError when more than half of the rows are bad,
    or a vehicle time series keeps fewer than MIN_GOOD_ROWS."""
    found = faults.sorted()
    if not found:
        return table, []
    in_table = set(table["line"].tolist())
    n_rows = len(table) + sum(1 for f in found if f.line not in in_table)
    n_bad = len(found)
    good = n_rows - n_bad
    refuse = n_bad * 2 > n_rows or (not per_image and good < MIN_GOOD_ROWS)
    if refuse:
        first = found[0].detail
        others = [f.line for f in found[1:]]
        more = ""
        if others:
            shown = ", ".join(map(str, others[:_SHOWN_LINES]))
            more = (f"; also bad: line(s) {shown}"
                    + (f" and {len(others) - _SHOWN_LINES} more" if len(others) > _SHOWN_LINES
                       else ""))
        rule = (f"{n_bad} of {n_rows} rows are bad, more than half: a wrong column map or unit "
                "rather than single bad rows" if n_bad * 2 > n_rows else
                f"{n_bad} of {n_rows} rows are bad, leaving {good} good row(s); a vehicle time "
                f"series needs at least {MIN_GOOD_ROWS}")
        raise NavFormatError(f"{path}: {first}{more} ({rule}); the file is refused as a whole: "
                             f"fix the rows or the column map of this {format_name} file")
    bad = faults.mask(table["line"].to_numpy())
    if per_image:
        named = table["image"].notna().to_numpy()
        keep = bad & named
        table = table.copy()
        table.loc[keep, ["timestamp", "lat", "lon"]] = np.nan
        kept_lines = set(table.loc[keep, "line"].tolist())
        found = [RowFault(f.line, f.kind, f.detail, f.line in kept_lines) for f in found]
        drop = bad & ~named
    else:
        drop = bad
    if drop.any():
        table = table.loc[~drop].reset_index(drop=True)
    return table, found


def count_kinds(row_faults) -> dict[str, int]:
    """The bad rows by kind (the reader's notes, summed in the build's report)."""
    out: dict[str, int] = {}
    for f in row_faults:
        out[f.kind] = out.get(f.kind, 0) + 1
    return out
