"""Pipeline core end to end on a synthetic survey: conservation, index, pairs, publishing."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from scipy.spatial import cKDTree

from pipeline import schema
from pipeline.build import BuildLocked, acquire, build, lock
from pipeline.catalog import load_catalog
from pipeline.index import near, read_bbox
from pipeline.manifest import ManifestMismatch, file_sha256, read_pairs
from pipeline.synth import SynthConfig, generate

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def survey(tmp_path_factory):
    """4 dives (iFDO, ACFR, oplab camera CSV, raw 10 Hz nav) with every fault injected."""
    root = tmp_path_factory.mktemp("site") / "site"
    generate(SynthConfig(out=root, dives=4, images_per_dive=80, seed=3, faults=True, workers=2))
    return root


@pytest.fixture(scope="module")
def built(survey):
    cat = load_catalog(survey / "catalog.yaml")
    report = build(cat, workers=2, log=lambda *_: None)
    return cat, report


def test_every_image_is_located_or_quarantined_with_the_declared_reason(survey, built):
    cat, report = built
    faults = json.loads((survey / "faults.json").read_text())
    out = cat.output
    loc = pq.read_table(out / "locations.parquet").to_pandas()
    quar = pq.read_table(out / "quarantine.parquet").to_pandas()
    on_disk = sum(faults["images_on_disk"].values())
    image_rows = quar[quar["reason"] != "unsafe_path"]
    assert len(loc) + len(image_rows) == on_disk
    assert report["images_found"] == on_disk
    assert image_rows["reason"].value_counts().to_dict() == faults["expected_quarantine"]
    assert len(loc) == faults["expected_locations"]
    declared = {(f["dive"], f"{f['dive']}/{f['file']}"): f["expected_reason"]
                for f in faults["faults"] if f.get("expected_reason")}
    got = {(r.dive, r.source): r.reason for r in image_rows.itertuples()}
    assert got == declared
    assert set(loc["image_id"]).isdisjoint(image_rows["source"])


def test_locations_positions_match_truth_and_interpolation_is_used(survey, built):
    import pandas as pd

    cat, report = built
    loc = pq.read_table(cat.output / "locations.parquet").to_pandas()
    truth = pd.read_csv(survey / "truth.csv").set_index("image_id")
    t = truth.loc[loc["image_id"]]
    err = np.hypot(loc["easting"].to_numpy() - t["easting"].to_numpy(),
                   loc["northing"].to_numpy() - t["northing"].to_numpy())
    assert np.median(err) < 0.5 and err.max() < 2.0, (np.median(err), err.max())
    assert report["per_dive"]["dive04"]["nav_format"] == "oplab-nav-csv"
    hd = np.abs((loc["heading_deg"].to_numpy() - t["heading_deg"].to_numpy() + 180) % 360 - 180)
    assert np.median(hd) < 2.0
    assert (loc["depth_m"] > 30).all() and loc["altitude_m"].between(1.0, 3.5).all()
    assert loc["label"].notna().all()
    assert report["crs"] == "EPSG:32755"


def test_pairs_are_exactly_the_r_loc_neighbours(built):
    cat, report = built
    pairs, locs = read_pairs(cat.output / "pairs.parquet")
    assert pairs.schema.remove_metadata() == schema.PAIRS
    a = pairs.column("anchor").to_numpy()
    p = pairs.column("positive").to_numpy()
    assert (a < p).all() and (np.diff(a) >= 0).all()
    xy = np.column_stack([locs.column("easting").to_numpy(), locs.column("northing").to_numpy()])
    r = report["pair_policy"]["r_loc_m"]
    truth = {tuple(x) for x in cKDTree(xy).query_pairs(r, output_type="ndarray").tolist()}
    assert set(zip(a.tolist(), p.tolist(), strict=True)) == truth
    assert report["cross_dive_pairs"] > 0  # dive02 revisits dive01
    d = np.hypot(*(xy[a] - xy[p]).T)
    assert np.allclose(pairs.column("distance_m").to_numpy(), d, atol=1e-3)


def test_locations_are_geoparquet_readable_by_geopandas_and_duckdb(built):
    import duckdb
    import geopandas

    cat, _ = built
    path = cat.output / "locations.parquet"
    gdf = geopandas.read_parquet(path)
    assert gdf.crs.to_epsg() == 32755
    assert np.allclose(gdf.geometry.x, gdf["easting"]) and np.allclose(gdf.geometry.y, gdf["northing"])
    geo = json.loads(pq.read_schema(path).metadata[b"geo"])
    assert geo["version"] == "1.1.0"
    assert geo["columns"]["geometry"]["covering"]["bbox"]["xmin"] == ["bbox", "xmin"]
    n = duckdb.sql(f"select count(*) from read_parquet('{path}')").fetchall()[0][0]
    assert n == len(gdf)
    meta = pq.read_schema(path).metadata
    for key in ("schema_version", "catalog", "catalog_sha256", "crs", "builder_version", "created_utc", "counts"):
        assert key.encode() in meta


def test_near_query(built):
    cat, _ = built
    path = cat.output / "locations.parquet"
    loc = pq.read_table(path).to_pandas()
    x, y = loc["easting"].iat[10], loc["northing"].iat[10]
    hits = near(path, x, y, 5.0)
    brute = np.hypot(loc["easting"] - x, loc["northing"] - y) <= 5.0
    assert sorted(hits["idx"]) == sorted(loc.loc[brute, "idx"])
    assert hits["distance_m"].is_monotonic_increasing and hits["idx"].iat[0] == 10


def test_image_shards_hold_every_located_image_at_train_size(built):
    import io

    from PIL import Image

    cat, _ = built
    loc = pq.read_table(cat.output / "locations.parquet").to_pandas()
    ids = set()
    for shard in (cat.output / "images").glob("*.parquet"):
        t = pq.read_table(shard)
        ids |= set(t.column("image_id").to_pylist())
        im = Image.open(io.BytesIO(t.column("jpeg")[0].as_py()))
        assert im.size == (256, 192)
    assert ids == set(loc["image_id"])


def test_rerun_no_change_is_byte_identical_and_new_dive_is_only_one_ingested(survey, built, tmp_path):
    cat, _ = built
    site = tmp_path / "copy"
    shutil.copytree(survey, site, ignore=shutil.ignore_patterns("manifests"))
    c2 = load_catalog(site / "catalog.yaml")
    build(c2, workers=2, log=lambda *_: None)
    names = ("locations.parquet", "pairs.parquet", "quarantine.parquet", "report.json")
    before = {n: file_sha256(c2.output / n) for n in names}
    r = build(c2, workers=2, log=lambda *_: None)
    assert r["no_change"] is True
    assert {n: file_sha256(c2.output / n) for n in names} == before
    # a removed dive disappears; the other dives come from the cache
    shutil.rmtree(site / "dive03")
    r = build(c2, workers=2, log=lambda *_: None)
    assert r["ingested"] == [] and "dive03" not in r["per_dive"] and r["removed"] == ["dive03"]
    assert not (c2.output / "images" / "dive03.parquet").exists()
    # a new dive: only it is ingested, and its cross-dive pairs appear
    shutil.copytree(survey / "dive01", site / "dive09")
    r = build(c2, workers=2, log=lambda *_: None)
    assert r["ingested"] == ["dive09"]
    pairs, locs = read_pairs(c2.output / "pairs.parquet")
    dive = np.asarray(locs.column("dive").to_pylist())
    a, p = pairs.column("anchor").to_numpy(), pairs.column("positive").to_numpy()
    cross = {frozenset((dive[i], dive[j])) for i, j in zip(a, p, strict=True) if dive[i] != dive[j]}
    assert frozenset(("dive01", "dive09")) in cross


def test_mismatched_locations_are_refused(built, tmp_path):
    cat, _ = built
    for n in ("locations.parquet", "pairs.parquet"):
        shutil.copy(cat.output / n, tmp_path / n)
    t = pq.read_table(tmp_path / "locations.parquet")
    pq.write_table(t.slice(1), tmp_path / "locations.parquet")
    with pytest.raises(ManifestMismatch, match="sha256"):
        read_pairs(tmp_path / "pairs.parquet")


def test_second_concurrent_build_is_refused_with_a_clear_error(built):
    cat, _ = built
    held = lock(cat.output)
    acquire(held, cat.output)
    try:
        with pytest.raises(BuildLocked, match="another build holds the lock"):
            build(cat, workers=1, log=lambda *_: None)
        res = subprocess.run([sys.executable, "-m", "pipeline", "build", "--catalog",
                              str(cat.source)], cwd=REPO, capture_output=True, text=True)
        assert res.returncode == 2 and "another build holds the lock" in res.stderr
    finally:
        held.release()


def test_bbox_read_of_one_percent_touches_few_row_groups(tmp_path):
    generate(SynthConfig(out=tmp_path / "big", dives=4, images_per_dive=40000, nav_only=True,
                         formats=["oplab-camera-csv"]))
    cat = load_catalog(tmp_path / "big" / "catalog.yaml")
    build(cat, workers=1, log=lambda *_: None)
    path = cat.output / "locations.parquet"
    n_groups = pq.ParquetFile(path).metadata.num_row_groups
    assert n_groups >= 64
    loc = pq.read_table(path, columns=["easting", "northing"]).to_pandas()
    x0, x1 = loc["easting"].min(), loc["easting"].max()
    y0, y1 = loc["northing"].min(), loc["northing"].max()
    rng = np.random.default_rng(0)
    for _ in range(5):
        w, h = 0.1 * (x1 - x0), 0.1 * (y1 - y0)
        bx, by = rng.uniform(x0, x1 - w), rng.uniform(y0, y1 - h)
        rows, touched = read_bbox(path, bx, by, bx + w, by + h)
        inside = loc["easting"].between(bx, bx + w) & loc["northing"].between(by, by + h)
        assert rows.num_rows == inside.sum()
        assert touched <= 0.05 * n_groups, (touched, n_groups)


def test_cli_build_prints_summary_table(survey, tmp_path):
    res = subprocess.run([sys.executable, "-m", "pipeline", "build", "--catalog",
                          str(survey / "catalog.yaml"), "--out", str(tmp_path / "m"), "--r-loc", "3"],
                         cwd=REPO, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert "| dive | nav format | images | located | quarantined |" in res.stdout
    assert "pairs within 3 m" in res.stdout
