"""Habitat labels matched to the images of a manifest or an embeddings file by image_id
('<dive>/<relative path>'), read from what annotators hand back.

Formats, recognised from the header (a CSV) or the content (iFDO), never from the file name:

- the project's labelling list filled in: a CSV with columns ``image_id,label``, one label per
  image (an image listed twice with two labels is refused, naming the line);
- BIIGLE CSV reports, as a CSV or as the ZIP BIIGLE hands out (one CSV, or one per user or label
  tree: all are read): the image label report (``image_label_id, image_id, filename, ...,
  label_id, label_name, label_hierarchy, created_at``; one row per label attached to an image)
  and the image annotation report (``annotation_label_id, label_id, label_name,
  label_hierarchy, ..., image_id, filename, ..., shape_name, points, ..., annotation_id``; one
  row per label of an annotation);
- CoralNet annotation exports: ``Name, [Date, Aux1..Aux5, other metadata,] Row, Column`` and the
  label as ``Label code`` and/or ``Label ID`` (``Label`` in older exports), optionally
  ``Annotator``, ``Machine suggestion n``, ...; one row per point;
- Squidle+ annotation exports: ``point.media.key`` and ``label.name`` (``label.translated.name``
  used where the export was translated to another scheme), ``label.lineage_names``,
  ``point.x``, ``point.y``, ...; one row per annotation;
- iFDO files (JSON or YAML) whose items carry ``image-annotations``: every entry of an
  annotation's ``labels`` ({label, annotator, ...}); label ids resolve to names through the
  header's ``image-annotation-labels`` (an id the header does not list is taken as the name).

Several labels for one image (points, annotations, annotators): every row (every label entry of
an iFDO) is one vote, and the image takes the label with the most votes. A tie for the most
votes leaves the image unlabelled, never broken silently: ties are counted and reported with
examples, and so are disagreements (a majority below 100 %). :func:`read_labels` keeps each
image's majority share and number of votes.

Tools name images by file name (BIIGLE ``filename``, CoralNet ``Name``, Squidle+ media key, the
iFDO item key); names that are no image_id are matched by file name (or by the name without
its extension, as media keys may be), each only where one image of the survey has it. Names
that match no image are counted and reported.

A label map (``--label-map``: a CSV with columns ``tool_label,habitat``) turns the tools' labels
into habitat classes before the vote; a tool label may also be matched by its BIIGLE hierarchy,
Squidle+ lineage, or label id. ``-`` as the habitat ignores that label's votes; a label the map
does not name is refused, listing them all.

The pipeline reads a catalog's truth labels with read_labels_table too (through
pipeline.schema.load_trainer_module, from this file alone): it may use only numpy and the
standard library at import (PyYAML is imported for a YAML iFDO only)."""

from __future__ import annotations

import csv
import io
import json
import re
import zipfile
from collections import Counter
from pathlib import Path
from typing import NamedTuple

import numpy as np


class LabelsError(ValueError):
    """A labels file that cannot be used (reported as one message, exit status 2)."""


def has_label(value) -> bool:
    """Whether ``value`` is a label: a str with text besides white space. None, NaN (a missing
    value in a data frame), "" and blanks are no label: what manifests, embeddings files,
    labels files and tables hold for an image that is not labelled."""
    return isinstance(value, str) and bool(value.strip())


def labelled_mask(labels) -> np.ndarray:
    """(n,) bool, True where :func:`has_label`."""
    return np.fromiter((has_label(v) for v in labels), dtype=bool, count=len(labels))


DELIMITERS = ",;\t"  # what spreadsheets save: comma, semicolon (comma-decimal locales), tab
RULE = ("one label per image by majority of its votes; a tie leaves the image unlabelled")
IGNORE = "-"  # a label map's habitat for "ignore this tool label"


class _Format(NamedTuple):
    name: str  # for messages
    unit: str  # what one row (vote) is
    key: str  # the column naming the image
    labels: tuple[str, ...]  # the label columns, the first one present is used
    aliases: tuple[str, ...] = ()  # other names of the label a map may use
    needs: tuple[str, ...] = ()  # further columns that tell the format apart
    any_of: tuple[str, ...] = ()  # at least one of these columns


