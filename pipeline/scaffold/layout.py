"""Dive folders and image templates: globs that describe the dives found *and the ones to come*.

A catalog is re-indexed on a schedule, so a name that belongs to one dive (its own folder name,
a date-stamped image folder such as ACFR's ``i20150918_000954_cv``, ``dive01_images``,
``20220815``) never stays literal in a template, even when the survey has one dive so far.
"""

from __future__ import annotations

import fnmatch
import glob
import os
import re
from collections import Counter, defaultdict
from pathlib import Path

from ..output import MARKER as OUTPUT_MARKER

# folders that hold a dive's images rather than being the dive
_IMAGE_FOLDER = re.compile(
    r"(images?|imgs?|photos?|pictures?|stills|frames|raw|jpe?g|png|tiff?|cam|cams|cameras?|"
    r"lc|rc|left|right|mono|colou?r|rgb|i.*_cv)", re.IGNORECASE)
# a dive's own image folder, named by its date or after the dive (20220815, dive01_images);
# only below a dive folder: at the root, a date-named folder is the dive itself
_OWN_IMAGE_FOLDER = re.compile(r"(\d{6,}([_-]\d+)*|.*_(images?|imgs?|photos?))", re.IGNORECASE)
_STAMP = re.compile(r"\d{6,}")  # a date or date-time stamp (20220815, 20150918_000954)


def dive_of_image_folder(rel: str, own_folders: bool = True) -> tuple[str | None, str]:
    """(dive folder, image subfolder inside it) for a folder holding images; the dive is None
    when the images belong to the root itself (SURVEY_DIR is then one dive, not a survey).
    ``own_folders`` False: a date-named folder is a dive, not a dive's image folder."""
    parts = rel.split("/") if rel else []
    n = len(parts)
    if n == 0:
        return None, ""
    parent = n >= 2 and bool(_IMAGE_FOLDER.fullmatch(parts[-2]))
    last = bool(_IMAGE_FOLDER.fullmatch(parts[-1])) or (
        own_folders and n >= 2 and not parent and bool(_OWN_IMAGE_FOLDER.fullmatch(parts[-1])))
    if parent and n - 2 >= 1:  # <dive>/images/LC, <dive>/image/i1_cv
        cut = n - 2
    elif last:  # <dive>/images
        if n - 1 == 0 or (parent and n - 2 == 0):
            return None, rel
        cut = n - 1
    else:  # images directly in the dive folder
        cut = n
    return "/".join(parts[:cut]), "/".join(parts[cut:])


