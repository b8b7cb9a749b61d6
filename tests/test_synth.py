"""Properties of the synthetic AUV survey generator (``python -m pipeline.synth``).

Each survey is generated once per module and kept small, so the whole file runs in well under
a minute on two cores. The tests check what the data means (navigation formats that parse,
labels that agree with the habitat map, overlapping frames that show the same seabed, faults
that are really there), not only that files exist.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import json
import math
import re
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from pyproj import Transformer
from scipy.spatial import cKDTree

from pipeline import reasons
from pipeline.synth import SynthConfig, generate
from pipeline.synth.camera import Camera, Renderer, pixel_to_world
from pipeline.synth.seabed import HABITATS, Seabed
from pipeline.synth.survey import SiteFrame

REPO = Path(__file__).resolve().parents[1]

OPLAB_CAMERA_PREFIX = (
    "relative_path,northing [m],easting [m],depth [m],roll [deg],pitch [deg],heading [deg],"
    "altitude [m],timestamp [s],latitude [deg],longitude [deg]"
)
OPLAB_NAV_PREFIX = "timestamp [s],northing [m],easting [m],depth [m]"
NAV_FILES = {
    "ifdo": "nav/{dive}_iFDO.json",
    "acfr-stereo-pose": "nav/stereo_pose_est.data",
    "oplab-camera-csv": "nav/auv_ekf_LC.csv",
}
RAW_NAV = "nav/auv_ekf_centre.csv"
NAME_RE = re.compile(r"^PR_(\d{8})_(\d{6})_(\d{3})_LC16\.jpg$")


# ---- readers written independently of the generator ----------------------------------------


def name_time(name: str) -> float:
    """Capture time (unix s) from a PR_YYYYMMDD_HHMMSS_mmm_LC16.jpg file name."""
    m = NAME_RE.match(Path(name).name)
    assert m, f"unexpected image name {name!r}"
    stamp = dt.datetime.strptime(m[1] + m[2], "%Y%m%d%H%M%S").replace(tzinfo=dt.UTC)
    return stamp.timestamp() + int(m[3]) / 1000.0


def read_acfr(path: Path) -> tuple[tuple[float, float], list[list[str]]]:
    """ACFR stereo_pose_est.data: origin and the 15-field pose rows."""
    origin: dict[str, float] = {}
    rows = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("%"):
            continue
        key = line.split()[0]
        if key in ("ORIGIN_LATITUDE", "ORIGIN_LONGITUDE"):
            origin[key] = float(line.split()[1])
            continue
        fields = line.split()
        assert len(fields) == 15, f"{path.name}: expected 15 fields, got {len(fields)}: {line!r}"
        rows.append(fields)
    assert set(origin) == {"ORIGIN_LATITUDE", "ORIGIN_LONGITUDE"}
    return (origin["ORIGIN_LATITUDE"], origin["ORIGIN_LONGITUDE"]), rows


def read_camera_nav(dive_dir: Path, fmt: str) -> pd.DataFrame:
    """Per-image poses of a dive from its camera-pose file: name, t, lat, lon, depth, alt, heading."""
    path = dive_dir / NAV_FILES[fmt].format(dive=dive_dir.name)
    if fmt == "ifdo":
        doc = json.loads(path.read_text())
        header = doc["image-set-header"]
        recs = []
        for name, value in doc["image-set-items"].items():
            # iFDO: an item is an object or a list whose first entry holds the image's values;
            # header values are defaults for what the item leaves out
            item = {**header, **ifdo_entry(value)}
            when = dt.datetime.strptime(item["image-datetime"], "%Y-%m-%d %H:%M:%S.%f")
            recs.append({
                "name": name, "t": when.replace(tzinfo=dt.UTC).timestamp(),
                "lat": item.get("image-latitude", np.nan), "lon": item.get("image-longitude", np.nan),
                "depth": -item["image-altitude-meters"], "alt": item["image-meters-above-ground"],
                "heading": item["image-camera-yaw-degrees"],
            })
        df = pd.DataFrame(recs)
    elif fmt == "acfr-stereo-pose":
        _, rows = read_acfr(path)
        df = pd.DataFrame({
            "name": [r[10] for r in rows], "t": [float(r[1]) for r in rows],
            "lat": [float(r[2]) for r in rows], "lon": [float(r[3]) for r in rows],
            "depth": [float(r[6]) for r in rows], "alt": [float(r[12]) for r in rows],
            "heading": [math.degrees(float(r[9])) for r in rows],
        })
    else:
        raw = pd.read_csv(path)
        df = pd.DataFrame({
            "name": raw["relative_path"].map(lambda p: Path(p).name), "t": raw["timestamp [s]"],
            "lat": raw["latitude [deg]"], "lon": raw["longitude [deg]"], "depth": raw["depth [m]"],
            "alt": raw["altitude [m]"], "heading": raw["heading [deg]"],
        })
    return df.astype({c: float for c in ("t", "lat", "lon", "depth", "alt", "heading")})


def ifdo_entry(value) -> dict:
    """The image's own values of an iFDO item: the object, or a list's first entry."""
    return value[0] if isinstance(value, list) else value


def read_raw_nav(dive_dir: Path) -> pd.DataFrame:
    return pd.read_csv(dive_dir / RAW_NAV)


def site_xy(survey: dict, lat, lon) -> tuple[np.ndarray, np.ndarray]:
    """Site-local metres east/north of the survey origin from lat/lon."""
    frame = SiteFrame(survey["origin"]["lat"], survey["origin"]["lon"])
    to_utm = Transformer.from_crs("EPSG:4326", f"EPSG:{frame.epsg}", always_xy=True)
    e, n = to_utm.transform(np.asarray(lon, float), np.asarray(lat, float))
    return np.asarray(e) - frame.e0, np.asarray(n) - frame.n0


def world_to_pixel(cam: Camera, pose, wx, wy) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of pixel_to_world: pixel (u, v) of world points for a nadir camera at `pose`."""
    x, y, alt, heading = pose
    gsd = 2 * alt * cam.tan_half_h / cam.width
    h = np.deg2rad(heading)
    dx, dy = np.asarray(wx, float) - x, np.asarray(wy, float) - y
    forward = dx * np.sin(h) + dy * np.cos(h)
    right = dx * np.cos(h) - dy * np.sin(h)
    return right / gsd - 0.5 + cam.width / 2, cam.height / 2 - 0.5 - forward / gsd


