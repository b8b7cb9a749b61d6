"""Which navigation format a file holds, judged by its content: one ``sniff`` per reader module.

:func:`sniff_file` reads the head of a file once (:class:`Head`) and asks every reader module's
``sniff(head) -> Sniff`` for its verdict. A sniff never raises: a file it cannot judge gets
confidence 0. Confidence guide: a named format matched by its exact header 0.95 and above;
``csv`` with time, latitude and longitude found 0.6-0.8; a partial match 0.1-0.3, with
``missing`` saying what was looked for and ``candidates`` the nearest header names.
"""

from __future__ import annotations

import difflib
import importlib
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

HEAD_LINES = 60
HEAD_BYTES = 4 << 20  # enough for an iFDO header written before its items


@dataclass
class Head:
    """What a sniff may look at, read once per file."""

    path: Path
    lines: list[str] | None  # first ~60 text lines (None when not UTF-8 text)
    prefix: bytes  # first 4 MiB (for JSON/YAML, and image headers)


@dataclass
class Sniff:
    """One format's verdict on a file."""

    format: str  # catalog format name ("csv", "biigle-csv", "ifdo", ...)
    confidence: float  # 0..1; 0 = not this format
    per_image: bool
    columns: dict | None = None  # for format csv: the column map a catalog should hold
    options: dict = field(default_factory=dict)  # other NavSource keys to write
    found: dict[str, str] = field(default_factory=dict)  # role -> column/key found
    missing: list[str] = field(default_factory=list)  # what it needs and lacks
    candidates: dict[str, list[str]] = field(default_factory=dict)  # role -> nearest names
    note: str = ""


def read_head(path: Path, n_lines: int = HEAD_LINES, n_bytes: int = HEAD_BYTES) -> Head:
    """The head of a file; ``lines`` is None for a file that is not UTF-8 text (or unreadable)."""
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            prefix = fh.read(n_bytes)
    except OSError:
        return Head(path=path, lines=None, prefix=b"")
    return Head(path=path, lines=text_lines(prefix, n_lines), prefix=prefix)


def text_lines(prefix: bytes, n_lines: int = HEAD_LINES) -> list[str] | None:
    """The first lines of ``prefix`` decoded as UTF-8, or None when it is not text."""
    if b"\x00" in prefix[:8192]:
        return None
    try:
        text = prefix.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        if exc.start < len(prefix) - 4:  # a bad byte inside, not a character cut at the end
            return None
        text = prefix[: exc.start].decode("utf-8-sig")
    return text.splitlines()[:n_lines]


def sniff_head(head: Head) -> list[Sniff]:
    """Every format's verdict with confidence > 0, best first (ties: the order of the formats)."""
    from . import _READERS

    modules = list(dict.fromkeys(module for module, _ in _READERS.values()))
    verdicts: list[Sniff] = []
    for name in modules:
        try:
            module = importlib.import_module(f"{__package__}.{name}")
            sniff = getattr(module, "sniff", None)
            if sniff is None:
                continue
            verdict = sniff(head)
        except Exception as exc:  # a sniff must never stop the scan: log it, judge the rest
            log.warning("sniffing %s as %s failed: %s: %s", head.path, name, type(exc).__name__, exc)
            continue
        if verdict is not None and verdict.confidence > 0:
            verdicts.append(verdict)
    verdicts.sort(key=lambda s: -s.confidence)
    return verdicts


def sniff_file(path: Path) -> list[Sniff]:
    """Every format's verdict on ``path`` with confidence > 0, best first; never raises."""
    return sniff_head(read_head(path))


# ---------------------------------------------------------------- helpers the sniffs share


def split_header(lines: Sequence[str] | None) -> tuple[list[str], str, list[list[str]]] | None:
    """(header, delimiter, rows) of a delimited text head; None when there is no header line.

    The delimiter is the one of "," ";" and tab that the header line holds most of. Rows are
    the non-blank lines below it, split the same way.
    """
    import csv

    if not lines:
        return None
    body = [ln for ln in lines if ln.strip()]
    if not body:
        return None
    first = body[0]
    delimiter = max((",", ";", "\t"), key=first.count)
    try:
        parsed = list(csv.reader(body, delimiter=delimiter))
    except csv.Error:
        return None
    header = [h.strip() for h in parsed[0]]
    return header, delimiter, parsed[1:]


def nearest(header: Iterable[str], wanted: Iterable[str], n: int = 3) -> list[str]:
    """Header names closest to any of ``wanted`` (difflib), best first."""
    from ._common import bare_name

    names = list(header)
    bare = {bare_name(h): h for h in names}
    scores: dict[str, float] = {}
    for w in wanted:
        for b, h in bare.items():
            ratio = difflib.SequenceMatcher(None, bare_name(w), b).ratio()
            if ratio >= 0.6:
                scores[h] = max(scores.get(h, 0.0), ratio)
    return [h for h, _ in sorted(scores.items(), key=lambda kv: -kv[1])[:n]]


def has_suffix(head: Head, *suffixes: str) -> bool:
    return head.path.suffix.lower() in suffixes


def comma_header(head: Head) -> list[str] | None:
    """The header of a comma-separated .csv/.txt head; None for anything else."""
    if not has_suffix(head, ".csv", ".txt") or head.lines is None:
        return None
    split = split_header(head.lines)
    return split[0] if split is not None and split[1] == "," else None


def header_roles(lines: Sequence[str] | None, spec: dict) -> dict[str, str] | None:
    """role -> header name for an oplab-style spec (role -> (aliases, required, expected)) of a
    comma-separated header; None unless every required role is present."""
    from ._common import norm_name

    split = split_header(lines)
    if split is None or split[1] != ",":
        return None
    normalised = {norm_name(h): h for h in split[0]}
    found = {}
    for role, (aliases, required, _) in spec.items():
        hit = next((normalised[norm_name(a)] for a in aliases if norm_name(a) in normalised), None)
        if hit is not None:
            found[role] = hit
        elif required:
            return None
    return found
