"""Catalog validation: errors name the file, the key, what was found and what was expected."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.catalog import CatalogError, find_catalog, load_catalog

REPO = Path(__file__).resolve().parents[1]


def test_demo_catalog_loads_with_paths_relative_to_the_file():
    cat = load_catalog(REPO / "catalogs" / "seafloor.yaml")
    assert cat.name == "seafloor"
    assert cat.root == (REPO / "data" / "seafloor").resolve()
    assert cat.output == (REPO / "data" / "seafloor" / "manifests").resolve()
    assert [n.format for n in cat.nav][0] == "oplab-camera-csv"
    assert cat.pairs.r_loc_m == 5.0
    assert cat.train_size == (192, 256)
    assert cat.schedule.interval_s == 900
    assert len(cat.sha256) == 64


def test_name_defaults_to_file_stem(tmp_path):
    p = tmp_path / "reef-2024.yaml"
    p.write_text("root: .\nnav: [{format: ifdo, path: '{dive}/x.json'}]\noutput: out\n")
    assert load_catalog(p).name == "reef-2024"
    assert find_catalog("reef-2024", tmp_path) == tmp_path / "reef-2024.yaml"


@pytest.mark.parametrize(
    ("yaml_text", "key", "found", "expected"),
    [
        ("nav: [{format: oplab, path: '{dive}/a'}]", "nav.0.format", "'oplab'", "oplab-camera-csv"),
        # a nav path without {dive} is one file shared by all dives; images still name the dive
        ("images: 'all/*.jpg'", "images", "'all/*.jpg'", "{dive}"),
        ("nav: [{format: ifdo, path: '{cruise}/a.json'}]", "nav.0.path", "'{cruise}/a.json'",
         "unknown field(s) {cruise}"),
        ("nav: [{format: csv, path: '{dive}/n.csv'}]", "nav.0", "", "columns"),
        ("crs: WGS84", "crs", "'WGS84'", "EPSG:"),
        ("pairs: {r_loc_m: -1}", "pairs.r_loc_m", "-1", "greater than 0"),
        ("pairs: {r_loc_m: 2, r_min_m: 3}", "pairs", "", "r_min_m"),
        ("schedule: {interval_s: 10, cron: '* * * * *'}", "schedule", "", "exactly one"),
        ("train_size: [192]", "train_size", "", "2 items"),
        ("colour: blue", "colour", "'blue'", "is not a catalog key"),
    ],
)
def test_errors_name_file_key_found_and_expected(tmp_path, yaml_text, key, found, expected):
    base = {
        "root": "root: .",
        "nav": "nav: [{format: ifdo, path: '{dive}/n.json'}]",
        "output": "output: out",
    }
    top = yaml_text.split(":", 1)[0]
    base[top] = yaml_text
    p = tmp_path / "site.yaml"
    p.write_text("\n".join(base.values()) + "\n")
    with pytest.raises(CatalogError) as info:
        load_catalog(p)
    msg = str(info.value)
    line = next((ln for ln in msg.splitlines() if f"key '{key}'" in ln), None)
    assert line is not None, msg
    assert str(p) in line
    assert f"found {found}" in line
    assert expected in line


def test_missing_key_and_missing_file_and_bad_yaml(tmp_path):
    p = tmp_path / "a.yaml"
    p.write_text("root: .\nnav: [{format: ifdo, path: '{dive}/n.json'}]\n")
    with pytest.raises(CatalogError, match=r"key 'output': found nothing \(missing\)"):
        load_catalog(p)
    with pytest.raises(CatalogError, match="not found"):
        load_catalog(tmp_path / "nope.yaml")
    p.write_text("root: [unclosed\n")
    with pytest.raises(CatalogError, match="not valid YAML"):
        load_catalog(p)
    with pytest.raises(CatalogError, match="no catalog named 'ghost'"):
        find_catalog("ghost", tmp_path)


def test_a_folder_or_a_binary_file_given_for_the_catalog_is_named(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    with pytest.raises(CatalogError, match=r"site is a folder; expected a catalog file \(YAML\)$"):
        load_catalog(site)
    (site / "catalog.yaml").write_text("name: x\n")
    with pytest.raises(CatalogError, match=r"it holds .*catalog.yaml: pass that"):
        load_catalog(site)
    (site / "other.yml").write_text("name: y\n")
    with pytest.raises(CatalogError, match=r"catalog.yaml, .*other.yml: pass one of them"):
        load_catalog(site)
    parquet = site / "pairs.parquet"
    parquet.write_bytes(b"PAR1\x15\x04\x00\x00" * 8)
    with pytest.raises(CatalogError, match="binary content"):
        load_catalog(parquet)