def jpgs(dive_dir: Path) -> list[Path]:
    return sorted((dive_dir / "images").glob("*.jpg"))


def dive_dirs(root: Path) -> list[Path]:
    return sorted(p for p in root.glob("dive*") if p.is_dir())


# ---- surveys (one of each per module) -------------------------------------------------------


class Survey:
    def __init__(self, root: Path):
        self.root = root
        self.survey = json.loads((root / "survey.json").read_text())
        self.formats = {d["name"]: d["format"] for d in self.survey["dives"]}
        fpath = root / "faults.json"
        self.faults = json.loads(fpath.read_text()) if fpath.exists() else None
        tpath = root / "truth.csv"
        self.truth = pd.read_csv(tpath) if tpath.exists() else None

    def fault_files(self) -> set[str]:
        """image_id (dive/images/name) of every image named by a fault record."""
        return {f"{f['dive']}/{f['file']}" for f in self.faults["faults"] if "file" in f}

    def faults_of(self, kind: str) -> list[dict]:
        return [f for f in self.faults["faults"] if f["kind"] == kind]


@pytest.fixture(scope="module")
def faulty(tmp_path_factory) -> Survey:
    out = tmp_path_factory.mktemp("faulty")
    generate(SynthConfig(out=out, dives=3, images_per_dive=120, seed=0, faults=True))
    return Survey(out)


@pytest.fixture(scope="module")
def acceptance(tmp_path_factory) -> Survey:
    """The acceptance command, run as a user would from the repo root."""
    out = tmp_path_factory.mktemp("acceptance") / "survey"
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline.synth", "--out", str(out), "--dives", "2",
         "--images-per-dive", "200"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return Survey(out)


@pytest.fixture(scope="module")
def oplab_camera(tmp_path_factory) -> Survey:
    out = tmp_path_factory.mktemp("oplab_camera") / "survey"
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline.synth", "--out", str(out), "--dives", "1",
         "--images-per-dive", "20", "--formats", "oplab-camera-csv"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return Survey(out)


# ---- 1. the acceptance command and the navigation formats ------------------------------------


def test_acceptance_command_dives_and_formats(acceptance):
    names = [d["name"] for d in acceptance.survey["dives"]]
    assert names == ["dive01", "dive02"]
    assert acceptance.formats == {"dive01": "ifdo", "dive02": "acfr-stereo-pose"}
    for d in dive_dirs(acceptance.root):
        assert len(jpgs(d)) == 200
        assert (d / RAW_NAV).is_file()


# iFDO v2 core fields every image set's header must carry, and those every item must carry
# (the required lists of the published iFDO v2.0 JSON schema, which mariqt validates against)
IFDO_HEADER_REQUIRED = (
    "image-set-name", "image-set-uuid", "image-set-handle", "image-set-ifdo-version",
    "image-datetime", "image-latitude", "image-longitude", "image-altitude-meters",
    "image-coordinate-reference-system", "image-coordinate-uncertainty-meters",
    "image-context", "image-project", "image-event", "image-platform", "image-sensor",
    "image-pi", "image-creators", "image-license", "image-copyright", "image-abstract",
)
IFDO_ITEM_REQUIRED = ("image-uuid", "image-hash-sha256", "image-handle")
IFDO_NAMED = ("image-context", "image-project", "image-event", "image-platform", "image-sensor",
              "image-pi", "image-license")
URI_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:\S+$")


def assert_uuid4(value: str, what: str) -> None:
    u = uuid.UUID(value)
    assert u.version == 4 and u.variant == uuid.RFC_4122, f"{what}: {value} is not a version-4 UUID"
    assert str(u) == value, f"{what}: {value} is not in canonical form"


