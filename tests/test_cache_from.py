"""`pipeline build --r-loc R --out NEW --cache-from OLD`: another pair radius without ingesting
the survey again (the r_loc sweep of the reproduction)."""

from __future__ import annotations

import pytest

from pipeline.build import SettingsError, build
from pipeline.catalog import load_catalog
from pipeline.cli import main as cli_main
from pipeline.manifest import read_pairs
from pipeline.synth import SynthConfig, generate


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("sweep") / "site"
    generate(SynthConfig(out=root, dives=2, images_per_dive=40, seed=3, faults=False,
                         workers=2))
    cat = load_catalog(root / "catalog.yaml")
    first = build(cat, workers=1, log=lambda *_: None)
    return root, cat, first


def test_another_radius_reuses_the_ingest_and_only_computes_pairs(built, tmp_path):
    root, cat, first = built
    src = cat.output
    before = {p: p.stat().st_mtime_ns for p in (src / "cache").rglob("*") if p.is_file()}
    report = build(cat, out=tmp_path / "r2", r_loc_m=2.0, cache_from=src, log=lambda *_: None)
    assert report["ingested"] == [] and sorted(report["reused"]) == sorted(first["per_dive"])
    pairs2, loc2 = read_pairs(tmp_path / "r2" / "pairs.parquet")
    pairs5, loc5 = read_pairs(src / "pairs.parquet")
    assert loc2.num_rows == loc5.num_rows
    assert 0 < pairs2.num_rows < pairs5.num_rows  # a smaller radius, fewer pairs
    # the other folder was only read
    assert {p: p.stat().st_mtime_ns for p in (src / "cache").rglob("*") if p.is_file()} == before
    # a later plain build of the new folder has nothing to do
    again = build(cat, out=tmp_path / "r2", r_loc_m=2.0, log=lambda *_: None)
    assert again["no_change"]


def test_cache_from_mistakes_are_one_message(built, tmp_path, capsys):
    root, cat, _ = built
    with pytest.raises(SettingsError, match="output folder itself"):
        build(cat, cache_from=cat.output, log=lambda *_: None)
    code = cli_main(["build", "--catalog", str(root / "catalog.yaml"), "--out",
                     str(tmp_path / "x"), "--cache-from", str(tmp_path / "nowhere")])
    err = capsys.readouterr().err
    assert code == 2 and "--cache-from" in err and "Traceback" not in err
