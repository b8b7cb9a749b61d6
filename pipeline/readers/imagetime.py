"""Capture times written in image file names.

Cameras and the tools that copy their files stamp the capture time into the name in a handful
of ways. The built-in patterns below cover the common ones; a catalog's ``image_time:`` key
adds one of its own, tried first. Only the file name is searched, never the folders above it
(a dive folder named ``20240101_dive`` says nothing about each image). Times without a zone
are UTC; an explicit ``Z`` or ``+hh:mm`` is honoured.

A pattern is either strftime-style (``"%Y_%m_%d_%H-%M-%S"``; ``%Y %y %m %d %H %M %S %f`` and
``%%``) or, when it contains ``(?P<``, a regular expression with the named groups ``year``,
``month``, ``day``, ``hour``, ``minute``, ``second`` and optionally ``frac`` (the digits after
the second's decimal point) and ``zone`` (``Z`` or ``+hh:mm``).
"""

from __future__ import annotations

import calendar
import datetime as dt
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import PurePosixPath

__all__ = ["BUILTIN_PATTERNS", "TimePattern", "compile_pattern", "image_time_from_name",
           "patterns_tried"]

_FRAC = r"(?:[_.,](?P<frac>\d{1,6}))?(?!\d)"
_ZONE = r"(?P<zone>Z|[+-]\d{2}:?\d{2}(?!\d))?"
_REQUIRED = ("year", "month", "day", "hour", "minute", "second")


@dataclass(frozen=True)
class TimePattern:
    """One way of writing a capture time into a file name, with a name that shows it."""

    text: str  # as the catalog gives it, or the built-in's description
    regex: re.Pattern
    example: str


BUILTIN_PATTERNS = (
    # ACFR/oplab and most logging software: date, separator, time, optional milliseconds
    TimePattern("YYYYMMDD_HHMMSS[_mmm]", re.compile(
        r"(?<!\d)(?P<year>\d{4})(?P<month>\d{2})(?P<day>\d{2})[_T-]"
        r"(?P<hour>\d{2})(?P<minute>\d{2})(?P<second>\d{2})" + _FRAC + _ZONE),
        "PR_20240313_004046_897_LC16.jpg"),
    # ISO 8601 with dashes, the time with or without colons
    TimePattern("YYYY-MM-DDTHH:MM:SS[.fff][Z]", re.compile(
        r"(?<!\d)(?P<year>\d{4})-(?P<month>\d{2})-(?P<day>\d{2})[T_ ]"
        r"(?P<hour>\d{2})[:\-]?(?P<minute>\d{2})[:\-]?(?P<second>\d{2})"
        r"(?:[.,](?P<frac>\d{1,6}))?(?!\d)" + _ZONE),
        "2024-03-13T00:40:46.897Z.jpg"),
    # underscores between the date's parts (action cameras, some ROV frame grabbers)
    TimePattern("YYYY_MM_DD_HH-MM-SS", re.compile(
        r"(?<!\d)(?P<year>\d{4})_(?P<month>\d{2})_(?P<day>\d{2})[_ T-]"
        r"(?P<hour>\d{2})[-_:]?(?P<minute>\d{2})[-_:]?(?P<second>\d{2})"
        r"(?:[.,](?P<frac>\d{1,6}))?(?!\d)"),
        "2024_10_08_11-33-32.JPG"),
    # fourteen digits in a row; accepted only when they are a real date and time (see _value)
    TimePattern("YYYYMMDDHHMMSS", re.compile(
        r"(?<!\d)(?P<year>\d{4})(?P<month>\d{2})(?P<day>\d{2})"
        r"(?P<hour>\d{2})(?P<minute>\d{2})(?P<second>\d{2})(?:[_.](?P<frac>\d{3}))?(?!\d)"),
        "20180611041421.JPG"),
)

# years a built-in pattern accepts: a run of digits outside them is a counter, not a date
_YEARS = (1970, 2200)

_STRFTIME = {
    "Y": r"(?P<year>\d{4})", "y": r"(?P<year2>\d{2})", "m": r"(?P<month>\d{2})",
    "d": r"(?P<day>\d{2})", "H": r"(?P<hour>\d{2})", "M": r"(?P<minute>\d{2})",
    "S": r"(?P<second>\d{2})", "f": r"(?P<frac>\d{1,6})", "%": "%",
}


