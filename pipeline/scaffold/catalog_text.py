"""The proposal in words: the commented catalog YAML, the report for a person, and the
``init`` command that prints or writes them."""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

import yaml

from ..catalog import Catalog
from ..dives import dive_rel
from ..output import write_atomic
from .navsources import FORMAT_NOTE
from .proposal import Proposal, ScaffoldError, propose
from .scan import CATALOG_NAME


def _q(text) -> str:
    """A YAML double-quoted scalar, or a flow list (JSON syntax is valid YAML)."""
    return json.dumps(text, ensure_ascii=False)


def _note(kind: str, shared: bool) -> str:
    text = FORMAT_NOTE.get(kind, f"{kind} navigation")
    return text + ("; one file for all dives" if shared else "")


# what a user must check in an option init cannot know from the file
_OPTION_NOTE = {
    ("qgc-csv", "timezone"): "  # QGroundControl writes the ground station's local time: "
                             "set its zone",
    ("exif", "timezone"): "  # the zone of the camera clock, for photos without OffsetTime",
    ("biigle-csv", "timezone"): "  # the zone of taken_at where it carries none",
}


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
        f"level(s) below it; new dives named like these are found when it is built again.",
        f"dives: {_q(p.dives)}",
        "# Navigation sources, tried in this order for each dive: the first whose path matches a",
        "# file is used (of several matches, the last in sorted order: the newest json_renav_*);",
        "# a path without {dive} is one file shared by all dives.",
        "nav:",
    ]
    for k, g in enumerate(p.nav):
        covered = sum(1 for row in p.per_dive if row[4] == k)
        lines.append(f"  # {_note(g.kind, g.shared)} ({covered} of {len(p.dive_ids)} dives use it)")
        src = g.source()
        lines.append(f"  - format: {src.format}")
        if src.path is not None:
            lines.append(f"    path: {_q(src.path)}")
        for key, value in src.model_dump(exclude={"format", "path", "columns"},
                                         exclude_none=True).items():
            lines.append(f"    {key}: {_q(value)}" + _OPTION_NOTE.get((src.format, key), ""))
        if src.columns is not None:
            lines.append("    columns:  # column names in the file; time in unix seconds "
                         "unless time_unit says otherwise")
            for key, value in g.columns.items():
                lines.append(f"      {key}: {_q(value)}")
    lines += [
        "# Image files of each dive; the extension matches in any case (.jpg and .JPG).",
        f"# {n_images} files matched." if n_images else "#",
        f"images: {_q(p.images)}",
    ]
    if any("set image_time:" in n for n in p.notes):
        lines += ["# REQUIRED before building: no built-in pattern reads the time in these image",
                  "# names (see the report); write the pattern of their time stamp, e.g.",
                  '# image_time: "%Y%m%d_%H%M%S"']
    lines += [
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
        "# nav_checks: {max_speed_m_s: 3.0, max_accel_m_s2: 1.0, position_noise_m: 2.0,",
        "#              degenerate: warn}   # what the vehicle can do; warn | quarantine",
    ]
    return "\n".join(lines) + "\n"


def report(p: Proposal) -> str:
    """What was found, per dive, and what could not be placed (for a person to read)."""
    total = sum(row[1] for row in p.per_dive)
    unread = [d for d, n, *_ in p.per_dive if not n and _unreadable_in(p, d)]
    lines = [
        f"survey   {p.root}",
        f"dives    {p.dives}  ({p.with_images} folders"
        + (f", and {len(p.dive_ids) - p.with_images} without images"
           + (f", {len(unread)} of them with a folder init cannot read" if unread else "") + ")"
           if len(p.dive_ids) > p.with_images else ")"),
        f"images   {p.images}  ({total} files)",
        f"nav      formats found: {', '.join(p.formats_found)}",
    ]
    used = Counter(row[4] for row in p.per_dive)
    fw = max([6] + [len(g.format) for g in p.nav])
    lines.append(f"         #  {'format':<{fw}}  found  used  path, tried in this order")
    for k, g in enumerate(p.nav):
        where = g.template if g.template is not None else "(the images themselves)"
        lines.append(f"         {k + 1:<2} {g.format:<{fw}}  {len(g.files):>5}  "
                     f"{used[k]:>4}  {where}" + ("  (shared by all dives)" if g.shared else ""))
    lines.append("         (found: dives with such a file; used: dives it locates)")
    lines += [f"output   {p.output}", ""]
    w = max([4] + [len(row[0]) for row in p.per_dive])
    iw = max([6] + [len(str(row[1])) for row in p.per_dive])
    fw = max([10] + [len(row[2]) for row in p.per_dive])
    lines.append(f"{'dive':<{w}}  {'images':>{iw}}  {'navigation':<{fw}}  file")
    blocked = False
    for d, n, fmt, path, _ in p.per_dive:
        hidden = _unreadable_in(p, d)
        shown = f"{n}?" if hidden else str(n)
        blocked = blocked or hidden
        if path in p.unreadable:
            path = f"{path} (cannot read: {p.unreadable[path]})"
        lines.append(f"{d:<{w}}  {shown:>{iw}}  {fmt:<{fw}}  {path}")
    if blocked:
        lines.append("(?: a folder of the dive cannot be read, so its images may be more; see "
                     "'could not place')")
    if p.unplaced:
        lines += ["", "could not place"] + [f"  {u}" for u in p.unplaced]
    if p.notes:
        lines += ["", "notes"] + [f"  {n}" for n in p.notes]
    return "\n".join(lines)


def _unreadable_in(p: Proposal, dive: str) -> bool:
    """Whether init could not read the dive's folder or a folder inside it."""
    folder = dive_rel(p.catalog, dive)
    return any(why.startswith("folder: ") and (r == folder or r.startswith(folder + "/"))
               for r, why in p.unreadable.items())


def write_catalog(p: Proposal, text: str, force: bool) -> Path:
    """SURVEY_DIR/catalog.yaml; an existing file is replaced only with force."""
    target = p.root / CATALOG_NAME
    if force:
        write_atomic(target, lambda tmp: tmp.write_text(text))
        return target
    try:
        with open(target, "x") as fh:  # never replaces a file, even one made a moment ago
            fh.write(text)
    except FileExistsError:
        raise ScaffoldError(f"{target} exists; not overwritten. Compare it with the proposal "
                            "(run without --write to print it), or add --force to replace "
                            "it") from None
    return target


def _check(p: Proposal, text: str) -> None:
    """The written text must describe the proposal (and validate as a catalog)."""
    raw = yaml.safe_load(text)
    raw["root"] = str(p.root)
    cat = Catalog.model_validate(raw)
    if cat.dives != p.dives or cat.images != p.images or cat.nav != p.catalog.nav:
        raise AssertionError("catalog text does not match the proposal")


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
