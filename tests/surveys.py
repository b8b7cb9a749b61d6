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
