"""``python -m pipeline init SURVEY_DIR``: propose a catalog for a survey folder tree.

The tree is scanned once:

* **Dive folders** are the folders that hold image files (jpg, jpeg, png, tif, tiff, any case)
  directly or in an image subfolder (``images/``, ``i*_cv/``, ``raw/``, ``LC/``...). They are
  grouped by their depth below the root; the largest group gives the ``dives`` glob: literal
  container folders (``raw``, ``dives``), ``*`` where dives differ, and a common literal prefix
  where a bare ``*`` would also match folders that are not dives (always at the root: ``dive*``).
* **Navigation** files are recognised by their content, never by the catalog's name for them:
  the header of a CSV (oplab camera poses: ``relative_path`` + ``latitude [deg]`` ...; oplab
  vehicle navigation: ``timestamp [s]`` ... without an image column; any other CSV with time,
  latitude, longitude and depth columns becomes ``format: csv`` with a column map), ACFR
  ``stereo_pose_est.data`` by its name or its first lines, iFDO JSON/YAML by
  ``image-set-header``. Each file is attributed to the dive it lies in, or whose ``{dive}`` path
  or ``{dive_id}`` it names (oplab's ``processed/<dive_id>/json_renav_<date>/...``), and becomes
  a template: date-stamped folders become globs (``json_renav_*``), the dive's name in a file
  name becomes ``{dive_id}`` (or ``*``). One source per format and template, per-image camera
  poses first, 10 Hz vehicle logs last.
* **Images**: the image subfolder and extension with the most files (``{dive}/images/*.jpg``).

The proposal is checked with the pipeline's own functions (:func:`pipeline.ingest.discover_dives`,
:func:`~pipeline.ingest.dive_images`, :func:`~pipeline.ingest.dive_nav_source`), so the report
says per dive what a build will use, and lists what it could not place.
"""

from __future__ import annotations

import csv
import datetime as dt
import fnmatch
import glob
import json
import os
import posixpath
import re
import statistics
import sys
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .catalog import Catalog, CsvColumns, NavSource
from .ingest import (
    discover_dives,
    dive_id_of,
    dive_images,
    dive_nav_source,
    dive_rel,
    expand,
    nav_candidates,
)
from .output import MARKER as OUTPUT_MARKER
from .readers import oplab_camera, oplab_nav
from .readers._common import norm_name

CATALOG_NAME = "catalog.yaml"
IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".tif", ".tiff")
_NAV_SUFFIXES = {".csv", ".tsv", ".txt", ".data", ".dat", ".json", ".yaml", ".yml"}
_CSV_SUFFIXES = {".csv", ".tsv", ".txt"}
# folders that hold a dive's images rather than being the dive
_IMAGE_FOLDER = re.compile(
    r"(images?|imgs?|photos?|pictures?|stills|frames|raw|jpe?g|png|tiff?|cam|cams|cameras?|"
    r"lc|rc|left|right|mono|colou?r|rgb|i.*_cv)", re.IGNORECASE)
# most precise first: per-image camera poses, then the vehicle's time series
_FORMAT_RANK = {"oplab-camera-csv": 0, "acfr-stereo-pose": 1, "ifdo": 2, "csv+image": 3,
                "oplab-nav-csv": 4, "csv": 5}
_FORMAT_NOTE = {
    "oplab-camera-csv": "oplab_pipeline camera poses, one row per image",
    "acfr-stereo-pose": "ACFR stereo poses, one row per image pair",
    "ifdo": "iFDO image metadata, one item per image",
    "csv+image": "plain CSV, one row per image (column map guessed: check it)",
    "oplab-nav-csv": "oplab 10 Hz vehicle navigation, matched by the time in image names",
    "csv": "plain CSV vehicle navigation (column map guessed: check it), matched by image time",
}
_LIST_MAX = 8  # items of a list in the report before "... and N more"
_IFDO_PREFIX = 4 << 20  # bytes of a JSON/YAML file searched for the iFDO header key


class ScaffoldError(ValueError):
    """A survey folder that cannot be described (one message for the user, exit status 2)."""


# ---------------------------------------------------------------------------- scanning


@dataclass
class NavFile:
    rel: str  # path from the root, forward slashes
    format: str  # a catalog format; "csv" with columns
    columns: dict | None = None
    per_image: bool = True

    @property
    def kind(self) -> str:
        return "csv+image" if self.format == "csv" and self.per_image else self.format


@dataclass
class Scan:
    root: Path
    images: dict[str, Counter] = field(default_factory=dict)  # folder rel -> suffix as written
    nav: list[NavFile] = field(default_factory=list)
    unknown_csv: list[str] = field(default_factory=list)
    csv_notes: dict[str, str] = field(default_factory=dict)  # rel -> why it is not navigation


