"""The proposal: dives, images and navigation sources put together, checked with the pipeline's
own functions (:func:`pipeline.dives.discover_dives`, :func:`~pipeline.dives.dive_images`,
:func:`~pipeline.dives.dive_nav_source`), so the report says per dive what a build will use and
lists what it could not place."""

from __future__ import annotations

import json
import os
import posixpath
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from ..catalog import Catalog, NavSource
from ..dives import (
    discover_dives,
    dive_id_of,
    dive_images,
    dive_nav_source,
    dive_rel,
    expand,
    nav_candidates,
)
from ..output import MARKER as OUTPUT_MARKER
from ..readers import FORMATS
from .explain import explain
from .layout import counts, dives_glob, images_template, place_image_folders
from .navsources import (
    FORMAT_RANK,
    SourceGroup,
    camera_note,
    check_units,
    choose_sources,
    group_sources,
    image_refs,
    nav_template,
)
from .scan import IMAGE_EXTS, Scan, scan
from .shared_nav import exif_source, shared_sources, untimed_images

LIST_MAX = 8  # items of a list in the report before "... and N more"
EXPLAINED_MAX = 3  # unrecognised CSVs explained in full; the others are named


class ScaffoldError(ValueError):
    """A survey folder that cannot be described (one message for the user, exit status 2)."""


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
    unreadable: dict[str, str] = field(default_factory=dict)  # rel -> why (scan.Scan)


def more(items: list[str], limit: int = LIST_MAX) -> str:
    head = ", ".join(items[:limit])
    return head + (f" ... and {len(items) - limit} more" if len(items) > limit else "")


def _folder_files(root: Path, folder: str, c: Counter) -> str:
    """'extra/photos (12 .jpg)', or the file names themselves when there are few."""
    if sum(c.values()) <= 3:
        names = sorted(q.name for q in (root / folder).iterdir() if q.suffix in c)
        return ", ".join(posixpath.join(folder, n) if folder else n for n in names)
    return f"{folder or '.'} ({counts(c)})"


def _checked_root(survey_dir: str | Path, name: str | None) -> tuple[Path, str]:
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
    return root, name or (re.sub(r"[^A-Za-z0-9_.-]+", "-", root.name).strip("-_.") or "survey")


def _dives(root: Path, s: Scan, placed: dict) -> tuple[list[str], str, list[str], list[str],
                                                       dict[str, Counter]]:
    """(dive folders, dives glob, notes, unplaced, files per dive) from the image folders."""
    dive_counts: dict[str, Counter] = defaultdict(Counter)
    outside: list[tuple[str, Counter]] = []
    for folder, c in sorted(s.images.items()):
        dive, _ = placed[folder]
        if dive is None:
            outside.append((folder, c))
        else:
            dive_counts[dive].update(c)
    if not dive_counts:
        if outside:
            where = more([f"{f or '.'} ({counts(c)})" for f, c in outside])
            raise ScaffoldError(f"{root}: the images ({where}) belong to the folder itself, so it "
                                "looks like one dive; run init on the folder above it, which holds "
                                "the dive folders")
        unread = s.unreadable_lines()
        also = ("; " + "; ".join(unread[:LIST_MAX])
                + (f" ... and {len(unread) - LIST_MAX} more" if len(unread) > LIST_MAX else "")
                if unread else "")
        raise ScaffoldError(f"{root}: no image files ({', '.join(IMAGE_EXTS)}, any case) in this "
                            f"folder tree{also}; give the survey's top folder"
                            + (" and make its folders readable" if unread else ""))
    by_depth: dict[int, list[str]] = defaultdict(list)
    for dive in dive_counts:
        by_depth[dive.count("/") + 1].append(dive)

    def weight(depth: int):
        ds = by_depth[depth]
        return (sum(sum(dive_counts[d].values()) for d in ds), len(ds), -depth)

    depth = max(by_depth, key=weight)
    dive_rels = sorted(by_depth[depth])
    pattern, extra = dives_glob(root, dive_rels)
    notes, unplaced = [], []
    if not any(ch in pattern for ch in "*?["):
        notes.append(f"dives: {pattern!r} names the one dive folder found, whose name has no "
                     "number to generalise; dives added later are indexed only if 'dives' "
                     "matches them (edit it, e.g. a glob of their common prefix)")
    for other in sorted(d for d in by_depth if d != depth):
        missed = sorted(by_depth[other])
        notes.append(f"dives: folders with images sit at different depths; {pattern!r} takes the "
                     f"{len(dive_rels)} at depth {depth} and misses {len(missed)} at depth {other}")
        unplaced.append(f"image folders not matched by dives {pattern!r}: " + more(
            [f"{d} ({counts(dive_counts[d])})" for d in missed]))
    if outside:
        unplaced.append("images outside any dive folder: " + more(
            [_folder_files(root, f, c) for f, c in outside]))
    blocked = [e for e in extra if s.unreadable_under(e)]
    empty = [e for e in extra if e not in blocked]
    if empty:
        unplaced.append(f"folders matched by dives {pattern!r} that hold no images: " + more(empty))
    for e in blocked:
        unplaced.append(f"dive folder {e} (matched by dives {pattern!r}): its images cannot be "
                        "seen: " + "; ".join(f"cannot read folder {r}: {s.unreadable[r].removeprefix('folder: ')}"
                                             for r in s.unreadable_under(e)[:4]))
    return dive_rels, pattern, notes, unplaced, dive_counts


