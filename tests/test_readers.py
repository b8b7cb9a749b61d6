"""Navigation readers: every format comes back as the same table, in the units it promises.

Survey formats are checked against a small synthetic survey's truth; iFDO v1/v2, the column-
mapped CSV and error messages against small hand-written files.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline.readers import NAV_COLUMNS, NavData, NavFormatError, image_time_from_name, read_nav
from pipeline.readers.oplab_nav import clean_track, local_xy

DTYPES = {
    "timestamp": "float64", "lat": "float64", "lon": "float64", "depth_m": "float64",
    "altitude_m": "float64", "heading_deg": "float64", "image": "object", "line": "int64",
}
PER_IMAGE = {  # dive -> format, nav file
    "dive01": ("ifdo", "nav/dive01_iFDO.json"),
    "dive02": ("acfr-stereo-pose", "nav/stereo_pose_est.data"),
    "dive03": ("oplab-camera-csv", "nav/auv_ekf_LC.csv"),
}


@pytest.fixture(scope="module")
def survey(tmp_path_factory):
    from pipeline.synth import SynthConfig, generate

    root = tmp_path_factory.mktemp("survey")
    generate(SynthConfig(out=root, dives=4, images_per_dive=60, faults=True, seed=0, workers=2))
    truth = pd.read_csv(root / "truth.csv")
    faults = json.loads((root / "faults.json").read_text())["faults"]
    return root, truth, faults


def metres_apart(lat1, lon1, lat2, lon2) -> np.ndarray:
    lat1, lon1, lat2, lon2 = (np.asarray(v, dtype=np.float64) for v in (lat1, lon1, lat2, lon2))
    dy = np.deg2rad(lat1 - lat2) * 6_371_008.8
    dx = np.deg2rad(lon1 - lon2) * 6_371_008.8 * np.cos(np.deg2rad(lat2))
    return np.hypot(dx, dy)


def check_schema(nav: NavData) -> None:
    assert list(nav.table.columns) == NAV_COLUMNS
    assert {c: str(t) for c, t in nav.table.dtypes.items()} == DTYPES


# ---- per-image formats on the synthetic survey ---------------------------------------------


@pytest.mark.parametrize("dive", sorted(PER_IMAGE))
def test_per_image_formats_agree_with_truth(survey, dive):
    root, truth, faults = survey
    fmt, rel = PER_IMAGE[dive]
    nav = read_nav(fmt, root / dive / rel, **({"dive_dir": root / dive} if fmt == "ifdo" else {}))
    check_schema(nav)
    t = nav.table
    assert nav.per_image and nav.format == fmt and t["image"].str.startswith("images/PR_").all()
    assert t["line"].is_monotonic_increasing and t["line"].min() >= 1
    m = t.assign(image_id=dive + "/" + t["image"]).merge(truth, on="image_id", suffixes=("", "_t"))
    assert len(m) == len(t), "every image path names an image of the dive"
    faulted = {f["file"]: f["kind"] for f in faults if f["dive"] == dive and "file" in f}
    kind = m["image"].map(faulted)
    nan_rows = m[kind == "nan_pose"]
    assert len(nan_rows) == 1 and nan_rows[["lat", "lon"]].isna().all(axis=None)
    jump = m[kind == "gps_jump_pose"]
    assert len(jump) == 1  # kept: the caller quarantines it
    assert metres_apart(jump.lat, jump.lon, jump.lat_t, jump.lon_t)[0] == pytest.approx(40, abs=2)
    ok = m[kind.isna()]
    assert len(ok) >= len(t) - 3
    assert metres_apart(ok.lat, ok.lon, ok.lat_t, ok.lon_t).max() < 2.0
    assert np.abs(ok.timestamp - ok.timestamp_t).max() < 2e-3
    assert np.abs(ok.depth_m - ok.depth_m_t).max() < 0.5 and ok.depth_m.between(30, 60).all()
    assert np.abs(ok.altitude_m - ok.altitude_m_t).max() < 0.2
    assert ok.altitude_m.between(1.4, 3.0).all()
    assert t.heading_deg.between(0, 360, inclusive="left").all()
    assert np.abs((ok.heading_deg - ok.heading_deg_t + 180) % 360 - 180).max() < 3.0
    assert np.abs(t["image"].map(image_time_from_name) - t["timestamp"]).max() < 2e-3


def test_reader_options_for_image_paths(survey):
    root, _, _ = survey
    nav = read_nav("ifdo", root / "dive01" / PER_IMAGE["dive01"][1])  # no dive_dir
    assert nav.table["image"].str.startswith("../images/PR_").all()
    assert nav.table["line"].tolist() == list(range(1, len(nav.table) + 1))
    nav = read_nav("acfr-stereo-pose", root / "dive02" / PER_IMAGE["dive02"][1], image_dir="imgs")
    assert nav.table["image"].str.match(r"^imgs/PR_\d{8}_\d{6}_\d{3}_LC16\.jpg$").all()


# ---- raw 10 Hz vehicle navigation ----------------------------------------------------------


@pytest.mark.parametrize("dive", ["dive01", "dive02", "dive03", "dive04"])
def test_raw_nav_is_clean_and_on_the_track(survey, dive):
    root, truth, faults = survey
    nav = read_nav("oplab-nav-csv", root / dive / "nav" / "auv_ekf_centre.csv")
    check_schema(nav)
    assert not nav.per_image and nav.table["image"].isna().all()
    t = nav.table
    ts = t["timestamp"].to_numpy()
    assert (np.diff(ts) > 0).all()
    assert not t[["timestamp", "lat", "lon"]].isna().any(axis=None)
    assert t["heading_deg"].between(0, 360, inclusive="left").all()
    x, y = local_xy(t["lat"].to_numpy(), t["lon"].to_numpy())
    speed = np.hypot(np.diff(x), np.diff(y)) / np.diff(ts)
    assert speed.max() <= 3.0
    rows = {f["kind"]: set(f.get("rows", [])) for f in faults if f["dive"] == dive}
    jumped = set(range(min(rows["nav_gps_jump"]), max(rows["nav_gps_jump"]) + 1))
    assert nav.notes["nan_rows"] == len(rows["nav_nan_rows"])
    assert nav.notes["position_jumps"] == len(jumped - rows["nav_nan_rows"])
    assert nav.notes["duplicate_timestamps"] == len(rows["nav_duplicate_timestamps"])
    assert nav.notes["out_of_order_rows"] > 0
    # every sample lies near the true trajectory (truth is sampled at the 1 Hz image times)
    outside = {f["file"] for f in faults if f["dive"] == dive and f["kind"].endswith("nav_span")}
    tr = truth[(truth.dive == dive) & ~truth.image_id.str.split("/", n=1).str[1].isin(outside)]
    tr = tr.sort_values("timestamp")
    inside = (ts >= tr.timestamp.min()) & (ts <= tr.timestamp.max())
    assert inside.sum() > 0.8 * len(ts)
    lat_true = np.interp(ts[inside], tr.timestamp, tr.lat)
    lon_true = np.interp(ts[inside], tr.timestamp, tr.lon)
    off = metres_apart(t["lat"].to_numpy()[inside], t["lon"].to_numpy()[inside], lat_true, lon_true)
    assert off.max() < 5.0


def _track(n=400, dt=0.1, speed=0.5):
    """A vehicle heading north at ``speed``; line numbers 2 .. n + 1."""
    t = 1.7e9 + np.arange(n) * dt
    lat = -43.1 + np.degrees(speed * (t - t[0]) / 6_371_008.8)
    return pd.DataFrame({"timestamp": t, "lat": lat, "lon": 147.9, "depth_m": 40.0,
                         "altitude_m": 2.0, "heading_deg": 0.0, "image": None,
                         "line": np.arange(2, n + 2)})


def _shift_east(df, rows, metres):
    k = df.columns.get_loc("lon")
    df.iloc[rows, k] += np.degrees(metres / (6_371_008.8 * np.cos(np.deg2rad(-43.1))))


@pytest.mark.parametrize("burst", [1, 6, 15, 40])
def test_clean_track_removes_bursts_of_jumped_fixes(burst):
    df = _track()
    _shift_east(df, list(range(200, 200 + burst)), 35.0)
    _shift_east(df, [0], -25.0)  # a bad first fix
    _shift_east(df, [399], 25.0)  # and a bad last one
    clean, notes = clean_track(df)
    dropped = set(df["line"]) - set(clean["line"])
    assert dropped == {2, 401} | {202 + i for i in range(burst)}
    assert notes["position_jumps"] == burst + 2


def test_clean_track_keeps_fast_but_legal_motion_and_sorts():
    df = _track(speed=2.5)
    df = pd.concat([df.iloc[:100], df.iloc[[150]], df.iloc[100:]], ignore_index=True)  # repeat
    df = df.iloc[[*range(10), 11, 10, *range(12, len(df))]].reset_index(drop=True)  # swapped
    df.loc[50, "lat"] = np.nan
    clean, notes = clean_track(df)
    assert notes == {"nan_rows": 1, "out_of_order_rows": 2, "duplicate_timestamps": 1,
                     "position_jumps": 0, "position_steps": 0}
    assert len(clean) == 399 and (np.diff(clean["timestamp"]) > 0).all()
    assert clean["line"].tolist() == [n for n in range(2, 402) if n != 52]


def test_clean_track_keeps_both_sides_of_a_step_and_counts_it():
    # a 1 Hz ROV log whose fix re-locks 3.6 m (then 30 m) away after 25 s: nothing is dropped
    for metres in (3.6, 30.0):
        df = _track(n=120, dt=1.0, speed=0.3)
        _shift_east(df, list(range(25, 120)), metres)
        clean, notes = clean_track(df)
        assert len(clean) == 120 and notes["position_jumps"] == 0
        assert notes["position_steps"] == 1  # reported, not dropped
        assert clean.attrs["raw_span_s"] == (df["timestamp"].iat[0], df["timestamp"].iat[-1])


# ---- image names ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("PR_20240313_004046_897_LC16.jpg", 1710290446.897),
        ("images/PR_20240313_004046_897_LC16.jpg", 1710290446.897),
        ("image_20240313T004046.897Z.jpg", 1710290446.897),
        ("2024-03-13T00:40:46.5Z.png", 1710290446.5),
        ("cam_2024-03-13T10:40:46+10:00.jpg", 1710290446.0),
        ("PR_20240313_004046_LC16.jpg", 1710290446.0),
        ("20240101_dive/IMG_0001.jpg", None),
        ("IMG_0001.jpg", None),
        ("PR_20241399_004046_897.jpg", None),
    ],
)
def test_image_time_from_name(name, expected):
    got = image_time_from_name(name)
    assert got is None if expected is None else got == pytest.approx(expected, abs=1e-6)


# ---- iFDO v1 / v2, hand-written ------------------------------------------------------------

IFDO_V2_YAML = """\
image-set-header:
  {image-set-name: test, image-set-ifdo-version: v2.0.0, image-set-local-path: ../images,
   image-meters-above-ground: 2.0, image-camera-yaw-degrees: 90.0}
