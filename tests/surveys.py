"""Test helpers: a private copy of a module's synthetic survey, without its built manifests,
and such a copy built once."""

from __future__ import annotations

import shutil
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
