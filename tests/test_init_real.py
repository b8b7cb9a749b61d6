"""``init`` on trees laid out like real surveys: the catalog it writes builds with no hand edits,
locates every image where the generator's own catalog does, and still fits the dives that
arrive after it was written (scheduled re-indexing)."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
import yaml
from PIL import Image
from surveys import copy_survey

from pipeline.build import build
from pipeline.catalog import load_catalog
from pipeline.cli import main
from pipeline.synth import SynthConfig, generate

QUIET = {"workers": 1, "log": lambda *_: None}
EXAMPLES = Path(__file__).resolve().parents[1] / "catalogs" / "examples"


def _generate(root: Path, fmt: str, seed: int) -> Path:
    generate(SynthConfig(out=root, dives=2, images_per_dive=10, seed=seed, formats=[fmt],
                         workers=1))
    return root


def _positions(out: Path) -> dict[str, tuple[float, float, str]]:
    """image file name -> (easting, northing, dive)"""
    t = pq.read_table(out / "locations.parquet", columns=["path", "easting", "northing", "dive"])
    return {Path(p).name: (x, y, d) for p, x, y, d in
            zip(*(t[c].to_pylist() for c in ("path", "easting", "northing", "dive")), strict=True)}


def _reference(src: Path, tmp: Path) -> dict[str, tuple[float, float, str]]:
    """What the generator's own catalog locates, by image file name."""
    copy = copy_survey(src, tmp / "reference")
    cat = load_catalog(copy / "catalog.yaml")
    build(cat, **QUIET)
    return _positions(cat.output)


def _init_and_build(root: Path, capsys) -> tuple[dict, str]:
    """init --write, then `python -m pipeline build --catalog` on what it wrote: (positions,
    init's report)."""
    assert main(["init", str(root), "--write"]) == 0
    report = capsys.readouterr().out
    assert main(["build", "--catalog", str(root / "catalog.yaml"), "--workers", "1"]) == 0, \
        capsys.readouterr().err
    capsys.readouterr()
    return _positions(load_catalog(root / "catalog.yaml").output), report


def _same_places(got: dict, ref: dict, names: set[str]) -> None:
    assert set(got) == names
    worst = max(math.hypot(got[n][0] - ref[n][0], got[n][1] - ref[n][1]) for n in names)
    assert worst < 1e-3


def _names(ref: dict, dive: str) -> set[str]:
    return {n for n, (_, _, d) in ref.items() if d == dive}


def _rebuild(root: Path, capsys) -> dict:
    assert main(["build", "--catalog", str(root / "catalog.yaml"), "--workers", "1"]) == 0, \
        capsys.readouterr().err
    capsys.readouterr()
    return _positions(load_catalog(root / "catalog.yaml").output)


# ---------------------------------------------------------------- ACFR: one dive, then two


def _acfr_dive(src: Path, dive: str, dst: Path, stamp: str, site: str) -> None:
    """r<stamp>_<site>/ with its images in i<stamp>_cv/ and the renav's stereo_pose_est.data,
    yaw in degrees as oplab-pipeline writes it."""
    folder = dst / f"r{stamp}_{site}"
    shutil.copytree(src / dive / "images", folder / f"i{stamp}_cv")
    lines = []
    for line in (src / dive / "nav" / "stereo_pose_est.data").read_text().splitlines():
        f = line.split()
        if len(f) == 15 and not line.startswith("%"):
            f[9] = f"{math.degrees(float(f[9])):.4f}"
            line = " ".join(f)
        lines.append(line)
    renav = folder / f"renav{stamp[:8]}"
    renav.mkdir()
    (renav / "stereo_pose_est.data").write_text("\n".join(lines) + "\n")


def test_acfr_survey_of_one_dive_finds_the_next_dive(tmp_path, capsys):
    src = _generate(tmp_path / "gen", "acfr-stereo-pose", seed=3)
    ref = _reference(src, tmp_path)
    root = tmp_path / "cruise"
    _acfr_dive(src, "dive01", root, "20150918_000954", "ohara07")
    got, report = _init_and_build(root, capsys)
    cat = load_catalog(root / "catalog.yaml")
    # nothing of this dive's own names is left in the templates
    assert cat.dives == "r*"
    assert cat.images == "{dive}/i*_cv/*.jpg"
    assert [(s.format, s.path, s.yaw_unit) for s in cat.nav] == [
        ("acfr-stereo-pose", "{dive}/renav*/stereo_pose_est.data", "deg")]
    assert "yaw_unit: deg" in report
    _same_places(got, ref, _names(ref, "dive01"))
    # the next dive arrives with folder names of its own: the same catalog takes it
    _acfr_dive(src, "dive02", root, "20150919_101500", "scott_reef")
    got = _rebuild(root, capsys)
    _same_places(got, ref, _names(ref, "dive01") | _names(ref, "dive02"))
    assert {d for _, _, d in got.values()} == {"r20150918_000954_ohara07",
                                               "r20150919_101500_scott_reef"}