def scan(root: Path) -> Scan:
    """Image folders and recognised navigation files under ``root`` (hidden folders, symlinked
    folders and the builder's output folders are not entered)."""
    out = Scan(root)
    for dirpath, dirnames, filenames in os.walk(root, onerror=None):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".")
                             and not os.path.exists(os.path.join(dirpath, d, OUTPUT_MARKER)))
        rel_dir = Path(dirpath).relative_to(root).as_posix()
        rel_dir = "" if rel_dir == "." else rel_dir
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            suffix = os.path.splitext(name)[1]
            rel = posixpath.join(rel_dir, name) if rel_dir else name
            if suffix.lower() in IMAGE_EXTS:
                out.images.setdefault(rel_dir, Counter())[suffix] += 1
            elif suffix.lower() in _NAV_SUFFIXES or name.lower() == "stereo_pose_est.data":
                if not rel_dir and name == CATALOG_NAME:
                    continue
                found = sniff(Path(dirpath) / name)
                if isinstance(found, NavFile):
                    found.rel = rel
                    out.nav.append(found)
                elif suffix.lower() in (".csv", ".tsv"):
                    out.unknown_csv.append(rel)
                    if found:
                        out.csv_notes[rel] = found
    return out


def _head(path: Path, n: int = 60) -> list[str] | None:
    """The first n lines of a text file, or None when it is not UTF-8 text."""
    try:
        with open(path, encoding="utf-8-sig", newline="") as fh:
            lines = []
            for line in fh:
                lines.append(line.rstrip("\r\n"))
                if len(lines) >= n:
                    break
            return lines
    except (UnicodeDecodeError, OSError):
        return None


def sniff(path: Path) -> NavFile | str | None:
    """The navigation format of a file by its content; None (or a reason, for a CSV that
    looks like navigation but cannot be described) when it is not navigation."""
    suffix = path.suffix.lower()
    if suffix in (".json", ".yaml", ".yml"):
        try:
            with open(path, "rb") as fh:
                head = fh.read(_IFDO_PREFIX)
        except OSError:
            return None
        return NavFile("", "ifdo") if b"image-set-header" in head else None
    lines = _head(path)
    if not lines:
        return None
    if path.name.lower() == "stereo_pose_est.data" or _acfr_like(lines):
        return NavFile("", "acfr-stereo-pose")
    if suffix not in _CSV_SUFFIXES:
        return None
    first = next((ln for ln in lines if ln.strip()), "")
    delimiter = max((",", ";", "\t"), key=first.count)
    header = next(csv.reader([first], delimiter=delimiter))
    names = {norm_name(h) for h in header}
    if delimiter == ",":
        if _has_columns(names, oplab_camera.COLUMNS):
            return NavFile("", "oplab-camera-csv")
        image_aliases = {norm_name(a) for a in oplab_camera.COLUMNS["image"][0]}
        if _has_columns(names, oplab_nav.COLUMNS) and not names & image_aliases:
            return NavFile("", "oplab-nav-csv", per_image=False)
    return guess_csv_columns(header, lines[1:], delimiter)


def _has_columns(names: set[str], spec: dict) -> bool:
    return all(any(norm_name(a) in names for a in aliases)
               for aliases, required, _ in spec.values() if required)


def _acfr_like(lines: list[str]) -> bool:
    for line in lines:
        s = line.strip()
        if s.upper().startswith("% STEREO_POSE_FILE"):
            return True
        if not s or s.startswith("%"):
            continue
        fields = s.split()
        if fields[0] in ("ORIGIN_LATITUDE", "ORIGIN_LONGITUDE"):
            return True
        return len(fields) == 15 and fields[10].lower().endswith(IMAGE_EXTS)
    return False


_CSV_ALIASES = {
    "time": ("timestamp", "time", "unix_time", "unixtime", "epoch", "epoch_timestamp",
             "datetime", "date_time", "utc", "utc_time", "time_utc", "timestamp_s", "time_s"),
    "lat": ("latitude", "lat", "lat_deg", "latitude_deg"),
    "lon": ("longitude", "lon", "long", "lng", "lon_deg", "longitude_deg"),
    "depth": ("depth", "depth_m", "vehicle_depth", "depth_below_surface"),
    "altitude": ("altitude", "altitude_m", "alt", "height_above_seabed", "altitude_above_seabed"),
    "heading": ("heading", "heading_deg", "yaw", "yaw_deg", "heading_rad", "yaw_rad"),
    "image": ("image", "image_path", "image_name", "image_file", "filename", "file_name",
              "file", "relative_path", "path"),
}


def _bare(name: str) -> str:
    """'Latitude (deg)' -> 'latitude': case, spaces and bracketed units ignored."""
    s = re.sub(r"\[[^\]]*\]|\([^)]*\)", "", str(name)).strip().lower()
    return re.sub(r"[\s-]+", "_", s).strip("_")


