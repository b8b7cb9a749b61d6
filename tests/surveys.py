"""Test helpers: a private copy of a module's synthetic survey, without its built manifests,
and such a copy built once."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path


def copy_survey(survey: Path, dest: Path) -> Path:
    """Copy ``survey`` (a folder written by pipeline.synth) to ``dest``, leaving out manifests/."""
    shutil.copytree(survey, dest, ignore=shutil.ignore_patterns("manifests"))
    return dest


def built_copy(survey: Path, dest: Path):
    """A copy of ``survey`` at ``dest``, built once (quietly): (catalog, its output folder)."""
    from pipeline.build import build
    from pipeline.catalog import load_catalog

    cat = load_catalog(copy_survey(survey, dest) / "catalog.yaml")
    build(cat, workers=1, log=lambda *_: None)
    return cat, cat.output


def mini_manifest(root: Path, dives: int = 2, images_per_dive: int = 48, seed: int = 11) -> Path:
    """A fault-free synthetic survey at ``root``, built: its pairs.parquet (the trainer tests'
    mini-survey)."""
    from pipeline.build import build
    from pipeline.catalog import load_catalog
    from pipeline.synth import SynthConfig, generate

    generate(SynthConfig(out=root, dives=dives, images_per_dive=images_per_dive, seed=seed,
                         faults=False, workers=2))
    build(load_catalog(root / "catalog.yaml"), workers=2, log=lambda *_: None)
    return root / "manifests" / "pairs.parquet"


def tool_labels(tool: str, names: list[str], truth: list[str], folder: Path) -> Path:
    """What each tool hands back for the exported images (file names as exported), written as
    its export format reads: BIIGLE's image-label report (two annotators on the first image),
    CoralNet's annotation export (five points an image, one of them another label), an iFDO
    with image-annotations."""
    classes = sorted(set(truth))
    other = {lab: classes[(k + 1) % len(classes)] for k, lab in enumerate(classes)}
    if tool == "biigle":
        path = folder / "biigle_image_labels.csv"
        with open(path, "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["image_label_id", "image_id", "filename", "user_id", "firstname",
                        "lastname", "label_id", "label_name", "label_hierarchy", "created_at"])
            for k, (name, lab) in enumerate(zip(names, truth, strict=True)):
                for user in (1, 2) if k == 0 else (1,):
                    w.writerow([100 * k + user, 5000 + k, name, user, "A", "B", lab, lab,
                                f"Seafloor > {lab}", "2024-05-02 10:11:12"])
    elif tool == "coralnet":
        path = folder / "coralnet_annotations.csv"
        with open(path, "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["Name", "Date", "Aux1", "Row", "Column", "Label code"])
            for name, lab in zip(names, truth, strict=True):
                for p in range(5):
                    w.writerow([name, "2024-03-13", "dive", 10 * p, 20, other[lab] if p == 4
                                else lab])
    else:
        path = folder / "labels_iFDO.json"
        ids = {lab: str(k) for k, lab in enumerate(sorted(set(truth)), start=301)}
        doc = {"image-set-header": {
                   "image-set-name": "labels", "image-set-uuid": str(uuid.uuid4()),
                   "image-set-handle": "https://example.org/labels",
                   "image-annotation-labels": [{"id": i, "name": lab} for lab, i in ids.items()],
                   "image-annotation-creators": [{"id": "a1", "name": "A"}]},
               "image-set-items": {name: {"image-annotations": [
                   {"shape": "whole-image", "coordinates": [[]],
                    "labels": [{"label": ids[lab], "annotator": "a1",
                                "created-at": "2024-05-02T10:11:12.000000Z"}]}]}
                   for name, lab in zip(names, truth, strict=True)}}
        path.write_text(json.dumps(doc))
    return path


def without_root_permissions() -> list[str] | None:
    """A command prefix under which chmod 000 stops this process's children reading a file:
    none needed for a user other than root; for root, setpriv dropping the capabilities that
    override file permissions; None when neither works here."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        return None
    prefix = [setpriv, "--bounding-set=-dac_override,-dac_read_search", "--"]
    probe = Path(os.environ.get("TMPDIR", "/tmp")) / f"hostile-probe-{os.getpid()}"
    probe.write_text("x")
    probe.chmod(0)
    try:
        ok = subprocess.run([*prefix, sys.executable, "-c", f"open({str(probe)!r}).read()"],
                            capture_output=True).returncode != 0
    except OSError:
        ok = False
    finally:
        probe.chmod(0o600)
        probe.unlink()
    return prefix if ok else None
