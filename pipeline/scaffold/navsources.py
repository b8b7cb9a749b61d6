"""Navigation files -> the catalog's ``nav`` sources.

Each file is attributed to the dive it lies in, or whose ``{dive}`` path or ``{dive_id}`` it
names (oplab's ``processed/<dive_id>/json_renav_<date>/...``), and becomes a template:
date-stamped folders become globs (``json_renav_*``), the dive's name in a file name becomes
``{dive_id}``. Files that name no dive may still serve several dives as one shared source (see
:mod:`pipeline.scaffold.shared_nav`). One source per format and template, per-image camera
poses first, vehicle time series last.
"""

from __future__ import annotations

import csv
import fnmatch
import glob
import json
import os
import posixpath
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from ..catalog import NavSource
from ..readers._common import norm_name
from ..readers.sniffing import read_head
from .layout import dive_of_image_folder
from .scan import NavFile

# most precise first: per-image camera poses, then the vehicle's time series
FORMAT_RANK = {"oplab-camera-csv": 0, "acfr-stereo-pose": 1, "ifdo": 2, "biigle-csv": 3,
               "csv+image": 3, "exif": 4, "oplab-nav-csv": 5, "qgc-csv": 6, "csv": 6}
FORMAT_NOTE = {
    "oplab-camera-csv": "oplab_pipeline camera poses, one row per image",
    "acfr-stereo-pose": "ACFR stereo poses, one row per image pair",
    "ifdo": "iFDO image metadata, one item per image",
    "biigle-csv": "BIIGLE image metadata, one row per image",
    "csv+image": "plain CSV, one row per image (column map guessed: check it)",
    "exif": "the images' own EXIF time and GPS position",
    "oplab-nav-csv": "oplab 10 Hz vehicle navigation, matched by the time in image names",
    "qgc-csv": "QGroundControl telemetry log, matched by the time in image names",
    "csv": "plain CSV vehicle navigation (column map guessed: check it), matched by image time",
}
_STAMP = re.compile(r"\d{6,}")


def is_time_series(kind: str) -> bool:
    return FORMAT_RANK.get(kind, 9) >= 5


def _literal(part: str) -> str:
    return glob.escape(part).replace("{", "{{").replace("}", "}}")


def _generic_part(part: str, name: str | None, name_token: str) -> str:
    """One path component of a template: the dive's name -> name_token, a date stamp -> *."""
    pieces = re.split(f"(?<![A-Za-z0-9])({re.escape(name)})(?![A-Za-z0-9])", part) if name else [part]
    out = []
    for k, piece in enumerate(pieces):
        if k % 2:
            out.append(name_token)
            continue
        stamps = list(_STAMP.finditer(piece))
        if stamps:
            head, tail = piece[: stamps[0].start()], piece[stamps[-1].end():]
            out.append(_literal(head) + "*" + (_literal(tail) if not re.search(r"\d", tail) else "*"))
        else:
            out.append(_literal(piece))
    return re.sub(r"\*+", "*", "".join(out))


def nav_template(rel: str, dive_rel_: str, dive_id: str) -> str | None:
    """A template that gives ``rel`` for this dive, or None when the path names no dive."""
    parts = rel.split("/")
    name = dive_rel_.rsplit("/", 1)[-1]
    single = "/" not in dive_id
    token = "{dive_id}" if single else "*"

    def build(before: list[str], placeholder: str, after: list[str]) -> str:
        return "/".join([*(_generic_part(p, None, "") for p in before), placeholder,
                         *(_generic_part(p, name, token) for p in after)])

    for seq, placeholder in ((dive_rel_.split("/"), "{dive}"), (dive_id.split("/"), "{dive_id}")):
        k = len(seq)
        for i in range(len(parts) - k):  # the file name itself is never the dive
            if parts[i:i + k] == seq:
                return build(parts[:i], placeholder, parts[i + k:])
    if single:  # the dive id in a folder or file name: nav/dive01.csv, nav/dive01_iFDO.json
        pattern = re.compile(f"(?<![A-Za-z0-9]){re.escape(dive_id)}(?![A-Za-z0-9])")
        if any(pattern.search(p) for p in parts):
            return "/".join(_generic_part(p, dive_id, "{dive_id}") for p in parts)
    return None


@dataclass
class ImageRefs:
    found: int  # of the first image paths a per-image file lists, how many exist
    checked: int
    example: str
    folders: set[str]  # folders of those paths, relative to the dive folder


