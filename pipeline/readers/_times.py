"""Times in navigation files: unix seconds or milliseconds, ISO 8601, or a strftime format.

A time written without a zone is read in the ``timezone`` the caller names ("UTC" by default,
a fixed offset such as "+10:00", or an IANA name such as "Australia/Hobart"); a time that
carries its own zone ("Z", "+10:00") keeps it. Everything comes back as unix seconds (UTC).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Collection
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np
import pandas as pd

from . import NavFormatError
from ._common import _MISSING_WORDS, UNIX_S, numbers

TIME_UNITS = ("unix_s", "unix_ms", "iso8601", "format")
_OFFSET = re.compile(r"^(?:UTC|GMT)?\s*([+-])(\d{1,2})(?::?(\d{2}))?$", re.IGNORECASE)
# a zone offset ending a time: +10:00, -0330 (a date's "-03-13" does not match)
_ZONE_END = re.compile(r"[+-]\d{2}:?\d{2}$")
_EXAMPLE = dt.datetime(2024, 3, 13, 0, 40, 46, 897000, tzinfo=dt.timezone(dt.timedelta(hours=10)))
_EPOCH = pd.Timestamp("1970-01-01", tz="UTC")


def parse_timezone(name: object) -> dt.tzinfo:
    """The zone of local times: "UTC", "+10:00" (or "-0330", "UTC+10"), or an IANA name.

    ValueError (naming what was found and what is expected) for anything else.
    """
    expected = ("expected 'UTC', an offset such as '+10:00', or an IANA zone name such as "
                "'Australia/Hobart'")
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"timezone: found {name!r}; {expected}")
    text = name.strip()
    if text.upper() in ("UTC", "Z", "GMT"):
        return dt.UTC
    m = _OFFSET.match(text)
    if m:
        hours, minutes = int(m.group(2)), int(m.group(3) or 0)
        if hours > 14 or minutes >= 60:
            raise ValueError(f"timezone: found {name!r}, an offset beyond +-14:00; {expected}")
        delta = dt.timedelta(hours=hours, minutes=minutes)
        return dt.timezone(delta if m.group(1) == "+" else -delta)
    try:
        return ZoneInfo(text)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ValueError(f"timezone: found {name!r}, which is no known zone; {expected}") from None


def describe(unit: str, time_format: str | None = None) -> str:
    """What a time column must hold, for "expected ..." in messages."""
    if unit == "unix_ms":
        return "a unix time in milliseconds"
    if unit == "iso8601":
        return "an ISO 8601 date and time such as '2024-03-13T00:40:46.897Z' or '2024-03-13 00:40:46'"
    if unit == "format":
        try:
            example = _EXAMPLE.strftime(time_format or "")
        except ValueError:
            example = ""
        eg = f" (for example '{example}')" if example else ""
        return f"a date and time in the format '{time_format}'{eg}"
    return UNIX_S


def unix_seconds(
    path: Path,
    values: pd.Series | np.ndarray,
    lines: np.ndarray,
    column: str,
    unit: str = "unix_s",
    time_format: str | None = None,
    timezone: str | dt.tzinfo = "UTC",
    missing: Collection[str] = (),
) -> np.ndarray:
    """A time column as unix seconds (UTC); missing markers become NaN.

    ``column`` names the column (or columns, "Date + Time") in messages. A value that does not
    match raises :class:`NavFormatError` naming the file, the line, the column, the value and
    the form expected.
    """
    if unit in ("unix_s", "unix_ms"):
        t = numbers(path, values, lines, column, describe(unit), missing=missing)
        return t / 1000.0 if unit == "unix_ms" else t
    tz = parse_timezone(timezone) if not isinstance(timezone, dt.tzinfo) else timezone
    text = pd.Series(values, dtype=object).str.strip()
    absent = (text.isna() | text.str.lower().isin(_MISSING_WORDS) | text.isin(list(missing)))
    absent = absent.to_numpy(dtype=bool)
    out = np.full(len(text), np.nan)
    present = np.flatnonzero(~absent)
    if not len(present):
        return out
    sub = text.iloc[present].reset_index(drop=True).astype(str)
    if unit == "iso8601":
        tail = sub.str.slice(-6)  # a zone ends the value: Z, +10:00, -0330 (cheap to test)
        zoned = (tail.str.endswith(("Z", "z")) | tail.str.contains(_ZONE_END)).to_numpy(dtype=bool)
        when = pd.Series(pd.NaT, index=sub.index, dtype="datetime64[ns, UTC]")
        naive_parse = np.ones(len(sub), dtype=bool)
        if zoned.any():
            when[zoned] = pd.to_datetime(sub[zoned], utc=True, format="ISO8601", errors="coerce")
        if (~zoned).any():
            naive = pd.to_datetime(sub[~zoned], format="ISO8601", errors="coerce")
            naive_parse[~zoned] = naive.notna().to_numpy()
            when[~zoned] = _localise(naive, tz)
        parsed_ok = when.notna().to_numpy()
    elif unit == "format":
        if not time_format:
            raise ValueError("time_unit 'format' needs a time_format such as '%m/%d/%Y %H:%M:%S'")
        has_zone = "%z" in time_format or "%Z" in time_format
        parsed = pd.to_datetime(sub, format=time_format, errors="coerce", utc=has_zone)
        naive_parse = parsed.notna().to_numpy()
        when = parsed if has_zone else _localise(parsed, tz)
        parsed_ok = when.notna().to_numpy()
    else:
        raise ValueError(f"time unit: found {unit!r}; expected one of {', '.join(TIME_UNITS)}")
    bad = ~parsed_ok
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        value = sub.iloc[i]
        line = int(lines[present[i]])
        if naive_parse[i]:  # it parsed, but the zone has no such local time
            raise NavFormatError(
                f"{path}: line {line}, {_columns(column)}: found '{value}', which is no valid "
                f"local time in {timezone} (a daylight-saving change); expected "
                f"{describe(unit, time_format)}, or a timezone with a fixed offset such as '+10:00'"
            )
        raise NavFormatError(
            f"{path}: line {line}, {_columns(column)}: found '{value}'; expected "
            f"{describe(unit, time_format)}"
        )
    seconds = ((pd.Series(when) - _EPOCH) / pd.Timedelta(seconds=1)).to_numpy(dtype=np.float64, na_value=np.nan)
    out[present] = seconds
    return out


def _localise(naive: pd.Series, tz: dt.tzinfo) -> pd.Series:
    """Naive times read in ``tz``; times that do not exist there (or are ambiguous) are NaT."""
    naive = pd.Series(naive)
    if naive.dt.tz is not None:
        return naive.dt.tz_convert("UTC")
    local = naive.dt.tz_localize(tz, ambiguous="NaT", nonexistent="NaT")
    return local.dt.tz_convert("UTC")


def _columns(column: str) -> str:
    """"column 'Time'", or "columns 'Date' + 'Time'" for a date and time split in two."""
    parts = column.split(" + ")
    if len(parts) == 1:
        return f"column '{column}'"
    return "columns " + " + ".join(f"'{p}'" for p in parts)