def guess_csv_columns(header: list[str], rows: list[str], delimiter: str) -> NavFile | str | None:
    """A ``format: csv`` column map for a header with time, latitude, longitude and depth."""
    bare = [_bare(h) for h in header]
    pos = {}
    for key, aliases in _CSV_ALIASES.items():
        hit = next((i for a in aliases for i, b in enumerate(bare) if b == a), None)
        if hit is not None:
            pos[key] = hit
    if not {"time", "lat", "lon", "depth"} <= set(pos):
        has_xy = {"easting", "northing"} <= set(bare)
        if "time" in pos and has_xy:
            return "easting/northing only: a column map needs its xy_crs (EPSG code)"
        return None
    sample = [r for r in csv.reader([r for r in rows if r.strip()][:50], delimiter=delimiter)
              if len(r) == len(header)]
    if not sample:
        return None
    columns: dict = {k: header[i] for k, i in pos.items()}
    t0 = sample[0][pos["time"]].strip()
    try:
        t = float(t0)
    except ValueError:
        try:
            dt.datetime.fromisoformat(t0.replace("Z", "+00:00"))
        except ValueError:
            return f"time column {header[pos['time']]!r}: {t0!r} is neither unix seconds nor ISO 8601"
        columns["time_unit"] = "iso8601"
    else:
        if not 6.3e8 <= t <= 4.2e9:
            return (f"time column {header[pos['time']]!r}: {t0!r} is not unix seconds "
                    "(milliseconds?); convert it or map it by hand")
    depths = []
    for r in sample:
        try:
            depths.append(float(r[pos["depth"]]))
        except ValueError:
            pass
    if depths and statistics.median(depths) < 0:
        columns["depth_positive"] = "up"
    if "heading" in pos and "rad" in header[pos["heading"]].lower():
        columns["heading_unit"] = "rad"
    if delimiter != ",":
        columns["delimiter"] = delimiter
    CsvColumns(**columns)
    return NavFile("", "csv", columns=columns, per_image="image" in pos)


# ---------------------------------------------------------------------------- dives


def dive_of_image_folder(rel: str) -> tuple[str | None, str]:
    """(dive folder, image subfolder inside it) for a folder holding images; the dive is None
    when the images belong to the root itself (SURVEY_DIR is then one dive, not a survey)."""
    parts = rel.split("/") if rel else []
    n = len(parts)
    if n == 0:
        return None, ""
    last = bool(_IMAGE_FOLDER.fullmatch(parts[-1]))
    parent = n >= 2 and bool(_IMAGE_FOLDER.fullmatch(parts[-2]))
    if parent and n - 2 >= 1:  # <dive>/images/LC, <dive>/image/i1_cv
        cut = n - 2
    elif last:  # <dive>/images
        if n - 1 == 0 or (parent and n - 2 == 0):
            return None, rel
        cut = n - 1
    else:  # images directly in the dive folder
        cut = n
    return "/".join(parts[:cut]), "/".join(parts[cut:])


def generalise(values: list[str] | set[str]) -> str:
    """A glob for a set of names: their common literal prefix and suffix (digits excluded, as
    they number the items) around ``*``; a single name without digits stays literal."""
    values = sorted(set(values))
    prefix = re.match(r"\D*", os.path.commonprefix(values)).group(0)
    rev = os.path.commonprefix([v[::-1] for v in values])
    suffix = re.match(r"\D*", rev).group(0)[::-1]
    if len(values) == 1 and prefix == values[0]:
        return glob.escape(values[0])
    room = min(len(v) for v in values) - len(prefix)
    suffix = suffix[len(suffix) - max(room, 0):] if len(suffix) > room else suffix
    middles = [v[len(prefix):len(v) - len(suffix)] for v in values]
    if not any(re.search(r"\d", m) for m in middles) and max(len(prefix), len(suffix)) < 3:
        return "*"  # alpha, beta: a shared letter is chance, not a naming scheme
    return glob.escape(prefix) + "*" + glob.escape(suffix)


def _glob_dirs(root: Path, pattern: str) -> set[str]:
    return {Path(p).relative_to(root).as_posix() for p in glob.glob(str(root / pattern))
            if Path(p).is_dir() and not (Path(p) / OUTPUT_MARKER).exists()}


def dives_glob(root: Path, rels: list[str]) -> tuple[str, list[str]]:
    """The ``dives`` glob for dive folders at one depth, and the folders it matches that are
    not among them."""
    split = [r.split("/") for r in rels]
    n = len(split[0])
    levels = [sorted({p[i] for p in split}) for i in range(n)]
    segs = []
    for i, values in enumerate(levels):
        if i == n - 1:
            segs.append(generalise(values) if n == 1 else "*")
        elif len(values) == 1 and not re.search(r"\d", values[0]):
            segs.append(glob.escape(values[0]))  # a container folder: raw/, dives/
        else:
            segs.append("*")  # a year, a cruise: part of the dive id
    pattern = "/".join(segs)
    extra = sorted(_glob_dirs(root, pattern) - set(rels))
    if extra:
        refined = "/".join(s if s != "*" else generalise(levels[i]) for i, s in enumerate(segs))
        if refined != pattern:
            pattern, extra = refined, sorted(_glob_dirs(root, refined) - set(rels))
    return pattern, extra


# ---------------------------------------------------------------------------- navigation


_STAMP = re.compile(r"\d{6,}")


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
    text = "".join(out)
    return re.sub(r"\*+", "*", text)


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
    template: str
    columns: dict | None
    files: dict[str, list[str]] = field(default_factory=dict)  # dive id -> files (sorted)
    refs: ImageRefs | None = None  # what the image paths of one of its files point at
    navs: list[NavFile] = field(default_factory=list)


    def source(self) -> NavSource:
        return NavSource(format="csv" if self.kind.startswith("csv") else self.kind,
                         path=self.template, columns=self.columns)


