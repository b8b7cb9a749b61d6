"""Layouts real tools write: navigation shared by every dive, marimba's two dataset layouts,
iFDO path resolution, ACFR stereo rigs (both cameras, yaw in degrees), EXIF as navigation.

Every test builds a small catalog end to end and checks each image's position against the pose
its navigation gave it (0.5 m), its time (1 ms), heading and depth.
"""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import yaml
from PIL import Image

from pipeline.build import build
from pipeline.catalog import CatalogError, load_catalog
from pipeline.dives import dive_fingerprint
from pipeline.ingest import ingest_dive
from pipeline.readers import NavFormatError, read_nav

DATA = Path(__file__).parent / "data"
MARIMBA_OLD = DATA / "marimba" / "marimba_1.0.1"  # keys: paths from the dataset root
MARIMBA_NEW = DATA / "marimba" / "marimba_1.2.0"  # keys: file names + image-set-local-path
OPLAB = DATA / "oplab_pipeline_1.2.0"
T0 = 1710290446.897  # 2024-03-13 00:40:46.897 UTC


def metres_apart(lat1, lon1, lat2, lon2) -> np.ndarray:
    lat1, lon1, lat2, lon2 = (np.asarray(v, dtype=np.float64) for v in (lat1, lon1, lat2, lon2))
    dy = np.deg2rad(lat1 - lat2) * 6_371_008.8
    dx = np.deg2rad(lon1 - lon2) * 6_371_008.8 * np.cos(np.deg2rad(lat2))
    return np.hypot(dx, dy)


def jpeg(seed: int = 0) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (32, 24), (20 + 7 * seed % 200, 90, 140)).save(buf, "JPEG", quality=60)
    return buf.getvalue()


def run(root: Path, tmp_path: Path, **doc) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """Write a catalog for ``root``, build it; (locations, quarantine, log lines)."""
    base = {"name": "real", "root": str(root), "output": str(tmp_path / "manifests"),
            "crs": "auto", "validate": "header"}
    path = tmp_path / "catalog.yaml"
    path.write_text(yaml.safe_dump({**base, **doc}, sort_keys=False))
    cat = load_catalog(path)
    lines: list[str] = []
    build(cat, workers=1, log=lines.append)
    loc = pq.read_table(cat.output / "locations.parquet").to_pandas()
    quar = pq.read_table(cat.output / "quarantine.parquet").to_pandas()
    return loc, quar, lines


def assert_at_truth(loc: pd.DataFrame, truth: pd.DataFrame) -> None:
    """Every truth row located at its pose: 0.5 m, 1 ms, heading on the circle, depth."""
    got = loc.set_index("path").loc[truth["path"]]
    assert len(got) == len(truth)
    assert metres_apart(got["lat"], got["lon"], truth["lat"], truth["lon"]).max() < 0.5
    t = got["timestamp"].map(lambda v: v.timestamp()).to_numpy()
    assert np.abs(t - truth["unix_time"].to_numpy()).max() < 1e-3
    if "heading_deg" in truth:
        d = (got["heading_deg"].to_numpy() - truth["heading_deg"].to_numpy() + 180) % 360 - 180
        assert np.abs(d).max() < 0.01
    if "depth" in truth:
        assert np.abs(got["depth_m"].to_numpy() - truth["depth"].to_numpy()).max() < 0.01


# ---- marimba: one iFDO for the dataset, or one per collection --------------------------------


def marimba_tree(src: Path, tmp_path: Path) -> Path:
    root = tmp_path / "dataset"
    shutil.copytree(src, root)
    return root


@pytest.mark.parametrize("tree", [MARIMBA_OLD, MARIMBA_NEW], ids=["1.0.1", "1.2.0"])
def test_marimba_dataset_level_ifdo_at_the_root_serves_every_collection(tree, tmp_path):
    root = marimba_tree(tree, tmp_path)
    loc, quar, lines = run(root, tmp_path, dives="data/benthic/*", images="{dive}/*.jpg",
                           nav=[{"format": "ifdo", "path": "ifdo.json"}])
    truth = pd.read_csv(root / "truth.csv")
    assert quar.empty, quar.to_dict("records")
    assert_at_truth(loc, truth)
    assert sorted(loc["dive"].unique()) == ["dive01", "dive02"]
    assert any("ifdo.json, shared by every dive" in line for line in lines)