OWN = _Format("image_id,label CSV (the labelling list)", "label", "image_id", ("label",))
_CSV_FORMATS = (
    _Format("BIIGLE CSV image label report", "image label", "filename", ("label_name",),
            ("label_hierarchy", "label_id"), needs=("image_label_id",)),
    _Format("BIIGLE CSV image annotation report", "annotation label", "filename",
            ("label_name",), ("label_hierarchy", "label_id"),
            any_of=("annotation_label_id", "annotation_id")),
    _Format("CoralNet annotation export", "point", "name", ("label code", "label", "label id"),
            ("label id",), needs=("row", "column")),
    _Format("Squidle+ annotation export", "annotation", "point.media.key",
            ("label.translated.name", "label.name"),
            ("label.name", "label.translated.lineage_names", "label.lineage_names", "label.id",
             "label.uuid")),
    OWN,
)
IFDO = _Format("iFDO image annotations", "annotation label", "image-set-items key", ("label",))
KNOWN = (
    "image_id,label (the labelling list filled in; one label per image); "
    "BIIGLE CSV image label report (image_label_id, filename, label_name; the CSV or BIIGLE's "
    "ZIP); BIIGLE CSV image annotation report (annotation_label_id, filename, label_name); "
    "CoralNet annotation export (Name, Row, Column, Label code or Label ID or Label); "
    "Squidle+ annotation export (point.media.key, label.name); "
    "iFDO, JSON or YAML (image-set-items with image-annotations, labels named in the header's "
    "image-annotation-labels)")


def _unknown(flag: str, where, found: str) -> LabelsError:
    return LabelsError(
        f"{flag} {where}: not a labels file of a known format: found {found}; expected columns "
        f"image_id,label or an annotation tool's export, recognised by its columns: {KNOWN}. "
        "Pass the export as the tool wrote it (a spreadsheet may rename columns), or write a "
        "CSV with columns image_id,label")


class _Vote(NamedTuple):
    key: str  # the image as the file names it
    label: str
    aliases: tuple[str, ...]  # hierarchy, lineage or id: what a label map may name instead


class _Parsed:
    """The votes of a file, its format, and the rows of a tool's export without an image name
    or a label. (No dataclasses here: the pipeline loads this file alone, outside sys.modules,
    where dataclasses cannot resolve their annotations.)"""

    def __init__(self, fmt: _Format):
        self.fmt = fmt
        self.votes: list[_Vote] = []
        self.blank = 0


class Labels(NamedTuple):
    """What :func:`read_labels` found for the images: ``labels`` (n,) object (None where the
    file gives no label or a tie), ``share`` (n,) float (the majority's share of the image's
    votes; NaN where unlabelled), ``votes`` (n,) int (votes counted), the format's name, and
    the image ids left unlabelled by a tie."""

    labels: np.ndarray
    share: np.ndarray
    votes: np.ndarray
    format: str
    ties: list[str]


# --- reading the file --------------------------------------------------------------------------

def _decode(raw: bytes, where, flag: str) -> str:
    """The bytes as text: UTF-8 (with or without a byte-order mark), or UTF-16 with its mark
    (a spreadsheet's "Unicode text")."""
    if raw[:2] in (b"\xff\xfe", b"\xfe\xff"):
        try:
            return raw.decode("utf-16")
        except UnicodeDecodeError as exc:
            raise LabelsError(f"{flag} {where}: marked as UTF-16 but not readable as it "
                              f"({exc.reason}); save the CSV as UTF-8") from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise LabelsError(f"{flag} {where}: not UTF-8 text ({exc.reason} at byte {exc.start}); "
                          "save the CSV as UTF-8") from None


def _parse_file(path: Path, flag: str) -> _Parsed:
    raw = path.read_bytes()
    if raw[:4] == b"PAR1":
        raise LabelsError(f"{flag} {path}: a Parquet file; expected a CSV with columns "
                          "image_id,label (the labelling list, filled in) or an annotation "
                          "tool's export")
    if raw[:4] == b"PK\x03\x04":
        return _parse_zip(path, raw, flag)
    return _parse_text(_decode(raw, path, flag), path, "", flag)