@dataclass
class SourceGroup:
    kind: str
    template: str | None  # None: format exif (the images are the navigation)
    columns: dict | None
    options: dict = field(default_factory=dict)
    files: dict[str, list[str]] = field(default_factory=dict)  # dive id -> files (sorted)
    refs: ImageRefs | None = None  # what the image paths of one of its files point at
    navs: list[NavFile] = field(default_factory=list)
    shared: bool = False  # one file for several dives: its path names no dive

    @property
    def format(self) -> str:
        return "csv" if self.kind.startswith("csv") else self.kind

    def source(self) -> NavSource:
        extra = {k: v for k, v in self.options.items() if k in NavSource.model_fields}
        path = {} if self.template is None else {"path": self.template}
        return NavSource(format=self.format, columns=self.columns, **path, **extra)

    def unknown_options(self) -> dict:
        """Options a reader suggests that this catalog has no key for (said in the notes)."""
        return {k: v for k, v in self.options.items() if k not in NavSource.model_fields}


def group_sources(navs: list[NavFile], ids: dict[str, str]) -> tuple[dict[tuple, SourceGroup],
                                                                     list[NavFile]]:
    """Files that name a dive grouped by (format, template, column map); the others."""
    groups: dict[tuple, SourceGroup] = {}
    loose: list[NavFile] = []
    for nav in navs:
        placed = next(((i, r) for i, r in ids.items() if nav.rel.startswith(r + "/")), None)
        if placed:
            found = [(placed[0], nav_template(nav.rel, placed[1], placed[0]))]
        else:
            found = [(i, t) for i, r in ids.items() if (t := nav_template(nav.rel, r, i)) is not None]
        if not found or found[0][1] is None:
            loose.append(nav)
            continue
        dive_id, template = found[0]
        key = (nav.kind, template, json.dumps(nav.columns, sort_keys=True),
               json.dumps(nav.options, sort_keys=True))
        g = groups.setdefault(key, SourceGroup(nav.kind, template, nav.columns, dict(nav.options)))
        g.files.setdefault(dive_id, []).append(nav.rel)
        g.navs.append(nav)
    return groups, loose


def listed_images(root: Path, nav: NavFile, limit: int = 40) -> list[str] | None:
    """The first image paths a per-image file lists, as written (None: not such a file)."""
    lines = read_head(root / nav.rel, n_lines=limit + 1, n_bytes=1 << 20).lines or []
    refs: list[str] = []
    if nav.format == "acfr-stereo-pose":
        for line in lines:
            f = line.split()
            if len(f) == 15 and not line.startswith("%"):
                refs.append(f[10])
    elif nav.per_image and nav.format != "ifdo" and lines:
        delimiter = (nav.columns or {}).get("delimiter", ",")
        rows = list(csv.reader(lines, delimiter=delimiter))
        header = [norm_name(h) for h in rows[0]]
        names = [nav.image_column] if nav.image_column else ["relative_path", "image_path",
                                                             "filename"]
        col = next((header.index(norm_name(n)) for n in names if norm_name(n) in header), None)
        if col is None:
            return None
        refs = [r[col] for r in rows[1:] if len(r) > col and r[col].strip()]
    else:
        return None
    return [r.replace("\\", "/") for r in refs]


def image_refs(root: Path, nav: NavFile, dive_folder: str) -> ImageRefs | None:
    """How many of the first image paths a per-image file lists exist under the dive folder."""
    refs = listed_images(root, nav)
    if not refs:
        return None
    if nav.format == "acfr-stereo-pose":
        refs = [r if "/" in r else f"images/{r}" for r in refs]
    base = root / dive_folder
    # the builder matches a path whose folder differs by its file name, where one image has it
    where: dict[str, list[str]] = defaultdict(list)
    for dirpath, _, files in os.walk(base):
        rel = Path(dirpath).relative_to(base).as_posix()
        for f in files:
            where[f].append(rel)
    ok, folders = 0, set()
    for r in refs:
        if (base / r).is_file():
            ok += 1
            folders.add(posixpath.normpath(posixpath.dirname(r) or "."))
        elif len(where.get(posixpath.basename(r), ())) == 1:
            ok += 1
            folders.add(where[posixpath.basename(r)][0])
    return ImageRefs(ok, len(refs), refs[0], folders)


def choose_sources(groups: list[SourceGroup]) -> list[SourceGroup]:
    """Per format, the templates that cover its dives (fewest first, the best-matching one
    first); formats ordered most precise first."""
    by_kind: dict[str, list[SourceGroup]] = defaultdict(list)
    for g in groups:
        by_kind[g.kind].append(g)
    chosen = []
    for kind in sorted(by_kind, key=lambda k: FORMAT_RANK.get(k, 9)):
        left = set().union(*(g.files for g in by_kind[kind]))
        pool = list(by_kind[kind])
        while left and pool:
            best = max(pool, key=lambda g, left=left: _source_score(g, left))
            if not left & set(best.files):
                break
            chosen.append(best)
            pool.remove(best)
            left -= set(best.files)
    return chosen