def place_image_folders(folders) -> dict[str, tuple[str | None, str]]:
    """dive_of_image_folder for every folder holding images, seen together: where one folder
    holds several date-named image folders (c01/20190403, c01/20190404), those are dives."""
    parents = Counter(f.rpartition("/")[0] for f in folders
                      if "/" in f and _OWN_IMAGE_FOLDER.fullmatch(f.rpartition("/")[2]))
    return {f: dive_of_image_folder(f, own_folders=parents[f.rpartition("/")[0]] < 2)
            for f in folders}


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
    not among them. One dive named with a number (dive01, r20150918_000954_site) gives the
    prefix before its number and ``*`` (dive*, r*), so the next dive is found too."""
    split = [r.split("/") for r in rels]
    n = len(split[0])
    levels = [sorted({p[i] for p in split}) for i in range(n)]
    segs = []
    for i, values in enumerate(levels):
        if i == n - 1 and n == 1:
            one = values[0]
            lead = re.match(r"\D*", one).group(0)
            segs.append(glob.escape(lead) + "*" if len(values) == 1 and lead != one and lead
                        else generalise(values))
        elif i == n - 1:
            segs.append("*")
        elif len(values) == 1 and not re.search(r"\d", values[0]):
            segs.append(glob.escape(values[0]))  # a container folder: raw/, dives/
        else:
            segs.append("*")  # a year, a cruise: part of the dive id
    pattern = "/".join(segs)
    extra = sorted(_glob_dirs(root, pattern) - set(rels))
    if extra:
        refined = "/".join(s if s != "*" and i < n - 1 else generalise(levels[i])
                           if s == "*" or i == n - 1 else s for i, s in enumerate(segs))
        if refined != pattern:
            pattern, extra = refined, sorted(_glob_dirs(root, refined) - set(rels))
    return pattern, extra


def per_dive_part(part: str, dive_name: str) -> str:
    """A folder inside a dive as a glob that fits every dive: the dive's own name and date
    stamps become ``*`` (``dive01_images`` -> ``*_images``, ``i20150918_000954_cv`` ->
    ``i*_cv``, ``20220815`` -> ``*``); anything else stays literal (escaped)."""
    pieces = re.split(f"(?<![A-Za-z0-9])({re.escape(dive_name)})(?![A-Za-z0-9])", part)
    out = []
    for k, piece in enumerate(pieces):
        if k % 2:
            out.append("*")
            continue
        stamps = list(_STAMP.finditer(piece))
        if stamps:
            piece_out = (glob.escape(piece[: stamps[0].start()]) + "*"
                         + glob.escape(piece[stamps[-1].end():]))
        else:
            piece_out = glob.escape(piece)
        out.append(piece_out)
    return re.sub(r"\*+", "*", "".join(out))


def images_template(dive_rels: list[str], image_folders: dict[str, Counter],
                    placed: dict[str, tuple[str | None, str]]) -> tuple[str, list[str]]:
    """The images template (image subfolder + extension with the most files) and notes.

    Each dive's image subfolder is first made general (:func:`per_dive_part`), then the
    subfolders of all dives at one depth are generalised together (``i1_cv``, ``i2_cv``)."""
    wanted = set(dive_rels)
    raw: dict[str, Counter] = defaultdict(Counter)  # image subfolder as found -> files
    tails: dict[str, Counter] = defaultdict(Counter)  # per-dive glob -> lower-case suffix -> files
    members: dict[str, set[str]] = defaultdict(set)  # per-dive glob -> subfolders it stands for
    for folder, c in image_folders.items():
        dive, tail = placed[folder]
        if dive not in wanted:
            continue
        name = dive.rsplit("/", 1)[-1]
        general = "/".join(per_dive_part(p, name) for p in tail.split("/")) if tail else ""
        for suffix, k in c.items():
            tails[general][suffix.lower()] += k
            raw[tail][suffix.lower()] += k
        members[general].add(tail)
    for general in list(tails):  # a bare * must not take other image folders of the dives
        others = [t for t in raw if t not in members[general] and _match(t, general)]
        if others and general.split("/")[0] == "*":
            fixed = "/".join("[0-9]*" if s == "*" else s for s in general.split("/"))
            tails[fixed] = tails.pop(general)
            members[fixed] = members.pop(general)
    candidates: dict[str, Counter] = dict(tails)
    by_depth: dict[int, list[str]] = defaultdict(list)
    for tail in tails:
        by_depth[len(tail.split("/")) if tail else 0].append(tail)
    for depth, group in by_depth.items():
        if depth and len(group) > 1:
            split = [t.split("/") for t in group]
            levels = [sorted({p[i] for p in split}) for i in range(depth)]
            pattern = "/".join(v[0] if len(v) == 1 else generalise(v) for v in levels)
            if pattern.split("/")[0] != "*":  # never a bare */: it would take any subfolder
                total: Counter = Counter()
                for t in group:
                    if _match(t, pattern):
                        total.update(tails[t])
                candidates[pattern] = total

    def score(item):
        tail, c = item
        return (c.most_common(1)[0][1], -tail.count("*"), -len(tail))

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


def _match(tail: str, pattern: str) -> bool:
    a, b = tail.split("/"), pattern.split("/")
    return len(a) == len(b) and all(fnmatch.fnmatchcase(x, y) for x, y in zip(a, b, strict=True))


def counts(c: Counter) -> str:
    """'12 .jpg, 3 .png' (extensions in any case counted together)."""
    by_ext: Counter = Counter()
    for suffix, k in c.items():
        by_ext[suffix.lower()] += k
    return ", ".join(f"{k} {s}" for s, k in by_ext.most_common())