image-set-items:
  a.jpg: {image-datetime: '2024-03-13 00:40:46.897000', image-latitude: -43.1,
          image-longitude: 147.9, image-altitude-meters: -45.5, image-meters-above-ground: 1.5}
  b.jpg:
    image-datetime: 2024-03-13T00:40:47Z
    image-latitude: -43.2
    image-longitude: 147.8
    image-altitude-meters: -46.0
  c.jpg:
    - {image-datetime: '2024-03-13 00:40:48', image-altitude-meters: -47.0,
       image-camera-yaw-degrees: -10.0}
    - {image-datetime: '2024-03-13 00:40:49', image-altitude-meters: -48.0}
"""


def _write_ifdo(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / "dive07" / "nav" / name
    path.parent.mkdir(parents=True)
    path.write_text(text)
    return path


def test_ifdo_v2_yaml_header_defaults_and_items(tmp_path):
    path = _write_ifdo(tmp_path, "set.yaml", IFDO_V2_YAML)
    nav = read_nav("ifdo", path, dive_dir=tmp_path / "dive07")
    check_schema(nav)
    t = nav.table
    assert nav.per_image and nav.notes["ifdo_version"] == 2
    assert t["image"].tolist() == ["images/a.jpg", "images/b.jpg", "images/c.jpg"]
    assert t["line"].tolist() == [1, 2, 3] and t["lat"].iloc[:2].tolist() == [-43.1, -43.2]
    assert t["timestamp"].tolist() == pytest.approx([1710290446.897, 1710290447.0, 1710290448.0])
    assert t["depth_m"].tolist() == [45.5, 46.0, 47.0]  # negative altitude -> positive depth
    assert t["altitude_m"].tolist() == [1.5, 2.0, 2.0]  # item overrides the header default
    assert t["heading_deg"].tolist() == [90.0, 90.0, 350.0]
    assert np.isnan(t["lat"].iloc[2]) and np.isnan(t["lon"].iloc[2])  # kept, no position


def test_ifdo_v2_json_and_paths(tmp_path):
    doc = {
        "image-set-header": {"image-set-ifdo-version": "v2.1.0", "image-set-local-path": "../../x"},
        "image-set-items": {
            "sub/a.jpg": {"image-datetime": "2024-03-13 00:40:46", "image-latitude": 10,
                          "image-longitude": 20, "image-altitude-meters": -3},
            "/abs/b.jpg": {"image-datetime": "2024-03-13 00:40:47"},
        },
    }
    path = _write_ifdo(tmp_path, "set.json", json.dumps(doc))
    t = read_nav("ifdo", path, dive_dir=tmp_path / "dive07").table
    # outside the dive folder: reported as such, not silently fixed; absolute kept as written
    assert t["image"].tolist() == ["../x/sub/a.jpg", "/abs/b.jpg"]
    assert t["depth_m"].iloc[0] == 3.0 and t[["altitude_m", "heading_deg"]].isna().all(axis=None)
    assert read_nav("ifdo", path).table["image"].iloc[0] == "../../x/sub/a.jpg"


IFDO_V1_YAML = """\
image-set-header: {image-set-ifdo-version: v1.0.0, image-set-local-path: ../images,
                   image-depth: 100.0, image-altitude: 3.0}