def _image_refs(root: Path, nav: NavFile, dive_folder: str) -> ImageRefs | None:
    """How many of the first image paths a per-image file lists exist under the dive folder."""
    path = root / nav.rel
    lines = _head(path, 41) or []
    refs: list[str] = []
    if nav.format == "acfr-stereo-pose":
        for line in lines:
            f = line.split()
            if len(f) == 15 and not line.startswith("%"):
                refs.append(f[10] if "/" in f[10] else f"images/{f[10]}")
    elif nav.format in ("oplab-camera-csv", "csv") and nav.per_image and lines:
        delimiter = (nav.columns or {}).get("delimiter", ",")
        rows = list(csv.reader(lines, delimiter=delimiter))
        header = [norm_name(h) for h in rows[0]]
        names = ([nav.columns["image"]] if nav.columns else oplab_camera.COLUMNS["image"][0])
        col = next((header.index(norm_name(n)) for n in names if norm_name(n) in header), None)
        if col is None:
            return None
        refs = [r[col] for r in rows[1:] if len(r) > col and r[col].strip()]
    else:
        return None
    if not refs:
        return None
    base = root / dive_folder
    refs = [r.replace("\\", "/") for r in refs]
    ok = sum((base / r).exists() for r in refs)
    folders = {posixpath.normpath(posixpath.dirname(r) or ".") for r in refs}
    return ImageRefs(ok, len(refs), refs[0], folders)


# ---------------------------------------------------------------------------- proposal


@dataclass
class Proposal:
    root: Path
    name: str
    dives: str
    images: str
    nav: list[SourceGroup]
    output: str
    catalog: Catalog
    dive_ids: list[str]
    formats_found: list[str]
    with_images: int  # dive folders with images (the glob may match others)
    per_dive: list[tuple]  # dive, images, format, nav file, index of the source used
    unplaced: list[str]
    notes: list[str]


def _more(items: list[str], limit: int = _LIST_MAX) -> str:
    head = ", ".join(items[:limit])
    return head + (f" ... and {len(items) - limit} more" if len(items) > limit else "")


def _counts(c: Counter) -> str:
    by_ext: Counter = Counter()
    for suffix, k in c.items():
        by_ext[suffix.lower()] += k
    return ", ".join(f"{k} {s}" for s, k in by_ext.most_common())


def _folder_files(root: Path, folder: str, c: Counter) -> str:
    """'extra/photos (12 .jpg)', or the file names themselves when there are few."""
    if sum(c.values()) <= 3:
        base = root / folder
        names = sorted(q.name for q in base.iterdir() if q.suffix in c)
        return ", ".join(posixpath.join(folder, n) if folder else n for n in names)
    return f"{folder or '.'} ({_counts(c)})"


def _safe_name(text: str) -> str:
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-_.")
    return name or "survey"


def _output_ok(folder: Path, name: str, root: Path) -> bool:
    """A folder the builder can use for this catalog: new, empty, or its own output."""
    if not folder.exists():
        return True
    if not folder.is_dir():
        return False
    marker = folder / OUTPUT_MARKER
    if marker.is_file():
        try:
            rec = json.loads(marker.read_text())
        except (OSError, ValueError):
            return False
        return (isinstance(rec, dict) and rec.get("catalog") == name
                and rec.get("root") in (None, str(root)))
    return not any(folder.iterdir())


def _images_template(root: Path, dive_rels: list[str], scan_: Scan) -> tuple[str, list[str]]:
    """The images template (image subfolder + extension with the most files) and notes."""
    tails: dict[str, Counter] = defaultdict(Counter)  # tail -> lower-case suffix -> files
    wanted = set(dive_rels)
    for folder, c in scan_.images.items():
        dive, tail = dive_of_image_folder(folder)
        if dive in wanted:
            for suffix, k in c.items():
                tails[tail][suffix.lower()] += k
    candidates: dict[str, Counter] = {}
    by_depth: dict[int, list[str]] = defaultdict(list)
    for tail in tails:
        candidates["/".join(glob.escape(p) for p in tail.split("/")) if tail else ""] = tails[tail]
        by_depth[len(tail.split("/")) if tail else 0].append(tail)
    for depth, group in by_depth.items():
        if depth and len(group) > 1:
            split = [t.split("/") for t in group]
            levels = [sorted({p[i] for p in split}) for i in range(depth)]
            pattern = "/".join(glob.escape(v[0]) if len(v) == 1 else generalise(v) for v in levels)
            if pattern.split("/")[0] != "*":  # never a bare */: it would take any subfolder
                total: Counter = Counter()
                for t in group:
                    if all(fnmatch.fnmatchcase(p, s) for p, s in zip(t.split("/"), pattern.split("/"),
                                                           strict=True)):
                        total.update(tails[t])
                candidates[pattern] = total

    def score(item):
        tail, c = item
        k = c.most_common(1)[0][1]
        return (k, -tail.count("*"), -len(tail))

    tail, c = max(candidates.items(), key=score)
    ext = c.most_common(1)[0][0]
    template = "{dive}/" + (tail.replace("{", "{{").replace("}", "}}") + "/" if tail else "") + "*" + ext
    notes = []
    others = {s: k for s, k in c.items() if s != ext}
    if others:
        what = ", ".join(f"{k} {s}" for s, k in sorted(others.items()))
        notes.append(f"images: the image folders also hold {what} files; the template "
                     f"takes one extension ({ext}): the others need a catalog of their own")
    return template, notes


