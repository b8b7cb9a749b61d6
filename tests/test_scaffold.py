"""``python -m pipeline init``: a catalog proposed for a survey tree builds like a hand-written one.

One synthetic survey (4 dives, one navigation format each, plus the 10 Hz vehicle log in every
dive) is rearranged into the layouts real surveys arrive in; for each, the catalog that init
writes must load and build, locating the same images as the generator's own catalog.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from pipeline.build import build
from pipeline.catalog import load_catalog
from pipeline.cli import main
from pipeline.scaffold import (
    dive_of_image_folder,
    dives_glob,
    generalise,
    nav_template,
    per_dive_part,
    propose,
)
from pipeline.scaffold.layout import place_image_folders
from pipeline.synth import SynthConfig, generate

REPO = Path(__file__).resolve().parents[1]
QUIET = {"workers": 1, "log": lambda *_: None}
FORMATS = ["ifdo", "acfr-stereo-pose", "oplab-camera-csv", "oplab-nav-csv"]
DIVES = ["dive01", "dive02", "dive03", "dive04"]
RENAV = "json_renav_20190403_120000"


@pytest.fixture(scope="module")
def survey(tmp_path_factory):
    root = tmp_path_factory.mktemp("gen") / "site"
    generate(SynthConfig(out=root, dives=4, images_per_dive=12, seed=1, formats=FORMATS,
                         workers=1))
    return root


def _located(out: Path) -> set[str]:
    """File names of the located images."""
    paths = pq.read_table(out / "locations.parquet", columns=["path"]).column("path").to_pylist()
    return {Path(p).name for p in paths}


@pytest.fixture(scope="module")
def reference(survey, tmp_path_factory):
    """What the generator's own catalog locates in the flat layout."""
    root = tmp_path_factory.mktemp("ref") / "site"
    shutil.copytree(survey, root)
    cat = load_catalog(root / "catalog.yaml")
    build(cat, **QUIET)
    names = _located(cat.output)
    assert len(names) > 40
    return names


def flat(survey: Path, dst: Path) -> Path:
    shutil.copytree(survey, dst)
    return dst


def under_dives(survey: Path, dst: Path) -> Path:
    for dive in DIVES:
        shutil.copytree(survey / dive, dst / "dives" / dive)
    return dst


def raw_tree(survey: Path, dst: Path) -> Path:
    """raw/2019/<cruise>/<dive>, the oplab camera CSV in processed/<dive_id>/json_renav_*/;
    its relative_path column is relative to the dive folder, so the images stay in raw/."""
    for k, dive in enumerate(DIVES):
        dive_id = f"2019/c0{1 + k // 2}/{dive}"
        shutil.copytree(survey / dive, dst / "raw" / dive_id)
        cam = dst / "raw" / dive_id / "nav" / "auv_ekf_LC.csv"
        if cam.exists():
            ekf = dst / "processed" / dive_id / RENAV / "csv" / "ekf"
            ekf.mkdir(parents=True)
            shutil.move(cam, ekf / "auv_ekf_LC.csv")
    return dst


