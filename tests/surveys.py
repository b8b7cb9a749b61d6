"""Test helper: a private copy of a module's synthetic survey, without its built manifests."""

from __future__ import annotations

import shutil
from pathlib import Path


def copy_survey(survey: Path, dest: Path) -> Path:
    """Copy ``survey`` (a folder written by pipeline.synth) to ``dest``, leaving out manifests/."""
    shutil.copytree(survey, dest, ignore=shutil.ignore_patterns("manifests"))
    return dest