# ---------------------------------------------------------------- raw/<year>/<cruise>/<dive>


def _dated_dive(src: Path, dive: str, folder: Path, day: str) -> None:
    """<dive>/<day>/*.jpg and the oplab camera CSV in <dive>/nav/, its paths into <day>/."""
    shutil.copytree(src / dive / "images", folder / day)
    nav = pd.read_csv(src / dive / "nav" / "auv_ekf_LC.csv")
    nav["relative_path"] = [f"{day}/{Path(p).name}" for p in nav["relative_path"]]
    (folder / "nav").mkdir()
    nav.to_csv(folder / "nav" / "auv_ekf_LC.csv", index=False)


def test_nested_tree_with_date_named_image_folders(tmp_path, capsys):
    src = _generate(tmp_path / "gen", "oplab-camera-csv", seed=4)
    ref = _reference(src, tmp_path)
    root = tmp_path / "tasman"
    _dated_dive(src, "dive01", root / "raw" / "2019" / "c01" / "dive01", "20190403")
    got, _ = _init_and_build(root, capsys)
    cat = load_catalog(root / "catalog.yaml")
    assert cat.dives == "raw/*/*/*"
    assert cat.images == "{dive}/*/*.jpg"  # 20190403 is this dive's own folder name
    assert [(s.format, s.path) for s in cat.nav] == [("oplab-camera-csv",
                                                     "{dive}/nav/auv_ekf_LC.csv")]
    _same_places(got, ref, _names(ref, "dive01"))
    _dated_dive(src, "dive02", root / "raw" / "2020" / "c02" / "dive02", "20200115")
    got = _rebuild(root, capsys)
    _same_places(got, ref, _names(ref, "dive01") | _names(ref, "dive02"))
    assert {d for _, _, d in got.values()} == {"2019/c01/dive01", "2020/c02/dive02"}


# ---------------------------------------------------------------- a plain CSV, Time and datetime


def test_dive_named_image_folders_and_a_csv_with_time_and_datetime(tmp_path, capsys):
    """`Time` holds the time of day only, `datetime` the full time: the full one is used."""
    src = _generate(tmp_path / "gen", "oplab-nav-csv", seed=5)
    ref = _reference(src, tmp_path)
    root = tmp_path / "rov"
    for dive in ("dive01", "dive02"):
        shutil.copytree(src / dive / "images", root / dive / f"{dive}_images")
        nav = pd.read_csv(src / dive / "nav" / "auv_ekf_centre.csv")
        when = pd.to_datetime(nav["timestamp [s]"], unit="s", utc=True)
        pd.DataFrame({
            "Time": when.dt.strftime("%H:%M:%S.%f").str[:-3],
            "datetime": when.dt.strftime("%Y-%m-%dT%H:%M:%S.%f").str[:-3] + "Z",
            "Latitude": nav["latitude [deg]"].map("{:.9f}".format),
            "Longitude": nav["longitude [deg]"].map("{:.9f}".format),
            "Depth": nav["depth [m]"], "Heading": nav["heading [deg]"],
        }).to_csv(root / dive / "track.csv", index=False)
    got, _ = _init_and_build(root, capsys)
    cat = load_catalog(root / "catalog.yaml")
    assert cat.dives == "dive*" and cat.images == "{dive}/*_images/*.jpg"
    (src_nav,) = cat.nav
    assert (src_nav.format, src_nav.path) == ("csv", "{dive}/track.csv")
    assert src_nav.columns.time == "datetime" and src_nav.columns.image is None
    assert len(got) == len(ref)
    worst = max(math.hypot(got[n][0] - ref[n][0], got[n][1] - ref[n][1]) for n in ref)
    assert worst < 0.01  # the same track, written with 9 decimals of a degree


# ---------------------------------------------------------------- navigation shared by all dives


def test_dataset_level_ifdo_at_the_root(tmp_path, capsys):
    """One iFDO for the whole dataset (marimba's default), items keyed by path from the root;
    init proposes what catalogs/examples/dataset-ifdo.yaml says."""
    src = _generate(tmp_path / "gen", "ifdo", seed=6)
    ref = _reference(src, tmp_path)
    root = tmp_path / "dataset"
    header, items = None, {}
    for dive in ("dive01", "dive02"):
        shutil.copytree(src / dive / "images", root / "data" / "benthic" / dive)
        doc = json.loads((src / dive / "nav" / f"{dive}_iFDO.json").read_text())
        header = header or {k: v for k, v in doc["image-set-header"].items()
                            if k != "image-set-local-path"}
        items.update({f"data/benthic/{dive}/{k}": v for k, v in doc["image-set-items"].items()})
    (root / "ifdo.json").write_text(json.dumps(
        {"image-set-header": header, "image-set-items": items}))
    got, report = _init_and_build(root, capsys)
    cat = load_catalog(root / "catalog.yaml")
    example = yaml.safe_load((EXAMPLES / "dataset-ifdo.yaml").read_text())
    assert (cat.dives, cat.images) == (example["dives"], example["images"])
    assert [s.model_dump(exclude_none=True) for s in cat.nav] == example["nav"]
    assert "shared by all dives" in report
    _same_places(got, ref, set(ref))


