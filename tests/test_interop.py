"""Navigation written by the real tools, read through the project's readers.

The files under tests/data/ were written by oplab-pipeline, the ifdo package and mariqt
themselves (tests/data/make_golden.py, run by hand with the tools installed; see
tests/data/README.md for versions and what each tool does differently). Every golden file has a
``<file>.truth.csv`` next to it with the poses the tool was given.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from pipeline.readers import NAV_COLUMNS, NavFormatError, read_nav

DATA = Path(__file__).parent / "data"
OPLAB = DATA / "oplab_pipeline_1.2.0"
IFDO_NEW = DATA / "ifdo_1.6.0" / "products"
IFDO_OLD = DATA / "ifdo_1.2.5" / "products"
MARIQT = DATA / "mariqt_1.0.1" / "products"

MARIQT_FILE = MARIQT / "SSL2024_001-1_UOS_CAM-01_iFDO.json"
IFDO_JSON = IFDO_NEW / "SSL2024_002-1_UOS_CAM-01_iFDO.json"
IFDO_YAML = IFDO_NEW / "SSL2024_003-1_UOS_CAM-01_iFDO.yaml"
IFDO_OLD_FILE = IFDO_OLD / "SSL2024_004-1_UOS_CAM-01_iFDO.json"
DEGREES_ACFR = OPLAB / "stereo_pose_est.data"

# golden file -> (format, reader options, image path the reader should return for a truth name)
GOLDEN = {
    OPLAB / "auv_ekf_LC.csv": ("oplab-camera-csv", {}, lambda name: name),
    OPLAB / "auv_ekf_centre.csv": ("oplab-nav-csv", {}, None),
    OPLAB / "stereo_pose_est_radians.data": ("acfr-stereo-pose", {}, lambda n: f"images/{n}"),
    IFDO_JSON: ("ifdo", {"dive_dir": IFDO_NEW.parent}, lambda n: f"raw/{n}"),
    IFDO_YAML: ("ifdo", {"dive_dir": IFDO_NEW.parent},
                lambda n: f"/survey/SSL2024/dive03/raw/{n}"),
    IFDO_OLD_FILE: ("ifdo", {"dive_dir": IFDO_OLD.parent}, lambda n: f"raw/{n}"),
    MARIQT_FILE: ("ifdo", {"dive_dir": MARIQT.parent}, lambda n: f"raw/{n}"),
}
REFUSED = {DEGREES_ACFR}


def truth(path: Path) -> pd.DataFrame:
    return pd.read_csv(path.with_name(path.name + ".truth.csv"))


def metres_apart(lat1, lon1, lat2, lon2) -> np.ndarray:
    lat1, lon1, lat2, lon2 = (np.asarray(v, dtype=np.float64) for v in (lat1, lon1, lat2, lon2))
    dy = np.deg2rad(lat1 - lat2) * 6_371_008.8
    dx = np.deg2rad(lon1 - lon2) * 6_371_008.8 * np.cos(np.deg2rad(lat2))
    return np.hypot(dx, dy)


def test_every_golden_file_is_tested_and_the_set_is_small():
    golden = {p.with_name(p.name[: -len(".truth.csv")]) for p in DATA.rglob("*.truth.csv")}
    assert golden == set(GOLDEN) | REFUSED
    assert all(p.exists() for p in golden)
    # the navigation set (each golden file and its truth) stays small, and so does everything
    # the tests read from here (with the iFDO schemas and the annotation tools' label exports)
    nav = sum(p.stat().st_size + p.with_name(p.name + ".truth.csv").stat().st_size
              for p in golden)
    size = sum(p.stat().st_size for p in DATA.rglob("*") if p.is_file())
    assert nav < 100_000 and size < 300_000, (nav, size)


@pytest.mark.parametrize("path", sorted(GOLDEN), ids=lambda p: p.relative_to(DATA).as_posix())
def test_golden_file_matches_its_truth(path):
    fmt, options, image_of = GOLDEN[path]
    nav = read_nav(fmt, path, **options)
    t, tr = nav.table, truth(path)
    assert list(t.columns) == NAV_COLUMNS and len(t) == len(tr) == 20
    if image_of is None:  # vehicle time series: rows in time order, matched by time
        assert not nav.per_image and t["image"].isna().all()
    else:
        assert nav.per_image
        assert t["image"].tolist() == [image_of(n) for n in tr["image"]]
    assert np.abs(t["timestamp"] - tr["unix_time"]).max() < 1e-3
    located = tr["lat"].notna().to_numpy()
    # an image the tool was given no position for has none (NaN), whatever the header says
    assert (t["lat"].notna().to_numpy() == located).all()
    assert (t["lon"].notna().to_numpy() == located).all()
    off = metres_apart(t["lat"][located], t["lon"][located], tr["lat"][located],
                       tr["lon"][located])
    assert off.max() < 0.01, f"{off.max():.4f} m off"
    has_depth = tr["depth"].notna().to_numpy()
    assert (t["depth_m"].notna().to_numpy() == has_depth).all()
    assert np.abs(t["depth_m"][has_depth] - tr["depth"][has_depth]).max() < 1e-3
    dh = (t["heading_deg"] - tr["heading_deg"] + 180.0) % 360.0 - 180.0
    assert np.abs(dh).max() < 0.01
    assert t["heading_deg"].between(0, 360, inclusive="left").all()


# ---- oplab-pipeline ----------------------------------------------------------------------


def test_oplab_writes_absolute_paths_and_unwrapped_headings_passed_through_and_wrapped():
    text = (OPLAB / "auv_ekf_LC.csv").read_text().splitlines()
    assert text[1].startswith("/") and ",366.25," in text[-1]
    t = read_nav("oplab-camera-csv", OPLAB / "auv_ekf_LC.csv").table
    assert t["image"].str.startswith("/data/raw/").all()
    assert t["heading_deg"].iloc[-1] == pytest.approx(6.25)
    assert (OPLAB / "auv_ekf_centre.csv").read_text().startswith("timestamp,northing [m],")


def test_acfr_yaw_in_degrees_is_refused_naming_line_field_and_unit():
    with pytest.raises(NavFormatError) as info:
        read_nav("acfr-stereo-pose", DEGREES_ACFR)
    msg = str(info.value)
    first = next(i for i, line in enumerate(DEGREES_ACFR.read_text().splitlines(), start=1)
                 if line[:1].isdigit())
    for needle in (str(DEGREES_ACFR), f"line {first}", "field 'yaw'", "351.99999999999994",
                   "looks like degrees", "expected radians"):
        assert needle in msg, msg


def test_acfr_one_yaw_in_degrees_among_radians_names_its_line(tmp_path):
    lines = (OPLAB / "stereo_pose_est_radians.data").read_text().splitlines()
    k = len(lines) - 3
    fields = lines[k].split()
    fields[9] = "-170.0"
    lines[k] = " \t".join(fields)
    path = tmp_path / "stereo_pose_est.data"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(NavFormatError, match=rf"line {k + 1}, field 'yaw': found -170.0, which "
                                             r"looks like degrees \(1 of 20"):
        read_nav("acfr-stereo-pose", path)
    fields[9] = "-6.2"  # within [-2*pi, 2*pi]: radians
    lines[k] = " \t".join(fields)
    path.write_text("\n".join(lines) + "\n")
    heading = read_nav("acfr-stereo-pose", path).table["heading_deg"].iloc[k - 57]
    assert heading == pytest.approx(np.degrees(-6.2) % 360.0)


# ---- iFDO: header summaries never locate an item -----------------------------------------


def test_mariqt_header_median_does_not_locate_the_image_without_navigation():
    doc = json.loads(MARIQT_FILE.read_text())
    head, items = doc["image-set-header"], doc["image-set-items"]
    last = sorted(items)[-1]
    assert {"image-latitude", "image-longitude", "image-altitude-meters"} <= set(head)
    assert "image-latitude" not in items[last] and "image-latitude" in items[sorted(items)[0]]
    nav = read_nav("ifdo", MARIQT_FILE, dive_dir=MARIQT.parent)
    t = nav.table.set_index(nav.table["image"].str.rsplit("/", n=1).str[-1])
    assert t.loc[last, ["lat", "lon", "depth_m"]].isna().all()
    assert t.drop(last)[["lat", "lon", "depth_m"]].notna().all(axis=None)
    # a field constant over the set was moved into the header: there it is every item's value
    assert "image-meters-above-ground" in head and (t["altitude_m"] == 2.0).all()
    assert nav.notes["ifdo_header_summary_fields_ignored"] == 4


def test_ifdo_item_without_position_in_a_set_with_a_header_position_is_not_located():
    doc = json.loads(IFDO_JSON.read_text())
    assert "image-latitude" in doc["image-set-header"]
    t = read_nav("ifdo", IFDO_JSON).table
    assert t["lat"].isna().tolist() == [i == 7 for i in range(20)]


def _write(tmp_path: Path, doc: dict, name: str = "set_iFDO.json") -> Path:
    path = tmp_path / "products" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc))
    return path


def test_ifdo_header_position_locates_items_only_when_no_item_has_one(tmp_path):
    items = {"a.jpg": {"image-datetime": "2024-03-13 00:40:46.000000"},
             "b.jpg": {"image-datetime": "2024-03-13 00:40:47.000000"}}
    header = {"image-set-ifdo-version": "v2.0.1", "image-latitude": -43.3,
              "image-longitude": 147.9, "image-altitude-meters": -40.0}
    t = read_nav("ifdo", _write(tmp_path, {"image-set-header": header,
                                           "image-set-items": items})).table
    assert t["lat"].tolist() == [-43.3, -43.3] and t["depth_m"].tolist() == [40.0, 40.0]
    # per field: latitude constant over the set (moved to the header), longitude per item
    items = {k: {**v, "image-longitude": 147.9 + i * 1e-5}
             for i, (k, v) in enumerate(items.items())}
    items["c.jpg"] = {"image-datetime": "2024-03-13 00:40:48.000000"}
    t = read_nav("ifdo", _write(tmp_path, {"image-set-header": header,
                                           "image-set-items": items})).table
    assert t["lat"].tolist() == [-43.3, -43.3, -43.3]  # no item has a latitude: the header's
    assert t["lon"].isna().tolist() == [False, False, True]  # c.jpg: no longitude, not located
    # a header time is a summary when the items carry times
    items["c.jpg"] = {}
    header["image-datetime"] = "2024-03-13 00:40:46.000000"
    t = read_nav("ifdo", _write(tmp_path, {"image-set-header": header,
                                           "image-set-items": items})).table
    assert np.isnan(t["timestamp"].iloc[2])


# ---- iFDO: datetime formats, item shapes, local path -------------------------------------


def test_ifdo_datetime_format_from_header_and_item_is_honoured():
    doc = yaml.safe_load(IFDO_YAML.read_text())
    items = doc["image-set-items"]
    assert doc["image-set-header"]["image-datetime-format"] == "%d/%m/%Y %H:%M:%S.%f"
    own = [k for k, v in items.items() if isinstance(v, dict) and "image-datetime-format" in v]
    assert len(own) == 1 and items[own[0]]["image-datetime"].endswith("+0000")
    assert str(next(iter(items.values()))["image-datetime"]).startswith("13/03/2024 ")
    nav = read_nav("ifdo", IFDO_YAML)
    assert "ifdo_datetime_format_mismatch" not in nav.notes
    tr = truth(IFDO_YAML)
    assert np.abs(nav.table["timestamp"] - tr["unix_time"]).max() < 1e-3


def test_ifdo_custom_format_without_zone_is_utc_and_a_bad_value_names_the_format(tmp_path):
    doc = {"image-set-header": {"image-datetime-format": "%m/%d/%Y %I:%M:%S.%f %p"},
           "image-set-items": {"a.jpg": {"image-datetime": "03/13/2024 12:40:46.500000 AM"}}}
    assert read_nav("ifdo", _write(tmp_path, doc)).table["timestamp"].iloc[0] == 1710290446.5
    doc["image-set-items"]["a.jpg"]["image-datetime"] = "13.03.2024"
    with pytest.raises(NavFormatError, match=r"'13\.03\.2024'.*'%m/%d/%Y %I:%M:%S\.%f %p'"):
        read_nav("ifdo", _write(tmp_path, doc))


def test_ifdo_1_2_5_yaml_in_json_lists_of_one_and_an_unapplied_format():
    text = IFDO_OLD_FILE.read_text()
    assert text.startswith("image-set-header:")  # YAML, although the file is .json
    doc = yaml.safe_load(text)
    assert all(isinstance(v, list) and len(v) == 1 for v in doc["image-set-items"].values())
    nav = read_nav("ifdo", IFDO_OLD_FILE, dive_dir=IFDO_OLD.parent)
    assert nav.notes["ifdo_yaml_in_json"] == 1
    assert nav.notes["ifdo_datetime_format_mismatch"] == 20  # declared, never applied
    assert nav.notes["ifdo_default_local_path"] == 20


def test_ifdo_video_is_read_from_its_first_entry():
    doc = yaml.safe_load(IFDO_YAML.read_text())
    video = [k for k, v in doc["image-set-items"].items() if isinstance(v, list)]
    assert len(video) == 1 and video[0].endswith(".mp4")
    t = read_nav("ifdo", IFDO_YAML).table
    row = t[t["image"].str.endswith(video[0])]
    tr = truth(IFDO_YAML).set_index("image").loc[video[0]]
    assert row["timestamp"].iloc[0] == pytest.approx(tr["unix_time"], abs=1e-3)


def test_ifdo_missing_local_path_gets_the_spec_default(tmp_path):
    doc = json.loads(IFDO_JSON.read_text())
    assert "image-set-local-path" not in doc["image-set-header"]
    nav = read_nav("ifdo", IFDO_JSON, dive_dir=IFDO_NEW.parent)
    assert nav.table["image"].str.startswith("raw/PR_").all()
    assert nav.notes["ifdo_default_local_path"] == 20
    assert read_nav("ifdo", IFDO_JSON).table["image"].str.startswith("../raw/PR_").all()
    # the older key name is read too
    old = {"image-set-header": {"image-local-path": "../pictures"},
           "image-set-items": {"a.jpg": {"image-datetime": "2024-03-13 00:40:46.000000"}}}
    assert read_nav("ifdo", _write(tmp_path, old)).table["image"].iloc[0] == "../pictures/a.jpg"
