"""The README's catalog reference names every catalog key of every format, and its examples are
catalogs the pipeline accepts."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from pipeline.catalog import (
    NAV_FORMATS,
    Catalog,
    CsvColumns,
    DaskSettings,
    MappingSettings,
    NavChecks,
    NavSource,
    NotifySettings,
    PairPolicy,
    Schedule,
)

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()
REFERENCE = README[README.index("### Catalog reference"):]


def _keys(model) -> list[str]:
    return [f.alias or name for name, f in model.model_fields.items()
            if name not in ("source", "sha256")]


@pytest.mark.parametrize("model", [Catalog, NavSource, CsvColumns, PairPolicy, NavChecks, Schedule,
                                   MappingSettings, NotifySettings])
def test_every_catalog_key_is_in_the_reference(model):
    missing = [k for k in _keys(model) if f"`{k}`" not in REFERENCE and f"  {k}:" not in REFERENCE]
    assert not missing, f"{model.__name__}: {missing} not documented in the catalog reference"


def test_every_dask_key_is_in_the_readme():
    assert not [k for k in _keys(DaskSettings) if f"  {k}:" not in README]


def _yaml_blocks(text: str) -> list:
    return [yaml.safe_load(b) for b in re.findall(r"```yaml\n(.*?)```", text, flags=re.S)]


def _nav_examples() -> list[dict]:
    out = []
    for block in _yaml_blocks(re.sub(r"(?m)^  ", "", REFERENCE)):
        if isinstance(block, list):
            out += block
    return out


def test_every_format_has_an_example_that_validates(tmp_path):
    examples = _nav_examples()
    assert {e["format"] for e in examples} == set(NAV_FORMATS)
    for e in examples:
        NavSource.model_validate(e)


def test_the_other_examples_are_catalog_settings(tmp_path):
    for block in _yaml_blocks(REFERENCE):
        if isinstance(block, dict):
            Catalog.model_validate({"name": "x", "root": ".", "output": "out",
                                    "nav": [{"format": "exif"}], **block})
