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
from ..readers import Sniff, sniff_file

CATALOG_NAME = "catalog.yaml"
IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".tif", ".tiff")
_NAV_SUFFIXES = {".csv", ".tsv", ".txt", ".data", ".dat", ".json", ".yaml", ".yml"}
_TABLE_SUFFIXES = {".csv", ".tsv"}  # reported when not recognised: a table is often navigation
_USABLE = 0.5  # a sniff below this confidence only explains what it missed


def sniff_nav(path: Path) -> list[Sniff]:
    """The readers' verdicts on one file, best first: the one place init learns formats."""
    return sniff_file(path)


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
    for dirpath, dirnames, filenames in os.walk(root):
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
    verdicts = sniff_nav(path)
    for s in verdicts:
        if usable(s) is None:
            image = (s.columns or {}).get("image") or s.found.get("image")
            out.nav.append(NavFile(rel, s.format, s.columns, s.per_image, dict(s.options), s.note,
                                   image))
            return
    partial = next((s for s in verdicts if s.found or s.missing or s.note), None)
    if suffix in _TABLE_SUFFIXES or (partial is not None and partial.found):
        out.unknown.append(Unrecognised(rel, partial))