def test_vehicle_log_at_the_root_serves_every_dive_by_time(tmp_path, capsys):
    src = _generate(tmp_path / "gen", "oplab-nav-csv", seed=7)
    ref = _reference(src, tmp_path)
    root = tmp_path / "auv"
    logs = []
    for dive in ("dive01", "dive02"):
        shutil.copytree(src / dive / "images", root / dive / "images")
        logs.append(pd.read_csv(src / dive / "nav" / "auv_ekf_centre.csv"))
    (root / "navigation").mkdir()
    pd.concat(logs).to_csv(root / "navigation" / "auv_ekf_centre.csv", index=False)
    got, _ = _init_and_build(root, capsys)
    cat = load_catalog(root / "catalog.yaml")
    assert [(s.format, s.path) for s in cat.nav] == [("oplab-nav-csv",
                                                     "navigation/auv_ekf_centre.csv")]
    _same_places(got, ref, set(ref))


# ---------------------------------------------------------------- EXIF, image names


def _exif_jpeg(path: Path, lat: float, lon: float, when: str) -> None:
    def dms(x: float) -> tuple:
        x = abs(x)
        d, m = int(x), int((x - int(x)) * 60)
        return (d, m, round(((x - d) * 60 - m) * 60, 4))

    exif = Image.Exif()
    exif.get_ifd(0x8769)[0x9003] = when  # DateTimeOriginal
    gps = exif.get_ifd(0x8825)
    gps.update({1: "N" if lat >= 0 else "S", 2: dms(lat), 3: "E" if lon >= 0 else "W",
                4: dms(lon)})
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (32, 24), (40, 90, 120)).save(path, exif=exif)


def test_images_with_exif_gps_and_no_navigation_file(tmp_path, capsys):
    root = tmp_path / "drop_camera"
    truth = {}
    for k, dive in enumerate(("st01", "st02")):
        for j in range(3):
            lat, lon = -43.1 + 0.001 * k + 0.00001 * j, 147.9 + 0.00001 * j  # ~1 m/s
            name = f"DSC_{k}{j:03d}.JPG"
            _exif_jpeg(root / dive / name, lat, lon, f"2024:03:13 0{k}:40:4{j}")
            truth[name] = (lat, lon)
    assert main(["init", str(root), "--write"]) == 0
    assert "EXIF" in capsys.readouterr().out
    cat = load_catalog(root / "catalog.yaml")
    assert [(s.format, s.path) for s in cat.nav] == [("exif", None)]
    assert cat.images == "{dive}/*.jpg"  # matched in any case
    assert main(["build", "--catalog", str(root / "catalog.yaml"), "--workers", "1"]) == 0
    t = pq.read_table(cat.output / "locations.parquet", columns=["path", "lat", "lon"])
    got = {Path(p).name: (a, b) for p, a, b in zip(*(t[c].to_pylist() for c in ("path", "lat", "lon")),
                                                   strict=True)}
    assert set(got) == set(truth)
    assert max(abs(got[n][0] - truth[n][0]) + abs(got[n][1] - truth[n][1]) for n in truth) < 1e-5


def test_image_names_without_a_time_are_shown_and_image_time_asked_for(tmp_path, capsys):
    src = _generate(tmp_path / "gen", "oplab-nav-csv", seed=8)
    root = tmp_path / "rov"
    for dive in ("dive01", "dive02"):
        (root / dive / "images").mkdir(parents=True)
        for k, img in enumerate(sorted((src / dive / "images").iterdir())):
            shutil.copy(img, root / dive / "images" / f"IMG_{k:04d}.jpg")
        shutil.copytree(src / dive / "nav", root / dive / "nav")
    assert main(["init", str(root), "--write"]) == 0
    out = capsys.readouterr().out
    notes = out.partition("\nnotes\n")[2]
    assert "dive dive01:" in notes and "IMG_0000.jpg" in notes and "set image_time:" in notes
    text = (root / "catalog.yaml").read_text()
    assert "REQUIRED before building" in text and "image_time" not in yaml.safe_load(text)


