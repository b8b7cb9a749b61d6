"""A hostile tester's catalogs and manifests: every path the catalog or a manifest names stays
inside its root (or manifest folder) and is checked before it is opened, every declared CRS is
checked against the coordinates, every number has a finite range checked at load, and every
YAML is bounded. Each mistake is one message and exit status 2 (or a quarantine row while the
rest of the site is built), never a traceback, and no input file is changed.

The builds run ``python -m pipeline build`` in process (``pipeline.cli.main``) with ``open``
watched, so a test fails when any file outside the catalog root is opened; the alias bomb
runs as a real subprocess under a time limit.
"""

from __future__ import annotations

import builtins
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
import yaml
from seafloor_ssl.data.manifest import ManifestError, load_manifest
from seafloor_ssl.training.run import main as train_main

from pipeline import cli, reasons
from pipeline.build import build
from pipeline.catalog import load_catalog
from pipeline.synth import SynthConfig, generate

REPO = Path(__file__).resolve().parents[1]
ZONE = "EPSG:32755"  # the synthetic site lies at 43.1 S, 147.9 E


@pytest.fixture(scope="module")
def survey(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("hostile") / "site"
    generate(SynthConfig(out=root, dives=2, images_per_dive=20, seed=5, faults=False, workers=2))
    return root


@pytest.fixture
def site(survey, tmp_path) -> Path:
    """A private copy of the survey (dive01: iFDO, dive02: ACFR) and an 'outside' folder beside
    it, outside the catalog root, holding a copy of dive01's images."""
    dest = shutil.copytree(survey, tmp_path / "site", ignore=shutil.ignore_patterns("manifests"))
    shutil.copytree(dest / "dive01" / "images", tmp_path / "outside" / "img")
    return dest


@pytest.fixture(scope="module")
def built(survey, tmp_path_factory) -> Path:
    """The survey built once: its manifest folder (pairs.parquet -> current -> generations/...)."""
    dest = shutil.copytree(survey, tmp_path_factory.mktemp("built") / "site")
    build(load_catalog(dest / "catalog.yaml"), workers=1, log=lambda *_: None)
    return dest / "manifests"


@pytest.fixture
def opened(monkeypatch) -> list[str]:
    """Every file opened through Python while the test runs (resolved), in order."""
    seen: list[str] = []
    real_open, real_os_open = builtins.open, os.open

    def note(path) -> None:
        if not isinstance(path, int):
            seen.append(os.path.realpath(os.fspath(path)))

    def watched_open(file, *args, **kwargs):
        note(file)
        return real_open(file, *args, **kwargs)

    def watched_os_open(path, *args, **kwargs):
        note(path)
        return real_os_open(path, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", watched_open)
    monkeypatch.setattr(io, "open", watched_open)
    monkeypatch.setattr(os, "open", watched_os_open)
    return seen


def _under(paths: list[str], folder: Path) -> list[str]:
    top = os.path.realpath(folder)
    return [p for p in paths if p == top or p.startswith(top + os.sep)]


def snapshot(*folders: Path) -> dict[str, str]:
    """Each file's sha256 and each symlink's target (not followed), the builder's output left
    out: the inputs, to compare before and after a build."""
    out = {}
    for folder in folders:
        for dirpath, dirnames, files in os.walk(folder):
            dirnames[:] = [d for d in dirnames if d != "manifests"]
            for name in files + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
                p = os.path.join(dirpath, name)
                if os.path.islink(p):
                    out[p] = "-> " + os.readlink(p)
                else:  # (io.FileIO: not the watched open, so a snapshot is no read to flag)
                    with io.FileIO(p, "rb") as fh:
                        out[p] = hashlib.sha256(fh.read()).hexdigest()
    return out


def edit_catalog(site: Path, **change) -> Path:
    path = site / "catalog.yaml"
    doc = yaml.safe_load(path.read_text())
    doc.update(change)
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def run_build(site: Path, capsys) -> tuple[int, str, str]:
    code = cli.main(["build", "--catalog", str(site / "catalog.yaml"), "--workers", "1"])
    out = capsys.readouterr()
    return code, out.out, out.err


def refused(code: int, err: str, *words: str) -> None:
    assert code == 2, err
    assert err.startswith("error: ") and "Traceback" not in err, err
    for w in words:
        assert w in err, (w, err)


# ---- 1. paths that leave the root -----------------------------------------------------------

NAV1 = {"format": "ifdo", "path": "{dive}/nav/{dive}_iFDO.json"}
DOTDOT = [
    ("images", {"images": "{dive}/../../outside/img/*.jpg"}, "key 'images'"),
    ("nav-path", {"nav": [{"format": "ifdo", "path": "{dive}/../../outside/nav.json"}]},
     "key 'nav.0.path'"),
    ("nav-shared", {"nav": [NAV1, {"format": "oplab-nav-csv", "path": "../outside/n.csv"}]},
     "key 'nav.1.path'"),
    ("dives", {"dives": "../outside/*"}, "key 'dives'"),
    ("labels", {"labels": "../outside/labels.csv"}, "key 'labels'"),
    ("absolute-images", {"images": "/{dive}/images/*.jpg"}, "key 'images'"),
]


@pytest.mark.parametrize("change,key", [c[1:] for c in DOTDOT], ids=[c[0] for c in DOTDOT])
def test_a_template_that_leaves_the_root_is_refused_at_load(site, capsys, opened, change, key):
    outside = site.parent / "outside"
    shutil.copy(site / "labels.csv", outside / "labels.csv")
    shutil.copy(site / "dive01" / "nav" / "dive01_iFDO.json", outside / "nav.json")
    shutil.copy(site / "dive01" / "nav" / "auv_ekf_centre.csv", outside / "n.csv")
    edit_catalog(site, **change)
    before = snapshot(site, outside)
    opened.clear()  # what the test itself copied
    code, _, err = run_build(site, capsys)
    refused(code, err, key, "outside")
    assert "'..'" in err or "absolute" in err, err
    assert not (site / "manifests").exists()  # refused before anything is written
    assert _under(opened, outside) == []
    assert snapshot(site, outside) == before


def test_an_image_folder_symlinked_out_of_the_root_is_quarantined_not_read(site, capsys, opened):
    outside = site.parent / "outside"
    shutil.rmtree(site / "dive01" / "images")
    os.symlink(outside / "img", site / "dive01" / "images")  # a folder above each image
    (site / "dive02" / "images" / "stray.jpg").symlink_to(next((outside / "img").iterdir()))
    before = snapshot(site, outside)
    opened.clear()  # what the test itself copied
    code, _, err = run_build(site, capsys)
    assert code == 0, err
    quar = pq.read_table(site / "manifests" / "quarantine.parquet").to_pandas()
    loc = pq.read_table(site / "manifests" / "locations.parquet").to_pandas()
    mine = quar[quar["dive"] == "dive01"]
    assert len(mine) == 20 and set(mine["reason"]) == {reasons.UNSAFE_PATH}
    assert mine["detail"].str.contains("outside the catalog root").all()
    assert "stray" in " ".join(quar[quar["reason"] == reasons.UNSAFE_PATH]["source"])
    assert set(loc["dive"]) == {"dive02"} and len(loc) == 20  # the rest is built
    assert _under(opened, outside) == []  # no image outside the root was opened
    assert snapshot(site, outside) == before


def test_a_dive_folder_symlinked_out_of_the_root_is_reported(site, capsys, opened):
    outside = site.parent / "outside"
    shutil.copytree(site / "dive02", outside / "dive03")
    os.symlink(outside / "dive03", site / "dive03")
    before = snapshot(site, outside)
    opened.clear()  # what the test itself copied
    code, out, err = run_build(site, capsys)
    assert code == 0, err
    assert "dive dive03 not read" in out and "outside the catalog root" in out, out
    quar = pq.read_table(site / "manifests" / "quarantine.parquet").to_pandas()
    row = quar[quar["dive"] == "dive03"]
    assert list(row["reason"]) == [reasons.UNSAFE_PATH] and list(row["source"]) == ["dive03"]
    assert str(outside / "dive03") in row["detail"].iat[0]
    report = json.loads((site / "manifests" / "report.json").read_text())
    assert any("dive03" in w for w in report["warnings"])
    assert _under(opened, outside) == []
    assert snapshot(site, outside) == before
    # every dive folder leads out: one message naming 'dives', exit 2
    for d in ("dive01", "dive02"):
        shutil.move(site / d, outside / d)
        os.symlink(outside / d, site / d)
    code, _, err = run_build(site, capsys)
    refused(code, err, "key 'dives'", "dive dive01", "outside the catalog root")


def test_a_labels_file_or_navigation_file_symlinked_out_is_never_opened(site, capsys, opened):
    outside = site.parent / "outside"
    shutil.move(site / "labels.csv", outside / "labels.csv")
    (site / "labels.csv").symlink_to(outside / "labels.csv")
    before = snapshot(site, outside)
    opened.clear()  # what the test itself copied
    code, _, err = run_build(site, capsys)
    refused(code, err, "key 'labels'", str(outside / "labels.csv"), "outside")
    assert _under(opened, outside) == [] and snapshot(site, outside) == before
    shutil.move(outside / "labels.csv", site / "labels.csv")  # (replaces the link)
    nav = site / "dive01" / "nav" / "dive01_iFDO.json"
    shutil.move(nav, outside / "dive01_iFDO.json")
    nav.symlink_to(outside / "dive01_iFDO.json")
    before = snapshot(site, outside)
    opened.clear()  # what the test itself copied
    code, _, err = run_build(site, capsys)
    assert code == 0, err
    quar = pq.read_table(site / "manifests" / "quarantine.parquet").to_pandas()
    assert set(quar[quar["dive"] == "dive01"]["reason"]) == {reasons.NAV_UNREADABLE}
    assert _under(opened, outside) == []  # neither read nor hashed for the cache key
    assert snapshot(site, outside) == before


def test_one_image_file_in_two_dives_is_refused(site, capsys):
    pool = site / "pool"
    pool.mkdir()
    jpgs = sorted((site / "dive01" / "images").glob("*.jpg"))
    shutil.copy(jpgs[0], pool / "dive01-a.jpg")
    shutil.copy(jpgs[1], pool / "dive01-dive02.jpg")  # named for both dives
    shutil.copy(jpgs[2], pool / "dive02-a.jpg")
    edit_catalog(site, images="pool/*{dive_id}*.jpg")
    before = snapshot(site)
    code, _, err = run_build(site, capsys)
    refused(code, err, "key 'images'", "pool/dive01-dive02.jpg", "dive dive01", "dive dive02")
    assert snapshot(site) == before


# ---- 3. every declared CRS is checked against the coordinates ------------------------------

def _csv_nav(site: Path, x: str, y: str) -> None:
    """Each dive's image poses as a csv of easting/northing (truth.csv's columns x, y)."""
    truth = pd.read_csv(site / "truth.csv")
    for dive, rows in truth.groupby("dive"):
        pd.DataFrame({"image": rows["image_id"].str.split("/", n=1).str[1],
                      "t": rows["timestamp"], "e": rows[x], "n": rows[y],
                      "z": rows["depth_m"]}).to_csv(site / dive / "nav" / "poses.csv", index=False)


def _xy_catalog(site: Path, xy_crs: str, **extra) -> None:
    edit_catalog(site, nav=[{"format": "csv", "path": "{dive}/nav/poses.csv", "columns": {
        "image": "image", "time": "t", "easting": "e", "northing": "n", "depth": "z",
        "xy_crs": xy_crs}}], **extra)


def test_local_metres_declared_as_a_utm_zone_are_refused(site, capsys):
    _csv_nav(site, "x_m", "y_m")  # metres from the site's own origin
    _xy_catalog(site, ZONE)
    before = snapshot(site)
    code, _, err = run_build(site, capsys)
    refused(code, err, "key 'nav.0.columns.xy_crs'", ZONE, "local origin", "crs_force")
    assert len(err.strip().splitlines()) == 1
    assert snapshot(site) == before
    # the same file with the zone's own coordinates builds, at the truth's positions
    _csv_nav(site, "easting", "northing")
    code, _, err = run_build(site, capsys)
    assert code == 0, err
    loc = pq.read_table(site / "manifests" / "locations.parquet").to_pandas()
    truth = pd.read_csv(site / "truth.csv").set_index("image_id").loc[loc["image_id"]]
    assert len(loc) == 40 and (abs(loc["lat"].to_numpy() - truth["lat"].to_numpy()) < 1e-6).all()


def test_coordinates_far_outside_the_declared_crs_are_named():
    from pipeline.crs import check_declared_positions, project

    x, y = project([147.9, 147.91], [-43.1, -43.11], ZONE)  # the site, in its own zone
    assert check_declared_positions(ZONE, x, y) is None
    why = check_declared_positions("EPSG:2154", x, y)  # read as France's Lambert-93
    assert why is not None and "degrees outside the area EPSG:2154" in why, why
    why = check_declared_positions(ZONE, [120.0, 800.0], [35.0, 410.0])  # local metres
    assert why is not None and "local origin" in why, why


@pytest.mark.parametrize("xy_crs,words", [("EPSG:4326", "geographic"), ("EPSG:2263", "metres"),
                                          ("EPSG:99999", "pyproj")])
def test_an_xy_crs_that_cannot_hold_metres_is_refused_at_load(site, capsys, xy_crs, words):
    _xy_catalog(site, xy_crs)
    code, _, err = run_build(site, capsys)
    refused(code, err, "key 'nav.0.columns.xy_crs'", words)
    assert not (site / "manifests").exists()


# ---- 4. numbers: finite and in a physical range, checked at load; YAML bounded ---------------

NUMBERS = [
    ("r-loc-inf", "pairs: {r_loc_m: .inf}", "pairs.r_loc_m"),
    ("r-loc-huge", "pairs: {r_loc_m: 1.0e+9}", "pairs.r_loc_m"),
    ("min-gap-nan", "pairs: {min_time_gap_s: .nan}", "pairs.min_time_gap_s"),
    ("neighbours-huge", "pairs: {max_neighbours: 1000000000}", "pairs.max_neighbours"),
    ("seed-negative", "pairs: {seed: -1}", "pairs.seed"),
    ("train-size-huge", "train_size: [100000, 100000]", "train_size.0"),
    ("train-size-text", "train_size: ['192', 256]", "train_size.0"),
    ("gap-inf", "max_interp_gap_s: .inf", "max_interp_gap_s"),
    ("speed-huge", "nav_checks: {max_speed_m_s: 1.0e+6}", "nav_checks.max_speed_m_s"),
    ("noise-bool", "nav_checks: {position_noise_m: true}", "nav_checks.position_noise_m"),
    ("interval-huge", "schedule: {interval_s: 1.0e+12}", "schedule.interval_s"),
    ("dask-wait-huge", "dask: {worker_wait_s: 1.0e+12}", "dask.worker_wait_s"),
    ("dask-workers-huge", "dask: {n_workers: 1000000}", "dask.n_workers"),
    ("stuck-inf", "notify: {webhook: 'https://h.example.org/x', running_limit_s: .inf}",
     "notify.running_limit_s"),
    ("clusters-huge", "mapping: {k: 1000000}", "mapping.k"),
]


@pytest.mark.parametrize("line,key", [c[1:] for c in NUMBERS], ids=[c[0] for c in NUMBERS])
def test_a_number_out_of_its_range_is_refused_at_load(site, capsys, line, key):
    path = site / "catalog.yaml"
    doc = yaml.safe_load(path.read_text())
    doc.pop(line.split(":", 1)[0], None)
    path.write_text(yaml.safe_dump(doc, sort_keys=False) + line + "\n")
    code, _, err = run_build(site, capsys)
    refused(code, err, f"key '{key}'", "at most")
    assert not (site / "manifests").exists()  # before any ingest


def test_a_pair_radius_flag_out_of_range_is_refused_before_ingest(site, capsys):
    for value in ("inf", "1e9"):
        code = cli.main(["build", "--catalog", str(site / "catalog.yaml"), "--r-loc", value])
        refused(code, capsys.readouterr().err, "--r-loc", "at most 1000")
    assert not (site / "manifests").exists()


def _bomb(levels: int = 9) -> str:
    lines = ['  l0: &l0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    lines += [f"  l{i}: &l{i} [" + ",".join([f"*l{i - 1}"] * 9) + "]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


def test_an_alias_bomb_or_a_huge_catalog_is_refused_at_once(site, capsys):
    path = site / "catalog.yaml"
    path.write_text(path.read_text() + "lols:\n" + _bomb())  # about 1 KB, 10**8 values
    assert path.stat().st_size < 4096
    t0 = time.perf_counter()
    res = subprocess.run([sys.executable, "-m", "pipeline", "build", "--catalog", str(path),
                          "--workers", "1"], capture_output=True, text=True, timeout=90, cwd=REPO)
    assert time.perf_counter() - t0 < 60
    refused(res.returncode, res.stderr, str(path), "aliases", "refused")
    path.write_text("root: .\n" + "# padding\n" * 200_000)  # 2 MB
    code, _, err = run_build(site, capsys)
    refused(code, err, str(path), "bytes", "at most")


def test_an_alias_bomb_in_an_ifdo_file_quarantines_its_dive(site, capsys):
    nav = site / "dive01" / "nav" / "dive01_iFDO.json"  # YAML in a .json, as ifdo 1.2.x writes
    nav.write_text("image-set-header: {image-set-name: x}\nimage-set-items:\n" + _bomb())
    code, _, err = run_build(site, capsys)
    assert code == 0, err
    quar = pq.read_table(site / "manifests" / "quarantine.parquet").to_pandas()
    mine = quar[quar["dive"] == "dive01"]
    assert set(mine["reason"]) == {reasons.NAV_UNREADABLE}
    assert mine["detail"].str.contains("aliases").all(), mine["detail"].iat[0]


# ---- 5. a missing root is reported as 'root' -------------------------------------------------

def test_a_missing_root_is_named_as_root(site, capsys):
    edit_catalog(site, root="no-such-folder")  # the catalog also names a labels file
    code, _, err = run_build(site, capsys)
    refused(code, err, "key 'root'", str(site / "no-such-folder"), "does not exist")
    assert "key 'labels'" not in err


# ---- 2. the trainer opens only files inside the manifest folder ----------------------------

def _tamper(built: Path, tmp_path: Path, locations: str) -> Path:
    """A copy of the manifest folder whose pairs.parquet names ``locations``."""
    out = shutil.copytree(built, tmp_path / "manifests", symlinks=True)
    pairs = (out / "pairs.parquet").resolve()
    table = pq.read_table(pairs)
    meta = {**table.schema.metadata, b"locations": locations.encode()}
    pq.write_table(table.replace_schema_metadata(meta), pairs)
    return out


def test_the_trainer_reads_the_usual_layouts(built):
    gen = (built / "pairs.parquet").resolve().parent
    assert gen.parent.name == "generations"
    for pairs in (built / "pairs.parquet", gen / "pairs.parquet"):
        m = load_manifest(pairs)
        assert m.n == 40 and m.folder == gen and set(m.stores) == {"dive01", "dive02"}


@pytest.mark.parametrize("how", ["absolute", "dotdot", "symlink"])
def test_the_trainer_refuses_a_locations_path_outside_the_manifest_folder(built, tmp_path, opened,
                                                                            how):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    shutil.copy((built / "locations.parquet").resolve(), outside / "locations.parquet")
    target = {"absolute": str(outside / "locations.parquet"),
              "dotdot": "../../../elsewhere/locations.parquet",
              "symlink": "loc.parquet"}[how]
    out = _tamper(built, tmp_path, target)
    gen = (out / "pairs.parquet").resolve().parent
    if how == "symlink":  # a link inside the folder to a file outside it
        (gen / "loc.parquet").symlink_to(outside / "locations.parquet")
    before = snapshot(out, outside)
    opened.clear()  # what the test itself copied
    with pytest.raises(ManifestError) as info:
        load_manifest(out / "pairs.parquet")
    msg = str(info.value)
    assert repr(target) in msg and "outside" in msg and "manifest folder" in msg, msg
    assert _under(opened, outside) == []  # neither hashed nor read
    assert snapshot(out, outside) == before


def test_the_trainer_command_refuses_etc_passwd_as_locations(built, tmp_path, capsys, opened):
    out = _tamper(built, tmp_path, "/etc/passwd")
    code = train_main(["--manifest", str(out / "pairs.parquet"), "--out", str(tmp_path / "run"),
                       "--backbone", "tiny", "--image-size", "32", "--batch-size", "8",
                       "--steps", "1", "--workers", "0", "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "'/etc/passwd'" in err and "absolute path" in err and "Traceback" not in err, err
    assert "/etc/passwd" not in opened
    assert not (tmp_path / "run").exists()