def propose(survey_dir: str | Path, name: str | None = None, output: str | None = None) -> Proposal:
    """Scan the survey folder and propose a catalog (ScaffoldError for user errors)."""
    given = Path(survey_dir)
    if not given.exists():
        raise ScaffoldError(f"{given}: no such folder")
    if not given.is_dir():
        raise ScaffoldError(f"{given} is a file, not a folder; give the survey's top folder "
                            "(the one that holds the dive folders)")
    root = given.resolve()
    if name is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
        raise ScaffoldError(f"--name {name!r}: expected letters, digits, '_', '-' or '.' "
                            "(it names a deployment), starting with a letter or digit")
    name = name or _safe_name(root.name)
    try:
        s = scan(root)
    except OSError as exc:
        raise ScaffoldError(f"{root}: cannot read the folder tree ({exc})") from None
    notes: list[str] = []
    unplaced: list[str] = []

    # dive folders, grouped by depth
    dive_counts: dict[str, Counter] = defaultdict(Counter)
    outside: list[tuple[str, Counter]] = []
    for folder, c in sorted(s.images.items()):
        dive, _ = dive_of_image_folder(folder)
        if dive is None:
            outside.append((folder, c))
        else:
            dive_counts[dive].update(c)
    if not dive_counts:
        if outside:
            where = _more([f"{f or '.'} ({_counts(c)})" for f, c in outside])
            raise ScaffoldError(f"{root}: the images ({where}) belong to the folder itself, so it "
                                "looks like one dive; run init on the folder above it, which holds "
                                "the dive folders")
        raise ScaffoldError(f"{root}: no image files ({', '.join(IMAGE_EXTS)}, any case) in this "
                            "folder tree; give the survey's top folder")
    by_depth: dict[int, list[str]] = defaultdict(list)
    for dive in dive_counts:
        by_depth[dive.count("/") + 1].append(dive)

    def weight(depth: int):
        ds = by_depth[depth]
        return (sum(sum(dive_counts[d].values()) for d in ds), len(ds), -depth)

    depth = max(by_depth, key=weight)
    dive_rels = sorted(by_depth[depth])
    pattern, extra = dives_glob(root, dive_rels)
    for other in sorted(d for d in by_depth if d != depth):
        missed = sorted(by_depth[other])
        notes.append(f"dives: folders with images sit at different depths; {pattern!r} takes the "
                     f"{len(dive_rels)} at depth {depth} and misses {len(missed)} at depth {other}")
        unplaced.append(f"image folders not matched by dives {pattern!r}: " + _more(
            [f"{d} ({_counts(dive_counts[d])})" for d in missed]))
    if outside:
        unplaced.append("images outside any dive folder: " + _more(
            [_folder_files(root, f, c) for f, c in outside]))
    if extra:
        unplaced.append(f"folders matched by dives {pattern!r} that hold no images: " + _more(extra))

    placeholder = [NavSource(format="oplab-nav-csv", path="{dive}/.")]
    probe = Catalog(name=name, root=root, dives=pattern, nav=placeholder, images="{dive}/*",
                    output=root / "manifests")
    ids = {dive_id_of(probe, rel): rel for rel in dive_rels}
    images, image_notes = _images_template(root, dive_rels, s)
    notes += image_notes

    # navigation: one group per (format, template, column map)
    groups: dict[tuple, SourceGroup] = {}
    unattributed: list[str] = []
    for nav in s.nav:
        placed = None
        for dive_id, rel in ids.items():
            if nav.rel.startswith(rel + "/"):
                placed = (dive_id, rel)
                break
        templates = []
        if placed:
            templates = [(placed[0], nav_template(nav.rel, placed[1], placed[0]))]
        else:
            templates = [(i, t) for i, r in ids.items()
                         if (t := nav_template(nav.rel, r, i)) is not None]
        if not templates or templates[0][1] is None:
            unattributed.append(f"{nav.rel} ({nav.kind.replace('+image', '')})")
            continue
        dive_id, template = templates[0]
        key = (nav.kind, template, json.dumps(nav.columns, sort_keys=True))
        g = groups.setdefault(key, SourceGroup(nav.kind, template, nav.columns))
        g.files.setdefault(dive_id, []).append(nav.rel)
        g.navs.append(nav)
    for g in groups.values():  # the file a build reads: the last in sorted order
        dive_id = sorted(g.files)[0]
        last = g.files[dive_id][-1]
        g.refs = _image_refs(root, next(n for n in g.navs if n.rel == last), ids[dive_id])
    chosen = _choose_sources(groups)
    skipped = [f"{g.kind.replace('+image', '')} {g.template} ({len(g.files)} dive(s))"
               for g in groups.values() if g not in chosen]
    if skipped:
        notes.append("nav: also found, not used (the sources above serve the same dives):"
                     + "".join(f"\n    {line}" for line in skipped[:_LIST_MAX])
                     + (f"\n    ... and {len(skipped) - _LIST_MAX} more"
                        if len(skipped) > _LIST_MAX else ""))
    for g in chosen:
        if g.refs and g.refs.found == 0:
            notes.append(f"nav: {g.template}: none of the first {g.refs.checked} image paths it "
                         f"lists (e.g. {g.refs.example!r}) is found under the dive folder; its "
                         "images will be quarantined as no_nav")
    notes += _camera_note(chosen, images, s, set(dive_rels))
    if unattributed:
        unplaced.append("navigation files not attributed to a dive: " + _more(unattributed))
    for rel in s.unknown_csv:
        why = s.csv_notes.get(rel)
        unplaced.append(f"CSV not recognised as navigation: {rel}" + (f" ({why})" if why else ""))
    if not chosen:
        raise ScaffoldError(_report_unfinished(root, pattern, dive_rels, unplaced)
                            + f"\n{root}: no navigation file of a dive recognised (oplab camera or "
                            "vehicle CSV, ACFR stereo_pose_est.data, iFDO JSON/YAML, or a CSV with "
                            "time, latitude, longitude and depth columns); no catalog proposed")

    out_rel, out_note = _output(root, name, output, pattern, dive_rels)
    if out_note:
        notes.append(out_note)
    cat = Catalog(name=name, root=root, dives=pattern, nav=[g.source() for g in chosen],
                  images=images, output=(root / out_rel).resolve())
    dive_ids = discover_dives(cat)
    per_dive, no_nav = [], []
    for d in dive_ids:
        n = len(dive_images(cat, d))
        used = dive_nav_source(cat, d)
        if used:
            src, path = used
            k = cat.nav.index(src)
            per_dive.append((d, n, src.format, path.relative_to(root).as_posix(), k))
        else:
            per_dive.append((d, n, "-", "no navigation file", None))
            if not n:  # a folder the glob takes that holds no images: listed once, below
                continue
            tried = ", ".join(expand(src.path, cat, d) for src in cat.nav)
            no_nav.append(f"dive {d}: no navigation file (tried {_more(tried.split(', '), 4)})")
    unplaced[:0] = no_nav
    for k, (g, src) in enumerate(zip(chosen, cat.nav, strict=True)):
        for d, files in g.files.items():
            if d in dive_ids and files[-1] not in {
                    q.relative_to(root).as_posix() for q in nav_candidates(cat, src, d)}:
                notes.append(f"nav: source {k + 1} does not reach {files[-1]} (dive {d})")
    _images_not_taken(root, cat, dive_ids, s, unplaced)
    case = sum(k for c in s.images.values() for suffix, k in c.items() if suffix != suffix.lower())
    if case:
        upper = sorted({suffix for c in s.images.values() for suffix in c if suffix != suffix.lower()})
        notes.append(f"images: {case} file(s) end in {', '.join(upper)}; the builder matches the "
                     "extension in any case")
    formats = sorted({g.source().format for g in chosen}, key=lambda f: _FORMAT_RANK.get(f, 9))
    return Proposal(root, name, pattern, images, chosen, out_rel, cat, dive_ids, formats,
                    len(dive_rels), per_dive, unplaced, notes)