@pytest.mark.parametrize("tree", [MARIMBA_OLD, MARIMBA_NEW], ids=["1.0.1", "1.2.0"])
def test_marimba_collection_level_ifdo_beside_data(tree, tmp_path):
    root = marimba_tree(tree, tmp_path)
    loc, quar, _ = run(root, tmp_path, dives="data/benthic/*", images="{dive}/*.jpg",
                       nav=[{"format": "ifdo", "path": "{dive_id}.benthic.ifdo.json"}])
    assert quar.empty, quar.to_dict("records")
    assert_at_truth(loc, pd.read_csv(root / "truth.csv"))


def test_ifdo_notes_say_how_item_keys_were_resolved():
    # 1.0.1 per collection: no local path; the v2 default ../raw leads outside the dataset, the
    # keys are paths from the file's own folder
    nav = read_nav("ifdo", MARIMBA_OLD / "dive01.benthic.ifdo.json",
                   dive_dir=MARIMBA_OLD / "data/benthic/dive01", root=MARIMBA_OLD)
    assert nav.notes["ifdo_paths_from_ifdo_folder"] == 3
    assert "ifdo_default_local_path" not in nav.notes
    assert nav.table["image"].str.match(r"^CAM_dive01_.*\.jpg$").all()
    # 1.2.0: the declared local path (in the header, every item sharing it)
    nav = read_nav("ifdo", MARIMBA_NEW / "dive02.benthic.ifdo.json",
                   dive_dir=MARIMBA_NEW / "data/benthic/dive02", root=MARIMBA_NEW)
    assert nav.notes["ifdo_paths_from_local_path"] == 3
    assert nav.table["image"].str.match(r"^CAM_dive02_.*\.jpg$").all()


def test_ifdo_keys_from_the_root_when_the_file_sits_in_a_subfolder(tmp_path):
    """A dataset-wide iFDO kept in metadata/ with keys from the dataset root: resolution 3."""
    root = marimba_tree(MARIMBA_OLD, tmp_path)
    (root / "metadata").mkdir()
    shutil.move(root / "ifdo.json", root / "metadata" / "ifdo.json")
    nav = read_nav("ifdo", root / "metadata" / "ifdo.json", dive_dir=root, root=root)
    assert nav.notes["ifdo_paths_from_root"] == 6
    assert nav.table["image"].str.startswith("data/benthic/dive0").all()
    loc, quar, _ = run(root, tmp_path, dives="data/benthic/*", images="{dive}/*.jpg",
                       nav=[{"format": "ifdo", "path": "metadata/ifdo.json"}])
    assert quar.empty
    assert_at_truth(loc, pd.read_csv(root / "truth.csv"))


def test_ifdo_default_raw_folder_still_wins_when_the_images_are_there(tmp_path):
    """The spec's ../raw first: a v2 file in products/ beside raw/ (mariqt's layout)."""
    root = tmp_path / "site"
    (root / "d1" / "raw").mkdir(parents=True)
    (root / "d1" / "products").mkdir()
    items = {}
    for i in range(3):
        name = f"img{i}.jpg"
        (root / "d1" / "raw" / name).write_bytes(jpeg(i))
        (root / "d1" / "products" / name).write_bytes(jpeg(i))  # a decoy beside the iFDO
        items[name] = {"image-datetime": f"2024-03-13 00:40:4{6 + i}.897000",
                       "image-latitude": -43.3 + i * 1e-5, "image-longitude": 147.9,
                       "image-altitude-meters": -40.0}
    doc = {"image-set-header": {"image-set-name": "x", "image-set-ifdo-version": "v2.0.0"},
           "image-set-items": items}
    (root / "d1" / "products" / "d1_iFDO.json").write_text(json.dumps(doc))
    nav = read_nav("ifdo", root / "d1" / "products" / "d1_iFDO.json", dive_dir=root / "d1",
                   root=root)
    assert nav.notes["ifdo_paths_from_local_path"] == 3
    assert nav.table["image"].tolist() == ["raw/img0.jpg", "raw/img1.jpg", "raw/img2.jpg"]