def propose(survey_dir: str | Path, name: str | None = None, output: str | None = None) -> Proposal:
    """Scan the survey folder and propose a catalog (ScaffoldError for user errors)."""
    root, name = _checked_root(survey_dir, name)
    try:
        s = scan(root)
    except OSError as exc:
        raise ScaffoldError(f"{root}: cannot read the folder tree ({exc})") from None
    placed = place_image_folders(s.images)
    dive_rels, pattern, notes, unplaced, _ = _dives(root, s, placed)
    # what init could not read, said once each (a dive folder's unreadable image folders above)
    said = {r for line in unplaced for r in s.unreadable if f"folder {r}:" in line}
    unplaced += [line for r, line in zip(sorted(s.unreadable), s.unreadable_lines(), strict=True)
                 if r not in said]
    images, image_notes = images_template(dive_rels, s.images, placed)
    notes += image_notes
    probe = Catalog(name=name, root=root, dives=pattern, images=images, output=root / "manifests",
                    nav=[NavSource(format="oplab-nav-csv", path="{dive}/.")])
    ids = {dive_id_of(probe, rel): rel for rel in dive_rels}
    probe_ids = discover_dives(probe)

    groups, loose = group_sources(s.nav, ids)
    for g in groups.values():  # the file a build reads: the last in sorted order
        dive_id = sorted(g.files)[0]
        last = g.files[dive_id][-1]
        g.refs = image_refs(root, next(n for n in g.navs if n.rel == last), ids[dive_id])
    shared, refused = shared_sources(probe, probe_ids, loose)
    chosen = choose_sources(list(groups.values()))
    # a dive's own file is more specific than a file for all: shared sources come last, and
    # only those that serve a dive without its own file
    covered = set().union(*(g.files for g in chosen))
    for g in choose_sources(shared):
        if set(g.files) - covered:
            chosen.append(g)
            covered |= set(g.files)
        else:
            which = ("which has a navigation file of its own" if len(g.files) == 1 else
                     "which all have navigation files of their own")
            notes.append(f"nav: not used: {g.navs[0].rel} ({g.kind.replace('+image', '')}: "
                         f"serves {more(sorted(g.files), 4)}, {which})")
    skipped = [f"{g.kind.replace('+image', '')} {g.template} ({len(g.files)} dive(s))"
               for g in groups.values() if g not in chosen]
    if skipped:
        notes.append("nav: also found, not used (the sources above serve the same dives):"
                     + "".join(f"\n    {line}" for line in skipped[:LIST_MAX])
                     + (f"\n    ... and {len(skipped) - LIST_MAX} more"
                        if len(skipped) > LIST_MAX else ""))
    notes += check_units(root, chosen)
    for g in chosen:  # what the csv sniff says of the map it guessed (ambiguous dates, no depth)
        said = sorted({n.note for n in g.navs if n.note and n.columns is not None})
        notes += [f"nav: {g.template}: {note}" for note in said[:2]]
    for g in chosen:
        if g.refs and g.refs.found == 0:
            notes.append(f"nav: {g.template}: none of the first {g.refs.checked} image paths it "
                         f"lists (e.g. {g.refs.example!r}) is found under the dive folder; its "
                         "images will be quarantined as no_nav")
        if g.unknown_options():
            notes.append(f"nav: {g.template}: the reader suggests {g.unknown_options()}, a key "
                         "this catalog version does not have; check the file's units by hand")
    notes += camera_note(chosen, images, s.images, set(dive_rels), placed)
    if refused:
        unplaced.append("navigation files not used (they name no dive): " + more(refused))
    unplaced += _unrecognised_lines(s, ids)
    if not chosen and not s.nav:
        exif, what = exif_source(probe, probe_ids)
        if exif:
            chosen = [exif]
            notes.append(f"nav: no navigation file; {what}: the images' EXIF is the navigation")
        else:
            unplaced.append(f"no navigation file, and {what}")
    if not chosen:
        raise ScaffoldError(_report_unfinished(root, pattern, dive_rels, unplaced)
                            + f"\n{root}: no navigation file of a dive recognised (formats "
                            f"known: {', '.join(FORMATS)}; a csv needs time, latitude and "
                            "longitude columns); no catalog proposed")
    return _finish(root, name, pattern, images, chosen, output, s, placed, dive_rels,
                   notes, unplaced)


