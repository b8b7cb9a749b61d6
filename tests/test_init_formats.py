"""Acceptance: a two-dive survey in each navigation format real ROVs, towed cameras and
annotation tools write goes from `pipeline init --write` to a right `pipeline build`, with no
hand edits, and image names in each common time-stamp style."""

from __future__ import annotations

import calendar
import datetime as dt
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
T0 = calendar.timegm((2022, 8, 15, 11, 32, 30))
LAT0, LON0 = -43.12, 147.33
M_PER_DEG = 111_195.0
NAME_STYLES = ("PR_%Y%m%d_%H%M%S_000_LC16.jpg", "%Y_%m_%d_%H-%M-%S.JPG", "%Y%m%d%H%M%S.JPG")


def track(dive: int, t: np.ndarray):
    """A vehicle at 0.5 m/s heading north-east; each dive starts 60 m further east."""
    s = 0.5 * (t - T0) / np.sqrt(2)
    lat = LAT0 + s / M_PER_DEG
    lon = LON0 + (s + 60.0 * dive) / (M_PER_DEG * np.cos(np.radians(LAT0)))
    depth = 30.0 + 0.01 * (t - T0)
    return lat, lon, depth


def _stamp(t: float, fmt: str) -> str:
    return dt.datetime.fromtimestamp(t, dt.UTC).strftime(fmt)


def write_qgc(path, lat, lon, depth, t):
    rows = ["Timestamp,heading,altitudeRelative,gps.lat,gps.lon,gps.hdop"]
    rows.append(f"{_stamp(t[0] - 1, '%Y-%m-%d %H:%M:%S.%f')[:-3]},--.--,--.--,--.--,--.--,--.--")
    rows += [f"{_stamp(ti, '%Y-%m-%d %H:%M:%S.%f')[:-3]},45.0,{-d:.3f},{a:.8f},{o:.8f},1.1"
             for ti, a, o, d in zip(t, lat, lon, depth, strict=True)]
    path.write_text("\n".join(rows) + "\n")


def write_towed(path, lat, lon, depth, t):
    rows = ["recorded_time,UsblLatitude,UsblLongitude,Pres,Altitude,Temp"]
    rows += [f"{_stamp(ti, '%d/%m/%Y %H:%M:%S.%f')[:-3]},{a:.8f},{o:.8f},{d / 0.9932:.3f},2.1,11.2"
             for ti, a, o, d in zip(t, lat, lon, depth, strict=True)]
    path.write_text("\n".join(rows) + "\n")


def write_waterlinked(path, lat, lon, depth, t):
    rows = ["timestamp,lat,lon,cog,hdop,numsats,orientation,sog,fix_quality"]
    rows += [f"{ti:.3f},{a:.8f},{o:.8f},45.0,0.9,11,45.0,0.5,1"
             for ti, a, o in zip(t, lat, lon, strict=True)]
    path.write_text("\n".join(rows) + "\n")


def write_split(path, lat, lon, depth, t):
    rows = ["Date,Time,Latitude,Longitude,Depth,Heading"]
    rows += [f"{dt.datetime.fromtimestamp(ti, dt.UTC):%-m/%-d/%Y},{_stamp(ti, '%H:%M:%S')},"
             f"{a:.8f},{o:.8f},{d:.2f},45.0" for ti, a, o, d in zip(t, lat, lon, depth, strict=True)]
    path.write_text("\n".join(rows) + "\n")


WRITERS = {"qgc": ("telemetry.csv", write_qgc), "towed": ("tow_export.csv", write_towed),
           "waterlinked": ("ugps_position_log.csv", write_waterlinked),
           "split": ("rov_log.csv", write_split)}


