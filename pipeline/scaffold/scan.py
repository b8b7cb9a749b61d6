"""One walk of the survey tree: image folders, and every file a reader recognises as navigation.

Formats are never guessed here: :func:`sniff_nav` asks the readers, and a file none of them
takes (a CSV whose columns it could not map) is kept with the readers' verdict, so the report
can say what was looked for, what was found and which column map to write.
"""

from __future__ import annotations

import os
import posixpath
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import ValidationError

from ..catalog import NavSource
from ..output import MARKER as OUTPUT_MARKER
from ..readers import Sniff
from ..readers.sniffing import read_head, sniff_head

CATALOG_NAME = "catalog.yaml"
IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".tif", ".tiff")
_NAV_SUFFIXES = {".csv", ".tsv", ".txt", ".data", ".dat", ".json", ".yaml", ".yml"}
_TABLE_SUFFIXES = {".csv", ".tsv"}  # reported when not recognised: a table is often navigation
_USABLE = 0.5  # a sniff below this confidence only explains what it missed
# suffixes of text formats: such a file that is not text is said to be unreadable (a .dat may
# be any binary log, so it is left alone)
_TEXT_SUFFIXES = {".csv", ".tsv", ".txt", ".json", ".yaml", ".yml", ".data"}


def sniff_nav(path: Path) -> list[Sniff]:
    """The readers' verdicts on one file, best first: the one place init learns formats."""
    return sniff_head(read_head(path))


def why_unreadable(exc: OSError) -> str:
    """'permission denied', 'no such file or directory': what an OSError says, for a person."""
    text = exc.strerror or str(exc) or type(exc).__name__
    return text[:1].lower() + text[1:]


@dataclass
class NavFile:
    rel: str  # path from the root, forward slashes
    format: str  # a catalog format; "csv" with columns
    columns: dict | None = None
    per_image: bool = True
    options: dict = field(default_factory=dict)  # other nav source keys (yaw_unit: deg)
    note: str = ""
    image_column: str | None = None  # of a per-image table

    @property
    def kind(self) -> str:
        return "csv+image" if self.format == "csv" and self.per_image else self.format


@dataclass
class Unrecognised:
    rel: str
    sniff: Sniff | None  # the closest verdict (a partial column map), if any


@dataclass
class Scan:
    root: Path
    images: dict[str, Counter] = field(default_factory=dict)  # folder rel -> suffix as written
    nav: list[NavFile] = field(default_factory=list)
    unknown: list[Unrecognised] = field(default_factory=list)
    # files and folders init could not read -> why ("permission denied", "not text ...")
    unreadable: dict[str, str] = field(default_factory=dict)

    def unreadable_lines(self) -> list[str]:
        return [f"cannot read {'folder ' if why.startswith('folder: ') else ''}{rel}: "
                f"{why.removeprefix('folder: ')}" for rel, why in sorted(self.unreadable.items())]

    def unreadable_under(self, folder: str) -> list[str]:
        """Unreadable folders at or below ``folder`` (relative to the root)."""
        return sorted(r for r, why in self.unreadable.items() if why.startswith("folder: ")
                      and (r == folder or r.startswith(folder.rstrip("/") + "/")))


def usable(s: Sniff) -> str | None:
    """Why a verdict cannot be written as a nav source, or None when it can."""
    if s.confidence < _USABLE or s.missing:
        return s.note or "columns missing"
    if s.format == "csv" and not s.columns:
        return s.note or "no column map"
    try:
        NavSource(format=s.format, path="{dive}/nav", columns=s.columns)
    except ValidationError as exc:
        why = "; ".join(e["msg"] for e in exc.errors())
        return f"format {s.format!r} with columns {s.columns} is not one the catalog accepts ({why})"
    return None


def scan(root: Path) -> Scan:
    """Image folders and navigation files under ``root`` (hidden folders and the builder's
    output folders are not entered; os.walk does not follow symlinked folders)."""
    out = Scan(root)

    def cannot_list(exc: OSError) -> None:
        where = Path(exc.filename) if exc.filename else None
        if where is not None and where != root:
            rel = where.relative_to(root).as_posix()
            out.unreadable[rel] = f"folder: {why_unreadable(exc)} (its files are not seen)"
        elif where == root:
            raise exc

    for dirpath, dirnames, filenames in os.walk(root, onerror=cannot_list):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".")
                             and not os.path.exists(os.path.join(dirpath, d, OUTPUT_MARKER)))
        rel_dir = Path(dirpath).relative_to(root).as_posix()
        rel_dir = "" if rel_dir == "." else rel_dir
        for name in sorted(filenames):
            if name.startswith(".") or (not rel_dir and name == CATALOG_NAME):
                continue
            suffix = os.path.splitext(name)[1]
            rel = posixpath.join(rel_dir, name) if rel_dir else name
            if suffix.lower() in IMAGE_EXTS:
                out.images.setdefault(rel_dir, Counter())[suffix] += 1
            elif suffix.lower() in _NAV_SUFFIXES or name.lower() == "stereo_pose_est.data":
                _place(out, Path(dirpath) / name, rel, suffix.lower())
    return out


def _place(out: Scan, path: Path, rel: str, suffix: str) -> None:
    try:
        with open(path, "rb") as fh:
            fh.read(1)
    except OSError as exc:
        out.unreadable[rel] = why_unreadable(exc)
        return
    head = read_head(path)
    if head.lines is None and head.prefix and (suffix in _TEXT_SUFFIXES
                                              or path.name.lower() == "stereo_pose_est.data"):
        out.unreadable[rel] = "not text (binary, or bytes that are not UTF-8)"
        return
    verdicts = sniff_head(head)
    for s in verdicts:
        if usable(s) is None:
            image = (s.columns or {}).get("image") or s.found.get("image")
            out.nav.append(NavFile(rel, s.format, s.columns, s.per_image, dict(s.options), s.note,
                                   image))
            return
    partial = next((s for s in verdicts if s.found or s.missing or s.note), None)
    if suffix in _TABLE_SUFFIXES or (partial is not None and partial.found):
        out.unknown.append(Unrecognised(rel, partial))