def _choose_sources(groups: dict[tuple, SourceGroup]) -> list[SourceGroup]:
    """Per format, the templates that cover its dives (fewest first, the best-matching one
    first); formats ordered most precise first."""
    by_kind: dict[str, list[SourceGroup]] = defaultdict(list)
    for g in groups.values():
        by_kind[g.kind].append(g)
    chosen = []
    for kind in sorted(by_kind, key=lambda k: _FORMAT_RANK.get(k, 9)):
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


def _camera_note(chosen: list[SourceGroup], images: str, s: Scan, dives: set[str]) -> list[str]:
    """A note when the per-image poses list one camera's folder (images/LC) and the images
    template also takes others (images/RC): those images get no pose."""
    first = next((g for g in chosen if _FORMAT_RANK[g.kind] <= 3), None)
    if first is None or not first.refs or not first.refs.found:
        return []
    tail = images.removeprefix("{dive}/").rpartition("/")[0]
    pattern = tail.split("/") if tail else []
    taken = set()
    for folder in s.images:
        dive, t = dive_of_image_folder(folder)
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


def _source_score(g: SourceGroup, left: set[str]) -> tuple:
    """Dives still uncovered that it covers, then the share of its image paths that exist,
    the filtered (ekf) solution over dead reckoning, fewer wildcards, sorted order (LC < RC)."""
    found = g.refs.found / g.refs.checked if g.refs else 0.5
    return (len(left & set(g.files)), found, "ekf" in g.template.lower(),
            -g.template.count("*"), [-ord(ch) for ch in g.template])


