"""Where a catalog's dives and their files are: dive folders, templates, the navigation file
each dive uses, and the fingerprint that keys a dive's cached ingest."""

from __future__ import annotations

import glob
import hashlib
import json
import os
import posixpath
import re
from pathlib import Path

from .catalog import Catalog, CatalogError, NavSource
from .output import MARKER as OUTPUT_MARKER

_WILDCARD = re.compile(r"[*?\[]")


def _dive_pattern(cat: Catalog) -> list[str]:
    return [p for p in posixpath.normpath(cat.dives.replace("\\", "/")).split("/") if p != "."]


def dive_folders(cat: Catalog) -> list[Path]:
    """The folders under the root matching the catalog's ``dives`` glob, sorted.

    A folder that is a builder's output (it holds the output marker) is never a dive."""
    return sorted(Path(p) for p in glob.glob(str(cat.root / cat.dives))
                  if Path(p).is_dir() and not (Path(p) / OUTPUT_MARKER).exists())


def dive_id_of(cat: Catalog, rel: str) -> str:
    """The dive id of a dive folder (its path relative to the root): the parts matched by the
    wildcards of ``dives`` (``raw/*/*/*`` -> ``2019/c01/d07``), or the folder name when the
    pattern has none."""
    pattern, parts = _dive_pattern(cat), rel.split("/")
    picked = [part for seg, part in zip(pattern, parts, strict=False) if _WILDCARD.search(seg)]
    return "/".join(picked) if picked else parts[-1]


def dive_rel(cat: Catalog, dive: str) -> str:
    """The dive folder's path relative to the root, from its id (the inverse of dive_id_of)."""
    pattern = _dive_pattern(cat)
    ids = dive.split("/")
    if not any(_WILDCARD.search(seg) for seg in pattern):
        return "/".join(pattern)
    out, k = [], 0
    for seg in pattern:
        if _WILDCARD.search(seg):
            out.append(ids[k] if k < len(ids) else seg)
            k += 1
        else:
            out.append(seg)
    return "/".join(out)


def _inside_root(cat: Catalog, path: Path) -> bool:
    """Whether ``path`` lies inside the root once every symlink on its way is followed."""
    return Path(os.path.realpath(path)).is_relative_to(Path(os.path.realpath(cat.root)))


def discover_dives(cat: Catalog) -> list[str]:
    """Dive ids (see dive_id_of), in the sorted order of their folders.

    A dive folder that resolves outside the root (a symlink, or a symlinked folder above it) is
    never read; :func:`dives_outside_root` names those, for the build to report."""
    return [dive_id_of(cat, folder.relative_to(cat.root).as_posix()) for folder in dive_folders(cat)
            if _inside_root(cat, folder)]


def dives_outside_root(cat: Catalog) -> dict[str, str]:
    """The dive folders the ``dives`` glob matches that resolve outside the root (their
    files are never read) -> why, one line each naming the folder and where it leads."""
    out = {}
    for folder in dive_folders(cat):
        if not _inside_root(cat, folder):
            rel = folder.relative_to(cat.root).as_posix()
            how = "a symlink" if folder.is_symlink() else "under a symlinked folder"
            out[dive_id_of(cat, rel)] = (
                f"dive folder {rel} is {how} that leads to {os.path.realpath(folder)}, outside "
                f"the catalog root {cat.root}; none of its files is read. Move the dive into "
                "the root (or set 'root' to a folder that holds every dive)")
    return out


def images_in_one_dive(cat: Catalog, images: dict[str, list[str]]) -> None:
    """CatalogError when the images template matches one file for two dives (a file belongs
    to one dive: its position comes from that dive's navigation)."""
    owner: dict[str, str] = {}
    for dive, rels in images.items():
        for rel in rels:
            first = owner.setdefault(rel, dive)
            if first != dive:
                raise CatalogError(
                    f"{cat.source or cat.name}: key 'images': {cat.images!r} matches {rel} for "
                    f"dive {first} and for dive {dive}; expected each image file to belong to "
                    "one dive: write the template from the dive's own folder ({dive}/...), or "
                    "use {dive_id} so that it names one dive's files only")


def expand(template: str, cat: Catalog, dive: str) -> str:
    """A template with ``{dive}`` (the dive folder's path from the root) and ``{dive_id}``."""
    return template.format(dive=dive_rel(cat, dive), dive_id=dive)


def _any_case_extension(template: str) -> str:
    """``*.jpg`` -> ``*.[jJ][pP][gG]``: cameras and copies write ``.JPG`` as often as ``.jpg``."""
    m = re.search(r"\.([A-Za-z0-9]+)$", template)
    if not m:
        return template
    ext = "".join(f"[{c.lower()}{c.upper()}]" if c.isalpha() else c for c in m.group(1))
    return template[: m.start(1)] + ext