def test_ifdo_never_resolves_outside_the_root(tmp_path):
    """Images beside the root (the spec's ../raw from a root-level iFDO) are never used."""
    (tmp_path / "raw").mkdir()
    (tmp_path / "raw" / "a.jpg").write_bytes(jpeg())
    root = tmp_path / "site"
    root.mkdir()
    (root / "a.jpg").write_bytes(jpeg())
    doc = {"image-set-header": {"image-set-ifdo-version": "v2.0.0"},
           "image-set-items": {"a.jpg": {"image-datetime": "2024-03-13 00:40:46.897000",
                                         "image-latitude": -43.3, "image-longitude": 147.9}}}
    (root / "ifdo.json").write_text(json.dumps(doc))
    nav = read_nav("ifdo", root / "ifdo.json", dive_dir=root, root=root)
    assert nav.table["image"].tolist() == ["a.jpg"]
    assert nav.notes["ifdo_paths_from_ifdo_folder"] == 1


# ---- one navigation file for every dive ------------------------------------------------------


def two_dives(root: Path, names: dict[str, list[str]]) -> None:
    for dive, files in names.items():
        (root / "dives" / dive / "images").mkdir(parents=True)
        for i, name in enumerate(files):
            (root / "dives" / dive / "images" / name).write_bytes(jpeg(i))


def test_shared_csv_at_the_root_keyed_by_file_name(tmp_path):
    root = tmp_path / "site"
    names = {"d1": [f"a{i}.jpg" for i in range(4)], "d2": [f"b{i}.jpg" for i in range(4)]}
    two_dives(root, names)
    rows = []
    for k, dive in enumerate(names):
        for i, name in enumerate(names[dive]):
            rows.append({"image": name, "unix_time": T0 + 3600 * k + i,
                         "lat": -43.3 - 0.01 * k + i * 1e-5, "lon": 147.9 + i * 1e-5,
                         "depth": 30.0 + i, "heading_deg": 90.0})
    truth = pd.DataFrame(rows)
    truth.to_csv(root / "all_images.csv", index=False)
    loc, quar, lines = run(root, tmp_path, dives="dives/*", images="{dive}/images/*.jpg", nav=[{
        "format": "csv", "path": "all_images.csv",
        "columns": {"time": "unix_time", "image": "image", "lat": "lat", "lon": "lon",
                    "depth": "depth", "heading": "heading_deg"}}])
    assert quar.empty, quar.to_dict("records")
    truth["path"] = [f"dives/{'d1' if n.startswith('a') else 'd2'}/images/{n}"
                     for n in truth["image"]]
    assert_at_truth(loc, truth)
    assert loc.set_index("path").loc[truth["path"], "dive"].tolist() == ["d1"] * 4 + ["d2"] * 4


def test_shared_vehicle_csv_serves_two_dives_by_time(tmp_path):
    root = tmp_path / "site"
    names = {"d1": [f"PR_20240313_0040{46 + i}_897_LC16.jpg" for i in range(3)],
             "d2": [f"2024_03_13_01-40-{46 + i}.jpg" for i in range(3)]}
    two_dives(root, names)
    t = np.arange(T0 - 10, T0 + 3600 + 20, 0.5)  # one track 2 Hz over both dives
    north = (t - T0) * 0.5  # 0.5 m/s due north
    lat = -43.3 + north / 111_132.0
    pd.DataFrame({"t": t, "lat": lat, "lon": np.full(len(t), 147.9), "depth": 50.0}).to_csv(
        root / "vehicle.csv", index=False)
    loc, quar, _ = run(root, tmp_path, dives="dives/*", images="{dive}/images/*.jpg", nav=[{
        "format": "csv", "path": "vehicle.csv",
        "columns": {"time": "t", "lat": "lat", "lon": "lon", "depth": "depth"}}])
    assert quar.empty, quar.to_dict("records")
    image_t = [T0 + i for i in range(3)] + [T0 + 3600 - 0.897 + i for i in range(3)]
    truth = pd.DataFrame({
        "path": [f"dives/{d}/images/{n}" for d in names for n in names[d]],
        "unix_time": image_t,
        "lat": [-43.3 + (x - T0) * 0.5 / 111_132.0 for x in image_t], "lon": 147.9})
    assert_at_truth(loc, truth)