def _output(root: Path, name: str, output: str | None, pattern: str,
            dive_rels: list[str]) -> tuple[str, str | None]:
    """The output folder as written in the catalog (relative to the root where inside it)."""
    def inside_dive(p: Path) -> str | None:
        for rel in dive_rels:
            if p == root / rel or p.is_relative_to(root / rel):
                return rel
        return None

    def as_written(p: Path) -> str:
        return p.relative_to(root).as_posix() if p.is_relative_to(root) else str(p)

    if output is not None:
        p = Path(output).expanduser()
        p = (Path.cwd() / p).resolve() if not p.is_absolute() else p.resolve()
        if p == root or root.is_relative_to(p):
            raise ScaffoldError(f"--output {output}: it {'is' if p == root else 'holds'} the "
                                "survey folder; the builder needs a folder of its own")
        dive = inside_dive(p)
        if dive:
            raise ScaffoldError(f"--output {output}: inside the dive folder {dive}; the builder "
                                "never writes among a dive's files; choose a folder of its own")
        if p.exists() and not p.is_dir():
            raise ScaffoldError(f"--output {output} is a file, not a folder")
        if not _output_ok(p, name, root):
            raise ScaffoldError(f"--output {output} is not empty and holds no manifests of "
                                f"catalog {name!r}; the builder only uses a new or empty folder, "
                                "or its own output")
        return as_written(p), None
    depth = pattern.count("/") + 1

    def clash(rel: str) -> bool:
        """The dives glob would take the folder for a dive: it exists without the builder's
        marker (a folder with the marker is never a dive)."""
        return (depth == 1 and fnmatch.fnmatchcase(rel, pattern) and (root / rel).is_dir()
                and not (root / rel / OUTPUT_MARKER).exists())

    first = "manifests"
    why = (f"the dives glob {pattern!r} would take it for a dive" if clash(first) else
           "it is not empty and holds no manifests of this catalog")
    for k in range(1, 100):
        rel = first if k == 1 else f"{first}-{k}"
        if not clash(rel) and _output_ok(root / rel, name, root):
            note = None if k == 1 else f"output: not {first}/: {why}; proposing {rel}/"
            return rel, note
    sibling = os.path.relpath(root.parent / f"{root.name}-manifests", root).replace(os.sep, "/")
    return sibling, f"output: no free manifests folder under the root; proposing {sibling}"


def _images_not_taken(root: Path, cat: Catalog, dive_ids: list[str], s: Scan,
                      unplaced: list[str]) -> None:
    """Image files inside the dive folders that the images template does not match."""
    taken: Counter = Counter()
    for d in dive_ids:
        for rel in dive_images(cat, d):
            taken[posixpath.dirname(rel)] += 1
    rels = {dive_rel(cat, d) for d in dive_ids}
    missed = []
    for folder, c in sorted(s.images.items()):
        dive, _ = dive_of_image_folder(folder)
        if dive in rels:
            left = sum(c.values()) - taken.get(folder, 0)
            if left > 0:
                missed.append(f"{folder} ({left} file(s))")
    if missed:
        unplaced.append(f"images in dive folders not matched by images {cat.images!r}: "
                        + _more(missed))


def _report_unfinished(root: Path, pattern: str, dive_rels: list[str], unplaced: list[str]) -> str:
    lines = [f"survey   {root}", f"dives    {pattern}  ({len(dive_rels)} folders)"]
    if unplaced:
        lines.append("could not place")
        lines += [f"  {u}" for u in unplaced]
    return "\n".join(lines)


# ---------------------------------------------------------------------------- output


def _q(text: str) -> str:
    """A YAML double-quoted scalar (JSON string syntax is valid YAML)."""
    return json.dumps(text, ensure_ascii=False)


def catalog_yaml(p: Proposal) -> str:
    """The proposal as a commented catalog YAML."""
    n_images = sum(row[1] for row in p.per_dive)
    depth = p.dives.count("/") + 1
    lines = [
        "# Catalog proposed by `python -m pipeline init` for the survey in this folder; check it,",
        f"# then build with: python -m pipeline build --catalog {CATALOG_NAME}",
        "# Templates: {dive} is a dive folder's path from the root (e.g. raw/2019/c01/dive01),",
        "# {dive_id} the part of it the wildcards of 'dives' match (e.g. 2019/c01/dive01).",
        "",
        "# Names the catalog (its deployment and output folder): letters, digits, _ - .",
        f"name: {_q(p.name)}",
        "# Folder every path below is relative to; \".\" is the folder this file is in.",
        "root: \".\"",
        f"# Glob of the dive folders under the root: {len(p.dive_ids)} folder(s), {depth} "
        f"level(s) below it.",
        f"dives: {_q(p.dives)}",
        "# Navigation sources, tried in this order for each dive: the first whose path matches a",
        "# file is used (of several matches, the last in sorted order: the newest json_renav_*).",
        "nav:",
    ]
    for k, g in enumerate(p.nav):
        covered = sum(1 for row in p.per_dive if row[4] == k)
        lines.append(f"  # {_FORMAT_NOTE[g.kind]} ({covered} of {len(p.dive_ids)} dives use it)")
        src = g.source()
        lines.append(f"  - format: {src.format}")
        lines.append(f"    path: {_q(src.path)}")
        if src.columns is not None:
            lines.append("    columns:  # column names in the file; time in unix seconds "
                         "unless time_unit says iso8601")
            for k, v in g.columns.items():
                lines.append(f"      {k}: {_q(v)}")
    lines += [
        "# Image files of each dive; the extension matches in any case (.jpg and .JPG).",
        f"# {sum(row[1] for row in p.per_dive)} files matched." if n_images else "#",
        f"images: {_q(p.images)}",
        "# Optional CSV of image_id,label for evaluation; null when there is none.",
        "labels: null",
        "# Where the builder writes the manifests: a folder of its own, never inside a dive.",
        f"output: {_q(p.output)}",
        "",
        "# Other settings, with their defaults:",
        "# validate: decode          # decode every image (catches truncated files); or header",
        "# max_interp_gap_s: 2.0     # largest navigation gap an image time is interpolated over",
        "# crs: auto                 # projected CRS of the manifests; auto = the site's UTM zone",
        "# pairs: {r_loc_m: 5.0}     # positive pairs: images within this many metres",
        "# train_size: [192, 256]    # [height, width] of the training shards",
    ]
    return "\n".join(lines) + "\n"