def _parse_zip(path: Path, raw: bytes, flag: str) -> _Parsed:
    """Every CSV of a ZIP (BIIGLE's reports: one CSV per volume, user or label tree), one
    format for all."""
    try:
        with zipfile.ZipFile(io.BytesIO(raw)) as zf:
            members = sorted(n for n in zf.namelist()
                             if n.lower().endswith(".csv") and not n.endswith("/"))
            if not members:
                raise LabelsError(f"{flag} {path}: a ZIP archive without a CSV inside (it holds "
                                  f"{zf.namelist()[:5]}); expected an annotation tool's CSV "
                                  "report, e.g. BIIGLE's CSV image label report")
            texts = [(m, zf.read(m)) for m in members]
    except (zipfile.BadZipFile, OSError, RuntimeError) as exc:
        raise LabelsError(f"{flag} {path}: not a readable ZIP archive ({exc}); extract the CSV "
                          "and pass it") from None
    parsed = None
    for member, data in texts:
        one = _parse_text(_decode(data, f"{path}:{member}", flag), path, member, flag)
        if parsed is None:
            parsed = one
        elif one.fmt != parsed.fmt:
            raise LabelsError(f"{flag} {path}: its CSVs are of two formats ({members[0]}: "
                              f"{parsed.fmt.name}; {member}: {one.fmt.name}); expected one "
                              "report of one tool: pass the CSVs one by one")
        else:
            parsed.votes += one.votes
            parsed.blank += one.blank
    return parsed


_YAML_IFDO = re.compile(r"^image-set-(header|items)\s*:", re.MULTILINE)


def _parse_text(text: str, path: Path, member: str, flag: str) -> _Parsed:
    where = f"{path}:{member}" if member else path
    head = text.lstrip()
    if head.startswith("{") or head.startswith("["):
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as exc:
            if not _YAML_IFDO.search(text):
                raise LabelsError(f"{flag} {where}: looks like JSON but is not readable as it "
                                  f"({exc.msg} at line {exc.lineno}); expected an iFDO file or "
                                  "a CSV") from None
            doc = _yaml(text, where, flag)
        return _parse_ifdo(doc, where, flag)
    if _YAML_IFDO.search(text):
        return _parse_ifdo(_yaml(text, where, flag), where, flag)
    return _parse_csv(text, where, member, flag)


def _yaml(text: str, where, flag: str):
    try:
        import yaml
    except ImportError:
        raise LabelsError(f"{flag} {where}: a YAML iFDO, and reading YAML needs PyYAML (pip "
                          "install pyyaml); or save the iFDO as JSON") from None
    try:
        return yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except yaml.YAMLError as exc:
        raise LabelsError(f"{flag} {where}: not readable as a YAML iFDO ({exc})") from None


def _columns(line: str, delimiter: str) -> list[str]:
    try:
        return next(csv.reader([line], delimiter=delimiter), [])
    except csv.Error:
        return []


def _recognise(cols: list[str]) -> _Format | None:
    names = {c.strip().lower() for c in cols}
    for fmt in _CSV_FORMATS:
        if (fmt.key in names and any(c in names for c in fmt.labels)
                and all(c in names for c in fmt.needs)
                and (not fmt.any_of or any(c in names for c in fmt.any_of))):
            return fmt
    return None


def _parse_csv(text: str, where, member: str, flag: str) -> _Parsed:
    lines = text.splitlines(keepends=True)
    first = lines[0].rstrip("\r\n") if lines else ""
    fmt, delimiter = None, ","
    for d in DELIMITERS:
        fmt = _recognise(_columns(first, d))
        if fmt is not None:
            delimiter = d
            break
    if fmt is None:
        header = max((_columns(first, d) for d in DELIMITERS), key=len)
        raise _unknown(flag, where, f"the header {header}" if first.strip() else "no header "
                       "(an empty file)")
    parsed = _Parsed(fmt)
    at = f"{member} line" if member else "line"
    try:
        reader = csv.reader(lines, delimiter=delimiter)
        cols = [c.strip().lower() for c in next(reader)]
        i_key = cols.index(fmt.key)
        i_labels = [cols.index(c) for c in fmt.labels if c in cols]
        i_aliases = [cols.index(c) for c in fmt.aliases if c in cols]
        given: dict[str, str] = {}
        width = len(cols)
        for row in reader:
            row = [c.strip() for c in row] + [""] * (width - len(row))
            key = row[i_key]
            label = next((row[i] for i in i_labels if row[i]), "")
            if not key or not label:
                if fmt is not OWN and any(row):
                    parsed.blank += 1
                continue  # an annotator's blank row, or a row not labelled yet
            if fmt is OWN:
                if key in given and given[key] != label:
                    raise LabelsError(f"{flag} {where} {at} {reader.line_num}: image {key} is "
                                      f"listed more than once, labelled {given[key]!r} and "
                                      f"{label!r}; expected one label per image: fix one of "
                                      "the rows")
                if key in given:
                    continue
                given[key] = label
            aliases = tuple(row[i] for i in i_aliases if row[i] and row[i] != label)
            parsed.votes.append(_Vote(key, label, aliases))
    except csv.Error as exc:
        raise LabelsError(f"{flag} {where}: not a readable CSV ({exc})") from None
    return parsed