def test_shared_csv_in_a_subfolder_keyed_by_path_from_its_folder(tmp_path):
    """Rows attributed by path: from the root or from the file's folder; a row whose path lies
    in another dive's folder never locates a namesake here."""
    root = tmp_path / "site"
    two_dives(root, {"d1": ["a.jpg", "z.jpg"], "d2": ["a.jpg"]})
    (root / "nav").mkdir()
    pd.DataFrame({
        "image": ["../dives/d1/images/a.jpg", "dives/d2/images/a.jpg", "dives/d2/images/z.jpg"],
        "t": [T0, T0 + 1, T0 + 2], "lat": [-43.3, -43.31, -43.32], "lon": 147.9,
        "depth": 10.0}).to_csv(root / "nav" / "images.csv", index=False)
    loc, quar, _ = run(root, tmp_path, dives="dives/*", images="{dive}/images/*.jpg", nav=[{
        "format": "csv", "path": "nav/images.csv",
        "columns": {"time": "t", "image": "image", "lat": "lat", "lon": "lon", "depth": "depth"}}])
    assert_at_truth(loc, pd.DataFrame({
        "path": ["dives/d1/images/a.jpg", "dives/d2/images/a.jpg"], "unix_time": [T0, T0 + 1],
        "lat": [-43.3, -43.31], "lon": 147.9}))
    # d2's z.jpg row is d2's (its image is missing there), never d1's z.jpg
    assert quar[["source", "reason"]].values.tolist() == [["dives/d1/images/z.jpg", "no_nav"]]


def test_shared_ifdo_in_a_navigation_only_catalog_gives_each_dive_its_items(tmp_path):
    root = shared_ifdo_site(tmp_path)
    loc, _, _ = run(root, tmp_path, dives="dives/*", images=None,
                    nav=[{"format": "ifdo", "path": "ifdo.json"}])
    assert loc.groupby("dive")["path"].apply(sorted).to_dict() == {
        "d1": [f"dives/d1/images/x{i}.jpg" for i in range(3)],
        "d2": [f"dives/d2/images/y{i}.jpg" for i in range(3)]}


def shared_ifdo_site(tmp_path: Path) -> Path:
    root = tmp_path / "site"
    names = {"d1": ["x0.jpg", "x1.jpg", "x2.jpg"], "d2": ["y0.jpg", "y1.jpg", "y2.jpg"]}
    two_dives(root, names)
    items = {}
    for k, dive in enumerate(names):
        for i, name in enumerate(names[dive]):
            items[f"dives/{dive}/images/{name}"] = {
                "image-datetime": f"2024-03-13 0{k}:40:4{6 + i}.897000",
                "image-latitude": -43.3 - 0.01 * k + i * 1e-5, "image-longitude": 147.9,
                "image-altitude-meters": -40.0 - i, "image-camera-yaw-degrees": 350.0 + 5 * i}
    items["../elsewhere/z.jpg"] = {"image-datetime": "2024-03-13 00:40:50.000000",
                                   "image-latitude": -43.3, "image-longitude": 147.9}
    (root / "ifdo.json").write_text(json.dumps({
        "image-set-header": {"image-set-name": "x", "image-set-ifdo-version": "v2.0.0"},
        "image-set-items": items}))
    return root


def test_shared_ifdo_keyed_by_path_from_the_root(tmp_path):
    root = shared_ifdo_site(tmp_path)
    loc, quar, _ = run(root, tmp_path, dives="dives/*", images="{dive}/images/*.jpg",
                       nav=[{"format": "ifdo", "path": "ifdo.json"}])
    truth = pd.DataFrame({
        "path": [f"dives/d{k + 1}/images/{'xy'[k]}{i}.jpg" for k in range(2) for i in range(3)],
        "unix_time": [T0 + 3600 * k + i for k in range(2) for i in range(3)],
        "lat": [-43.3 - 0.01 * k + i * 1e-5 for k in range(2) for i in range(3)],
        "lon": 147.9, "depth": [40.0 + i for _ in range(2) for i in range(3)],
        "heading_deg": [(350.0 + 5 * i) % 360 for _ in range(2) for i in range(3)]})
    assert_at_truth(loc, truth)
    # the item outside the root is reported once (by the first dive), not by every dive
    assert quar["reason"].tolist() == ["unsafe_path"]
    assert quar["dive"].tolist() == ["d1"] and "../elsewhere/z.jpg" in quar["detail"].iat[0]


def test_shared_file_digest_is_in_every_dives_fingerprint(tmp_path):
    root = shared_ifdo_site(tmp_path)
    path = tmp_path / "catalog.yaml"
    path.write_text(yaml.safe_dump({
        "root": str(root), "output": str(tmp_path / "out"), "dives": "dives/*",
        "images": "{dive}/images/*.jpg", "nav": [{"format": "ifdo", "path": "ifdo.json"}]}))
    cat = load_catalog(path)
    before = {d: dive_fingerprint(cat, d) for d in ("d1", "d2")}
    doc = json.loads((root / "ifdo.json").read_text())
    doc["image-set-items"]["dives/d2/images/y0.jpg"]["image-latitude"] += 1e-4
    (root / "ifdo.json").write_text(json.dumps(doc))
    after = {d: dive_fingerprint(cat, d) for d in ("d1", "d2")}
    assert all(before[d] != after[d] for d in before)


