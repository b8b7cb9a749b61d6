"""Habitat labels from a CSV with columns image_id,label (what annotators hand back), matched to
the images of a manifest or an embeddings file by image_id ('<dive>/<relative path>').

The pipeline reads a catalog's truth labels with read_labels_table too (through
pipeline.schema.load_trainer_module): it may use only numpy and the standard library at import."""

from __future__ import annotations

import csv
from pathlib import Path

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


def _text(path: Path, flag: str) -> str:
    """The file as text: UTF-8 (with or without a byte-order mark), or UTF-16 with its mark
    (a spreadsheet's "Unicode text")."""
    raw = path.read_bytes()
    if raw[:4] == b"PAR1":
        raise LabelsError(f"{flag} {path}: a Parquet file; expected a CSV with columns "
                          "image_id,label (the labelling list, filled in)")
    if raw[:2] in (b"\xff\xfe", b"\xfe\xff"):
        try:
            return raw.decode("utf-16")
        except UnicodeDecodeError as exc:
            raise LabelsError(f"{flag} {path}: marked as UTF-16 but not readable as it "
                              f"({exc.reason}); save the CSV as UTF-8") from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise LabelsError(f"{flag} {path}: not UTF-8 text ({exc.reason} at byte {exc.start}); "
                          "save the CSV as UTF-8") from None


def _delimiter(header: str) -> str:
    """The delimiter of a header line: the one of DELIMITERS that splits off image_id and label
    (a comma when none does, so that the error names what was found)."""
    for d in DELIMITERS:
        cols = {c.strip().strip('"').lower() for c in header.split(d)}
        if {"image_id", "label"} <= cols:
            return d
    return ","


def read_labels_table(path: str | Path, flag: str = "--labels") -> dict[str, str]:
    """{image_id: label} of a labels file that exists (the pipeline's truth labels use this
    too, so it needs nothing beyond the standard library).

    Column names are matched without regard to case or surrounding spaces; the delimiter may
    be a comma, a semicolon or a tab; rows without an id or a label are skipped (a list not
    labelled yet). Refuses a file without the two columns, or labelling one image twice with
    different labels (naming the line)."""
    path = Path(path)
    text = _text(path, flag)
    lines = text.splitlines(keepends=True)
    given: dict[str, str] = {}
    try:
        reader = csv.reader(lines, delimiter=_delimiter(lines[0] if lines else ""))
        header = next(reader, [])
        cols = [c.strip().lower() for c in header]
        if "image_id" not in cols or "label" not in cols:
            raise LabelsError(f"{flag} {path}: expected columns image_id,label; found "
                              f"{header}")
        at_id, at_label = cols.index("image_id"), cols.index("label")
        for row in reader:
            iid = row[at_id].strip() if at_id < len(row) else ""
            lab = row[at_label].strip() if at_label < len(row) else ""
            if not iid or not lab:
                continue  # an annotator's blank row, or a row not labelled yet
            if iid in given and given[iid] != lab:
                raise LabelsError(f"{flag} {path} line {reader.line_num}: image {iid} is listed "
                                  f"more than once, labelled {given[iid]!r} and {lab!r}; "
                                  "expected one label per image: fix one of the rows")
            given[iid] = lab
    except csv.Error as exc:
        raise LabelsError(f"{flag} {path}: not a readable CSV ({exc})") from None
    return given


def read_labels_csv(path: str | Path, image_id: np.ndarray, flag: str = "--labels",
                    log=print) -> np.ndarray:
    """Labels (n,) object aligned with ``image_id`` (None where the file lists no label).

    Read as read_labels_table reads; refuses besides a file that is missing, holds no label
    yet, or whose ids match none of the images; labels naming images that are not there are
    counted and reported through ``log``."""
    from .flags import not_a_file

    path = Path(path)
    why = not_a_file(path, "a CSV with columns image_id,label", ("labelling_list.csv",))
    if why:
        raise LabelsError(f"{flag} {why}")
    given = read_labels_table(path, flag)
    if not given:
        raise LabelsError(f"{flag} {path}: no row has both an image_id and a label; fill in "
                          "the label column (the labelling list's is empty until an annotator "
                          "fills it)")
    labels = np.array([given.get(i) for i in image_id], dtype=object)
    matched = int(labelled_mask(labels).sum())
    if not matched:
        labels, matched = _by_file_name(path, flag, given, image_id, log)
    if not matched:
        raise LabelsError(f"{flag} {path}: none of its {len(given)} image_id values is among "
                          f"the {len(image_id)} images (e.g. {list(given)[:2]} vs "
                          f"{list(image_id[:2])}); ids are '<dive>/<relative path>', as in the "
                          "labelling list: are the labels from another survey?")
    if matched < len(given):
        log(f"note: {len(given) - matched} label(s) in {path.name} name images that are not "
            "among these images; ignored")
    return labels


def _name(text: str) -> str:
    return text.replace("\\", "/").rsplit("/", 1)[-1]


def _by_file_name(path: Path, flag: str, given: dict[str, str], image_id: np.ndarray,
                  log) -> tuple[np.ndarray, int]:
    """Labels matched by file name alone, for a file whose ids match no image_id but are file
    names or paths of another layout (what annotation tools keep). Only names that one image
    of the survey has are matched; a name several images share is refused, never guessed."""
    names: dict[str, list[str]] = {}
    for iid in image_id:
        names.setdefault(_name(str(iid)), []).append(str(iid))
    by_name: dict[str, str] = {}
    for key, lab in given.items():
        hits = names.get(_name(key), [])
        if len(hits) > 1:
            raise LabelsError(f"{flag} {path}: {key!r} matches no image_id, and its file name is "
                              f"that of {len(hits)} images ({', '.join(hits[:3])}); give ids as "
                              "'<dive>/<relative path>', as in the labelling list")
        if hits:
            if by_name.get(hits[0], lab) != lab:
                raise LabelsError(f"{flag} {path}: image {hits[0]} is labelled "
                                  f"{by_name[hits[0]]!r} and {lab!r} under two names; expected "
                                  "one label per image")
            by_name[hits[0]] = lab
    labels = np.array([by_name.get(str(i)) for i in image_id], dtype=object)
    matched = len(by_name)
    if matched:
        log(f"note: the ids in {path.name} are not '<dive>/<relative path>'; {matched} of its "
            f"{len(given)} labels were matched to images by file name (each name is one "
            "image's)")
    return labels, matched