def _parse_ifdo(doc, where, flag: str) -> _Parsed:
    if not isinstance(doc, dict) or not isinstance(doc.get("image-set-items"), dict):
        found = (f"a JSON/YAML document with keys {sorted(doc)[:8]}" if isinstance(doc, dict)
                 else f"a JSON/YAML {type(doc).__name__}")
        raise _unknown(flag, where, found + " (no image-set-items)")
    header = doc.get("image-set-header")
    header = header if isinstance(header, dict) else {}
    names = {}
    for entry in header.get("image-annotation-labels") or []:
        if isinstance(entry, dict) and entry.get("id") is not None:
            lid = str(entry["id"]).strip()
            names[lid] = str(entry.get("name") or lid).strip()
    parsed, annotated = _Parsed(IFDO), 0
    for key, item in doc["image-set-items"].items():
        for part in item if isinstance(item, list) else [item]:
            anns = part.get("image-annotations") if isinstance(part, dict) else None
            if not isinstance(anns, list):
                continue
            annotated += 1
            for ann in anns:
                for entry in (ann.get("labels") or []) if isinstance(ann, dict) else []:
                    lid = entry.get("label") if isinstance(entry, dict) else entry
                    lid = "" if lid is None else str(lid).strip()
                    if not lid:
                        parsed.blank += 1
                        continue
                    name = names.get(lid, lid)
                    parsed.votes.append(_Vote(str(key).strip(), name,
                                              (lid,) if lid != name else ()))
    if not annotated:
        raise LabelsError(f"{flag} {where}: an iFDO file without image-annotations (its "
                          f"{len(doc['image-set-items'])} items hold metadata only); pass the "
                          "tool's annotation export (e.g. BIIGLE's iFDO report) or a CSV with "
                          "columns image_id,label")
    return parsed


# --- the label map -----------------------------------------------------------------------------

def read_label_map(path: str | Path, flag: str = "--label-map") -> dict[str, str]:
    """{tool label: habitat} of a CSV with columns tool_label,habitat (any case; comma,
    semicolon or tab separated); habitat ``-`` ignores that tool label. Refuses a missing
    file, other columns, an empty habitat, or one tool label given two habitats."""
    path = Path(path)
    if not path.is_file():
        raise LabelsError(f"{flag} {path}: no such file; expected a CSV with columns "
                          "tool_label,habitat")
    text = _decode(path.read_bytes(), path, flag)
    lines = text.splitlines(keepends=True)
    first = lines[0] if lines else ""
    delimiter = next((d for d in DELIMITERS
                      if {"tool_label", "habitat"} <= {c.strip().lower()
                                                       for c in _columns(first.strip(), d)}),
                     None)
    if delimiter is None:
        raise LabelsError(f"{flag} {path}: expected columns tool_label,habitat (the tool's "
                          f"label, the habitat class it stands for, or {IGNORE} to ignore it); "
                          f"found {_columns(first.strip(), ',')}")
    out: dict[str, str] = {}
    try:
        reader = csv.reader(lines, delimiter=delimiter)
        cols = [c.strip().lower() for c in next(reader)]
        i_tool, i_hab = cols.index("tool_label"), cols.index("habitat")
        for row in reader:
            tool = row[i_tool].strip() if i_tool < len(row) else ""
            hab = row[i_hab].strip() if i_hab < len(row) else ""
            if not tool and not hab:
                continue
            if not tool or not hab:
                raise LabelsError(f"{flag} {path} line {reader.line_num}: tool_label "
                                  f"{tool!r}, habitat {hab!r}; expected both: a habitat, or "
                                  f"{IGNORE} to ignore the label")
            if out.get(tool, hab) != hab:
                raise LabelsError(f"{flag} {path} line {reader.line_num}: tool label {tool!r} "
                                  f"is mapped to {out[tool]!r} and to {hab!r}; expected one "
                                  "habitat per tool label: remove one of the rows")
            out[tool] = hab
    except csv.Error as exc:
        raise LabelsError(f"{flag} {path}: not a readable CSV ({exc})") from None
    if not out:
        raise LabelsError(f"{flag} {path}: no rows; expected one row per tool label "
                          "(tool_label,habitat)")
    return out


