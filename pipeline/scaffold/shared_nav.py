"""Navigation that no single dive owns: one file for several dives, or the images themselves.

* A navigation file at the root (or outside every dive folder) whose path names no dive becomes
  a source shared by all dives (``path`` without ``{dive}``) when it lists images of the dives
  (a dataset-wide iFDO such as marimba's, a CSV with an image column; matched by path from the
  root or from the file's folder, else by a file name one image has), or when it is a vehicle
  time series whose time span covers the dives' image times.
* With no navigation file at all, images that carry EXIF GPS positions give ``format: exif``.
* A vehicle time series locates images by the time in their names; where the built-in patterns
  read no name, init says so and shows the names: the catalog's ``image_time:`` must be set by
  someone who knows them (never guessed here).
"""

from __future__ import annotations

import posixpath
from collections import defaultdict

from pydantic import ValidationError

from ..catalog import Catalog, NavSource
from ..dives import dive_images
from ..readers import NavFormatError, image_time_from_name, read_nav, sniff_file
from .navsources import SourceGroup, is_time_series
from .scan import NavFile

_EXIF_SAMPLE = 3  # images sniffed per dive (at most 3 dives) for EXIF time and GPS


def accepts_shared_paths() -> bool:
    """Whether this catalog version takes a nav path that names no dive."""
    try:
        NavSource(format="ifdo", path="nav.json")
    except ValidationError:
        return False
    return True


def accepts_exif() -> bool:
    try:
        NavSource(format="exif")
    except ValidationError:
        return False
    return True


def _escape(rel: str) -> str:
    """A literal path as a template (glob characters and braces escaped)."""
    import glob

    return glob.escape(rel).replace("{", "{{").replace("}", "}}")


def shared_sources(cat: Catalog, dive_ids: list[str], loose: list[NavFile]
                   ) -> tuple[list[SourceGroup], list[str]]:
    """Shared sources among the files that name no dive, and a line for each file that is not
    one (what it lists or spans, and why no dive takes it)."""
    if not loose:
        return [], []
    names: dict[str, set[str]] = defaultdict(set)  # image file name -> dives
    by_path: dict[str, str] = {}  # image path from the root -> dive
    for d in dive_ids:
        for img in dive_images(cat, d):  # paths from the root
            by_path[img] = d
            names[posixpath.basename(img)].add(d)
    groups, refused = [], []
    shared_ok = accepts_shared_paths()
    for nav in loose:
        why, covered = _covered(cat, nav, dive_ids, by_path, names)
        if not covered or not shared_ok:
            if covered:
                why = (f"lists images of {len(covered)} dive(s), but this catalog version needs "
                       "{dive} in every nav path")
            refused.append(f"{nav.rel} ({nav.kind.replace('+image', '')}: {why})")
            continue
        g = SourceGroup(nav.kind, _escape(nav.rel), nav.columns, dict(nav.options), shared=True)
        g.files = {d: [nav.rel] for d in covered}
        g.navs.append(nav)
        groups.append(g)
    return groups, refused


def _covered(cat: Catalog, nav: NavFile, dive_ids: list[str], by_path: dict[str, str],
             names: dict[str, set[str]]) -> tuple[str, list[str]]:
    """(what the file holds, the dives it serves)."""
    try:
        data = read_nav(nav.format, cat.root / nav.rel, columns=nav.columns)
    except (NavFormatError, ValueError, OSError) as exc:
        return f"cannot be read: {str(exc).splitlines()[0]}", []
    except Exception as exc:  # a reader's fault must not stop the proposal: said, not raised
        return f"the {nav.format} reader failed on it ({type(exc).__name__}: {exc})", []
    table = data.table
    if data.per_image:
        folder = posixpath.dirname(nav.rel)
        hit: set[str] = set()
        for ref in table["image"].dropna().astype(str):
            d = _dive_of_ref(ref.replace("\\", "/"), folder, by_path, names)
            if d:
                hit.add(d)
        covered = [d for d in dive_ids if d in hit]
        return (f"none of its {len(table)} image paths is an image of a dive", covered)
    t = table["timestamp"].dropna()
    if t.empty:
        return "no times", []
    t0, t1 = float(t.min()), float(t.max())
    covered, read, example = [], 0, None
    for d in dive_ids:
        sample = _sample(dive_images(cat, d))
        example = example or (posixpath.basename(sample[0]) if sample else None)
        times = [x for x in (image_time_from_name(n) for n in sample) if x is not None]
        read += len(times)
        if any(t0 <= x <= t1 for x in times):
            covered.append(d)
    if not read and example:
        return (f"a time series, matched to images by the time in their names, and no built-in "
                f"pattern reads one in names such as {example}; set image_time: in the "
                "catalog"), []
    return "its time span covers no dive's image times (read from the image names)", covered