def report(p: Proposal) -> str:
    """What was found, per dive, and what could not be placed (for a person to read)."""
    total = sum(row[1] for row in p.per_dive)
    lines = [
        f"survey   {p.root}",
        f"dives    {p.dives}  ({p.with_images} folders"
        + (f", and {len(p.dive_ids) - p.with_images} without images)"
           if len(p.dive_ids) > p.with_images else ")"),
        f"images   {p.images}  ({total} files)",
        f"nav      formats found: {', '.join(p.formats_found)}",
    ]
    used = Counter(row[4] for row in p.per_dive)
    fw = max([6] + [len(g.source().format) for g in p.nav])
    lines.append(f"         #  {'format':<{fw}}  found  used  path, tried in this order")
    for k, g in enumerate(p.nav):
        lines.append(f"         {k + 1:<2} {g.source().format:<{fw}}  {len(g.files):>5}  "
                     f"{used[k]:>4}  {g.template}")
    lines.append("         (found: dives with such a file; used: dives it locates)")
    lines += [f"output   {p.output}", ""]
    w = max([4] + [len(row[0]) for row in p.per_dive])
    iw = max([6] + [len(str(row[1])) for row in p.per_dive])
    fw = max([10] + [len(row[2]) for row in p.per_dive])
    lines.append(f"{'dive':<{w}}  {'images':>{iw}}  {'navigation':<{fw}}  file")
    for d, n, fmt, path, _ in p.per_dive:
        lines.append(f"{d:<{w}}  {n:>{iw}}  {fmt:<{fw}}  {path}")
    if p.unplaced:
        lines += ["", "could not place"] + [f"  {u}" for u in p.unplaced]
    if p.notes:
        lines += ["", "notes"] + [f"  {n}" for n in p.notes]
    return "\n".join(lines)


def write_catalog(p: Proposal, text: str, force: bool) -> Path:
    """SURVEY_DIR/catalog.yaml; an existing file is replaced only with force."""
    target = p.root / CATALOG_NAME
    if force:
        tmp = target.with_name(f".{CATALOG_NAME}.{os.getpid()}.tmp")
        tmp.write_text(text)
        os.replace(tmp, target)
        return target
    try:
        with open(target, "x") as fh:  # never replaces a file, even one made a moment ago
            fh.write(text)
    except FileExistsError:
        raise ScaffoldError(f"{target} exists; not overwritten. Compare it with the proposal "
                            "(run without --write to print it), or add --force to replace "
                            "it") from None
    return target


def run_init(args) -> int:
    """The ``init`` subcommand: report, then print the catalog or write it (exit 2 on user
    errors, with one message on stderr)."""
    try:
        if args.force and not args.write:
            raise ScaffoldError("--force only applies with --write (it replaces an existing "
                                f"{CATALOG_NAME})")
        p = propose(args.survey_dir, name=args.name, output=args.output)
        text = catalog_yaml(p)
        _check(p, text)
        if args.write:
            target = write_catalog(p, text, args.force)
            print(report(p))
            print(f"\nwrote {target}; build with: python -m pipeline build --catalog {target}")
        else:
            print(report(p), file=sys.stderr)
            print(f"\n(catalog below; add --write to save it as {p.root / CATALOG_NAME})\n",
                  file=sys.stderr)
            sys.stdout.write(text)
    except ScaffoldError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"error: {exc.filename or args.survey_dir}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    return 0


def _check(p: Proposal, text: str) -> None:
    """The written text must describe the proposal (and validate as a catalog)."""
    raw = yaml.safe_load(text)
    raw["root"] = str(p.root)
    cat = Catalog.model_validate(raw)
    if cat.dives != p.dives or cat.images != p.images or len(cat.nav) != len(p.nav):
        raise AssertionError("catalog text does not match the proposal")