def _apply_map(parsed: _Parsed, label_map, path: Path, log) -> None:
    """Votes relabelled by the map (by label, then by hierarchy, lineage or id); votes of
    ignored labels dropped and counted; labels the map does not name refused, all listed."""
    if label_map is None:
        return
    map_path = Path(label_map) if not isinstance(label_map, dict) else None
    mapping = read_label_map(label_map) if map_path is not None else label_map
    kept, ignored, missing = [], Counter(), Counter()
    for v in parsed.votes:
        hab = next((mapping[x] for x in (v.label, *v.aliases) if x in mapping), None)
        if hab is None:
            missing[v.label] += 1
        elif hab == IGNORE:
            ignored[v.label] += 1
        else:
            kept.append(_Vote(v.key, hab, ()))
    if missing:
        names = [f"{lab!r} ({n})" for lab, n in missing.most_common(12)]
        more = f" and {len(missing) - 12} more" if len(missing) > 12 else ""
        raise LabelsError(f"--label-map {map_path or 'given'}: names no habitat for "
                          f"{len(missing)} label(s) of {path.name}: {', '.join(names)}{more} "
                          f"(votes in brackets); add a row tool_label,habitat for each, or "
                          f"tool_label,{IGNORE} to ignore it")
    parsed.votes = kept
    text = (f"label map {map_path.name if map_path else '(given)'}: {len(kept)} "
            f"{parsed.fmt.unit}(s) mapped to {len({v.label for v in kept})} habitat(s)")
    if ignored:
        text += (f"; {sum(ignored.values())} {parsed.fmt.unit}(s) of {sorted(ignored)[:6]} "
                 f"ignored (mapped to '{IGNORE}')")
    log(text)


# --- matching names to images and voting -------------------------------------------------------

def _name(text: str) -> str:
    return text.replace("\\", "/").rsplit("/", 1)[-1]


def _stem(name: str) -> str:
    return name.rsplit(".", 1)[0] if "." in name else name


def _match_keys(keys, image_id: np.ndarray, path: Path, flag: str) -> tuple[dict, bool]:
    """{key: image_id} of the keys that name an image, and whether by file name. Exact ids
    first (then only those); else by file name, or by the name without its extension (media
    keys), each only where one image has it: a name several images share is refused. A name
    ``ssl.habitats --export`` gave an image whose file name several listed images share (its path
    with ``/`` written as ``__``) names the one image whose id ends in that path."""
    ids = {str(i) for i in image_id}
    exact = {k: k for k in keys if k in ids}
    if exact:
        return exact, False
    names: dict[str, list[str]] = {}
    stems: dict[str, list[str]] = {}
    for iid in image_id:
        names.setdefault(_name(str(iid)), []).append(str(iid))
        stems.setdefault(_stem(_name(str(iid))), []).append(str(iid))
    out = {}
    for key in keys:
        hits = names.get(_name(key)) or stems.get(_name(key), [])
        if not hits and "__" in _name(key):
            tail = _name(key).replace("__", "/")
            hits = [i for i in map(str, image_id) if i == tail or i.endswith("/" + tail)]
        if len(hits) > 1:
            raise LabelsError(f"{flag} {path}: {key!r} matches no image_id, and its file name is "
                              f"that of {len(hits)} images ({', '.join(hits[:3])}); give ids as "
                              "'<dive>/<relative path>', as in the labelling list")
        if hits:
            out[key] = hits[0]
    return out, True