def test_a_nav_path_without_dive_is_shared_but_images_must_name_the_dive(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("root: .\noutput: out\nimages: 'all/*.jpg'\n"
                    "nav: [{format: ifdo, path: 'ifdo.json'}]\n")
    with pytest.raises(CatalogError, match=r"key 'images'.*must contain \{dive\}"):
        load_catalog(path)
    path.write_text("root: .\noutput: out\nnav: [{format: ifdo, path: 'ifdo.json'}]\n")
    assert load_catalog(path).nav[0].shared


# ---- ACFR stereo rigs ------------------------------------------------------------------------


def acfr_site(tmp_path: Path, pose_file: Path) -> tuple[Path, pd.DataFrame]:
    """oplab's stereo_pose_est.data in a dive with both cameras' images."""
    root = tmp_path / "site"
    dive = root / "r20240313_004000_site"
    (dive / "renav").mkdir(parents=True)
    (dive / "i20240313_004000_cv").mkdir()
    shutil.copy(pose_file, dive / "renav" / "stereo_pose_est.data")
    truth = pd.read_csv(pose_file.with_name(pose_file.name + ".truth.csv"))
    for i, name in enumerate(truth["image"]):
        for cam in ("LC16", "RC16"):
            (dive / "i20240313_004000_cv" / name.replace("LC16", cam)).write_bytes(jpeg(i))
    both = pd.concat([truth, truth.assign(image=truth["image"].str.replace("LC16", "RC16"))])
    both["path"] = "r20240313_004000_site/i20240313_004000_cv/" + both["image"]
    return root, both.reset_index(drop=True)


ACFR = {"dives": "r*", "images": "{dive}/i*_cv/*.jpg"}


def test_acfr_both_cameras_located_with_the_pose_of_their_pair(tmp_path):
    root, truth = acfr_site(tmp_path, OPLAB / "stereo_pose_est_radians.data")
    loc, quar, _ = run(root, tmp_path, **ACFR, nav=[
        {"format": "acfr-stereo-pose", "path": "{dive}/renav/stereo_pose_est.data"}])
    assert quar.empty, quar.to_dict("records")
    assert len(loc) == 40
    assert_at_truth(loc, truth)


def test_acfr_cameras_left_quarantines_the_right_images_saying_why(tmp_path):
    root, truth = acfr_site(tmp_path, OPLAB / "stereo_pose_est_radians.data")
    loc, quar, _ = run(root, tmp_path, **ACFR, nav=[
        {"format": "acfr-stereo-pose", "path": "{dive}/renav/stereo_pose_est.data",
         "cameras": ["left"]}])
    assert loc["path"].str.contains("LC16").all() and len(loc) == 20
    assert len(quar) == 20 and (quar["reason"] == "no_nav").all()
    assert quar["source"].str.contains("RC16").all()
    assert quar["detail"].str.contains("right camera's image").all()
    assert quar["detail"].str.contains("'cameras' key").all()


def test_acfr_yaw_in_degrees_needs_yaw_unit_deg(tmp_path):
    with pytest.raises(NavFormatError, match=r"add `yaw_unit: deg` to this nav source"):
        read_nav("acfr-stereo-pose", OPLAB / "stereo_pose_est.data")
    root, truth = acfr_site(tmp_path, OPLAB / "stereo_pose_est.data")
    loc, quar, _ = run(root, tmp_path, **ACFR, nav=[
        {"format": "acfr-stereo-pose", "path": "{dive}/renav/stereo_pose_est.data",
         "yaw_unit": "deg"}])
    assert quar.empty
    assert_at_truth(loc, truth)  # heading 352 .. 366.25 (unwrapped) -> 352 .. 6.25


def test_acfr_yaw_in_degrees_without_the_option_quarantines_the_dive_naming_it(tmp_path):
    root, _ = acfr_site(tmp_path, OPLAB / "stereo_pose_est.data")
    path = tmp_path / "catalog.yaml"
    path.write_text(yaml.safe_dump({
        "root": str(root), "output": str(tmp_path / "out"), **ACFR,
        "nav": [{"format": "acfr-stereo-pose", "path": "{dive}/renav/stereo_pose_est.data"}]}))
    cat = load_catalog(path)
    res = ingest_dive(cat, "r20240313_004000_site", workers=1)
    assert (res.quarantine["reason"] == "nav_unreadable").all() and len(res.quarantine) == 40
    assert res.quarantine["detail"].str.contains("add `yaw_unit: deg`", regex=False).all()


@pytest.mark.parametrize("source,message", [
    ({"format": "ifdo", "path": "{dive}/a.json", "yaw_unit": "deg"}, "only for format"),
    ({"format": "acfr-stereo-pose", "path": "{dive}/s.data", "cameras": []}, "left, right"),
    ({"format": "acfr-stereo-pose", "path": "{dive}/s.data", "cameras": ["middle"]}, "left"),
    ({"format": "ifdo"}, "needs a 'path'"),
    ({"format": "ifdo", "path": "../other/ifdo.json"}, "leads outside"),
    ({"format": "ifdo", "path": "/data/ifdo.json"}, "leads outside"),
    ({"format": "exif", "timezone": "Mars/Olympus"}, "no known zone"),
    ({"format": "exif", "path": "images/*.jpg"}, "with {dive}"),
    ({"format": "csv", "path": "{dive}/n.csv", "timezone": "UTC",
      "columns": {"time": "t", "lat": "a", "lon": "b", "depth": "d"}}, "only for format 'exif'"),
])
def test_nav_source_options_belong_to_their_format(tmp_path, source, message):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"root": ".", "output": "out", "nav": [source]}))
    with pytest.raises(CatalogError, match=message):
        load_catalog(path)