@pytest.mark.parametrize("layout,dives,first_nav", [
    (flat, "dive*", "{dive}/nav/auv_ekf_LC.csv"),
    (under_dives, "dives/*", "{dive}/nav/auv_ekf_LC.csv"),
    (raw_tree, "raw/*/*/*", "processed/{dive_id}/json_renav_*/csv/ekf/auv_ekf_LC.csv"),
])
def test_init_writes_a_catalog_that_builds_like_the_original(survey, reference, tmp_path, capsys,
                                                            layout, dives, first_nav):
    root = layout(survey, tmp_path / "survey")
    target = root / "catalog.yaml"
    if target.exists():  # the generator's own catalog: never replaced without --force
        before = target.read_bytes()
        assert main(["init", str(root), "--write"]) == 2
        err = capsys.readouterr().err
        assert "exists" in err and "--force" in err and "Traceback" not in err
        assert target.read_bytes() == before
        assert main(["init", str(root), "--write", "--force"]) == 0
    else:
        assert main(["init", str(root), "--write"]) == 0
    out = capsys.readouterr().out
    assert f"dives    {dives}  (4 folders)" in out
    for fmt in FORMATS:
        assert fmt in out
    cat = load_catalog(target)
    assert cat.dives == dives
    assert [s.format for s in cat.nav] == ["oplab-camera-csv", "acfr-stereo-pose", "ifdo",
                                           "oplab-nav-csv"]  # per-image poses before 10 Hz logs
    assert cat.nav[0].path == first_nav
    assert cat.images == "{dive}/images/*.jpg"
    assert cat.output == (root / "manifests").resolve()
    text = target.read_text()
    assert text.count("\n# ") >= 8  # every key explained
    report = build(cat, **QUIET)
    assert report["images_located"] == len(reference)
    assert _located(cat.output) == reference
    # run again after the build: the output folder is this catalog's own, so it is kept
    assert main(["init", str(root)]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["output"] == "manifests"


def test_without_write_prints_the_catalog_and_writes_nothing(survey, tmp_path, capsys):
    root = under_dives(survey, tmp_path / "survey")
    assert main(["init", str(root), "--name", "reef-2024"]) == 0
    captured = capsys.readouterr()
    assert not (root / "catalog.yaml").exists()
    doc = yaml.safe_load(captured.out)  # stdout is the catalog alone
    assert doc["name"] == "reef-2024" and doc["dives"] == "dives/*"
    assert doc["nav"][2] == {"format": "ifdo", "path": "{dive}/nav/{dive_id}_iFDO.json"}
    assert "formats found:" in captured.err and "--write" in captured.err


def test_what_it_cannot_place_is_reported(survey, reference, tmp_path, capsys):
    root = flat(survey, tmp_path / "survey")
    (root / "catalog.yaml").unlink()
    shutil.rmtree(root / "dive04" / "nav")  # dive04 had only the 10 Hz log
    # the generator's truth spans every dive's time: it would serve dive04 as a shared log
    (root / "truth.csv").unlink()
    shutil.copy(survey / "dive01" / "nav" / "auv_ekf_centre.csv", root / "all_dives_nav.csv")
    stray = root / "misc" / "2020" / "photos"
    stray.mkdir(parents=True)
    for src in sorted((survey / "dive01" / "images").iterdir())[:4]:
        shutil.copy(src, stray / src.name)
    (root / "manifests").mkdir()
    (root / "manifests" / "notes.txt").write_text("someone else's folder\n")
    assert main(["init", str(root), "--write"]) == 0
    out = capsys.readouterr().out
    placed, _, rest = out.partition("could not place")
    assert rest, out
    row = next(line for line in placed.splitlines() if line.startswith("dive04"))
    assert row.split()[1:3] == ["12", "-"] and "no navigation file" in row
    assert "dive dive04: no navigation file (tried dive04/nav/auv_ekf_LC.csv" in rest
    # names no dive, and serves only dive01, which has its own file
    assert "all_dives_nav.csv (oplab-nav-csv: serves dive01, which has a navigation file of its own" in rest
    assert "misc/2020 (4 .jpg)" in rest and "different depths" in rest
    assert "site.png" in rest  # the generator's map: an image outside any dive
    assert "labels.csv" in rest  # a CSV that is not navigation
    cat = load_catalog(root / "catalog.yaml")
    assert cat.output == (root / "manifests-2").resolve()  # manifests/ is not empty
    report = build(cat, **QUIET)
    assert report["images_located"] == len(reference) - 12
    assert report["per_dive"]["dive04"]["located"] == 0


def _touch(path: Path, text: str = "") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_png_in_camera_folders_plain_csv_and_mixed_case(tmp_path, capsys):
    """Folders named i<N>_cv, .png/.PNG, navigation in a plain CSV with its own column names."""
    root = tmp_path / "cruise"
    for k in (1, 2, 3):
        for j in range(3):
            ext = "PNG" if k == 3 else "png"
            _touch(root / f"st{k:02d}" / f"i{k}_cv" / f"img_20240313T00404{j}.000Z.{ext}")
        _touch(root / f"st{k:02d}" / "track.csv",
               "Time,Latitude (deg),Longitude (deg),Depth [m],Heading\n"
               "2024-03-13T00:40:40Z,-43.1,147.9,-40.5,12\n")
    _touch(root / "calibration" / "notes.txt", "no images here\n")
    p = propose(root)
    assert p.dives == "st*"
    assert p.images == "{dive}/i*_cv/*.png"
    assert [row[1] for row in p.per_dive] == [3, 3, 3]  # .PNG matched too
    src = p.catalog.nav[0]
    assert (src.format, src.path) == ("csv", "{dive}/track.csv")
    assert src.columns.time == "Time" and src.columns.time_unit == "iso8601"
    assert src.columns.lat == "Latitude (deg)" and src.columns.depth_positive == "up"
    assert any(".PNG" in n and "any case" in n for n in p.notes)
    assert main(["init", str(root), "--write"]) == 0
    assert load_catalog(root / "catalog.yaml").images == "{dive}/i*_cv/*.png"


def test_helpers():
    assert generalise(["dive01", "dive02", "dive10"]) == "dive*"
    assert generalise(["i1_cv", "i2_cv"]) == "i*_cv"
    assert generalise(["raw"]) == "raw"
    assert generalise(["r20190401", "x2"]) == "*"
    assert dive_of_image_folder("raw/2019/c01/d07/images") == ("raw/2019/c01/d07", "images")
    assert dive_of_image_folder("dives/d1/images/LC") == ("dives/d1", "images/LC")
    assert dive_of_image_folder("raw/d1") == ("raw/d1", "")
    assert dive_of_image_folder("images") == (None, "images")
    assert nav_template("processed/2019/c01/d07/json_renav_20190403_120000/csv/ekf/auv_ekf_LC.csv",
                        "raw/2019/c01/d07", "2019/c01/d07") == \
        "processed/{dive_id}/json_renav_*/csv/ekf/auv_ekf_LC.csv"
    assert nav_template("dives/d7/nav/d7_iFDO.json", "dives/d7", "d7") == \
        "{dive}/nav/{dive_id}_iFDO.json"
    assert nav_template("nav/d7.csv", "dives/d7", "d7") == "nav/{dive_id}.csv"
    assert nav_template("nav/d70.csv", "dives/d7", "d7") is None
    # a dive's own folder names never stay literal: the next dive has its own
    assert per_dive_part("i20150918_000954_cv", "r20150918_000954_site") == "i*_cv"
    assert per_dive_part("dive01_images", "dive01") == "*_images"
    assert per_dive_part("20220815", "dive01") == "*"
    assert per_dive_part("images", "dive01") == "images"
    assert per_dive_part("i1_cv", "st01") == "i1_cv"  # generalised across dives, not alone
    assert dive_of_image_folder("dive01/20220815") == ("dive01", "20220815")
    assert dive_of_image_folder("dive01/dive01_images") == ("dive01", "dive01_images")
    assert dive_of_image_folder("20220815") == ("20220815", "")  # at the root: the dive


def test_image_template_of_date_named_folders():
    from collections import Counter

    from pipeline.scaffold.layout import images_template

    folders = {"dive01/20220815": Counter({".jpg": 5}), "dive02/20220816": Counter({".jpg": 4})}
    placed = place_image_folders(folders)
    assert images_template(["dive01", "dive02"], folders, placed)[0] == "{dive}/*/*.jpg"
    # a bare * would also take the dives' other image folders: digits only then
    folders["dive01/images"] = Counter({".jpg": 2})
    placed = place_image_folders(folders)
    assert images_template(["dive01", "dive02"], folders, placed)[0] == "{dive}/[0-9]*/*.jpg"


def test_date_named_folders_are_dives_where_a_folder_holds_several():
    placed = place_image_folders(["c01/20190403", "c01/20190404", "d07/20190405"])
    assert placed["c01/20190403"] == ("c01/20190403", "")
    assert placed["c01/20190404"] == ("c01/20190404", "")
    assert placed["d07/20190405"] == ("d07", "20190405")


@pytest.mark.parametrize("rels,pattern", [
    (["dive01"], "dive*"),
    (["r20150918_000954_ohara07"], "r*"),
    (["alpha"], "alpha"),  # no number: nothing says how the next dive is named
    (["raw/2019/c01/dive07"], "raw/*/*/*"),
    (["dive01", "dive02"], "dive*"),
])
def test_dives_glob_fits_the_next_dive(tmp_path, rels, pattern):
    for rel in rels:
        (tmp_path / rel).mkdir(parents=True)
    assert dives_glob(tmp_path, rels) == (pattern, [])


@pytest.mark.parametrize("make,args,expect", [
    (lambda t: t / "missing", [], "no such folder"),
    (lambda t: (t / "f.txt").write_text("x") and t / "f.txt", [], "is a file, not a folder"),
    (lambda t: (t / "empty").mkdir() or t / "empty", [], "no image files"),
    (lambda t: _touch(t / "s" / "d1" / "nav.csv", "timestamp [s],latitude [deg]\n") or t / "s",
     [], "no image files"),
    (lambda t: _touch(t / "d" / "images" / "a.jpg") or t / "d", [], "looks like one dive"),
    (lambda t: _touch(t / "s" / "d1" / "images" / "a.jpg") or t / "s", [],
     "no navigation file of a dive recognised"),
    (lambda t: _touch(t / "s" / "d1" / "images" / "a.jpg") or t / "s", ["--name", "a b"],
     "--name 'a b'"),
    (lambda t: _touch(t / "s" / "d1" / "images" / "a.jpg") or t / "s", ["--force"],
     "--force only applies with --write"),
])
def test_user_errors_are_one_message_and_exit_2(tmp_path, capsys, make, args, expect):
    folder = make(tmp_path)
    assert main(["init", str(folder), *args]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert expect in captured.err and "Traceback" not in captured.err
    assert captured.err.startswith("error: ")


def test_output_inside_a_dive_is_refused(survey, tmp_path, capsys):
    root = under_dives(survey, tmp_path / "survey")
    assert main(["init", str(root), "--output", str(root / "dives" / "dive01" / "out")]) == 2
    assert "inside the dive folder dives/dive01" in capsys.readouterr().err


def test_command_line_exit_status_without_traceback(tmp_path):
    r = subprocess.run([sys.executable, "-m", "pipeline", "init", str(tmp_path / "nope")],
                       cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and "no such folder" in r.stderr
    assert "Traceback" not in r.stderr