def _image(path: Path, k: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(k)
    Image.fromarray(rng.integers(0, 255, (24, 32, 3), dtype=np.uint8)).save(path, quality=80)


def make_survey(root: Path, fmt: str) -> dict[str, tuple[float, float, float]]:
    """Two dives, a 1 Hz log each and an image every 4 s; returns path -> (t, lat, lon)."""
    truth = {}
    name, writer = WRITERS[fmt]
    for d in (1, 2):
        t = T0 + 1000.0 * d + np.arange(0, 200, 1.0)
        lat, lon, depth = track(d, t)
        folder = root / f"dive{d:02d}"
        (folder / "nav").mkdir(parents=True)
        writer(folder / "nav" / name, lat, lon, depth, t)
        ti = T0 + 1000.0 * d + np.arange(10, 190, 4.0)
        ilat, ilon, _ = track(d, ti)
        for k, (tk, a, o) in enumerate(zip(ti, ilat, ilon, strict=True)):
            rel = f"dive{d:02d}/images/{_stamp(tk, NAME_STYLES[(k + d) % 3])}"
            _image(root / rel, k)
            truth[rel] = (tk, a, o)
    return truth


def _run(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipeline", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("fmt", sorted(WRITERS))
def test_a_vehicle_log_survey_goes_from_init_to_a_right_build(tmp_path, fmt):
    root = tmp_path / "survey"
    truth = make_survey(root, fmt)
    init = _run("init", str(root), "--write")
    assert init.returncode == 0, init.stderr + init.stdout
    build = _run("build", "--catalog", str(root / "catalog.yaml"), "--workers", "1")
    assert build.returncode == 0, build.stderr + build.stdout
    loc = pq.read_table(root / "manifests" / "locations.parquet").to_pandas()
    quar = pq.read_table(root / "manifests" / "quarantine.parquet").to_pandas()
    assert quar.empty, quar.head().to_string()
    assert sorted(loc["path"]) == sorted(truth)
    want = pd.DataFrame.from_dict(truth, orient="index", columns=["t", "lat", "lon"])
    got = loc.set_index("path").loc[want.index]
    north = (got["lat"] - want["lat"]) * M_PER_DEG
    east = (got["lon"] - want["lon"]) * M_PER_DEG * np.cos(np.radians(LAT0))
    assert np.hypot(north, east).max() < 0.5
    secs = got["timestamp"].astype("int64").to_numpy() / 1e6
    assert np.abs(secs - want["t"].to_numpy()).max() < 1e-3
    report = json.loads((root / "manifests" / "report.json").read_text())
    if fmt == "waterlinked":  # a position log without depth: null depths, and the summary says so
        assert loc["depth_m"].isna().all()
        assert all("no depth" in " ".join(d["warnings"]) for d in report["per_dive"].values())
    else:  # depth positive down, whatever the file's sign or unit
        expect = 30.0 + 0.01 * (want["t"].to_numpy() - T0)
        assert np.abs(got["depth_m"].to_numpy() - expect).max() < 0.5


def test_biigle_metadata_per_dive_goes_from_init_to_a_right_build(tmp_path):
    root = tmp_path / "survey"
    truth = {}
    for d in (1, 2):
        rows = ["filename,taken_at,lng,lat,gps_altitude,distance_to_ground,area,yaw"]
        t = T0 + 1000.0 * d + np.arange(0, 60, 3.0)
        lat, lon, depth = track(d, t)
        for k, (tk, a, o, z) in enumerate(zip(t, lat, lon, depth, strict=True)):
            name = f"img_{k:04d}.jpg"
            _image(root / f"dive{d:02d}" / "images" / name, k)
            rows.append(f"{name},{_stamp(tk, '%Y-%m-%d %H:%M:%S')},{o:.8f},{a:.8f},{-z:.2f},2.0,3.1,45")
            truth[f"dive{d:02d}/images/{name}"] = (tk, a, o, z)
        (root / f"dive{d:02d}" / "metadata.csv").write_text("\n".join(rows) + "\n")
    init = _run("init", str(root), "--write")
    assert init.returncode == 0, init.stderr + init.stdout
    assert "biigle-csv" in (root / "catalog.yaml").read_text()
    build = _run("build", "--catalog", str(root / "catalog.yaml"), "--workers", "1")
    assert build.returncode == 0, build.stderr + build.stdout
    loc = pq.read_table(root / "manifests" / "locations.parquet").to_pandas().set_index("path")
    assert sorted(loc.index) == sorted(truth)
    for path, (tk, a, o, z) in truth.items():
        row = loc.loc[path]
        assert abs(row["lat"] - a) * M_PER_DEG < 0.5 and abs(row["lon"] - o) * M_PER_DEG < 0.5
        assert abs(row["timestamp"].timestamp() - tk) < 1e-3
        assert row["depth_m"] == pytest.approx(z, abs=0.01)  # positive down


def test_a_coralnet_style_metadata_file_with_dates_only_builds_and_says_so(tmp_path):
    # CoralNet's image metadata: Name, Date (no time of day), Latitude, Longitude, Depth, ...
    root = tmp_path / "survey"
    truth = {}
    for d in (1, 2):
        rows = ["Name,Date,Aux1,Aux2,Height (cm),Latitude,Longitude,Depth,Camera,Comments"]
        lat, lon, depth = track(d, T0 + 1000.0 * d + np.arange(0, 80, 4.0))
        for k, (a, o, z) in enumerate(zip(lat, lon, depth, strict=True)):
            name = f"quadrat_{k:03d}.JPG"
            _image(root / f"dive{d:02d}" / "photos" / name, k)
            rows.append(f"{name},2022-08-15,site {d},T{k % 3},50,{a:.8f},{o:.8f},{z:.1f},GoPro,")
            truth[f"dive{d:02d}/photos/{name}"] = (a, o)
        (root / f"dive{d:02d}" / "metadata.csv").write_text("\n".join(rows) + "\n")
    init = _run("init", str(root), "--write")
    assert init.returncode == 0, init.stderr + init.stdout
    build = _run("build", "--catalog", str(root / "catalog.yaml"), "--workers", "1")
    assert build.returncode == 0, build.stderr + build.stdout
    loc = pq.read_table(root / "manifests" / "locations.parquet").to_pandas().set_index("path")
    assert sorted(loc.index) == sorted(truth)
    for path, (a, o) in truth.items():
        assert abs(loc.loc[path, "lat"] - a) * M_PER_DEG < 0.5
        assert abs(loc.loc[path, "lon"] - o) * M_PER_DEG < 0.5
    report = json.loads((root / "manifests" / "report.json").read_text())
    for d in report["per_dive"].values():
        assert any("time order and jumps were not checked" in w for w in d["warnings"])
    assert "time order and jumps were not checked" in build.stdout