def _matches(cat: Catalog, template: str, dive: str, images: bool = False) -> list[Path]:
    """Files a template matches for a dive, sorted (globs allowed).

    Images: the extension matches in any case, and a symlink counts even when it dangles (it is
    then quarantined as unreadable, never dropped). Catalogs written when ``{dive}`` stood for
    the dive folder's *name* (``dives/{dive}/...`` with ``dives: "dives/*"``) still match: when
    the template as written finds nothing, the name is tried in place of ``{dive}``."""
    def found(pattern: str) -> list[Path]:
        if images:
            pattern = _any_case_extension(pattern)
        keep = (lambda q: q.is_symlink() or q.is_file()) if images else (lambda q: q.is_file())
        if _WILDCARD.search(pattern):
            return sorted({Path(p) for p in glob.glob(str(cat.root / pattern)) if keep(Path(p))})
        path = cat.root / pattern
        return [path] if keep(path) else []

    hits = found(expand(template, cat, dive))
    name = dive_rel(cat, dive).rsplit("/", 1)[-1]
    if not hits and "{dive}" in template and name != dive_rel(cat, dive):
        hits = found(template.format(dive=name, dive_id=dive))
    return hits


def dive_images(cat: Catalog, dive: str) -> list[str]:
    """Image paths relative to the catalog root, sorted, forward slashes."""
    if cat.images is None:
        return []
    return [p.relative_to(cat.root).as_posix() for p in _matches(cat, cat.images, dive, images=True)]


def nav_candidates(cat: Catalog, src: NavSource, dive: str) -> list[Path]:
    """The files one navigation source's template matches for a dive, sorted (globs allowed).

    A path without ``{dive}``/``{dive_id}`` names one file shared by every dive. ``exif``
    without a path reads the dive's own images: its "file" is the dive folder, found when the
    dive has an image."""
    if src.path is None:  # format exif: the images are the navigation
        if cat.images is None or not dive_images(cat, dive):
            return []
        return [cat.root / dive_rel(cat, dive)]
    return _matches(cat, src.path, dive)


def dive_nav_source(cat: Catalog, dive: str) -> tuple[NavSource, Path] | None:
    """The first navigation source whose template matches a file; of several matches the last
    in sorted order (the newest of date-stamped folders such as oplab's json_renav_*)."""
    for src in cat.nav:
        found = nav_candidates(cat, src, dive)
        if found:
            return src, found[-1]
    return None


def nav_choice(cat: Catalog, dive: str) -> str | None:
    """A line for the log when a navigation template matched several files, naming the one used,
    or when the file used is one shared by every dive."""
    for src in cat.nav:
        found = nav_candidates(cat, src, dive)
        if found:
            used = found[-1].relative_to(cat.root).as_posix()
            shared = (", shared by every dive (its rows attributed to this one by image path "
                      "or file name, or by time)" if src.shared else "")
            if len(found) == 1:
                return f"dive {dive}: navigation from {used}{shared}" if shared else None
            return (f"dive {dive}: {len(found)} files match {expand(src.path, cat, dive)}; using "
                    f"the last in sorted order, {used}{shared}")
    return None


def first_dive(cat: Catalog) -> str | None:
    """The dive that reports what a shared navigation file holds for no dive (rows whose image
    path escapes the root), so it is reported once, not once per dive."""
    dives = discover_dives(cat)
    return dives[0] if dives else None


def dive_fingerprint(cat: Catalog, dive: str, rels: list[str] | None = None) -> str:
    """Changes when anything that affects this dive's ingest changes (cache key)."""
    h = hashlib.sha256()
    nav = dive_nav_source(cat, dive)
    settings = {
        "builder": "ingest-3", "images": cat.images, "validate": cat.validate_images,
        "max_interp_gap_s": cat.max_interp_gap_s, "train_size": list(cat.train_size),
        "nav_checks": cat.nav_checks.model_dump(),
        "nav": nav[0].model_dump() if nav else None,
        "nav_file": nav[1].relative_to(cat.root).as_posix() if nav else None,
        "dive_folder": dive_rel(cat, dive),
    }
    if cat.image_time is not None:
        settings["image_time"] = cat.image_time
    if nav and nav[0].shared:  # which dive reports the shared file's unusable rows
        settings["reports_shared_rows"] = dive == first_dive(cat)
    h.update(json.dumps(settings, sort_keys=True).encode())
    if nav and not _inside_root(cat, nav[1]):  # never read: the ingest quarantines the dive
        h.update(f"outside the root: {os.path.realpath(nav[1])}\n".encode())
    elif nav and nav[1].is_file():  # (exif: the images, below, are the navigation)
        h.update(hashlib.sha256(nav[1].read_bytes()).digest())
    for rel in dive_images(cat, dive) if rels is None else rels:
        try:
            st = (cat.root / rel).stat()
            h.update(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        except OSError:  # a dangling symlink: quarantined as unreadable, still part of the key
            h.update(f"{rel}\0dangling\n".encode())
    return h.hexdigest()
