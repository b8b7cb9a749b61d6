"""Faults a hostile tester found in column-mapped CSV navigation, each as a class: one bad row
costs only itself, declared units are checked against the values, a last line cut short is
caught (and a lone end fix off the track is a jump), and the messages of a wrong column map and
of files `init` cannot read say what happened."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import yaml
from surveys import copy_survey, without_root_permissions

from pipeline import reasons
from pipeline.build import build
from pipeline.catalog import load_catalog
from pipeline.dive_checks import NAV_ROW_INVALID
from pipeline.readers import NavFormatError, read_nav
from pipeline.synth import SynthConfig, generate
from pipeline.track import pose_jumps

REPO = Path(__file__).resolve().parents[1]
VEHICLE = "nav/auv_ekf_centre.csv"
CAMERA = "nav/auv_ekf_LC.csv"
VEHICLE_MAP = {"time": "timestamp [s]", "lat": "latitude [deg]", "lon": "longitude [deg]",
               "depth": "depth [m]"}
QUIET = {"workers": 1, "log": lambda *_: None}


@pytest.fixture(scope="module")
def survey(tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile") / "site"
    generate(SynthConfig(out=root, dives=2, images_per_dive=12, seed=8,
                         formats=["oplab-camera-csv"], faults=False, workers=2))
    return root


def _site(survey, tmp_path, nav: dict, name: str = "hostile") -> Path:
    site = copy_survey(survey, tmp_path / "site")
    doc = yaml.safe_load((site / "catalog.yaml").read_text())
    doc.update(name=name, nav=[nav], labels=None)
    (site / "catalog.yaml").write_text(yaml.safe_dump(doc))
    return site


def _vehicle_csv(columns=None) -> dict:
    return {"format": "csv", "path": "{dive}/" + VEHICLE, "columns": columns or VEHICLE_MAP}


def _edit(path: Path, edits: dict[int, object], end: str = "\n") -> None:
    """Replace lines (1-based, the header is line 1): a callable gets the fields of the line
    and returns the new fields, a string is the new line."""
    lines = path.read_text().splitlines()
    for number, edit in edits.items():
        old = lines[number - 1]
        lines[number - 1] = edit if isinstance(edit, str) else ",".join(edit(old.split(",")))
    path.write_text("\n".join(lines) + end)


def _set(position: int, value: str):
    def edit(fields):
        fields[position] = value
        return fields
    return edit


def _hashes(site: Path) -> dict[str, str]:
    """Every input file of the site (the output folder left out) -> its sha256."""
    out = {}
    for p in sorted(site.rglob("*")):
        if p.is_file() and "manifests" not in p.relative_to(site).parts:
            out[p.relative_to(site).as_posix()] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipeline", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=300)


def _tables(site: Path):
    out = site / "manifests"
    return (pq.read_table(out / "locations.parquet").to_pandas(),
            pq.read_table(out / "quarantine.parquet").to_pandas(),
            json.loads((out / "report.json").read_text()))


# ------------------------------------------------------------------ 1. one bad row, one row


def test_bad_rows_of_a_vehicle_log_cost_only_themselves(survey, tmp_path):
    site = _site(survey, tmp_path, _vehicle_csv())
    nav = site / "dive01" / VEHICLE
    header = nav.read_text().splitlines()[0].split(",")
    lat = header.index("latitude [deg]")
    _edit(nav, {21: _set(lat, "95.0"), 41: lambda f: f + ["9"], 61: _set(lat, "forty")})
    before = _hashes(site)
    run = _cli("build", "--catalog", str(site / "catalog.yaml"))
    assert run.returncode == 0, run.stderr
    assert _hashes(site) == before
    loc, quar, report = _tables(site)
    assert len(loc) == 24  # every image of both dives located from the good rows
    rows = quar[quar.reason == NAV_ROW_INVALID].sort_values("source")
    rel = f"dive01/{VEHICLE}"
    assert list(rows.source) == [f"{rel}:21", f"{rel}:41", f"{rel}:61"]
    detail = dict(zip(rows.source, rows.detail, strict=True))
    assert (f"{rel}: line 21, column 'latitude [deg]': found 95.0; expected a WGS84 latitude"
            in detail[f"{rel}:21"])
    assert "line 41, fields: found 11 field(s); expected 10" in detail[f"{rel}:41"]
    assert ("line 61, column 'latitude [deg]': found 'forty'; expected a number in degrees"
            in detail[f"{rel}:61"])
    dropped = report["per_dive"]["dive01"]["nav_rows_dropped"]
    assert {k: dropped.get(k) for k in ("out_of_range_rows", "rows_wrong_field_count",
                                        "bad_value_rows")} == {
        "out_of_range_rows": 1, "rows_wrong_field_count": 1, "bad_value_rows": 1}
    assert not report["per_dive"]["dive02"]["nav_rows_dropped"]
    assert "1 rows_wrong_field_count, 1 bad_value_rows, 1 out_of_range_rows" in run.stdout
    assert "3 row(s) of dive01/nav/auv_ekf_centre.csv left out" in run.stdout


def test_a_bad_row_of_a_per_image_file_costs_only_its_image(survey, tmp_path):
    columns = {"time": "timestamp [s]", "lat": "latitude [deg]", "lon": "longitude [deg]",
               "depth": "depth [m]", "image": "relative_path"}
    site = _site(survey, tmp_path, {"format": "csv", "path": "{dive}/" + CAMERA,
                                    "columns": columns})
    nav = site / "dive01" / CAMERA
    header = nav.read_text().splitlines()[0].split(",")
    rows = pd.read_csv(nav)
    _edit(nav, {4: _set(header.index("latitude [deg]"), "95.0"),
                6: _set(header.index("relative_path"), "")})
    before = _hashes(site)
    build(load_catalog(site / "catalog.yaml"), **QUIET)
    assert _hashes(site) == before
    loc, quar, _ = _tables(site)
    assert len(loc) == 22
    bad_image = "dive01/" + rows["relative_path"].iloc[2]  # line 4
    hit = quar[quar.source == bad_image]
    assert list(hit.reason) == [reasons.NAV_INVALID]
    assert (f"dive01/{CAMERA}: line 4, column 'latitude [deg]': found 95.0; expected a WGS84 "
            "latitude") in hit.detail.iloc[0]
    row = quar[quar.source == f"dive01/{CAMERA}:6"]
    assert list(row.reason) == [NAV_ROW_INVALID]
    assert "line 6, column 'relative_path': found an empty value" in row.detail.iloc[0]
    unnamed = quar[quar.source == "dive01/" + rows["relative_path"].iloc[4]]
    assert list(unnamed.reason) == [reasons.NO_NAV]
    assert "line(s) 6" in unnamed.detail.iloc[0]


def test_a_file_with_more_than_half_bad_rows_is_refused_saying_why(survey, tmp_path):
    site = _site(survey, tmp_path, _vehicle_csv())
    nav = site / "dive01" / VEHICLE
    lat = nav.read_text().splitlines()[0].split(",").index("latitude [deg]")
    n = len(nav.read_text().splitlines())
    _edit(nav, {k: _set(lat, "95.0") for k in range(2, n + 1, 2)} | {3: _set(lat, "95.0")})
    build(load_catalog(site / "catalog.yaml"), **QUIET)
    loc, quar, _ = _tables(site)
    assert set(loc.dive) == {"dive02"} and len(loc) == 12  # the other dive is built
    refused = quar[quar.dive == "dive01"]
    assert set(refused.reason) == {reasons.NAV_UNREADABLE} and len(refused) == 12
    detail = refused.detail.iloc[0]
    assert "line 2, column 'latitude [deg]': found 95.0" in detail
    assert "more than half" in detail and "refused as a whole" in detail


def _vehicle_file(tmp_path, rows: list[str], end: str = "\n") -> Path:
    path = tmp_path / "vehicle.csv"
    path.write_text("t,lat,lon,depth\n" + "\n".join(rows) + end)
    return path


def _good_rows(n: int = 20) -> list[str]:
    return [f"{1.7e9 + k:.3f},{-43.1 + k * 5e-6:.9f},{147.3 + k * 5e-6:.9f},{30 + k * 0.01:.2f}"
            for k in range(n)]


@pytest.mark.parametrize("edit, line, needle", [
    (lambda r: r.replace("-43.0", "95.0"), "line 6, column 'lat': found 95.0", None),
    (lambda r: r + ",1", "line 6, fields: found 5 field(s); expected 4", None),
    (lambda r: ",".join(r.split(",")[:2]), "line 6, fields: found 2 field(s); expected 4", None),
    (lambda r: r.replace(r.split(",")[1], "forty"), "line 6, column 'lat': found 'forty'", None),
    (lambda r: r.replace(r.split(",")[0], "noon"), "line 6, column 't': found 'noon'", None),
    (lambda r: r.replace(r.split(",")[2], "inf"), "line 6, column 'lon': found 'inf'", None),
])
def test_each_kind_of_bad_row_is_left_out_alone(tmp_path, edit, line, needle):
    rows = _good_rows()
    rows[4] = edit(rows[4].replace(rows[4].split(",")[1], "-43.0")) if "95" in line else edit(rows[4])
    nav = read_nav("csv", _vehicle_file(tmp_path, rows), {"time": "t", "lat": "lat", "lon": "lon",
                                                          "depth": "depth"})
    assert [f.line for f in nav.row_faults] == [6]
    assert nav.row_faults[0].detail.startswith(line), nav.row_faults[0].detail
    assert len(nav.table) == 19 and 6 not in set(nav.table["line"])


def test_a_bad_iso_time_is_one_row_and_a_vehicle_log_needs_two_good_rows(tmp_path):
    path = tmp_path / "iso.csv"
    times = [f"2024-03-13T00:40:{k:02d}Z" for k in range(10)]
    times[3] = "2024-03-13T99:40:03Z"
    path.write_text("time,lat,lon\n" + "\n".join(f"{t},-43.1,{147.3 + k * 1e-5:.5f}"
                                                 for k, t in enumerate(times)) + "\n")
    nav = read_nav("csv", path, {"time": "time", "time_unit": "iso8601", "lat": "lat", "lon": "lon"})
    assert [(f.line, f.kind) for f in nav.row_faults] == [(5, "bad_value_rows")]
    assert "found '2024-03-13T99:40:03Z'; expected an ISO 8601" in nav.row_faults[0].detail
    assert len(nav.table) == 9
    short = _vehicle_file(tmp_path, ["1700000000,-43.1,147.3,3", "1700000001,95,147.3,3"])
    with pytest.raises(NavFormatError) as err:
        read_nav("csv", short, {"time": "t", "lat": "lat", "lon": "lon", "depth": "depth"})
    msg = str(err.value)
    assert msg.startswith(f"{short}: line 3, column 'lat': found 95.0")
    assert "leaving 1 good row(s); a vehicle time series needs at least 2" in msg


# ------------------------------------------------------------------ 2. units against values


def _lawnmower(n: int = 120):
    """A 1 m/s track: north 40 s, turn, south 40 s, turn, north: its course in degrees."""
    k = np.arange(n)
    course = np.where(k < 40, 0.0, np.where(k < 80, 180.0, 0.0))
    course[38:42] = np.linspace(0.0, 180.0, 4)
    course[78:82] = np.linspace(180.0, 360.0, 4) % 360.0
    x = np.cumsum(np.sin(np.radians(course))) + 10.0 * (k >= 40) + 10.0 * (k >= 80)
    y = np.cumsum(np.cos(np.radians(course)))
    lat = -43.1 + y / 111_320.0
    lon = 147.3 + x / (111_320.0 * np.cos(np.radians(43.1)))
    return 1.7e9 + k.astype(float), lat, lon, course


def _heading_file(tmp_path, heading) -> Path:
    t, lat, lon, _ = _lawnmower()
    path = tmp_path / "heading.csv"
    pd.DataFrame({"t": t, "lat": lat, "lon": lon, "hdg": heading}).to_csv(path, index=False)
    return path


HEADING_MAP = {"time": "t", "lat": "lat", "lon": "lon", "heading": "hdg"}


def test_headings_declared_in_radians_that_hold_degrees_are_refused(tmp_path):
    course = _lawnmower()[3]
    with pytest.raises(NavFormatError) as err:
        read_nav("csv", _heading_file(tmp_path, course), dict(HEADING_MAP, heading_unit="rad"))
    msg = str(err.value)
    assert "column map key 'heading_unit': found 'rad'" in msg
    assert "column 'hdg' lie beyond 2*pi (up to 300" in msg and "degrees?" in msg
    nav = read_nav("csv", _heading_file(tmp_path, np.radians(course)),
                   dict(HEADING_MAP, heading_unit="rad"))
    np.testing.assert_allclose(nav.table["heading_deg"], course % 360.0, atol=1e-9)
    one = np.radians(course)
    one[10] = 7.5  # a single heading beyond 2*pi is a bad row, not a unit
    nav = read_nav("csv", _heading_file(tmp_path, one), dict(HEADING_MAP, heading_unit="rad"))
    assert [(f.line, f.kind) for f in nav.row_faults] == [(12, "out_of_range_rows")]


@pytest.mark.parametrize("signed", [False, True])
def test_radians_read_as_degrees_on_a_turning_track_are_refused(tmp_path, signed):
    rad = np.radians(_lawnmower()[3])
    if signed:
        rad = np.where(rad > np.pi, rad - 2 * np.pi, rad)
    with pytest.raises(NavFormatError) as err:
        read_nav("csv", _heading_file(tmp_path, rad), HEADING_MAP)
    msg = str(err.value)
    assert "column map key 'heading_unit': found 'deg'" in msg
    assert "lie within +-2*pi" in msg and "radians?" in msg and "heading_unit: rad" in msg


def test_small_degree_headings_that_do_not_follow_the_track_are_accepted(tmp_path):
    # a vehicle holding 3 degrees while it strafes back and forth: degrees it is
    nav = read_nav("csv", _heading_file(tmp_path, np.full(120, 3.0)), HEADING_MAP)
    assert np.allclose(nav.table["heading_deg"], 3.0)
    nav = read_nav("csv", _heading_file(tmp_path, _lawnmower()[3]), HEADING_MAP)
    assert len(nav.table) == 120 and not nav.row_faults


@pytest.mark.parametrize("unit, scale, likely", [("unix_s", 1000, "unix milliseconds?"),
                                                 ("unix_ms", 1, "unix seconds?")])
def test_a_time_unit_the_values_contradict_is_refused(tmp_path, unit, scale, likely):
    rows = [f"{(1_700_000_000 + k) * scale},-43.1,{147.3 + k * 1e-5:.5f},3" for k in range(10)]
    with pytest.raises(NavFormatError) as err:
        read_nav("csv", _vehicle_file(tmp_path, rows), {"time": "t", "time_unit": unit,
                                                        "lat": "lat", "lon": "lon"})
    assert f"column map key 'time_unit': found {unit!r}" in str(err.value)
    assert likely in str(err.value)


def test_a_wrong_heading_unit_is_refused_by_the_build(survey, tmp_path):
    columns = dict(VEHICLE_MAP, heading="heading [deg]", heading_unit="rad")
    site = _site(survey, tmp_path, _vehicle_csv(columns))
    before = _hashes(site)
    run = _cli("build", "--catalog", str(site / "catalog.yaml"))
    assert run.returncode == 2 and "Traceback" not in run.stderr
    assert "column map key 'heading_unit': found 'rad'" in run.stderr
    assert "column 'heading [deg]' lie beyond 2*pi (up to 359.9" in run.stderr
    assert "degrees?" in run.stderr
    assert _hashes(site) == before


# ------------------------------------------------------------------ 3. a last line cut short


def test_a_last_line_cut_mid_longitude_is_quarantined_alone(survey, tmp_path):
    columns = {"time": "timestamp [s]", "lat": "latitude [deg]", "lon": "longitude [deg]",
               "depth": "depth [m]", "image": "relative_path"}
    site = _site(survey, tmp_path, {"format": "csv", "path": "{dive}/nav/poses.csv",
                                    "columns": columns})
    for dive in ("dive01", "dive02"):  # longitude last, as many exports write it
        cam = pd.read_csv(site / dive / CAMERA)
        text = cam[["relative_path", "timestamp [s]", "latitude [deg]", "depth [m]",
                    "longitude [deg]"]].to_csv(index=False, float_format="%.9f")
        (site / dive / "nav" / "poses.csv").write_text(text)
    path = site / "dive01" / "nav" / "poses.csv"
    lines = path.read_text().splitlines()
    head, _, lon = lines[-1].rpartition(",")
    lines[-1] = f"{head},{lon[:-5]}"  # the copy stopped 5 digits early: 147.8999 for 147.899989525
    path.write_text("\n".join(lines))  # and so no newline at the end
    moved = abs(float(lon) - float(lon[:-5])) * 111_320.0 * np.cos(np.radians(43.1))
    assert 5.0 < moved < 10.0  # over r_loc, under a fixed jump threshold of 10 m or more
    before = _hashes(site)
    run = _cli("build", "--catalog", str(site / "catalog.yaml"))
    assert run.returncode == 0, run.stderr
    assert _hashes(site) == before
    loc, quar, report = _tables(site)
    last = "dive01/" + lines[-1].split(",")[0]
    hit = quar[quar.source == last]
    assert list(hit.reason) == [reasons.NAV_INVALID]
    assert f"line {len(lines)}, column 'longitude [deg]': found '{lon[:-5]}'" in hit.detail.iloc[0]
    assert "last line cut short" in hit.detail.iloc[0]
    assert len(loc) == 23 and last not in set(loc.path)
    assert report["per_dive"]["dive01"]["nav_rows_dropped"] == {"cut_last_line_rows": 1}


@pytest.mark.parametrize("cut, needle", [
    (lambda r: r[:-2], "column 'depth': found '30.' with 0 decimal(s) where the"),
    (lambda r: r.rpartition(",")[0], "found 3 of 4 fields and the file ends without a newline"),
    (lambda r: r.rpartition(",")[0] + ",", "column 'depth': found it empty"),
])
def test_a_cut_last_line_of_a_vehicle_log_is_one_row(tmp_path, cut, needle):
    rows = _good_rows()
    rows[-1] = cut(rows[-1])
    nav = read_nav("csv", _vehicle_file(tmp_path, rows, end=""), {"time": "t", "lat": "lat",
                                                                "lon": "lon", "depth": "depth"})
    assert [(f.line, f.kind) for f in nav.row_faults] == [(21, "cut_last_line_rows")]
    assert needle in nav.row_faults[0].detail and "last line cut short" in nav.row_faults[0].detail
    assert len(nav.table) == 19


def test_complete_last_lines_are_not_called_cut(tmp_path):
    columns = {"time": "t", "lat": "lat", "lon": "lon", "depth": "depth"}
    rows = _good_rows()
    rows[-1] = rows[-1][:-1]  # one decimal fewer, but the file ends with a newline
    assert not read_nav("csv", _vehicle_file(tmp_path, rows), columns).row_faults
    rows = _good_rows()  # complete, without a final newline
    assert not read_nav("csv", _vehicle_file(tmp_path, rows, end=""), columns).row_faults
    # a writer that drops trailing zeros: the last value as short as others above it
    rows = [r.rstrip("0").rstrip(".") for r in _good_rows()]
    rows[-1] = rows[-1].rpartition(",")[0] + ",30.1"
    assert not read_nav("csv", _vehicle_file(tmp_path, rows, end=""), columns).row_faults


def _smooth(n: int = 120, seed: int = 0):
    rng = np.random.default_rng(seed)
    t = 1.7e9 + np.arange(n, dtype=float)
    heading = np.cumsum(rng.normal(0, 0.05, n))
    x = np.cumsum(0.8 * np.sin(heading)) + rng.normal(0, 0.2, n)
    y = np.cumsum(0.8 * np.cos(heading)) + rng.normal(0, 0.2, n)
    return t, x, y


@pytest.mark.parametrize("end", [0, -1])
def test_a_lone_end_fix_a_few_metres_off_is_a_jump_by_speed(end):
    t, x, y = _smooth()
    assert not pose_jumps(t, x, y).any()
    x[end] += 6.4  # 6.4 m in one second from a vehicle at 0.8 m/s: beyond its top speed
    got = pose_jumps(t, x, y)
    assert np.flatnonzero(got).tolist() == [len(t) - 1 if end == -1 else 0]
    t, x, y = _smooth()
    x[-3:] += 6.4  # a re-lock three fixes before the end: the track goes on from there
    assert not pose_jumps(t, x, y).any()


# ------------------------------------------------------------------ 4. messages


def test_a_column_map_naming_a_missing_column_says_key_column_and_the_files_columns(
        survey, tmp_path):
    columns = dict(VEHICLE_MAP, lat="Latitude_deg")
    site = _site(survey, tmp_path, _vehicle_csv(columns))
    before = _hashes(site)
    run = _cli("build", "--catalog", str(site / "catalog.yaml"))
    assert run.returncode == 2 and "Traceback" not in run.stderr
    err = run.stderr
    assert "column map key 'lat': found no column 'Latitude_deg' in the header" in err
    assert "'latitude [deg]'" in err and "'timestamp [s]'" in err  # the file's columns
    assert "(nearest: 'latitude [deg]'" in err
    assert _hashes(site) == before


def test_init_says_which_files_and_folders_it_cannot_read(survey, tmp_path):
    site = copy_survey(survey, tmp_path / "site")
    (site / "catalog.yaml").unlink()
    binary = site / "dive02" / VEHICLE
    binary.write_bytes(b"\x00\x01\xff\xfe not a navigation file \x00" * 8)
    before = _hashes(site)
    run = _cli("init", str(site))
    assert run.returncode == 0, run.stderr
    assert f"cannot read dive02/{VEHICLE}: not text" in run.stderr
    assert _hashes(site) == before
    prefix = without_root_permissions()
    if prefix is None:
        pytest.skip("running as root without setpriv: chmod 000 does not stop root reading")
    locked_file = site / "dive01" / CAMERA
    locked_dir = site / "dive02" / "images"
    locked_file.chmod(0)
    locked_dir.chmod(0)
    try:
        run = subprocess.run([*prefix, sys.executable, "-m", "pipeline", "init", str(site)],
                             cwd=REPO, capture_output=True, text=True, timeout=300)
    finally:
        locked_file.chmod(0o644)
        locked_dir.chmod(0o755)
    assert run.returncode == 0 and "Traceback" not in run.stderr, run.stderr
    err = run.stderr
    assert f"cannot read dive01/{CAMERA}: permission denied" in err
    assert "cannot read folder dive02/images: permission denied" in err
    assert "that hold no images: dive02" not in err  # not called empty
    assert _hashes(site) == before


def test_init_takes_the_heading_unit_the_values_show(survey, tmp_path):
    site = copy_survey(survey, tmp_path / "site")
    (site / "catalog.yaml").unlink()
    t, lat, lon, course = _lawnmower()
    for dive in ("dive01", "dive02"):
        start = pd.read_csv(site / dive / VEHICLE)["timestamp [s]"].iloc[0] - 10.0
        for name in (VEHICLE, CAMERA):
            (site / dive / name).unlink()
        pd.DataFrame({"time": start + (t - t[0]), "lat": lat, "lon": lon,
                      "depth": 30.0, "heading": np.radians(course)}).to_csv(
            site / dive / "nav" / "track.csv", index=False)
    run = _cli("init", str(site))
    assert run.returncode == 0, run.stderr
    assert 'heading_unit: "rad"' in run.stdout
    assert "the values contradict the guessed heading_unit, so heading_unit: rad" in run.stderr