@lru_cache(maxsize=64)
def compile_pattern(text: str) -> TimePattern:
    """A catalog's ``image_time`` pattern; ValueError names what is wrong with it."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError("an image-name time pattern: strftime-style such as "
                         "'%Y_%m_%d_%H-%M-%S', or a regex with named groups (?P<year>...)")
    if "(?P<" in text:
        try:
            regex = re.compile(text)
        except re.error as exc:
            raise ValueError(f"{text!r} is not a valid regular expression ({exc})") from None
        groups = set(regex.groupindex)
        have_year = "year" in groups or "year2" in groups
        missing = [g for g in _REQUIRED if g not in groups and not (g == "year" and have_year)]
        if missing:
            raise ValueError(f"the regex {text!r} lacks the named group(s) "
                             f"{', '.join('(?P<' + g + '>...)' for g in missing)}; it needs "
                             "year, month, day, hour, minute and second (frac optional)")
        return TimePattern(text, regex, _example(regex, text))
    parts, i = [], 0
    while i < len(text):
        c = text[i]
        if c != "%":
            parts.append(re.escape(c))
            i += 1
            continue
        code = text[i + 1] if i + 1 < len(text) else ""
        if code not in _STRFTIME:
            raise ValueError(f"{text!r}: %{code} is not understood in an image-name time "
                             "pattern; use %Y %y %m %d %H %M %S %f (and %% for a percent sign), "
                             "or a regex with named groups (?P<year>...)")
        parts.append(_STRFTIME[code])
        i += 2
    fields = {c for c in re.findall(r"%(.)", text.replace("%%", ""))}
    missing = [f"%{c}" for c in "mdHMS" if c not in fields]
    if not fields & {"Y", "y"}:
        missing.insert(0, "%Y")
    if missing:
        raise ValueError(f"{text!r} lacks {', '.join(missing)}; an image-name time pattern "
                         "needs the year, month, day, hour, minute and second")
    regex = re.compile(r"(?<!\d)" + "".join(parts) + r"(?!\d)")
    return TimePattern(text, regex, _example(regex, text))


def _example(regex: re.Pattern, text: str) -> str:
    """A file name the pattern reads, for messages (built from a strftime pattern)."""
    if "(?P<" in text:
        return "(a name your regex matches)"
    sample = dt.datetime(2024, 3, 13, 0, 40, 46, 897000)
    return sample.strftime(text.replace("%f", "897")) + ".jpg"


def image_time_from_name(name: str, extra: str | TimePattern | None = None) -> float | None:
    """Capture time (unix seconds, UTC) written in an image file name, or None.

    ``extra`` (the catalog's ``image_time``) is tried before the built-in patterns. A match
    that is no real date and time (31 February, hour 25, a 14-digit counter) is skipped and
    the search goes on.
    """
    base = PurePosixPath(str(name).replace("\\", "/")).name
    for pattern in _patterns(extra):
        for m in pattern.regex.finditer(base):
            value = _value(m)
            if value is not None:
                return value
    return None


def patterns_tried(extra: str | TimePattern | None = None) -> list[str]:
    """Each pattern tried, in order, with a name it reads: for no_time messages."""
    return [f"{p.text} (e.g. {p.example})" for p in _patterns(extra)]


def _patterns(extra: str | TimePattern | None) -> tuple[TimePattern, ...]:
    if extra is None:
        return BUILTIN_PATTERNS
    custom = extra if isinstance(extra, TimePattern) else compile_pattern(extra)
    return (custom, *BUILTIN_PATTERNS)


def _value(m: re.Match) -> float | None:
    g = m.groupdict()
    try:
        year = int(g["year"]) if g.get("year") else 2000 + int(g["year2"])
        month, day = int(g["month"]), int(g["day"])
        hour, minute, second = int(g["hour"]), int(g["minute"]), int(g["second"])
    except (KeyError, TypeError, ValueError):
        return None
    if not (_YEARS[0] <= year <= _YEARS[1] and hour < 24 and minute < 60 and second < 61):
        return None
    try:
        dt.date(year, month, day)  # calendar.timegm would accept 31 February
    except ValueError:
        return None
    value = float(calendar.timegm((year, month, day, hour, minute, second, 0, 0, 0)))
    frac = g.get("frac")
    if frac:
        value += int(frac) / 10 ** len(frac)
    zone = g.get("zone")
    if zone and zone != "Z":
        sign = 1 if zone[0] == "+" else -1
        digits = zone[1:].replace(":", "")
        value -= sign * (int(digits[:2]) * 3600 + int(digits[2:]) * 60)
    return value