# ---------------------------------------------------------------- a CSV no reader knows


def test_unknown_csv_is_explained_with_the_columns_map_to_write(tmp_path, capsys):
    root = tmp_path / "survey"
    for dive in ("d01", "d02", "d03", "d04"):
        (root / dive / "images").mkdir(parents=True)
        (root / dive / "images" / "PR_20240313_004046_897_LC16.jpg").write_bytes(b"")
        (root / dive / "log.csv").write_text(
            "tiempo,latitud,longitud,profundidad,rumbo\n1710290446.9,-43.1,147.9,40.2,12\n")
    assert main(["init", str(root)]) == 2
    captured = capsys.readouterr()
    err = captured.err
    assert captured.out == "" and err.startswith("error: ") and "Traceback" not in err
    assert "CSV not recognised as navigation: d01/log.csv" in err
    assert "missing   a latitude column (looked for: latitude, lat" in err
    assert "nearest   lat: 'latitud'" in err and "nearest   time: 'tiempo'" in err
    snippet = err.partition("add this nav source")[2]
    assert '  - format: csv\n' in snippet and 'path: "{dive}/log.csv"' in snippet
    assert 'lat: "<latitude column>"  # nearest: latitud' in snippet
    assert 'time: "<time column>"  # nearest: tiempo' in snippet
    # the first few files are explained in full, the rest named
    assert err.count("add this nav source") == 3
    assert "\n  CSV not recognised as navigation: d04/log.csv\n" in err
    assert "no catalog proposed" in err


# ---------------------------------------------------------------- marimba's packaged datasets

MARIMBA = Path(__file__).resolve().parent / "data" / "marimba"


@pytest.mark.parametrize("version", ["marimba_1.0.1", "marimba_1.2.0"])
@pytest.mark.parametrize("level", ["project", "collection"])
def test_marimba_datasets(tmp_path, capsys, version, level):
    """marimba's two metadata levels: the dataset's ifdo.json alone (shared by all dives), or
    the per-collection iFDOs beside it (each dive's own; the shared one is then not needed)."""
    root = tmp_path / "dataset"
    shutil.copytree(MARIMBA / version, root, ignore=shutil.ignore_patterns("truth.csv"))
    truth = pd.read_csv(MARIMBA / version / "truth.csv")
    if level == "project":
        for f in root.glob("*.benthic.ifdo.json"):
            f.unlink()
    assert main(["init", str(root), "--write"]) == 0
    capsys.readouterr()
    cat = load_catalog(root / "catalog.yaml")
    assert cat.dives == "data/benthic/*" and cat.images == "{dive}/*.jpg"
    expected = "ifdo.json" if level == "project" else "{dive_id}.benthic.ifdo.json"
    assert [(s.format, s.path) for s in cat.nav] == [("ifdo", expected)]
    assert main(["build", "--catalog", str(root / "catalog.yaml"), "--workers", "1"]) == 0
    t = pq.read_table(cat.output / "locations.parquet", columns=["path", "lat", "lon"]).to_pandas()
    merged = t.merge(truth, on="path", suffixes=("", "_truth"))
    assert len(merged) == len(truth) == len(t)
    metres = 111_000 * ((merged.lat - merged.lat_truth).abs() + (merged.lon - merged.lon_truth).abs())
    assert metres.max() < 0.5


def test_image_metadata_csv_at_the_root_keyed_by_file_name(tmp_path, capsys):
    """BIIGLE's image metadata CSV for the whole volume: rows name images by file name only."""
    src = _generate(tmp_path / "gen", "oplab-camera-csv", seed=9)
    ref = _reference(src, tmp_path)
    root = tmp_path / "volume"
    rows = []
    for dive in ("dive01", "dive02"):
        shutil.copytree(src / dive / "images", root / dive / "images")
        cam = pd.read_csv(src / dive / "nav" / "auv_ekf_LC.csv")
        when = pd.to_datetime(cam["timestamp [s]"], unit="s", utc=True)
        rows.append(pd.DataFrame({
            "filename": [Path(p).name for p in cam["relative_path"]],
            "taken_at": when.dt.strftime("%Y-%m-%d %H:%M:%S.%f"),
            "lng": cam["longitude [deg]"], "lat": cam["latitude [deg]"],
            "gps_altitude": -cam["depth [m]"], "distance_to_ground": cam["altitude [m]"],
            "yaw": cam["heading [deg]"]}))
    pd.concat(rows).to_csv(root / "metadata.csv", index=False)
    got, report = _init_and_build(root, capsys)
    cat = load_catalog(root / "catalog.yaml")
    assert [(s.format, s.path) for s in cat.nav] == [("biigle-csv", "metadata.csv")]
    assert "shared by all dives" in report
    _same_places(got, ref, set(ref))