def _unrecognised_lines(s: Scan, ids: dict[str, str]) -> list[str]:
    """The first few unrecognised CSVs explained in full (roles, nearest names, columns map):
    where no navigation was recognised, any CSV may be the navigation; otherwise only those
    with some navigation column (a list of labels is named, not explained)."""
    lines = []
    explained = 0
    for u in s.unknown:
        if explained < EXPLAINED_MAX and (not s.nav or (u.sniff is not None and u.sniff.found)):
            explained += 1
            template = next((t for i, r in ids.items()
                             if (t := nav_template(u.rel, r, i)) is not None), None)
            lines.append("\n".join(explain(u, template)))
        else:
            why = u.sniff.note if u.sniff is not None and u.sniff.note else ""
            lines.append(f"CSV not recognised as navigation: {u.rel}" + (f" ({why})" if why else ""))
    return lines


def _finish(root, name, pattern, images, chosen, output, s, placed, dive_rels, notes, unplaced):
    out_rel, out_note = _output(root, name, output, pattern, dive_rels)
    if out_note:
        notes.append(out_note)
    cat = Catalog(name=name, root=root, dives=pattern, nav=[g.source() for g in chosen],
                  images=images, output=(root / out_rel).resolve())
    dive_ids = discover_dives(cat)
    per_dive, no_nav = [], []
    for d in dive_ids:
        n = len(dive_images(cat, d))
        used = _used_source(cat, d)
        if used:
            k, path = used
            per_dive.append((d, n, cat.nav[k].format, path, k))
        else:
            per_dive.append((d, n, "-", "no navigation file", None))
            if not n:  # a folder the glob takes that holds no images: listed once, below
                continue
            tried = [expand(src.path, cat, d) for src in cat.nav if src.path]
            no_nav.append(f"dive {d}: no navigation file (tried {more(tried, 4)})")
    unplaced[:0] = no_nav
    for k, (g, src) in enumerate(zip(chosen, cat.nav, strict=True)):
        if g.template is None or g.shared:
            continue
        for d, files in g.files.items():
            if d in dive_ids and files[-1] not in {
                    q.relative_to(root).as_posix() for q in nav_candidates(cat, src, d)}:
                notes.append(f"nav: source {k + 1} does not reach {files[-1]} (dive {d})")
    _images_not_taken(cat, dive_ids, s, placed, unplaced)
    notes += untimed_images(cat, per_dive)
    upper = sorted({x for c in s.images.values() for x in c if x != x.lower()})
    if upper:
        n_upper = sum(k for c in s.images.values() for x, k in c.items() if x != x.lower())
        notes.append(f"images: {n_upper} file(s) end in {', '.join(upper)}; the builder matches "
                     "the extension in any case")
    formats = sorted({g.source().format for g in chosen}, key=lambda f: FORMAT_RANK.get(f, 9))
    return Proposal(root, name, pattern, images, chosen, out_rel, cat, dive_ids, formats,
                    len(dive_rels), per_dive, unplaced, notes, dict(s.unreadable))


