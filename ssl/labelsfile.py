"""Habitat labels from a CSV with columns image_id,label (what annotators hand back), matched to
the images of a manifest or an embeddings file by image_id ('<dive>/<relative path>')."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np


class LabelsError(ValueError):
    """A labels file that cannot be used (reported as one message, exit status 2)."""


def read_labels_csv(path: str | Path, image_id: np.ndarray, flag: str = "--labels",
                    log=print) -> np.ndarray:
    """Labels (n,) object aligned with ``image_id`` (None where the file lists no label).

    Refuses a file that is missing, lacks the two columns, or whose ids match none of the
    images; labels naming images that are not there are counted and reported through ``log``."""
    path = Path(path)
    if not path.is_file():
        raise LabelsError(f"{flag} {path}: no such file; expected a CSV with columns "
                          "image_id,label")
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            cols = reader.fieldnames or []
            if "image_id" not in cols or "label" not in cols:
                raise LabelsError(f"{flag} {path}: expected columns image_id,label; found "
                                  f"{cols}")
            given = {}
            for line, row in enumerate(reader, start=2):
                iid, lab = (row.get("image_id") or "").strip(), (row.get("label") or "").strip()
                if not iid or not lab:
                    continue  # an annotator's blank row: not a label
                if iid in given and given[iid] != lab:
                    raise LabelsError(f"{flag} {path} line {line}: image {iid} is labelled "
                                      f"{given[iid]!r} and {lab!r}; expected one label per "
                                      "image: fix one of the two rows")
                given[iid] = lab
    except UnicodeDecodeError as exc:
        raise LabelsError(f"{flag} {path}: not UTF-8 text ({exc.reason} at byte {exc.start}); "
                          "save the CSV as UTF-8") from None
    except csv.Error as exc:
        raise LabelsError(f"{flag} {path}: not a readable CSV ({exc})") from None
    labels = np.array([given.get(i) for i in image_id], dtype=object)
    matched = sum(v is not None for v in labels)
    if not matched:
        raise LabelsError(f"{flag} {path}: none of its {len(given)} image_id values is among "
                          f"the {len(image_id)} images (e.g. {list(given)[:2]} vs "
                          f"{list(image_id[:2])}); ids are '<dive>/<relative path>', as in the "
                          "labelling list: are the labels from another survey?")
    if matched < len(given):
        log(f"note: {len(given) - matched} label(s) in {path.name} name images that are not "
            "among these images; ignored")
    return labels