def _dive_of_ref(ref: str, folder: str, by_path: dict[str, str],
                 names: dict[str, set[str]]) -> str | None:
    """The dive of an image path as a shared file writes it: from the root, from the file's
    folder, any tail of it (``../raw/dive01/images/a.jpg``), else a name one dive has."""
    parts = posixpath.normpath(posixpath.join(folder, ref)).split("/")
    for path in (ref, *("/".join(parts[k:]) for k in range(len(parts)))):
        if path in by_path:
            return by_path[path]
    owners = names.get(posixpath.basename(ref), set())
    return next(iter(owners)) if len(owners) == 1 else None


def _sample(items: list[str]) -> list[str]:
    if len(items) <= 5:
        return items
    return [items[0], items[1], items[len(items) // 2], items[-2], items[-1]]


def exif_source(cat: Catalog, dive_ids: list[str]) -> tuple[SourceGroup | None, str]:
    """``format: exif`` when the readers find a capture time and a GPS position in the EXIF of
    sampled images (and a line saying what was checked either way)."""
    checked = with_gps = 0
    options: dict = {}
    for d in dive_ids[:3]:
        for img in dive_images(cat, d)[:_EXIF_SAMPLE]:
            checked += 1
            verdict = next((s for s in sniff_file(cat.root / img) if s.format == "exif"), None)
            if verdict is not None and not verdict.missing:
                with_gps += 1
                options = dict(verdict.options)
    what = f"{with_gps} of {checked} sampled image(s) carry an EXIF time and GPS position"
    if not with_gps or not accepts_exif():
        return None, what
    g = SourceGroup("exif", None, None, options)
    g.files = {d: [] for d in dive_ids}  # the images of every dive are its files
    return g, what


def untimed_images(cat: Catalog, per_dive: list[tuple]) -> list[str]:
    """Notes for dives located by a vehicle time series whose image names carry no time the
    built-in patterns (or the catalog's image_time) read; with example names."""
    pattern = getattr(cat, "image_time", None)
    lines = []
    for d, n, fmt, _, k in per_dive:
        if not n or k is None or not is_time_series(_kind(cat.nav[k])):
            continue
        sample = _sample(dive_images(cat, d))
        read = [_time_of(name, pattern) for name in sample]
        if all(t is None for t in read):
            names = ", ".join(posixpath.basename(s) for s in sample[:3])
            lines.append(f"dive {d}: its navigation ({fmt}) is a time series, matched to images by "
                         f"the time in their names, and no built-in pattern reads a time in "
                         f"{names}; set image_time: in the catalog (a strftime pattern such as "
                         "\"%Y%m%d_%H%M%S\" or a regex with named groups year, month, day, hour, "
                         "minute, second) or every image is quarantined as no_time")
    return lines


def _kind(src: NavSource) -> str:
    return "csv+image" if src.format == "csv" and src.columns and src.columns.image else src.format


def _time_of(name: str, pattern: str | None) -> float | None:
    if pattern is None:
        return image_time_from_name(name)
    try:
        return image_time_from_name(name, pattern)
    except TypeError:  # a readers version without catalog patterns
        return image_time_from_name(name)