def _used_source(cat: Catalog, d: str) -> tuple[int, str] | None:
    """(index of the nav source a build uses for the dive, file it reads or what it reads)."""
    for k, src in enumerate(cat.nav):
        if src.path is None:  # exif: every dive's images carry their own navigation
            return (k, "the images' EXIF") if dive_images(cat, d) else None
    used = dive_nav_source(cat, d)
    if not used:
        return None
    src, path = used
    return cat.nav.index(src), path.relative_to(cat.root).as_posix()


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


def _output(root: Path, name: str, output: str | None, pattern: str,
            dive_rels: list[str]) -> tuple[str, str | None]:
    """The output folder as written in the catalog (relative to the root where inside it)."""
    if output is not None:
        p = Path(output).expanduser()
        p = (Path.cwd() / p).resolve() if not p.is_absolute() else p.resolve()
        if p == root or root.is_relative_to(p):
            raise ScaffoldError(f"--output {output}: it {'is' if p == root else 'holds'} the "
                                "survey folder; the builder needs a folder of its own")
        dive = next((r for r in dive_rels if p == root / r or p.is_relative_to(root / r)), None)
        if dive:
            raise ScaffoldError(f"--output {output}: inside the dive folder {dive}; the builder "
                                "never writes among a dive's files; choose a folder of its own")
        if p.exists() and not p.is_dir():
            raise ScaffoldError(f"--output {output} is a file, not a folder")
        if not _output_ok(p, name, root):
            raise ScaffoldError(f"--output {output} is not empty and holds no manifests of "
                                f"catalog {name!r}; the builder only uses a new or empty folder, "
                                "or its own output")
        return (p.relative_to(root).as_posix() if p.is_relative_to(root) else str(p)), None
    depth = pattern.count("/") + 1

    def clash(rel: str) -> bool:
        """The dives glob would take the folder for a dive: it exists without the builder's
        marker (a folder with the marker is never a dive)."""
        import fnmatch

        return (depth == 1 and fnmatch.fnmatchcase(rel, pattern) and (root / rel).is_dir()
                and not (root / rel / OUTPUT_MARKER).exists())

    first = "manifests"
    why = (f"the dives glob {pattern!r} would take it for a dive" if clash(first) else
           "it is not empty and holds no manifests of this catalog")
    for k in range(1, 100):
        rel = first if k == 1 else f"{first}-{k}"
        if not clash(rel) and _output_ok(root / rel, name, root):
            return rel, (None if k == 1 else f"output: not {first}/: {why}; proposing {rel}/")
    sibling = os.path.relpath(root.parent / f"{root.name}-manifests", root).replace(os.sep, "/")
    return sibling, f"output: no free manifests folder under the root; proposing {sibling}"


def _images_not_taken(cat: Catalog, dive_ids: list[str], s: Scan, placed: dict,
                      unplaced: list[str]) -> None:
    """Image files inside the dive folders that the images template does not match."""
    taken: Counter = Counter()
    for d in dive_ids:
        for img in dive_images(cat, d):  # paths from the root
            taken[posixpath.dirname(img)] += 1
    rels = {dive_rel(cat, d) for d in dive_ids}
    missed = []
    for folder, c in sorted(s.images.items()):
        if placed[folder][0] in rels:
            left = sum(c.values()) - taken.get(folder, 0)
            if left > 0:
                missed.append(f"{folder} ({left} file(s))")
    if missed:
        unplaced.append(f"images in dive folders not matched by images {cat.images!r}: "
                        + more(missed))


def _report_unfinished(root: Path, pattern: str, dive_rels: list[str], unplaced: list[str]) -> str:
    lines = [f"survey   {root}", f"dives    {pattern}  ({len(dive_rels)} folders)"]
    if unplaced:
        lines.append("could not place")
        lines += [f"  {u}" for u in unplaced]
    return "\n".join(lines)
