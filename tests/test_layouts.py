"""Dive layouts of real surveys: nested dive folders, {dive} and {dive_id}, navigation globs
(oplab's date-stamped processed tree), and the catalogs that describe them."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml

from pipeline.build import build
from pipeline.catalog import CatalogError, load_catalog
from pipeline.dives import discover_dives, dive_id_of, dive_rel
from pipeline.synth import SynthConfig, generate

QUIET = {"workers": 1, "log": lambda *_: None}


@pytest.fixture(scope="module")
def flat(tmp_path_factory):
    root = tmp_path_factory.mktemp("flat") / "site"
    generate(SynthConfig(out=root, dives=2, images_per_dive=25, seed=11,
                         formats=["oplab-camera-csv"], workers=2))
    cat = load_catalog(root / "catalog.yaml")
    build(cat, **QUIET)
    return root, cat


def _positions(out: Path) -> dict[str, tuple[float, float]]:
    """image file name -> (easting, northing)"""
    t = pq.read_table(out / "locations.parquet", columns=["path", "easting", "northing"])
    return {Path(p).name: (x, y) for p, x, y in
            zip(t["path"].to_pylist(), t["easting"].to_pylist(), t["northing"].to_pylist(),
                strict=True)}


def _write_catalog(root: Path, **doc) -> Path:
    base = {"root": ".", "output": "manifests", "labels": None, "crs": "auto"}
    path = root / "catalog.yaml"
    path.write_text(yaml.safe_dump({**base, **doc}, sort_keys=False))
    return path


def test_raw_year_cruise_dive_tree_with_oplab_processed_navigation(flat, tmp_path):
    src, flat_cat = flat
    root = tmp_path / "survey"
    for k, dive in enumerate(("dive01", "dive02")):
        raw = root / "raw" / "2019" / f"c0{k + 1}" / dive
        shutil.copytree(src / dive / "images", raw / "images")
        # the processed tree mirrors the raw one; the newest json_renav_* is the one to use
        ekf = root / "processed" / "2019" / f"c0{k + 1}" / dive
        new = ekf / "json_renav_20190403_120000_20190403_180000" / "csv" / "ekf"
        old = ekf / "json_renav_20190402_090000_20190402_100000" / "csv" / "ekf"
        new.mkdir(parents=True)
        old.mkdir(parents=True)
        text = (src / dive / "nav" / "auv_ekf_LC.csv").read_text()
        (new / "auv_ekf_LC.csv").write_text(text)
        (old / "auv_ekf_LC.csv").write_text("relative_path,latitude [deg]\nbroken,0\n")
    cat_path = _write_catalog(
        root, name="nested", dives="raw/*/*/*",
        nav=[{"format": "oplab-camera-csv",
              "path": "processed/{dive_id}/json_renav_*/csv/ekf/auv_ekf_LC.csv"}],
        images="{dive}/images/*.jpg")
    cat = load_catalog(cat_path)
    assert discover_dives(cat) == ["2019/c01/dive01", "2019/c02/dive02"]
    assert dive_rel(cat, "2019/c02/dive02") == "raw/2019/c02/dive02"
    lines = []
    report = build(cat, workers=1, log=lines.append)
    assert report["images_located"] == pq.read_metadata(flat_cat.output / "locations.parquet").num_rows
    assert any("using the last in sorted order" in line and "20190403" in line for line in lines)
    # the same images at the same places as the flat layout of the same survey
    ref, got = _positions(flat_cat.output), _positions(cat.output)
    assert set(got) == set(ref)
    diff = np.array([np.hypot(got[n][0] - ref[n][0], got[n][1] - ref[n][1]) for n in ref])
    assert diff.max() < 1e-6
    dives = set(pq.read_table(cat.output / "locations.parquet", columns=["dive"])
                .column("dive").to_pylist())
    assert dives == {"2019/c01/dive01", "2019/c02/dive02"}
    # shards for nested dive ids, readable through the manifest
    from ssl.data.manifest import load_manifest

    m = load_manifest(cat.output / "pairs.parquet")
    assert set(m.stores) == dives and all(p.is_file() for p in m.stores.values())
    # a newer renav folder appears: the dive is ingested again from it
    dive = root / "processed" / "2019" / "c01" / "dive01"
    newest = dive / "json_renav_20190501_000000_20190501_010000" / "csv" / "ekf"
    newest.mkdir(parents=True)
    shutil.copy(next(dive.glob("json_renav_20190403*/csv/ekf/auv_ekf_LC.csv")), newest)
    r = build(cat, **QUIET)
    assert r["ingested"] == ["2019/c01/dive01"]


def test_dives_under_a_folder_with_dive_template_from_the_root(flat, tmp_path):
    """`dives: "dives/*"` with `{dive}/...` templates: {dive} is the path from the root."""
    src, flat_cat = flat
    root = tmp_path / "survey"
    for dive in ("dive01", "dive02"):
        shutil.copytree(src / dive, root / "dives" / dive)
    cat = load_catalog(_write_catalog(
        root, name="under", dives="dives/*",
        nav=[{"format": "oplab-camera-csv", "path": "{dive}/nav/auv_ekf_LC.csv"}],
        images="{dive}/images/*.jpg"))
    assert discover_dives(cat) == ["dive01", "dive02"]
    report = build(cat, **QUIET)
    assert report["images_located"] == pq.read_metadata(flat_cat.output / "locations.parquet").num_rows
    assert set(_positions(cat.output)) == set(_positions(flat_cat.output))


@pytest.mark.parametrize("pattern,rel,dive_id", [
    ("dive*", "dive01", "dive01"),
    ("dives/*", "dives/r00", "r00"),
    ("raw/*/*/*", "raw/2019/c01/d07", "2019/c01/d07"),
    ("raw/20??/*/dive*", "raw/2019/c01/dive07", "2019/c01/dive07"),
    ("./surveys/[ab]*/dives/*", "surveys/alpha/dives/d1", "alpha/d1"),
    ("only-dive", "only-dive", "only-dive"),
])
def test_dive_id_and_folder_are_inverse(tmp_path, pattern, rel, dive_id):
    cat = load_catalog(_write_catalog(tmp_path, name="x", dives=pattern,
                                      nav=[{"format": "ifdo", "path": "{dive}/a.json"}]))
    assert dive_id_of(cat, rel) == dive_id
    assert dive_rel(cat, dive_id) == rel


@pytest.mark.parametrize("images,template,message", [
    # a nav path without {dive} names one file shared by every dive; images must name the dive
    ("all/*.jpg", "nav/all.json", "must contain {dive}"),
    ("{dive}/*.jpg", "{dive}/{cruise}/nav.csv", "unknown field(s) {cruise}"),
])
def test_templates_must_name_the_dive_and_nothing_else(tmp_path, images, template, message):
    path = _write_catalog(tmp_path, name="x", images=images,
                          nav=[{"format": "ifdo", "path": template}])
    with pytest.raises(CatalogError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_catalog(path)


@pytest.mark.parametrize("change,message", [
    ({"dives": "nothing/*"}, "matches no folder"),
    ({"images": "{dive}/imgs/*.jpg"}, "key 'images'"),
    ({"nav": [{"format": "oplab-camera-csv", "path": "{dive}/nav/missing.csv"}]}, "key 'nav'"),
])
def test_a_catalog_that_locates_nothing_says_where_with_exit_2(flat, tmp_path, change, message):
    import subprocess
    import sys

    src, _ = flat
    site = tmp_path / "site"
    shutil.copytree(src, site, ignore=shutil.ignore_patterns("manifests"))
    doc = yaml.safe_load((site / "catalog.yaml").read_text())
    doc.update(change)
    (site / "catalog.yaml").write_text(yaml.safe_dump(doc))
    res = subprocess.run([sys.executable, "-m", "pipeline", "build", "--catalog",
                          str(site / "catalog.yaml")], capture_output=True, text=True, timeout=300,
                         cwd=Path(__file__).resolve().parents[1])
    assert res.returncode == 2, res.stderr
    assert message in res.stderr and "Traceback" not in res.stderr


def test_absolute_image_paths_inside_the_root_are_normalised(flat, tmp_path):
    """oplab writes absolute relative_path values for ACFR-named images."""
    import pandas as pd

    src, flat_cat = flat
    site = tmp_path / "site"
    shutil.copytree(src, site, ignore=shutil.ignore_patterns("manifests"))
    nav = site / "dive01" / "nav" / "auv_ekf_LC.csv"
    df = pd.read_csv(nav)
    df["relative_path"] = [str(site / "dive01" / p) for p in df["relative_path"]]
    df.loc[0, "relative_path"] = "/somewhere/else/dive01/" + Path(df.loc[0, "relative_path"]).name
    df.to_csv(nav, index=False)
    cat = load_catalog(site / "catalog.yaml")
    build(cat, **QUIET)
    loc = pq.read_table(cat.output / "locations.parquet").to_pandas()
    quar = pq.read_table(cat.output / "quarantine.parquet").to_pandas()
    ref = pq.read_table(flat_cat.output / "locations.parquet").to_pandas()
    assert len(loc) == len(ref) - 1
    unsafe = quar[quar["reason"] == "unsafe_path"]
    assert len(unsafe) == 1 and "/somewhere/else" in unsafe["detail"].iloc[0]