def _vote(labels: list[str]) -> tuple[str | None, int, Counter]:
    """(the majority label or None for a tie, its votes, all counts)."""
    counts = Counter(labels)
    ranked = counts.most_common()
    top = ranked[0][1]
    if len(ranked) > 1 and ranked[1][1] == top:
        return None, top, counts
    return ranked[0][0], top, counts


def _tally(groups: dict[str, list[str]]):
    """{group: (label, share, votes)} of the groups with a majority, and the tied ones with
    their counts."""
    won, tied = {}, {}
    for g, labs in groups.items():
        label, top, counts = _vote(labs)
        if label is None:
            tied[g] = counts
        else:
            won[g] = (label, top / len(labs), len(labs))
    return won, tied


def _examples(tied: dict, n: int = 3) -> str:
    return "; ".join(f"{g}: " + ", ".join(f"{lab} {c}" for lab, c in counts.most_common())
                     for g, counts in list(tied.items())[:n])


def _report(parsed: _Parsed, path: Path, groups: dict, won: dict, tied: dict, log) -> None:
    """The rule and what it did, in one line."""
    shares = np.array([s for _, s, _ in won.values()]) if won else np.ones(0)
    split = int((shares < 1).sum())
    n_votes = sum(len(v) for v in groups.values())
    text = (f"{path.name}: {parsed.fmt.name}, {n_votes} {parsed.fmt.unit}(s) on "
            f"{len(groups)} image(s); {RULE}: {len(won)} labelled")
    if split:
        text += (f", {split} of them by a majority below 100 % (disagreement; lowest share "
                 f"{shares.min():.0%})")
    else:
        text += " (all unanimous)"
    if tied:
        text += f"; {len(tied)} tie(s) left unlabelled (e.g. {_examples(tied)})"
    log(text)


def read_labels_table(path: str | Path, flag: str = "--labels", label_map=None,
                      log=None) -> dict[str, str]:
    """{image name or id: label} of a labels file that exists, in any format this module reads
    (the pipeline's truth labels use this too, so it needs nothing beyond the standard
    library); the keys are the file's own (image_id, or a tool's file name or media key).

    Column names are matched without regard to case or surrounding spaces; the delimiter may
    be a comma, a semicolon or a tab; rows without an id or a label are skipped (a list not
    labelled yet). An image_id,label list is refused when it labels one image twice with
    different labels (naming the line); the tools' rows are votes, one label per name by
    majority (a tie: no label). ``label_map``: a tool_label,habitat CSV (or a dict) applied
    before the vote; ``log``: where ties and disagreements are reported."""
    path = Path(path)
    parsed = _parse_file(path, flag)
    log = log or (lambda *_: None)
    _apply_map(parsed, label_map, path, log)
    groups: dict[str, list[str]] = {}
    for v in parsed.votes:
        groups.setdefault(v.key, []).append(v.label)
    won, tied = _tally(groups)
    if parsed.fmt is not OWN and groups:
        _report(parsed, path, groups, won, tied, log)
    return {k: lab for k, (lab, _, _) in won.items()}


def align_table(given: dict[str, str], image_id, flag: str, path, log=None) -> list:
    """``given`` (read_labels_table's) aligned with ``image_id``: by id when any key is an
    image_id (as the pipeline always did), else by file name as :func:`read_labels` matches;
    None where nothing is given. Matching by name, and names that match no image, are said
    through ``log``."""
    image_id = np.asarray(image_id, dtype=object)
    if not given:
        return [None] * len(image_id)
    by_key, by_name = _match_keys(list(given), image_id, Path(path), flag)
    if not by_name:
        return [given.get(str(i)) for i in image_id]
    at: dict[str, str] = {}
    for key, iid in by_key.items():
        if at.get(iid, given[key]) != given[key]:
            raise LabelsError(f"{flag} {path}: image {iid} is labelled {at[iid]!r} and "
                              f"{given[key]!r} under two names; expected one label per image")
        at[iid] = given[key]
    if log:
        log(f"{Path(path).name}: {len(by_key)} of its {len(given)} labelled image names matched "
            f"to images by file name; {len(given) - len(by_key)} name no image")
    return [at.get(str(i)) for i in image_id]