# ---- EXIF: the images are the navigation -----------------------------------------------------


@pytest.mark.parametrize("path", [None, "{dive}/images/*.jpg"])
def test_exif_reads_the_dives_images(tmp_path, path):
    root = tmp_path / "site"
    shutil.copytree(DATA / "exif" / "dive", root / "dives" / "d1" / "images")
    source = {"format": "exif", "timezone": "+10:00", **({"path": path} if path else {})}
    loc, quar, _ = run(root, tmp_path, dives="dives/*", images="{dive}/images/*.jpg",
                       nav=[source])
    # a.jpg carries +10:00 itself; b.jpg is read in the catalog's zone; c.jpg has no GPS
    truth = pd.DataFrame({
        "path": ["dives/d1/images/a.jpg", "dives/d1/images/b.jpg"],
        "unix_time": [1556766245.25, 1556766247.0],
        "lat": [-(43 + 7 / 60 + 12.36 / 3600), -(43 + 7 / 60 + 12.72 / 3600)],
        "lon": [147 + 19 / 60 + 48.36 / 3600, 147 + 19 / 60 + 48.72 / 3600],
        "depth": [35.5, -2.0]})
    assert_at_truth(loc, truth)
    assert quar["source"].tolist() == ["dives/d1/images/c.jpg"]
    assert quar["reason"].iat[0] == "nav_invalid"


def test_a_shared_file_is_parsed_once_for_all_dives_and_again_when_it_changes(tmp_path,
                                                                               monkeypatch):
    import pipeline.ingest as ingest

    root = shared_ifdo_site(tmp_path)
    calls = []
    real = ingest.read_nav
    monkeypatch.setattr(ingest, "read_nav", lambda *a, **k: calls.append(a[1]) or real(*a, **k))
    path = tmp_path / "catalog.yaml"
    path.write_text(yaml.safe_dump({
        "root": str(root), "output": str(tmp_path / "out"), "dives": "dives/*",
        "images": "{dive}/images/*.jpg", "nav": [{"format": "ifdo", "path": "ifdo.json"}]}))
    cat = load_catalog(path)
    first = [ingest_dive(cat, d, workers=1) for d in ("d1", "d2")]
    assert len(calls) == 1 and [len(r.locations) for r in first] == [3, 3]
    doc = json.loads((root / "ifdo.json").read_text())
    doc["image-set-items"]["dives/d2/images/y0.jpg"]["image-latitude"] = -43.31001
    (root / "ifdo.json").write_text(json.dumps(doc))
    again = ingest_dive(cat, "d2", workers=1)
    assert len(calls) == 2
    y0 = again.locations.set_index("path").loc["dives/d2/images/y0.jpg"]
    assert y0["lat"] == pytest.approx(-43.31001, abs=1e-9)
