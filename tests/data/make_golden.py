"""Regenerate the golden navigation files under tests/data/ with the real tools' own writers.

CI never runs this script: the files it writes are committed, and tests/test_interop.py reads
them through ``pipeline.readers``. Run it by hand, in a throwaway virtual environment that has
the real tools installed (they are the ``interop`` extra of pyproject.toml; ifdo 1.2.5 needs an
environment of its own because it cannot sit next to ifdo 1.6.0)::

    python -m venv interop-env && interop-env/bin/pip install "oplab-pipeline==1.2.0" \\
        "ifdo==1.6.0" "mariqt==1.0.1"
    python -m venv ifdo125-env && ifdo125-env/bin/pip install "ifdo==1.2.5"
    interop-env/bin/python tests/data/make_golden.py --ifdo125-python ifdo125-env/bin/python

Every golden file sits next to ``<file>.truth.csv`` (image, lat, lon, depth, heading_deg,
unix_time): the poses this script fed the tool, computed here and not read back from the tool's
output. An empty lat/lon/depth means the tool was given no position for that image.

The track: 20 images 1 s apart from 2024-03-13 00:40:46.897 UTC, a vehicle at 1 m/s whose
heading turns from 352 deg through north to 366.25 deg (unwrapped, as an EKF integrates it),
120 m north and 35 m west of the mission origin 43.3 S 147.9 E, depth 40 m and deeper, altitude
about 2 m. Positions are geodesics from the origin on the WGS84 ellipsoid (geographiclib).

Versions used (all installed from the package registry; all three installed without trouble):

- oplab-pipeline 1.2.0 (auv_nav): no function writes a camera CSV without a whole processing
  run (parse + process on raw sensor logs), so the smallest internal pieces that do are called:
  ``EkfState.toSyncedOrientationBodyVelocity`` and ``save_ekf_to_list`` (EKF state to the
  centre record, lat/lon from the origin by ``metres_to_latlon``), ``update_camera_list``
  (camera poses from the EKF list), ``csv_tools.write_csv`` (``auv_ekf_centre.csv``,
  ``auv_ekf_<camera>.csv``), and for ``stereo_pose_est.data`` exactly what ``auv_nav convert
  oplab_to_acfr`` does: the camera CSVs read back with pandas into ``Camera.from_df`` and
  written by ``AcfrStereoPoseWriter``.
- ifdo 1.6.0 (the ``ifdo`` Python package, iFDO v2.2.1 model): ``iFDO(...).save(path)``.
- ifdo 1.2.5: ``iFDO(...).save(path)`` (run by the second interpreter).
- mariqt 1.0.1 (iFDO v2.0.1): the whole small workflow of ``mariqt.sources.ifdo.iFDO`` in a
  temporary folder laid out as mariqt requires (project/event/sensor/raw with placeholder
  image files named <event>_<sensor>_<date>_<time>.jpg): createUuidFile (from a prepared
  uuid list: mariqt reads image UUIDs with exiftool otherwise), createImageSha256File,
  createStartTimeFile, createImageNavigationFile, createImageAttitudeFile, createFields,
  writeIfdoFile.

What the tools did (observed on the output and in their source; tests/data/README.md keeps
the same list):

- oplab camera CSV: ``relative_path`` is whatever the image parser stored; auv_nav's ACFR,
  SeaXerocks and rosbag image parsers store absolute paths of the raw folder on the processing
  machine (parse_acfr_images: ``str(filepath) + "/" + name``), so the golden CSV carries
  absolute paths. Numbers are ``str(float)`` (full precision), 26 columns including
  velocities and ``vehicle_std_*``; a value the pipeline never filled is written ``None``.
  Headings are the EKF's unwrapped yaw in degrees (366.25, not 6.25).
- oplab camera CSV latitude/longitude are the vehicle centre's, not the camera's:
  ``Camera.fromSyncedBodyVelocity`` moves northing/easting by the lever arm but computes
  latitude/longitude from the centre's northing/easting (checked below with a 1.2 m lever
  arm: the northing moves, the latitude does not). The golden files use a zero lever arm.
- oplab EKF centre CSV: the first column is ``timestamp`` (no ``[s]``), 22 columns.
- oplab ``stereo_pose_est.data``: roll, pitch and yaw are written in DEGREES (the camera
  record's ``roll``/``pitch``/``yaw``, unconverted) although the header the writer itself
  prints says radians; oplab's own ``AcfrStereoPoseParser`` converts the field from radians
  (``math.degrees``) and adds 90 deg to yaw, so oplab cannot read its own file back (it reads
  yaw 352 deg as about 20258 deg). Pose ids start at 0; fields are separated by " \\t"; the
  header starts with an empty line; ``ORIGIN_*`` use ``str(float)``. Written as the tool
  writes it: ``stereo_pose_est.data`` (the readers refuse it: "looks like degrees"). The same
  writer given the camera records with roll/pitch/yaw converted to radians (yaw wrapped to
  (-180, 180] deg first), as the format says, writes ``stereo_pose_est_radians.data``.
- ifdo 1.6.0: photos are mappings, a video is a list whose first entry holds its start;
  ``image-datetime`` is written with the header's ``image-datetime-format`` (an item's own
  ``image-datetime-format`` wins for that item) after converting to UTC; no
  ``image-set-local-path`` is written unless given (the iFDO v2.0.1 schema bundled with
  mariqt says its default is ``../raw``); a ``$schema`` key is added at the top level.
- ifdo 1.2.5: every item is a list (a photo is a list of one); ``save()`` writes YAML whatever
  the file suffix, so ``*.json`` holds YAML (ifdo 1.6.0's ``iFDO.load`` then fails on it with
  a JSON error); ``image-datetime-format`` is written to the header but ignored: datetimes are
  always "%Y-%m-%d %H:%M:%S.%f"; the model has no ``image-set-local-path`` (a value passed for
  it is dropped without a word), so its files always need the default.
- mariqt 1.0.1: the header gets ``image-datetime`` (the first image's) and the median of the
  items' ``image-latitude``, ``image-longitude`` and ``image-altitude-meters`` (the v2.0.1
  schema requires them in the header); an image outside the navigation's time span gets no
  position at all, so the header median is the only position the file holds for it; a field
  equal for every item (here ``image-meters-above-ground``) is moved into the header and
  removed from the items (here ``image-meters-above-ground``: this script gives mariqt a
  constant 2 m altitude); latitude/longitude are rounded to 8 decimals; yaw is in (-180, 180]
  (352 deg is written -8.0); ``image-set-local-path`` is ``../raw`` (the raw folder seen from
  products/), filled when the iFDO object is created, so ``setHeaderFields`` (which replaces
  the header) loses it: this script uses ``updateHeaderFields``; JSON with sorted keys.
  mariqt crashes in createFields when the attitude file misses an image (it writes a short
  line for it), so the attitude file covers every image and only the navigation stops early.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import hashlib
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
VERSIONS = {"oplab-pipeline": "1.2.0", "ifdo": "1.6.0", "mariqt": "1.0.1"}
IFDO_OLD = "1.2.5"

ORIGIN = (-43.3, 147.9)
N_IMAGES = 20
T0 = 1710290446.897  # 2024-03-13 00:40:46.897 UTC
MARIQT_ALTITUDE = 2.0
TRUTH_COLUMNS = ["image", "lat", "lon", "depth", "heading_deg", "unix_time"]


# ---- the track -----------------------------------------------------------------------------


def track() -> list[dict]:
    """The 20 poses (local north/east from the origin, lat/lon, depth, heading, time)."""
    from geographiclib.geodesic import Geodesic

    poses, north, east = [], 120.0, -35.0
    for i in range(N_IMAGES):
        heading = 352.0 + 0.75 * i  # unwrapped: 352 .. 366.25
        if i:
            north += math.cos(math.radians(heading))
            east += math.sin(math.radians(heading))
        g = Geodesic.WGS84.Direct(ORIGIN[0], ORIGIN[1], math.degrees(math.atan2(east, north)),
                                  math.hypot(east, north))
        t = round(T0 + i, 3)
        poses.append({
            "i": i, "t": t, "north": north, "east": east, "lat": g["lat2"], "lon": g["lon2"],
            "depth": 40.0 + 0.05 * i, "altitude": 2.0 + 0.01 * i, "roll": 1.5 - 0.1 * i,
            "pitch": -2.0 + 0.05 * i, "heading": heading,
        })
    return poses


def utc(t: float) -> dt.datetime:
    whole = math.floor(t)
    return (dt.datetime.fromtimestamp(whole, tz=dt.UTC)
            + dt.timedelta(microseconds=round((t - whole) * 1e6)))


def acfr_name(t: float, camera: str) -> str:
    when = utc(t)
    return f"PR_{when:%Y%m%d_%H%M%S}_{when.microsecond // 1000:03d}_{camera}.jpg"


def write_truth(path: Path, rows: list[dict]) -> None:
    """``<golden file>.truth.csv``: what the tool was given for every image."""
    with open(path.with_name(path.name + ".truth.csv"), "w", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(TRUTH_COLUMNS)
        for r in rows:
            w.writerow([r["image"], *("" if r.get(k) is None else repr(float(r[k]))
                                      for k in ("lat", "lon", "depth", "heading_deg")),
                        repr(float(r["unix_time"]))])


def truth_row(image: str, p: dict, located: bool = True, has_depth: bool | None = None) -> dict:
    has_depth = located if has_depth is None else has_depth
    return {"image": image, "lat": p["lat"] if located else None,
            "lon": p["lon"] if located else None, "depth": p["depth"] if has_depth else None,
            "heading_deg": p["heading"] % 360.0, "unix_time": p["t"]}


def u4(text: str) -> str:
    """A deterministic version-4 UUID (mariqt accepts only version 4)."""
    return str(uuid.UUID(bytes=hashlib.sha256(text.encode()).digest()[:16], version=4))


def check_versions(names) -> None:
    from importlib.metadata import version

    for name in names:
        want = IFDO_OLD if name == "ifdo-old" else VERSIONS[name]
        got = version("ifdo" if name == "ifdo-old" else name)
        if got != want:
            print(f"warning: {name} {got} installed; the golden files were made with {want}")


# ---- oplab-pipeline --------------------------------------------------------------------------


def make_oplab(out: Path, poses: list[dict]) -> None:
    from types import SimpleNamespace

    import numpy as np
    import pandas as pd
    from auv_nav.localisation.ekf import EkfState, Index, save_ekf_to_list, update_camera_list
    from auv_nav.parsers.acfr_stereo_pose import AcfrStereoPoseParser, AcfrStereoPoseWriter
    from auv_nav.sensors import Camera, SyncedOrientationBodyVelocity
    from auv_nav.tools.csv_tools import write_csv

    out.mkdir(parents=True, exist_ok=True)
    states, dvl = [], []
    for p in poses:
        x = np.zeros((Index.DIM, 1))
        x[Index.X, 0], x[Index.Y, 0], x[Index.Z, 0] = p["north"], p["east"], p["depth"]
        x[Index.ROLL, 0] = math.radians(p["roll"])
        x[Index.PITCH, 0] = math.radians(p["pitch"])
        x[Index.YAW, 0] = math.radians(p["heading"])
        x[Index.VX, 0] = 1.0
        cov = np.diag(np.full(Index.DIM, 0.04))
        states.append(EkfState(p["t"], x, cov))
        d = SyncedOrientationBodyVelocity()
        d.epoch_timestamp, d.altitude = p["t"], p["altitude"]
        dvl.append(d)
    after = SyncedOrientationBodyVelocity()  # save_ekf_to_list interpolates towards the next DVL
    after.epoch_timestamp, after.altitude = poses[-1]["t"] + 1.0, poses[-1]["altitude"]
    dvl.append(after)
    mission = SimpleNamespace(origin=SimpleNamespace(latitude=ORIGIN[0], longitude=ORIGIN[1]))
    ekf = save_ekf_to_list(states, mission, None, dvl, shift_to_origin=False)

    work = Path(tempfile.mkdtemp(prefix="oplab_"))
    write_csv(work, ekf, "auv_ekf_centre")
    raw_images = "/data/raw/2024/ssl_dive07/image"  # as parse_acfr_images stores them
    cams = {}
    for camera in ("LC16", "RC16"):
        listed = []
        for p in poses:
            c = Camera()
            c.epoch_timestamp, c.filename = p["t"], f"{raw_images}/{acfr_name(p['t'], camera)}"
            listed.append(c)
        cams[camera] = update_camera_list(listed, ekf, [0, 0, 0], [0, 0, 0], list(ORIGIN))
        write_csv(work, cams[camera], f"auv_ekf_{camera[:2]}")
    shutil.copy(work / "auv_ekf_centre.csv", out / "auv_ekf_centre.csv")
    shutil.copy(work / "auv_ekf_LC.csv", out / "auv_ekf_LC.csv")
    write_truth(out / "auv_ekf_centre.csv", [truth_row("", p) for p in poses])
    write_truth(out / "auv_ekf_LC.csv",
                [truth_row(f"{raw_images}/{acfr_name(p['t'], 'LC16')}", p) for p in poses])

    # what `auv_nav convert oplab_to_acfr` does: camera CSVs -> Camera.from_df -> writer
    def from_csv(name):
        listed = []
        for _, row in pd.read_csv(work / name).iterrows():
            c = Camera()
            c.from_df(row)
            listed.append(c)
        return listed

    left, right = from_csv("auv_ekf_LC.csv"), from_csv("auv_ekf_RC.csv")
    AcfrStereoPoseWriter(out / "stereo_pose_est.data", *ORIGIN).write(left, right)
    stereo_truth = [truth_row(acfr_name(p["t"], "LC16"), p) for p in poses]
    write_truth(out / "stereo_pose_est.data", stereo_truth)
    for c in (*left, *right):
        c.roll, c.pitch = math.radians(c.roll), math.radians(c.pitch)
        c.yaw = math.radians((c.yaw + 180.0) % 360.0 - 180.0)
    AcfrStereoPoseWriter(out / "stereo_pose_est_radians.data", *ORIGIN).write(left, right)
    write_truth(out / "stereo_pose_est_radians.data", stereo_truth)
    shutil.rmtree(work)

    # verdicts
    back = AcfrStereoPoseParser(out / "stereo_pose_est.data")
    cam1, _ = back.get_cameras()
    print(f"oplab AcfrStereoPoseParser on oplab's own stereo file: yaw {cam1[0].yaw:.1f} deg "
          f"for a heading of {poses[0]['heading']} deg; origin read as "
          f"{back.origin_latitude}, {back.origin_longitude}")
    arm = Camera()
    arm.fromSyncedBodyVelocity(ekf[0], [0, 0, 0], [1.2, 0, 0], list(ORIGIN))
    print(f"oplab camera with a 1.2 m lever arm: northing {ekf[0].northings:.3f} -> "
          f"{arm.northings:.3f}, latitude {ekf[0].latitude:.9f} -> {arm.latitude:.9f}")


# ---- ifdo 1.6.0 ------------------------------------------------------------------------------


def make_ifdo(out: Path, poses: list[dict]) -> None:
    from ifdo import ImageData, ImageSetHeader, iFDO

    products = out / "products"
    products.mkdir(parents=True, exist_ok=True)

    def header(name, **extra):
        return ImageSetHeader(
            image_set_name=name, image_set_uuid=u4(name),
            image_set_handle=f"https://hdl.handle.net/20.500.12085/{u4(name)}", **extra)

    def item(p, located=True, **extra):
        kw = dict(image_datetime=utc(p["t"]), image_altitude_meters=-p["depth"],
                  image_meters_above_ground=p["altitude"],
                  image_camera_yaw_degrees=p["heading"] % 360.0,
                  image_camera_pitch_degrees=p["pitch"], image_camera_roll_degrees=p["roll"])
        if located:
            kw.update(image_latitude=p["lat"], image_longitude=p["lon"])
        kw.update(extra)
        return ImageData(**kw)

    # 1. JSON, default datetime format, no image-set-local-path, a representative header
    #    position (the first image's) and one image (index 7) without a position of its own
    name = "SSL2024_002-1_UOS_CAM-01"
    items, truth = {}, []
    for p in poses:
        key = acfr_name(p["t"], "LC16")
        items[key] = item(p, located=p["i"] != 7)
        truth.append(truth_row(key, p, located=p["i"] != 7, has_depth=True))
    doc = iFDO(image_set_header=header(name, image_latitude=poses[0]["lat"],
                                       image_longitude=poses[0]["lon"]),
               image_set_items=items)
    path = products / f"{name}_iFDO.json"
    doc.save(path)
    write_truth(path, truth)

    # 2. YAML, header image-datetime-format (day first), one item with its own format, one
    #    video (a list; its first entry is its start), an absolute image-set-local-path
    name = "SSL2024_003-1_UOS_CAM-01"
    items, truth = {}, []
    for p in poses:
        key = acfr_name(p["t"], "LC16")
        if p["i"] == 4:
            items[key] = item(p, image_datetime_format="%Y-%m-%dT%H:%M:%S.%f%z")
        elif p["i"] == 9:
            key = key.replace(".jpg", ".mp4")
            later = dict(p, t=p["t"] + 0.5)
            items[key] = [item(p), ImageData(image_datetime=utc(later["t"]),
                                             image_latitude=p["lat"] + 1e-6,
                                             image_longitude=p["lon"])]
        else:
            items[key] = item(p)
        truth.append(truth_row(key, p))
    doc = iFDO(image_set_header=header(name, image_datetime_format="%d/%m/%Y %H:%M:%S.%f",
                                       image_set_local_path="/survey/SSL2024/dive03/raw"),
               image_set_items=items)
    path = products / f"{name}_iFDO.yaml"
    doc.save(path)
    write_truth(path, truth)

    for f in sorted(products.glob("*_iFDO.*")):
        if f.suffix == ".csv":
            continue
        back = iFDO.load(f)
        first = next(iter(back.image_set_items.values()))
        first = first[0] if isinstance(first, list) else first
        print(f"ifdo {VERSIONS['ifdo']} loads {f.name}: {len(back.image_set_items)} items, "
              f"first at {first.image_datetime}")


# ---- ifdo 1.2.5 (second interpreter) -------------------------------------------------------


def make_ifdo_old(out: Path, poses: list[dict]) -> None:
    from ifdo.models import ImageData, ImageSetHeader, iFDO

    products = out / "products"
    products.mkdir(parents=True, exist_ok=True)
    name = "SSL2024_004-1_UOS_CAM-01"
    items, truth = {}, []
    for p in poses:
        key = acfr_name(p["t"], "LC16")
        items[key] = [ImageData(
            image_datetime=utc(p["t"]), image_latitude=p["lat"], image_longitude=p["lon"],
            image_altitude_meters=-p["depth"], image_meters_above_ground=p["altitude"],
            image_camera_yaw_degrees=p["heading"] % 360.0)]
        truth.append(truth_row(key, p))
    doc = iFDO(
        image_set_header=ImageSetHeader(
            image_set_name=name, image_set_uuid=u4(name),
            image_set_handle=f"https://hdl.handle.net/20.500.12085/{u4(name)}",
            image_datetime_format="%d/%m/%Y %H:%M:%S.%f"),  # it has no image-set-local-path
        image_set_items=items)
    path = products / f"{name}_iFDO.json"
    doc.save(path)
    write_truth(path, truth)
    print(f"ifdo {IFDO_OLD} wrote {path.name}; first bytes: {path.read_text()[:20]!r}")


def verdict_new_ifdo_on_old(out: Path) -> None:
    from ifdo import iFDO

    for f in sorted((out / "products").glob("*_iFDO.json")):
        try:
            iFDO.load(f)
            print(f"ifdo {VERSIONS['ifdo']} loads {f.name}")
        except Exception as exc:  # the verdict is what gets recorded
            print(f"ifdo {VERSIONS['ifdo']} fails on {f.name}: {type(exc).__name__}: {exc}")


# ---- mariqt 1.0.1 ----------------------------------------------------------------------------


def make_mariqt(out: Path, poses: list[dict]) -> None:
    import mariqt.directories as miqtd
    import mariqt.sources.ifdo as miqtifdo

    project, event, sensor = "SSL2024", "SSL2024_001-1", "UOS_CAM-01"
    work = Path(tempfile.mkdtemp(prefix="mariqt_"))
    raw = work / project / event / sensor / "raw"
    raw.mkdir(parents=True)
    names = []
    for p in poses:
        when = utc(p["t"])
        name = f"{event}_{sensor}_{when:%Y%m%d_%H%M%S}.{when.microsecond // 1000:03d}.jpg"
        names.append(name)
        (raw / name).write_bytes(b"\xff\xd8\xff\xe0placeholder " + name.encode())
    cwd = os.getcwd()
    os.chdir(work)  # mariqt writes provenance next to where it runs
    try:
        doc = miqtifdo.iFDO(miqtd.Dir("", str(raw) + "/", create=False, with_gear=False),
                            verbose=False, write_tmp_prov_file=False,
                            create_all_type_folders=False)
        set_name = f"{event}_{sensor}"
        doc.updateHeaderFields({
            "image-set-name": set_name, "image-set-uuid": u4(set_name),
            "image-set-handle": f"https://hdl.handle.net/20.500.12085/{u4(set_name)}",
            "image-project": {"name": project}, "image-event": {"name": event},
            "image-sensor": {"name": sensor}, "image-platform": {"name": "UOS_AUV-01"},
            "image-context": {"name": "seafloor-ssl golden files"},
            "image-pi": {"name": "Jane Doe"}, "image-creators": [{"name": "Jane Doe"}],
            "image-license": {"name": "CC-BY-4.0",
                              "uri": "https://creativecommons.org/licenses/by/4.0/"},
            "image-copyright": "seafloor-ssl", "image-abstract": "Golden file for the readers.",
            "image-coordinate-reference-system": "EPSG:4326",
            "image-coordinate-uncertainty-meters": 1.0,
        })
        prefix = doc._getIntFilePrefix()  # the intermediate folder's file prefix
        Path(prefix).parent.mkdir(parents=True, exist_ok=True)
        with open(prefix + "_image-uuids.txt", "w") as fh:
            fh.write("image-filename\timage-uuid\n")
            for name in names:
                fh.write(f"{name}\t{u4(name)}\n")
        doc.createUuidFile(clean=False)
        doc.createImageSha256File()
        doc.createStartTimeFile()
        fmt = "%Y-%m-%d %H:%M:%S.%f"
        nav, att = work / "nav.txt", work / "att.txt"
        with open(nav, "w") as fh:  # the last image is outside the navigation's span
            fh.write("utc\tlat\tlon\tdep\thgt\n")
            for p in poses[:-1]:  # a constant altitude: mariqt moves it into the header
                fh.write(f"{utc(p['t']):{fmt}}\t{p['lat']!r}\t{p['lon']!r}\t{p['depth']!r}\t"
                         f"{MARIQT_ALTITUDE!r}\n")
        with open(att, "w") as fh:
            fh.write("utc\tyaw\tpitch\troll\n")
            for p in poses:
                fh.write(f"{utc(p['t']):{fmt}}\t{p['heading']!r}\t{p['pitch']!r}\t"
                         f"{p['roll']!r}\n")
        print("mariqt:", doc.createImageNavigationFile(
            str(nav), nav_header={"utc": "utc", "lat": "lat", "lon": "lon", "dep": "dep",
                                  "hgt": "hgt"}, date_format=fmt).replace("\n", " | "))
        doc.createImageAttitudeFile(str(att), {"utc": "utc", "yaw": "yaw", "pitch": "pitch",
                                               "roll": "roll"}, 0, 0, 0, date_format=fmt)
        doc.createFields()
        doc.writeIfdoFile()
        written = Path(doc.getIfdoFileName())
    finally:
        os.chdir(cwd)
    products = out / "products"
    products.mkdir(parents=True, exist_ok=True)
    shutil.copy(written, products / written.name)
    write_truth(products / written.name, [truth_row(n, p, located=p["i"] < N_IMAGES - 1)
                                          for n, p in zip(names, poses, strict=True)])
    shutil.rmtree(work)
    head = json.loads((products / written.name).read_text())["image-set-header"]
    print("mariqt header:", {k: head.get(k) for k in (
        "image-datetime", "image-latitude", "image-longitude", "image-altitude-meters",
        "image-meters-above-ground", "image-set-local-path")})


# ---- main ------------------------------------------------------------------------------------


def verdict_mariqt_on_synthetic(paths: list[str]) -> None:
    """mariqt's schema check of iFDO files written by the project's own generator
    (python -m pipeline.synth ...), recorded in synthetic_ifdo_mariqt.txt. mariqt's file-name
    check is reported separately: it expects <event>_<sensor>_<date>_<time> names, and the
    generator writes ACFR-style PR_<date>_<time>_LC16 names."""
    from mariqt.tests import validateIfdo

    lines = [f"mariqt {VERSIONS['mariqt']} on the project's synthetic iFDO files"]
    for path in paths:
        doc = json.loads(Path(path).read_text())
        schema_ok, schema_msg = validateIfdo(doc, check_file_names=False)
        names_ok, names_msg = validateIfdo(doc, check_file_names=True)
        lines.append(f"{Path(path).name}: schema and datetimes: {schema_ok} {schema_msg!r}; "
                     f"file names: {names_ok} {names_msg!r}")
    text = "\n".join(lines) + "\n"
    print(text, end="")
    (HERE / "synthetic_ifdo_mariqt.txt").write_text(text)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ifdo125-python", help="a Python with ifdo==1.2.5 installed")
    ap.add_argument("--synthetic-ifdo", nargs="+", default=None,
                    help="iFDO files written by python -m pipeline.synth: record mariqt's verdict")
    ap.add_argument("--only", choices=["ifdo-1.2.5"], help=argparse.SUPPRESS)
    ap.add_argument("--poses", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.synthetic_ifdo:
        verdict_mariqt_on_synthetic(args.synthetic_ifdo)
        return 0
    if args.only == "ifdo-1.2.5":
        check_versions(["ifdo-old"])
        make_ifdo_old(HERE / f"ifdo_{IFDO_OLD}", json.loads(Path(args.poses).read_text()))
        return 0
    check_versions(VERSIONS)
    poses = track()
    make_oplab(HERE / f"oplab_pipeline_{VERSIONS['oplab-pipeline']}", poses)
    make_ifdo(HERE / f"ifdo_{VERSIONS['ifdo']}", poses)
    make_mariqt(HERE / f"mariqt_{VERSIONS['mariqt']}", poses)
    if args.ifdo125_python:
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as fh:
            json.dump(poses, fh)
        try:
            subprocess.run([args.ifdo125_python, __file__, "--only", "ifdo-1.2.5",
                            "--poses", fh.name], check=True)
        finally:
            os.unlink(fh.name)
        verdict_new_ifdo_on_old(HERE / f"ifdo_{IFDO_OLD}")
    else:
        print(f"skipped ifdo {IFDO_OLD}: pass --ifdo125-python")
    return 0


if __name__ == "__main__":
    sys.exit(main())