image-set-items:
  a.jpg: {image-datetime: 2024-03-13 00:40:46.5, image-depth: 41.0, image-altitude: 2.5}
  b.jpg: {image-datetime: '2024-03-13 00:40:47.000000', image-latitude: -43.1}
"""


def test_ifdo_v1_yaml_depth_and_altitude(tmp_path):
    nav = read_nav("ifdo", _write_ifdo(tmp_path, "set.yml", IFDO_V1_YAML))
    t = nav.table
    assert nav.notes["ifdo_version"] == 1
    assert t["depth_m"].tolist() == [41.0, 100.0] and t["altitude_m"].tolist() == [2.5, 3.0]
    assert t["timestamp"].tolist() == pytest.approx([1710290446.5, 1710290447.0])
    # no version: v1 recognised by its fields; a negative image-altitude is below sea level
    text = ("image-set-items:\n  a.jpg: {image-datetime: '2024-03-13 00:40:46', "
            "image-altitude: -55.0, image-meters-above-ground: 1.8}\n")
    (path := tmp_path / "v1.yaml").write_text(text)
    t = read_nav("ifdo", path).table
    assert t["depth_m"].iloc[0] == 55.0 and t["altitude_m"].iloc[0] == 1.8
    assert t["image"].iloc[0] == "a.jpg"


@pytest.mark.parametrize(
    ("name", "text", "needles"),
    [
        ("a.json", '{"image-set-items": {"a.jpg": {"image-latitude": "north"}}}',
         ["item 1 ('a.jpg')", "'image-latitude'", "'north'", "degrees"]),
        ("a.json", '{"image-set-items": {"a.jpg": {"image-datetime": "yesterday"}}}',
         ["item 1", "'image-datetime'", "'yesterday'", "ISO 8601"]),
        ("a.json", '{"image-set-header": {}}', ["'image-set-items'", "no such key", "mapping"]),
        ("a.json", '{"image-set-items": {\n "a.jpg": }', ["line 2", "invalid JSON"]),
        ("a.yaml", "image-set-items:\n  a.jpg: [\n", ["line", "invalid YAML"]),
        ("a.txt", "{}", ["'.txt'", ".json, .yaml or .yml"]),
    ],
)
def test_ifdo_errors_name_item_key_found_and_expected(tmp_path, name, text, needles):
    path = _write_ifdo(tmp_path, name, text)
    with pytest.raises(NavFormatError) as info:
        read_nav("ifdo", path)
    msg = str(info.value)
    assert str(path) in msg and all(n in msg for n in needles), msg


# ---- column-mapped CSV ---------------------------------------------------------------------


def test_generic_csv_easting_northing_and_depth_up(survey, tmp_path):
    _, truth, _ = survey
    tr = truth[truth.dive == "dive03"].head(20)
    path = tmp_path / "nav.csv"
    pd.DataFrame({
        "File": tr.image_id.str.split("/", n=1).str[1], "UTC": tr.timestamp,
        "E": tr.easting, "N": tr.northing, "Z": -tr.depth_m, "Alt": tr.altitude_m,
        "Yaw": np.deg2rad(tr.heading_deg),
    }).to_csv(path, sep=";", index=False)
    columns = {"time": "utc", "image": "File", "easting": "E", "northing": "N",
               "xy_crs": "EPSG:32755", "depth": "Z", "depth_positive": "up", "altitude": "Alt",
               "heading": "Yaw", "heading_unit": "rad", "delimiter": ";", "lat": None}
    nav = read_nav("csv", path, columns)
    check_schema(nav)
    t = nav.table
    assert nav.per_image and t["line"].tolist() == list(range(2, 22))
    assert metres_apart(t.lat, t.lon, tr.lat, tr.lon).max() < 1e-3
    assert np.allclose(t.depth_m, tr.depth_m) and (t.depth_m > 0).all()
    assert np.allclose(t.heading_deg, tr.heading_deg % 360)
    assert t["image"].str.startswith("images/").all()


def test_generic_csv_vehicle_series_iso_times_is_cleaned(tmp_path):
    df = _track(n=100)
    _shift_east(df, [40, 41, 42], 30.0)
    when = pd.to_datetime(df.timestamp, unit="s", utc=True).dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    path = tmp_path / "vehicle.csv"
    pd.DataFrame({"time": when, "lat": df.lat, "lon": df.lon, "depth": df.depth_m}).to_csv(
        path, index=False)
    nav = read_nav("csv", path, {"time": "time", "time_unit": "iso8601", "lat": "lat",
                                 "lon": "lon", "depth": "depth"})
    assert not nav.per_image and nav.notes["position_jumps"] == 3
    assert len(nav.table) == 97 and np.isnan(nav.table.altitude_m).all()
    assert nav.table.timestamp.iloc[0] == pytest.approx(1.7e9, abs=1e-5)


def test_generic_csv_missing_column_lists_what_was_found(tmp_path):
    path = tmp_path / "nav.csv"
    path.write_text("t,latitude,longitude,depth\n1,2,3,4\n")
    with pytest.raises(NavFormatError) as info:
        read_nav("csv", path, {"time": "t", "lat": "lat", "lon": "longitude", "depth": "depth"})
    msg = str(info.value)
    assert all(s in msg for s in (str(path), "line 1", "'lat'", "'latitude'", "'t'")), msg
    with pytest.raises(ValueError, match="easting"):
        read_nav("csv", path, {"time": "t", "depth": "depth"})


# ---- errors in the survey formats ----------------------------------------------------------


def _edit_line(src: Path, dst: Path, index: int, edit) -> Path:
    lines = src.read_text().splitlines()
    lines[index] = edit(lines[index])
    dst.write_text("\n".join(lines) + "\n")
    return dst


def test_acfr_wrong_field_count_names_the_line(survey, tmp_path):
    root, _, _ = survey
    path = _edit_line(root / "dive02" / PER_IMAGE["dive02"][1], tmp_path / "pose.data", 14,
                      lambda line: " ".join(line.split()[:13]))
    with pytest.raises(NavFormatError) as info:
        read_nav("acfr-stereo-pose", path)
    msg = str(info.value)
    assert str(path) in msg and "line 15" in msg and "found 13" in msg, msg
    assert "expected 15 whitespace-separated fields" in msg


def test_oplab_non_numeric_latitude_costs_only_its_row(survey, tmp_path):
    """A bad value is that row's fault, named by line and column: its image stays without a
    pose (quarantined by the build), every other row is read."""
    root, _, _ = survey
    src = root / "dive03" / PER_IMAGE["dive03"][1]
    path = _edit_line(src, tmp_path / "cam.csv", 16,
                      lambda line: ",".join(v if i != 9 else "abc" for i, v in enumerate(line.split(","))))
    nav = read_nav("oplab-camera-csv", path)
    (fault,) = nav.row_faults
    assert fault.line == 17 and fault.kept, fault
    assert fault.detail.startswith("line 17, column 'latitude [deg]': found 'abc'"), fault.detail
    assert "expected a number in degrees" in fault.detail
    t = nav.table
    assert len(t) == len(read_nav("oplab-camera-csv", src).table)
    assert t.loc[t["line"] == 17, "lat"].isna().all() and t["lat"].notna().sum() == len(t) - 1


def test_oplab_header_ignores_case_and_spaces(tmp_path):
    path = tmp_path / "cam.csv"
    path.write_text(
        "Relative_Path , Depth [m],Timestamp [s], LATITUDE [DEG],Longitude[deg],extra\n"
        "images/a.jpg,40.5,1710290446.5,-43.1,147.9,x\n"
        "\n"
        "images/b.jpg,41,1710290447.5,nan,,y\n"
    )
    t = read_nav("oplab-camera-csv", path).table
    assert t["line"].tolist() == [2, 4] and t["depth_m"].tolist() == [40.5, 41.0]
    assert t["lat"].isna().tolist() == [False, True] and t["lon"].isna().tolist() == [False, True]
    assert t["altitude_m"].isna().all() and t["heading_deg"].isna().all()


NAV_HEADER = "timestamp [s],depth [m],latitude [deg],longitude [deg]\n"


def test_oplab_nav_bad_row_costs_only_itself(tmp_path):
    path = tmp_path / "nav.csv"
    path.write_text(NAV_HEADER + "1,2,3,4\n2,2,3,4,9\n3,2,3.00001,4\n4,2,forty,4\n5,2,3.00002,4\n")
    nav = read_nav("oplab-nav-csv", path)
    assert [f.line for f in nav.row_faults] == [3, 5]
    assert nav.table["line"].tolist() == [2, 4, 6]
    assert "column 'latitude [deg]': found 'forty'" in nav.row_faults[1].detail


@pytest.mark.parametrize(
    ("text", "pattern"),
    [
        # one bad row of two leaves one: too few to interpolate, so the file is refused
        (NAV_HEADER + "1,2,3,4\n\n1,2,3,4,5,6\n",
         r"line 4, fields: found 6 field\(s\); expected 4 .*needs at least 2"),
        (NAV_HEADER + "1,2,3,4,5\n1,2,3,4\n", r"line 2, fields: found 5 field\(s\); expected 4 ','-sep"),
        ("timestamp [s],depth [m],latitude [deg]\n1,2,3\n",
         r"line 1, column 'longitude \[deg\]': found no such column .*columns found"),
        (NAV_HEADER + "1,2,300,4\n", r"line 2, column 'latitude \[deg\]': found 300.0; expected"),
        ("", r"line 1, header: found an empty file; expected a header row"),
    ],
)
def test_oplab_nav_errors(tmp_path, text, pattern):
    path = tmp_path / "nav.csv"
    path.write_text(text)
    with pytest.raises(NavFormatError, match=pattern):
        read_nav("oplab-nav-csv", path)
    path.write_text(NAV_HEADER)  # a header alone is an empty table
    check_schema(nav := read_nav("oplab-nav-csv", path))
    assert nav.table.empty


def test_read_nav_rejects_unknown_formats_and_stray_column_maps(tmp_path):
    with pytest.raises(ValueError, match="oplab-camera-csv"):
        read_nav("oplab", tmp_path / "x.csv")
    with pytest.raises(ValueError, match="only for format 'csv'"):
        read_nav("ifdo", tmp_path / "x.json", columns={"time": "t"})