def read_labels(path: str | Path, image_id: np.ndarray, flag: str = "--labels", log=print,
                label_map=None) -> Labels:
    """The labels of ``image_id`` from a labels file in any format this module reads, with
    each image's majority share and number of votes (see the module's rule).

    Refuses a file that is missing, of no known format, holds no label yet, or whose names
    match none of the images; names of images that are not there are counted and reported
    through ``log``, and so are ties and disagreements (with examples)."""
    from .flags import not_a_file

    path = Path(path)
    why = not_a_file(path, "a CSV with columns image_id,label or an annotation tool's export",
                     ("labelling_list.csv",))
    if why:
        raise LabelsError(f"{flag} {why}")
    parsed = _parse_file(path, flag)
    own = parsed.fmt is OWN
    if not parsed.votes:
        what = ("no row has both an image_id and a label; fill in the label column (the "
                "labelling list's is empty until an annotator fills it)") if own else (
                f"no {parsed.fmt.unit} with both an image name and a label "
                f"({parsed.fmt.name}, {parsed.blank} row(s) without)")
        raise LabelsError(f"{flag} {path}: {what}")
    _apply_map(parsed, label_map, path, log)
    if not parsed.votes:
        raise LabelsError(f"{flag} {path}: the label map ignores every label; nothing is left "
                          "to learn from")
    keys = list(dict.fromkeys(v.key for v in parsed.votes))
    by_key, by_name = _match_keys(keys, image_id, path, flag)
    if not by_key:
        raise LabelsError(f"{flag} {path}: none of its {len(keys)} image_id values is among "
                          f"the {len(image_id)} images (e.g. {keys[:2]} vs "
                          f"{list(image_id[:2])}); ids are '<dive>/<relative path>', as in the "
                          "labelling list, or file names an image of the survey has: are the "
                          "labels from another survey?")
    groups: dict[str, list[str]] = {}
    first: dict[str, tuple[str, str]] = {}
    for v in parsed.votes:
        iid = by_key.get(v.key)
        if iid is None:
            continue
        if own and first.setdefault(iid, (v.key, v.label))[1] != v.label:
            raise LabelsError(f"{flag} {path}: image {iid} is labelled {first[iid][1]!r} and "
                              f"{v.label!r} under two names; expected one label per image")
        groups.setdefault(iid, []).append(v.label)
    won, tied = _tally(groups)
    if by_name and own:
        log(f"note: the ids in {path.name} are not '<dive>/<relative path>'; {len(by_key)} of "
            f"its {len(keys)} labels were matched to images by file name (each name is one "
            "image's)")
    elif by_name:
        log(f"note: {path.name} names images by file name; {len(by_key)} of its {len(keys)} "
            "names were matched to images (each name is one image's)")
    unmatched = [k for k in keys if k not in by_key]
    if unmatched and own:
        log(f"note: {len(unmatched)} label(s) in {path.name} name images that are not among "
            "these images; ignored")
    elif unmatched:
        n_votes = sum(1 for v in parsed.votes if v.key not in by_key)
        log(f"note: {len(unmatched)} image name(s) in {path.name} ({n_votes} "
            f"{parsed.fmt.unit}(s)) match none of these images, e.g. {unmatched[:3]}; ignored")
    if not own:
        _report(parsed, path, groups, won, tied, log)
        if parsed.blank:
            log(f"note: {parsed.blank} row(s) of {path.name} without an image name or a label; "
                "skipped")
    if not won:
        raise LabelsError(f"{flag} {path}: no image has a majority label: all {len(tied)} "
                          f"matched images are ties (e.g. {_examples(tied)}); {RULE}")
    ids = [str(i) for i in image_id]
    labels = np.array([won[i][0] if i in won else None for i in ids], dtype=object)
    share = np.array([won[i][1] if i in won else np.nan for i in ids], dtype=np.float64)
    votes = np.array([len(groups.get(i, ())) for i in ids], dtype=np.int64)
    return Labels(labels, share, votes, parsed.fmt.name, sorted(tied))


def read_labels_csv(path: str | Path, image_id: np.ndarray, flag: str = "--labels",
                    log=print, label_map=None) -> np.ndarray:
    """Labels (n,) object aligned with ``image_id`` (None where the file gives no label): the
    ``labels`` of :func:`read_labels`."""
    return read_labels(path, image_id, flag, log, label_map).labels