def test_ifdo_validates_and_lists_every_image(acceptance):
    from ifdo import iFDO

    dive = acceptance.root / "dive01"
    path = dive / "nav" / "dive01_iFDO.json"
    doc = iFDO.load(path)  # parses and validates through the ifdo package's model
    assert len(doc.image_set_items) == len(jpgs(dive))

    raw = json.loads(path.read_text())
    items = {name: ifdo_entry(v) for name, v in raw["image-set-items"].items()}
    assert set(items) == {p.name for p in jpgs(dive)}
    alt = np.array([it["image-altitude-meters"] for it in items.values()])
    above = np.array([it["image-meters-above-ground"] for it in items.values()])
    assert (alt < 0).all(), "iFDO altitude is relative to sea level: negative below it"
    assert (above > 0).all()
    assert np.all(-alt > above), "depth below the sea surface exceeds height above the seabed"
    assert all(re.fullmatch(r"[0-9a-f]{64}", it["image-hash-sha256"]) for it in items.values())
    for name in sorted(items)[:: max(1, len(items) // 12)]:
        digest = hashlib.sha256((dive / "images" / name).read_bytes()).hexdigest()
        assert items[name]["image-hash-sha256"] == digest, name
    # item times agree with the capture time in the file names
    for name, it in list(items.items())[:20]:
        when = dt.datetime.strptime(it["image-datetime"], "%Y-%m-%d %H:%M:%S.%f")
        assert abs(when.replace(tzinfo=dt.UTC).timestamp() - name_time(name)) < 0.0015


def test_ifdo_meets_the_community_requirements(acceptance):
    """What mariqt's schema check and ifdo 1.2.5 (marimba's) need: the required header
    fields, version-4 UUIDs, an image-handle on every item, items as lists."""
    from ifdo import iFDO

    dive = acceptance.root / "dive01"
    path = dive / "nav" / "dive01_iFDO.json"
    raw = json.loads(path.read_text())
    header = raw["image-set-header"]
    missing = [k for k in IFDO_HEADER_REQUIRED if header.get(k) in (None, "", [], {})]
    assert not missing, f"required iFDO header fields missing: {missing}"
    assert re.fullmatch(r"v2\.\d+\.\d+", header["image-set-ifdo-version"])
    for key in IFDO_NAMED:
        assert isinstance(header[key], dict) and header[key]["name"], key
    assert header["image-creators"] and all(c["name"] for c in header["image-creators"])
    assert URI_RE.match(header["image-set-handle"])
    dt.datetime.strptime(header["image-datetime"], "%Y-%m-%d %H:%M:%S.%f")
    assert -90 <= header["image-latitude"] <= 90 and -180 <= header["image-longitude"] <= 180

    # items list-shaped: each a list of one object (ifdo 1.2.5 reads only lists)
    values = raw["image-set-items"]
    assert values and all(isinstance(v, list) and len(v) == 1 and isinstance(v[0], dict)
                          for v in values.values())
    entries = [v[0] for v in values.values()]
    for name, it in zip(values, entries, strict=True):
        absent = [k for k in IFDO_ITEM_REQUIRED if not it.get(k)]
        assert not absent, f"{name}: required item fields missing: {absent}"
        assert URI_RE.match(it["image-handle"]), f"{name}: image-handle is not a URI"
    assert_uuid4(header["image-set-uuid"], "image-set-uuid")
    for name, it in zip(values, entries, strict=True):
        assert_uuid4(it["image-uuid"], name)
    uuids = [header["image-set-uuid"]] + [it["image-uuid"] for it in entries]
    assert len(set(uuids)) == len(uuids), "UUIDs are not unique"
    handles = [it["image-handle"] for it in entries]
    assert len(set(handles)) == len(handles), "image handles are not unique"

    # the same, as the ifdo package parses it
    doc = iFDO.load(path)
    h = doc.image_set_header
    assert h.image_set_uuid == header["image-set-uuid"]
    assert h.image_context.name and h.image_project.name and h.image_event.name
    assert h.image_platform.name and h.image_sensor.name and h.image_pi.name
    assert h.image_license.name and h.image_creators and h.image_abstract and h.image_copyright
    assert h.image_latitude is not None and h.image_coordinate_uncertainty_meters is not None
    for name, parsed in doc.image_set_items.items():
        assert isinstance(parsed, list) and len(parsed) == 1, name
        (img,) = parsed
        assert img.image_uuid == values[name][0]["image-uuid"] and img.image_handle, name
        assert img.image_hash_sha256 and img.image_datetime is not None, name
    assert min(img[0].image_datetime for img in doc.image_set_items.values()) == h.image_datetime


def test_ifdo_uuids_are_reproducible_from_the_seed(tmp_path):
    from pipeline.synth import navformats as nf

    n = 5
    t = 1710290446.897 + np.arange(n)
    poses = {
        "relative_path": np.array([f"images/{nf.image_name(x)}" for x in t], dtype=object),
        "t": t, "lat": np.full(n, -43.1), "lon": np.full(n, 147.9), "depth_m": np.full(n, 40.0),
        "altitude_m": np.full(n, 2.0), "heading_deg": np.zeros(n), "pitch_deg": np.zeros(n),
        "roll_deg": np.zeros(n),
    }
    poses["lat"][2] = poses["lon"][2] = np.nan

    def write(name: str, seed: int, dive: str = "dive01", **kw) -> dict:
        path = tmp_path / name
        nf.write_ifdo_v2(path, dive, {**poses, **kw}, {}, seed)
        return json.loads(path.read_text())

    def ids(doc: dict) -> list[str]:
        return [v[0]["image-uuid"] for v in doc["image-set-items"].values()]

    def set_uuid(doc: dict) -> str:
        return doc["image-set-header"]["image-set-uuid"]

    a, b, c = write("a.json", 0), write("b.json", 0), write("c.json", 1)
    assert a == b, "same seed, different iFDO"
    assert ids(a) != ids(c) and set_uuid(a) != set_uuid(c)
    assert set_uuid(write("d.json", 0, dive="dive02")) != set_uuid(a)
    for u in ids(a) + ids(c):
        assert_uuid4(u, "image-uuid")
    # an image's UUID follows its name, not its place in the list
    dropped = write("e.json", 0, **{k: np.delete(v, 1) for k, v in poses.items()})
    assert ids(dropped) == ids(a)[:1] + ids(a)[2:]
    # an unknown position is left out, and the header has no default to stand in for it
    unknown = a["image-set-items"][Path(poses["relative_path"][2]).name][0]
    assert "image-latitude" not in unknown and "image-longitude" not in unknown
    assert "image-latitude" not in a["image-set-header"]
    assert "image-longitude" not in a["image-set-header"]


def test_acfr_stereo_pose_parses(acceptance):
    dive = acceptance.root / "dive02"
    (lat0, lon0), rows = read_acfr(dive / "nav" / "stereo_pose_est.data")
    assert len(rows) == len(jpgs(dive)) == 200
    on_disk = {p.name for p in jpgs(dive)}
    ids = [int(r[0]) for r in rows]
    assert ids == list(range(1, len(rows) + 1))
    local = Transformer.from_crs(
        "EPSG:4326",
        f"+proj=tmerc +lat_0={lat0} +lon_0={lon0} +k=1 +x_0=0 +y_0=0 +ellps=WGS84 +units=m",
        always_xy=True,
    )
    for r in rows:
        assert r[10] in on_disk, f"left image {r[10]} not on disk"
        assert r[11] == r[10].replace("_LC16", "_RC16")
        assert abs(float(r[1]) - name_time(r[10])) < 0.0015
        yaw = float(r[9])
        assert 0 <= yaw < 2 * math.pi + 1e-6, "yaw is in radians"
        assert r[14] in ("0", "1")
        assert 1.0 < float(r[12]) < 3.5 and float(r[13]) > 0
    # X north / Y east are the mission-origin local coordinates of the lat/lon
    lat = np.array([float(r[2]) for r in rows])
    lon = np.array([float(r[3]) for r in rows])
    east, north = local.transform(lon, lat)
    np.testing.assert_allclose([float(r[4]) for r in rows], north, atol=0.01)
    np.testing.assert_allclose([float(r[5]) for r in rows], east, atol=0.01)
    # yaw (radians) is the true heading in degrees, converted
    truth = acceptance.truth.assign(name=lambda d: d["image_id"].map(lambda s: Path(s).name))
    truth = truth.set_index("name").loc[[r[10] for r in rows]]
    dyaw = (np.degrees([float(r[9]) for r in rows]) - truth["heading_deg"].to_numpy() + 180) % 360 - 180
    assert np.abs(dyaw).max() < 3.0


def test_raw_nav_csv_is_10hz(acceptance):
    for d in dive_dirs(acceptance.root):
        path = d / RAW_NAV
        first = path.read_text().splitlines()[0]
        assert first.startswith(OPLAB_NAV_PREFIX)
        with path.open(newline="") as fh:
            rows = list(csv.DictReader(fh))
        assert len(rows) > 1000
        t = np.array([float(r["timestamp [s]"]) for r in rows])
        assert np.median(np.diff(t)) == pytest.approx(0.1, abs=0.005)
        # no faults requested: clean, strictly increasing, no NaN
        assert (np.diff(t) > 0).all()
        for key in ("northing [m]", "easting [m]", "depth [m]", "latitude [deg]"):
            assert all(math.isfinite(float(r[key])) for r in rows), key


def test_oplab_camera_csv_header_and_local_frame(oplab_camera):
    assert oplab_camera.formats == {"dive01": "oplab-camera-csv"}
    path = oplab_camera.root / "dive01" / "nav" / "auv_ekf_LC.csv"
    header = path.read_text().splitlines()[0]
    assert header.startswith(OPLAB_CAMERA_PREFIX)
    df = pd.read_csv(path)
    assert len(df) == 20 == len(jpgs(oplab_camera.root / "dive01"))
    for rel in df["relative_path"]:
        assert (oplab_camera.root / "dive01" / rel).is_file()
    # mission-origin local metres, not UTM eastings/northings
    assert df["northing [m]"].abs().max() < 500
    assert df["easting [m]"].abs().max() < 500
    assert (df["depth [m]"] > 0).all()


# ---- 2. labels agree with the habitat map ------------------------------------------------------


def test_habitat_map_has_all_classes():
    g = np.linspace(-150, 150, 121)
    xx, yy = np.meshgrid(g, g)
    classes = np.unique(Seabed(0).habitat(xx, yy))
    assert len(classes) >= 6
    assert len(HABITATS) >= 6


def test_labels_match_habitat_at_recorded_positions(faulty):
    labels = pd.read_csv(faulty.root / "labels.csv")
    assert set(labels["label"]) <= set(HABITATS)
    assert labels["image_id"].is_unique
    assert len(labels) == len(faulty.truth)
    label = dict(zip(labels["image_id"], labels["label"], strict=True))
    seabed = Seabed(faulty.survey["seed"])
    agree = total = 0
    for d in faulty.survey["dives"]:
        if d["format"] not in NAV_FILES:
            continue
        nav = read_camera_nav(faulty.root / d["name"], d["format"])
        x, y = site_xy(faulty.survey, nav["lat"], nav["lon"])
        ok = np.isfinite(x) & np.isfinite(y)
        hab = np.array(HABITATS)[seabed.habitat(x[ok], y[ok])]
        ids = [f"{d['name']}/images/{n}" for n in nav["name"][ok]]
        agree += sum(label[i] == h for i, h in zip(ids, hab, strict=True))
        total += len(ids)
    assert total > 250
    assert agree / total >= 0.9, f"only {agree}/{total} labels match the habitat at the nav position"

    # and at the true image centres
    t = faulty.truth
    hab = np.array(HABITATS)[seabed.habitat(t["x_m"].to_numpy(), t["y_m"].to_numpy())]
    assert (hab == t["centre_habitat"].to_numpy()).all()
    assert (hab == t["label"].map(str).to_numpy()).mean() >= 0.9


def test_label_is_majority_of_rendered_habitat_map(faulty):
    t = faulty.truth
    renderer = Renderer(Seabed(faulty.survey["seed"]), Camera())
    for _, row in t.iloc[:: max(1, len(t) // 15)].iterrows():
        classes = renderer.habitat_map(row.x_m, row.y_m, row.altitude_m, row.heading_deg)
        assert classes.shape == (240, 320)
        majority = HABITATS[int(np.bincount(classes.ravel(), minlength=len(HABITATS)).argmax())]
        assert row.label == majority, row.image_id


# ---- 3. consecutive frames overlap and show the same seabed ------------------------------------


def _clean_dive_truth(s: Survey, dive: str) -> pd.DataFrame:
    bad = s.fault_files()
    t = s.truth[(s.truth["dive"] == dive) & ~s.truth["image_id"].isin(bad)]
    return t.sort_values("timestamp").reset_index(drop=True)


def test_consecutive_frames_overlap(faulty):
    cam = Camera()
    for d in faulty.survey["dives"]:
        t = _clean_dive_truth(faulty, d["name"])
        step = np.hypot(np.diff(t["x_m"]), np.diff(t["y_m"]))
        heading = np.deg2rad(t["heading_deg"].to_numpy()[:-1])
        along = np.abs(np.diff(t["x_m"]) * np.sin(heading) + np.diff(t["y_m"]) * np.cos(heading))
        length = np.array([cam.footprint_m(a)[1] for a in t["altitude_m"].to_numpy()[:-1]])
        gap = np.diff(t["timestamp"]) < 1.5  # a removed fault frame leaves a 2 s gap
        assert (along[gap] < 0.5 * length[gap]).all(), d["name"]
        assert (step[gap] < 0.5 * length[gap]).all(), d["name"]


def _pair_correlation(s: Survey, a: pd.Series, b: pd.Series, rng) -> tuple[float, float, int]:
    cam = Camera()
    pose_a = (a.x_m, a.y_m, a.altitude_m, a.heading_deg)
    pose_b = (b.x_m, b.y_m, b.altitude_m, b.heading_deg)
    vv, uu = np.mgrid[0 : cam.height : 2, 0 : cam.width : 2].astype(np.float32)
    wx, wy = pixel_to_world(cam, *pose_a, uu, vv)
    ub, vb = world_to_pixel(cam, pose_b, wx, wy)
    ub, vb = np.rint(ub).astype(int), np.rint(vb).astype(int)
    inside = (ub >= 2) & (ub < cam.width - 2) & (vb >= 2) & (vb < cam.height - 2)
    img_a = np.asarray(Image.open(s.root / a.image_id).convert("L"), dtype=float)
    img_b = np.asarray(Image.open(s.root / b.image_id).convert("L"), dtype=float)
    pa = img_a[vv[inside].astype(int), uu[inside].astype(int)]
    pb = img_b[vb[inside], ub[inside]]
    corr = float(np.corrcoef(pa, pb)[0, 1])
    shuffled = float(np.corrcoef(pa, rng.permutation(pb))[0, 1])
    return corr, shuffled, int(inside.sum())


def test_overlapping_pixels_show_same_seabed(faulty):
    rng = np.random.default_rng(0)
    t = _clean_dive_truth(faulty, "dive01")
    dt_ok = np.diff(t["timestamp"]) < 1.5
    dh = np.abs((np.diff(t["heading_deg"]) + 180) % 360 - 180)
    straight = [i for i in np.flatnonzero(dt_ok & (dh < 2.0))]
    assert straight
    for i in straight[:: max(1, len(straight) // 4)][:4]:
        corr, shuffled, n = _pair_correlation(faulty, t.iloc[i], t.iloc[i + 1], rng)
        assert n > 1000
        assert corr > 0.6, f"frames {i},{i + 1}: correlation {corr:.2f}"
        assert abs(shuffled) < 0.2
    # a turn: the vehicle rotates between frames, the seabed must still line up
    turns = np.flatnonzero(dt_ok & (dh > 8.0))
    if len(turns):
        i = int(turns[np.argmax(dh[turns])])
        corr, shuffled, n = _pair_correlation(faulty, t.iloc[i], t.iloc[i + 1], rng)
        assert n > 500
        assert corr > 0.6, f"turn {i},{i + 1} ({dh[i]:.0f} deg): correlation {corr:.2f}"
        assert abs(shuffled) < 0.2


# ---- 4. the revisit dive --------------------------------------------------------------------------


def test_revisit_dive_overlaps_dive01_on_a_later_day(faulty):
    dives = {d["name"]: d for d in faulty.survey["dives"]}
    assert dives["dive02"]["revisits"] == "dive01"
    assert dives["dive01"]["revisits"] is None
    t1 = _clean_dive_truth(faulty, "dive01")
    t2 = _clean_dive_truth(faulty, "dive02")
    tree = cKDTree(t1[["x_m", "y_m"]].to_numpy())
    dist, _ = tree.query(t2[["x_m", "y_m"]].to_numpy())
    assert (dist < 5.0).sum() >= 5, f"closest revisit {dist.min():.1f} m"
    # partly: not every frame of dive02 is over dive01's area
    assert (dist > 5.0).any()

    def days(t):
        return {dt.datetime.fromtimestamp(v, dt.UTC).date() for v in t["timestamp"]}

    assert max(days(t1)) < min(days(t2))
    names1 = {name_time(p.name) for p in jpgs(faulty.root / "dive01")}
    names2 = {name_time(p.name) for p in jpgs(faulty.root / "dive02")}
    assert max(names1) + 86400 / 2 < min(names2)


# ---- 5. realistic navigation ----------------------------------------------------------------------


def test_navigation_rates_and_timing(faulty):
    for d in dive_dirs(faulty.root):
        nav_t = read_raw_nav(d)["timestamp [s]"].to_numpy()
        assert np.median(np.diff(nav_t)) == pytest.approx(0.1, abs=0.005), d.name
        t = _clean_dive_truth(faulty, d.name)["timestamp"].to_numpy()
        assert np.median(np.diff(t)) == pytest.approx(1.0, abs=0.02)
        # image times fall between nav samples: poses need interpolation
        nav_sorted = np.unique(nav_t[np.isfinite(nav_t)])
        k = np.clip(np.searchsorted(nav_sorted, t), 1, len(nav_sorted) - 1)
        nearest = np.minimum(np.abs(t - nav_sorted[k - 1]), np.abs(nav_sorted[k] - t))
        assert (nearest > 0.005).mean() > 0.95, d.name
        # file names carry the capture time recorded in truth.csv
        truth_names = _clean_dive_truth(faulty, d.name)["image_id"].map(name_time).to_numpy()
        np.testing.assert_allclose(truth_names, t, atol=0.0015)


def test_speed_and_altitude(faulty):
    for d in faulty.survey["dives"]:
        t = _clean_dive_truth(faulty, d["name"])
        keep = np.diff(t["timestamp"]) < 1.5
        speed = np.hypot(np.diff(t["x_m"]), np.diff(t["y_m"])) / np.diff(t["timestamp"])
        assert np.median(speed[keep]) == pytest.approx(0.5, abs=0.05)
        assert speed[keep].max() < 0.7
        alt = t["altitude_m"]
        assert alt.between(1.2, 3.0).all()
        assert alt.mean() == pytest.approx(2.0, abs=0.2)
        assert (t["depth_m"] > 30).all()


def test_recorded_positions_drift_from_truth(faulty):
    bad = faulty.fault_files()
    errors = []
    for d in faulty.survey["dives"]:
        if d["format"] not in NAV_FILES:
            continue
        nav = read_camera_nav(faulty.root / d["name"], d["format"])
        nav["image_id"] = d["name"] + "/images/" + nav["name"]
        nav = nav[~nav["image_id"].isin(bad)]
        truth = faulty.truth.set_index("image_id").loc[nav["image_id"]]
        x, y = site_xy(faulty.survey, nav["lat"], nav["lon"])
        err = np.hypot(x - truth["x_m"].to_numpy(), y - truth["y_m"].to_numpy())
        assert np.isfinite(err).all()
        errors.append(err)
        # the nav timestamps are the image capture times
        np.testing.assert_allclose(nav["t"].to_numpy(), truth["timestamp"].to_numpy(), atol=0.0015)
        np.testing.assert_allclose(nav["depth"].to_numpy(), truth["depth_m"].to_numpy(), atol=0.2)
        np.testing.assert_allclose(nav["alt"].to_numpy(), truth["altitude_m"].to_numpy(), atol=0.1)
    err = np.concatenate(errors)
    assert len(err) > 250
    assert np.median(err) > 0.01, "navigation is exactly the truth: no noise or drift"
    assert err.max() < 2.0


def test_survey_origin_matches_site_frame(faulty):
    o = faulty.survey["origin"]
    frame = SiteFrame(o["lat"], o["lon"])
    assert faulty.survey["crs"] == f"EPSG:{frame.epsg}"
    assert (o["easting"], o["northing"]) == pytest.approx((frame.e0, frame.n0), abs=0.05)
    t = faulty.truth
    np.testing.assert_allclose(t["easting"] - frame.e0, t["x_m"], atol=1e-6)
    x, y = site_xy(faulty.survey, t["lat"], t["lon"])
    np.testing.assert_allclose(x, t["x_m"], atol=0.01)
    np.testing.assert_allclose(y, t["y_m"], atol=0.01)


def test_dives_do_not_overlap_in_time(faulty):
    spans = []
    for d in faulty.survey["dives"]:
        t = faulty.truth.loc[faulty.truth["dive"] == d["name"], "timestamp"]
        spans.append((t.min(), t.max(), d["name"]))
    spans.sort()
    for (_, end, a), (start, _, b) in zip(spans, spans[1:], strict=False):
        assert end < start, f"{a} and {b} overlap in time"


# ---- 6. injected faults ---------------------------------------------------------------------------


def test_file_faults(faulty):
    root = faulty.root
    (trunc,) = faulty.faults_of("truncated_jpeg")
    path = root / trunc["dive"] / trunc["file"]
    assert path.stat().st_size > 0
    with pytest.raises(OSError):
        with Image.open(path) as im:
            im.load()
    (empty,) = faulty.faults_of("zero_byte_file")
    assert (root / empty["dive"] / empty["file"]).stat().st_size == 0

    # every other image decodes
    broken = {trunc["dive"] + "/" + trunc["file"], empty["dive"] + "/" + empty["file"]}
    sample = faulty.truth["image_id"][~faulty.truth["image_id"].isin(broken)].iloc[::10]
    for image_id in sample:
        with Image.open(root / image_id) as im:
            im.load()


def test_images_outside_nav_span(faulty):
    faults = faulty.faults_of("image_before_nav_span") + faulty.faults_of("image_after_nav_span")
    assert {f["kind"] for f in faults} == {"image_before_nav_span", "image_after_nav_span"}
    for f in faults:
        assert f["expected_reason"] == reasons.OUTSIDE_NAV_SPAN
        path = faulty.root / f["dive"] / f["file"]
        assert path.is_file() and path.stat().st_size > 0
        nav_t = read_raw_nav(faulty.root / f["dive"])["timestamp [s]"]
        t = name_time(f["file"])
        if f["kind"] == "image_before_nav_span":
            assert t < nav_t.min()
        else:
            assert t > nav_t.max()
        # not in the dive's camera-pose file either
        fmt = faulty.formats[f["dive"]]
        if fmt in NAV_FILES:
            assert Path(f["file"]).name not in set(read_camera_nav(faulty.root / f["dive"], fmt)["name"])


def test_pose_faults_in_nav_files(faulty):
    (missing,) = faulty.faults_of("image_without_navigation")
    assert missing["expected_reason"] == reasons.NO_NAV
    dive = faulty.root / missing["dive"]
    assert (dive / missing["file"]).is_file()
    names = set(read_camera_nav(dive, faulty.formats[missing["dive"]])["name"])
    assert Path(missing["file"]).name not in names
    # inside the nav time span: only its pose is missing
    nav_t = read_raw_nav(dive)["timestamp [s]"]
    assert nav_t.min() < name_time(missing["file"]) < nav_t.max()

    nan_faults = faulty.faults_of("nan_pose")
    jump_faults = faulty.faults_of("gps_jump_pose")
    assert nan_faults and jump_faults
    for f in nan_faults:
        assert f["expected_reason"] == reasons.NAV_INVALID
        nav = read_camera_nav(faulty.root / f["dive"], faulty.formats[f["dive"]])
        row = nav[nav["name"] == Path(f["file"]).name]
        assert len(row) == 1
        assert row[["lat", "lon"]].isna().all(axis=None)
    truth = faulty.truth.set_index("image_id")
    for f in jump_faults:
        assert f["expected_reason"] == reasons.NAV_JUMP
        nav = read_camera_nav(faulty.root / f["dive"], faulty.formats[f["dive"]])
        row = nav[nav["name"] == Path(f["file"]).name]
        assert len(row) == 1
        x, y = site_xy(faulty.survey, row["lat"], row["lon"])
        true = truth.loc[f"{f['dive']}/{f['file']}"]
        dist = float(np.hypot(x[0] - true.x_m, y[0] - true.y_m))
        assert dist == pytest.approx(f["metres"], abs=2.0)


def test_raw_nav_faults(faulty):
    for d in dive_dirs(faulty.root):
        nav = read_raw_nav(d)
        t = nav["timestamp [s]"].to_numpy()
        assert nav[["latitude [deg]", "longitude [deg]", "northing [m]"]].isna().any(axis=1).sum() >= 3
        assert nav["timestamp [s]"].duplicated().any(), d.name
        assert (np.diff(t) < 0).any(), d.name
        # a short GPS jump: consecutive fixes tens of metres apart
        step = np.hypot(np.diff(nav["northing [m]"]), np.diff(nav["easting [m]"]))
        assert np.nanmax(step) > 20
        kinds = {f["kind"] for f in faulty.faults["faults"] if f["dive"] == d.name}
        assert {"nav_nan_rows", "nav_duplicate_timestamps", "nav_out_of_order"} <= kinds


def test_faults_json_bookkeeping(faulty):
    doc = faulty.faults
    assert doc["faults_injected"] is True
    counts: dict[str, int] = {}
    for f in doc["faults"]:
        assert f["expected_reason"] is None or f["expected_reason"] in reasons.ALL
        if f["expected_reason"]:
            counts[f["expected_reason"]] = counts.get(f["expected_reason"], 0) + 1
    assert doc["expected_quarantine"] == counts
    on_disk = {d.name: len(jpgs(d)) for d in dive_dirs(faulty.root)}
    assert doc["images_on_disk"] == on_disk
    assert doc["expected_locations"] == sum(on_disk.values()) - sum(counts.values())
    assert len(faulty.truth) == sum(on_disk.values())
    for image_id in faulty.fault_files():
        assert (faulty.root / image_id).is_file(), image_id


def test_no_faults_without_flag(acceptance):
    doc = acceptance.faults
    assert doc["faults_injected"] is False
    assert doc["faults"] == []
    assert doc["expected_quarantine"] == {}
    for d in dive_dirs(acceptance.root):
        files = jpgs(d)
        assert doc["images_on_disk"][d.name] == len(files)
        assert all(p.stat().st_size > 0 for p in files)
        for p in files[::25]:
            with Image.open(p) as im:
                im.load()
        nav = read_raw_nav(d)
        assert not nav.isna().any(axis=None)
        assert not nav["timestamp [s]"].duplicated().any()


# ---- 7. determinism ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory) -> list[Path]:
    outs = []
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        out = tmp_path_factory.mktemp(f"tiny_{name}")
        generate(SynthConfig(out=out, dives=1, images_per_dive=30, seed=seed))
        outs.append(out)
    return outs


def _nav_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.glob("dive*/nav/*"))}


def test_same_seed_is_byte_identical(tiny_runs):
    a, b, _ = tiny_runs
    assert (a / "labels.csv").read_bytes() == (b / "labels.csv").read_bytes()
    assert (a / "truth.csv").read_bytes() == (b / "truth.csv").read_bytes()
    nav_a, nav_b = _nav_bytes(a), _nav_bytes(b)
    assert len(nav_a) >= 2
    assert nav_a == nav_b
    imgs_a = {p.name: p.read_bytes() for p in jpgs(a / "dive01")}
    imgs_b = {p.name: p.read_bytes() for p in jpgs(b / "dive01")}
    assert imgs_a == imgs_b


def test_different_seed_differs(tiny_runs):
    a, _, c = tiny_runs
    assert (a / "labels.csv").read_bytes() != (c / "labels.csv").read_bytes()
    nav_a, nav_c = _nav_bytes(a), _nav_bytes(c)
    assert nav_a.keys() == nav_c.keys()
    assert all(nav_a[k] != nav_c[k] for k in nav_a)


# ---- 8. --nav-only ----------------------------------------------------------------------------------


def test_nav_only_one_pose_per_square_metre(tmp_path):
    out = tmp_path / "navonly"
    generate(SynthConfig(out=out, dives=2, images_per_dive=5000, seed=0, nav_only=True,
                         formats=["oplab-camera-csv"]))
    assert not list(out.rglob("*.jpg"))
    for d in dive_dirs(out):
        images = d / "images"
        assert not images.exists() or not any(images.iterdir())
    survey = json.loads((out / "survey.json").read_text())
    xs, ys = [], []
    for d in dive_dirs(out):
        nav = read_camera_nav(d, "oplab-camera-csv")
        assert len(nav) == 5000
        assert nav[["lat", "lon"]].notna().all(axis=None)
        x, y = site_xy(survey, nav["lat"], nav["lon"])
        xs.append(x)
        ys.append(y)
    x, y = np.concatenate(xs), np.concatenate(ys)
    area = (x.max() - x.min()) * (y.max() - y.min())
    assert len(x) / 2 < area < 2 * len(x), f"{len(x)} poses over {area:.0f} m2"


def test_nav_only_default_formats(tmp_path):
    out = tmp_path / "navonly"
    generate(SynthConfig(out=out, dives=2, images_per_dive=200, seed=0, nav_only=True))
    survey = json.loads((out / "survey.json").read_text())
    assert not list(out.rglob("*.jpg"))
    for d in survey["dives"]:
        nav = read_camera_nav(out / d["name"], d["format"])
        assert len(nav) == 200


# ---- 9. image formation ----------------------------------------------------------------------------


def _clean_image_ids(s: Survey) -> list[str]:
    bad = s.fault_files()
    return [i for i in s.truth["image_id"] if i not in bad]


def test_red_attenuates_first(faulty):
    ids = _clean_image_ids(faulty)[::12]
    assert len(ids) >= 20
    for image_id in ids:
        rgb = np.asarray(Image.open(faulty.root / image_id).convert("RGB"), dtype=float)
        r, g, b = rgb.reshape(-1, 3).mean(axis=0)
        assert r < g and r < b, f"{image_id}: mean RGB {r:.0f} {g:.0f} {b:.0f}"


def test_default_image_size(faulty):
    for image_id in _clean_image_ids(faulty)[::30]:
        with Image.open(faulty.root / image_id) as im:
            assert im.size == (320, 240)
            assert im.format == "JPEG"
    assert faulty.survey["image_size"] == [320, 240]


def test_size_option(tmp_path):
    out = tmp_path / "big"
    generate(SynthConfig(out=out, dives=1, images_per_dive=20, seed=0, size=(640, 480)))
    files = jpgs(out / "dive01")
    assert len(files) == 20
    for p in files:
        with Image.open(p) as im:
            assert im.size == (640, 480)


def test_vignetting(faulty):
    ids = _clean_image_ids(faulty)[::8]
    corner, centre = [], []
    for image_id in ids:
        gray = np.asarray(Image.open(faulty.root / image_id).convert("L"), dtype=float)
        h, w = gray.shape
        k = 24
        corners = [gray[:k, :k], gray[:k, -k:], gray[-k:, :k], gray[-k:, -k:]]
        corner.append(np.mean([c.mean() for c in corners]))
        centre.append(gray[h // 2 - k : h // 2 + k, w // 2 - k : w // 2 + k].mean())
    assert np.mean(corner) < 0.85 * np.mean(centre)
    assert (np.array(corner) < np.array(centre)).mean() > 0.8