def _source_score(g: SourceGroup, left: set[str]) -> tuple:
    """Dives still uncovered that it covers, then the share of its image paths that exist,
    the filtered (ekf) solution over dead reckoning, fewer wildcards, sorted order (LC < RC)."""
    found = g.refs.found / g.refs.checked if g.refs else 0.5
    template = g.template or ""
    return (len(left & set(g.files)), found, "ekf" in template.lower(),
            -template.count("*"), [-ord(ch) for ch in template])


def camera_note(chosen: list[SourceGroup], images: str, image_folders, dives: set[str],
                placed) -> list[str]:
    """A note when the per-image poses list one camera's folder (images/LC) and the images
    template also takes others (images/RC): those images get no pose."""
    first = next((g for g in chosen if FORMAT_RANK.get(g.kind, 9) <= 3), None)
    if first is None or not first.refs or not first.refs.found:
        return []
    tail = images.removeprefix("{dive}/").rpartition("/")[0]
    pattern = tail.split("/") if tail else []
    taken = set()
    for folder in image_folders:
        dive, t = placed.get(folder) or dive_of_image_folder(folder)
        parts = t.split("/") if t else []
        if dive in dives and len(parts) == len(pattern) and all(
                fnmatch.fnmatchcase(a, b) for a, b in zip(parts, pattern, strict=True)):
            taken.add(t or ".")
    listed = first.refs.folders
    rest = sorted(taken - listed)
    if not rest or not listed <= taken:
        return []
    ext = images.rpartition("*")[2]
    only = sorted(listed)[0]
    hint = (f'; to leave them out use images: "{{dive}}/{only}/*{ext}"' if len(listed) == 1
            else "")
    return [f"images: {first.template} lists images in {', '.join(sorted(listed))} only; those in "
            f"{', '.join(rest)} will be quarantined as no_nav{hint}"]


def check_units(root: Path, chosen: list[SourceGroup]) -> list[str]:
    """Read one file of each source with its reader. An ACFR file the reader refuses because
    its yaws are degrees (oplab-pipeline writes them so) gets ``yaw_unit: deg`` when it reads
    with it; any other refusal becomes a note naming the file and the reader's reason."""
    from ..readers import NavFormatError, read_nav

    notes = []
    for g in chosen:
        if g.template is None or not g.files:
            continue
        first = sorted(g.files)[0]
        rel = g.files[first][-1]
        options = {"yaw_unit": g.options.get("yaw_unit", "rad")} if g.kind == "acfr-stereo-pose" \
            else {}
        try:
            read_nav(g.format, root / rel, columns=g.columns, **options)
        except (NavFormatError, ValueError) as exc:
            why = str(exc).splitlines()[0]
            if g.kind == "acfr-stereo-pose" and "yaw_unit" not in g.options and "deg" in why:
                try:
                    read_nav(g.format, root / rel, yaw_unit="deg")
                except (NavFormatError, ValueError):
                    pass
                else:
                    g.options["yaw_unit"] = "deg"
                    notes.append(f"nav: {rel}: yaws outside +-2 pi, so in degrees (as "
                                 "oplab-pipeline writes them): yaw_unit: deg")
                    continue
            if g.format == "csv" and _unit_fix(root / rel, g, why):
                key, value = _UNIT_FIX.search(why).groups()
                said = why.removeprefix(f"{root / rel}: ")
                notes.append(f"nav: {rel}: the values contradict the guessed {key}, so "
                             f"{key}: {value} (the reader said: {said})")
                continue
            notes.append(f"nav: {rel} as {g.format}: the reader refuses it: {why}")
    return notes


# a csv reader's refusal of a declared unit ends naming the unit to set: "set heading_unit: rad"
_UNIT_FIX = re.compile(r"set (heading_unit|time_unit): (\w+)")


def _unit_fix(path: Path, g: SourceGroup, why: str) -> bool:
    """Whether the unit a refusal names reads the file: if so the group's column map takes it."""
    from ..readers import NavFormatError, read_nav

    m = _UNIT_FIX.search(why)
    if m is None or not g.columns:
        return False
    key, value = m.groups()
    columns = dict(g.columns, **{key: value})
    try:
        read_nav("csv", path, columns=columns)
    except (NavFormatError, ValueError):
        return False
    g.columns[key] = value
    for nav in g.navs:  # the sniff's "if it is in radians, set ..." is answered now
        nav.note = "; ".join(part for part in nav.note.split("; ") if f"set {key}:" not in part)
    return True
