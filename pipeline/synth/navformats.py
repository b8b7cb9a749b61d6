"""Writers for the navigation formats real AUV surveys arrive in.

- oplab-camera-csv: oplab_pipeline's per-camera pose CSV (local northing/easting to a mission
  origin, plus latitude/longitude), one row per image.
- oplab-nav-csv: the vehicle's 10 Hz navigation CSV; images are matched by the timestamp in
  their file names, so their poses need interpolation.
- acfr-stereo-pose: ACFR's ``stereo_pose_est.data`` (VERSION 2).
- ifdo: iFDO v2 JSON (image-set-header + image-set-items keyed by file name, each item a
  one-element list); see ``write_ifdo_v2`` for the validators it passes.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import uuid
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from ..schema import load_trainer_module

FORMATS = ("ifdo", "acfr-stereo-pose", "oplab-camera-csv", "oplab-nav-csv")

# Where each format lives inside a dive folder (the catalog's per-dive path templates).
NAV_PATHS = {
    "oplab-camera-csv": "{dive}/nav/auv_ekf_LC.csv",
    "acfr-stereo-pose": "{dive}/nav/stereo_pose_est.data",
    "ifdo": "{dive}/nav/{dive}_iFDO.json",
    "oplab-nav-csv": "{dive}/nav/auv_ekf_centre.csv",
}

OPLAB_CAMERA_HEADER = [
    "relative_path", "northing [m]", "easting [m]", "depth [m]", "roll [deg]", "pitch [deg]",
    "heading [deg]", "altitude [m]", "timestamp [s]", "latitude [deg]", "longitude [deg]",
    "x_velocity [m/s]", "y_velocity [m/s]", "z_velocity [m/s]",
]
OPLAB_NAV_HEADER = [
    "timestamp [s]", "northing [m]", "easting [m]", "depth [m]", "roll [deg]", "pitch [deg]",
    "heading [deg]", "altitude [m]", "latitude [deg]", "longitude [deg]",
]


def image_name(t_unix: float, camera: str = "LC16") -> str:
    """ACFR-style image file name carrying the capture time: PR_YYYYMMDD_HHMMSS_mmm_LC16.jpg."""
    ms = int(round(t_unix * 1000))
    stamp = dt.datetime.fromtimestamp(ms // 1000, tz=dt.UTC)
    return f"PR_{stamp:%Y%m%d_%H%M%S}_{ms % 1000:03d}_{camera}.jpg"


_DECIMALS = {"[deg]": 9, "[m]": 4, "[s]": 3, "[m/s]": 4}


def _write_csv(path: Path, columns: dict[str, np.ndarray]) -> None:
    """Plain CSV with an unquoted header, as the oplab tools write it (pyarrow: fast at 10M rows)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    cols = {}
    for name, values in columns.items():
        unit = name[name.find("["):] if "[" in name else ""
        if unit in _DECIMALS and name != "latitude [deg]" and name != "longitude [deg]":
            values = np.round(np.asarray(values, dtype=np.float64), _DECIMALS[unit if unit != "[deg]" else "[m]"])
        elif unit in _DECIMALS:
            values = np.round(np.asarray(values, dtype=np.float64), _DECIMALS[unit])
        cols[name] = values
    with open(path, "wb") as fh:
        fh.write((",".join(columns) + "\n").encode())
        pacsv.write_csv(pa.table(cols), fh, pacsv.WriteOptions(include_header=False, quoting_style="none"))


def write_oplab_camera_csv(path: Path, poses: dict[str, np.ndarray]) -> None:
    cols = dict(zip(OPLAB_CAMERA_HEADER, [
        poses["relative_path"], poses["north_local"], poses["east_local"], poses["depth_m"],
        poses["roll_deg"], poses["pitch_deg"], poses["heading_deg"], poses["altitude_m"],
        poses["t"], poses["lat"], poses["lon"], poses["vx"], poses["vy"], poses["vz"],
    ], strict=True))
    _write_csv(path, cols)


def write_oplab_nav_csv(path: Path, nav: dict[str, np.ndarray]) -> None:
    cols = dict(zip(OPLAB_NAV_HEADER, [
        nav["t"], nav["north_local"], nav["east_local"], nav["depth_m"], nav["roll_deg"],
        nav["pitch_deg"], nav["heading_deg"], nav["altitude_m"], nav["lat"], nav["lon"],
    ], strict=True))
    _write_csv(path, cols)


def write_acfr_stereo_pose(
    path: Path, poses: dict[str, np.ndarray], origin: tuple[float, float], image_radius_m: np.ndarray
) -> None:
    """ACFR stereo_pose_est.data, VERSION 2: 15 whitespace-separated fields per pose."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [
        "% STEREO_POSE_FILE VERSION 2",
        "%",
        "% Fields: pose id, time (unix s), latitude, longitude, X north (m), Y east (m),",
        "% Z depth (m), X/Y/Z Euler angles (roll, pitch, yaw; radians), left image name,",
        "% right image name, vehicle altitude (m), approx. bounding image radius (m),",
        "% likely trajectory cross-over point (1 for true, 0 for false)",
        "%",
        f"ORIGIN_LATITUDE  {origin[0]:.10f}",
        f"ORIGIN_LONGITUDE {origin[1]:.10f}",
    ]
    left = poses["relative_path"]
    for i in range(len(left)):
        name = Path(left[i]).name
        right = name.replace("_LC16", "_RC16")
        lines.append(
            f"{i + 1} {poses['t'][i]:.3f} {poses['lat'][i]:.10f} {poses['lon'][i]:.10f} "
            f"{poses['north_local'][i]:.4f} {poses['east_local'][i]:.4f} {poses['depth_m'][i]:.4f} "
            f"{np.deg2rad(poses['roll_deg'][i]):.6f} {np.deg2rad(poses['pitch_deg'][i]):.6f} "
            f"{np.deg2rad(poses['heading_deg'][i]):.6f} {name} {right} "
            f"{poses['altitude_m'][i]:.4f} {image_radius_m[i]:.4f} 0"
        )
    path.write_text("\n".join(lines) + "\n")


# The iFDO header fields every image set must carry (the iFDO v2 core): the shared writer's list.
IFDO_REQUIRED_HEADER = load_trainer_module("ifdo").REQUIRED_HEADER
IFDO_VERSION = "v2.1.0"
_GENERATOR = "seafloor-ssl synthetic survey generator (pipeline.synth)"


def ifdo_uuid(seed: int, *parts: str) -> uuid.UUID:
    """A version-4 UUID that is the same on every run: 122 pseudo-random bits from the seed and
    the names (``parts``), with the version and variant bits of a random UUID.

    It depends on the image's name, not its position, so injecting a fault (which drops an
    image) leaves the other images' UUIDs as they were.
    """
    key = "/".join(("seafloor-ssl/synth", str(int(seed)), *parts)).encode()
    return uuid.UUID(bytes=hashlib.sha256(key).digest()[:16], version=4)


def _value(x: float, decimals: int) -> float | None:
    """A rounded float, or None (the key is left out: unknown) for NaN."""
    x = float(x)
    return None if math.isnan(x) else round(x, decimals)


def _default(values: np.ndarray, decimals: int) -> float | None:
    """The header default of a per-image value: the median, when every image has one.

    When some image's value is unknown there is no default (None): the image leaves the key
    out, and a default would stand in for the value it does not have.
    """
    values = np.asarray(values, dtype=np.float64)
    if not values.size or not np.isfinite(values).all():
        return None
    return round(float(np.median(values)), decimals)


def write_ifdo_v2(
    path: Path, dive: str, poses: dict[str, np.ndarray], hashes: dict[str, str], seed: int
) -> None:
    """iFDO v2 JSON that the community's tools accept.

    Header values are defaults that items override. The header carries every required field
    (``IFDO_REQUIRED_HEADER``); its image-datetime is the first image's and its position and
    altitudes the medians over the images (as mariqt fills them). Each item is a one-element
    list ``[{...}]``: the iFDO schema allows an object or a list (whose first entry holds the
    image's values), and the list is the shape every reader takes, ifdo 1.2.5 (which types
    items as lists only and fails on objects) as well as ifdo 1.6 and mariqt. Every item has
    image-uuid (version 4, from ``ifdo_uuid``, so a survey is reproducible from its seed),
    image-handle (``urn:uuid:<image-uuid>``: synthetic images have no download location) and,
    when the image was rendered, image-hash-sha256.

    An unknown value (NaN: the injected ``nan_pose`` fault) is left out of its item, and the
    header then has no default for that field, so no default stands in for it; ``null`` is
    not an option, ifdo 1.2.5 fails on a null latitude or longitude. A survey with such a pose
    therefore lacks the header's required image-latitude/-longitude, which the schema check
    reports; a ``--nav-only`` survey has no images, so its items lack image-hash-sha256.

    Verdicts on surveys of 30 images a dive (seed 0) written by this function:

    - mariqt 1.0.1 (schema ifdo-v2.0.1), ``mariqt.tests.validateIfdo(doc,
      check_file_names=False)``: ``(True, '')`` with no jsonschema error at all. Before this
      writer it failed with 15 missing header fields (image-datetime, -latitude, -longitude,
      -altitude-meters, -coordinate-uncertainty-meters, -context, -project, -event,
      -platform, -sensor, -pi, -creators, -license, -copyright, -abstract), a version-5
      image-set-uuid and, on every item, a version-5 image-uuid and no image-handle. With its
      file-name check on (the default) it says ``(False, "image-set-items ->
      PR_20240313_004046_897_LC16.jpg: invalid file name: invalid equipment type, could not
      parse image file name")``: its naming convention ``<event>_<sensor>_<date>_<time>.<ext>``
      is not the ACFR one the images use. The faulty survey's iFDO files fail on
      ``image-set-header: 'image-latitude' is a required property`` (and -longitude) alone.
    - ifdo 1.2.5: ``iFDO.load`` reads every file, faulty and nav-only ones too (before this
      writer: ``TypeError: string indices must be integers, not 'str'``, items were objects).
    - ifdo 1.6.0: ``iFDO.load`` reads every file (as before).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    set_uuid = ifdo_uuid(seed, dive)
    names = [Path(rel).name for rel in poses["relative_path"]]
    t = np.asarray(poses["t"], dtype=np.float64)

    def when(x: float) -> str:
        return dt.datetime.fromtimestamp(float(x), tz=dt.UTC).strftime("%Y-%m-%d %H:%M:%S.%f")

    first = when(np.min(t)) if len(t) else when(0.0)
    header = {
        "image-set-name": f"seafloor-ssl synthetic survey {dive}",
        "image-set-uuid": str(set_uuid),
        "image-set-handle": f"urn:uuid:{set_uuid}",
        "image-set-ifdo-version": IFDO_VERSION,
        "image-set-local-path": "../images",
        "image-datetime": first,
        "image-latitude": _default(poses["lat"], 9),
        "image-longitude": _default(poses["lon"], 9),
        "image-altitude-meters": _default(-np.asarray(poses["depth_m"], dtype=np.float64), 4),
        "image-coordinate-reference-system": "EPSG:4326",
        # the generator's navigation drifts ~0.2-0.5 m over a 10-minute dive (vehicle.py)
        "image-coordinate-uncertainty-meters": 0.5,
        "image-context": {"name": "seafloor-ssl synthetic AUV surveys"},
        "image-project": {"name": "seafloor-ssl"},
        "image-event": {"name": dive},
        "image-platform": {"name": "synthetic AUV"},
        "image-sensor": {"name": "synthetic downward-looking camera LC16"},
        "image-pi": {"name": _GENERATOR},
        "image-creators": [{"name": _GENERATOR}],
        "image-license": {"name": "CC0-1.0",
                          "uri": "https://creativecommons.org/publicdomain/zero/1.0/"},
        "image-copyright": "None: synthetic images and navigation, generated from a seed.",
        "image-abstract": (
            f"Synthetic AUV image survey, dive {dive}: {len(names)} downward-looking still "
            f"images captured at about 1 Hz from {first} UTC, generated by the seafloor-ssl "
            f"synthetic survey generator with seed {int(seed)}. The vehicle follows a planned "
            "lawn-mower track about 2 m above a procedurally generated seabed of several "
            "habitats; consecutive images overlap. Positions and attitudes are the vehicle's "
            "navigation estimate (the true motion plus dead-reckoning drift and sensor noise), "
            "not the true poses. The data exist to test an image-ingest and self-supervised "
            "learning pipeline: no real seafloor was imaged, and nothing here describes a "
            "real place, cruise, platform or person."
        ),
        "image-acquisition": "photo",
        "image-quality": "raw",
        "image-deployment": "survey",
        "image-navigation": "reconstructed",
        "image-capture-mode": "timer",
        "image-illumination": "artificial light",
        "image-marine-zone": "seafloor",
        "image-meters-above-ground": _default(poses["altitude_m"], 4),
    }
    header = {k: v for k, v in header.items() if v is not None}
    items = {}
    for i, name in enumerate(names):
        image_uuid = ifdo_uuid(seed, dive, name)
        item = {
            "image-datetime": when(t[i]),
            "image-latitude": _value(poses["lat"][i], 9),
            "image-longitude": _value(poses["lon"][i], 9),
            # iFDO altitude is relative to sea level: negative below it
            "image-altitude-meters": _value(-float(poses["depth_m"][i]), 4),
            "image-meters-above-ground": _value(poses["altitude_m"][i], 4),
            "image-camera-yaw-degrees": _value(poses["heading_deg"][i], 3),
            "image-camera-pitch-degrees": _value(poses["pitch_deg"][i], 3),
            "image-camera-roll-degrees": _value(poses["roll_deg"][i], 3),
            "image-uuid": str(image_uuid),
            "image-handle": f"urn:uuid:{image_uuid}",
        }
        if name in hashes:
            item["image-hash-sha256"] = hashes[name]
        items[name] = [{k: v for k, v in item.items() if v is not None}]
    doc = {"image-set-header": header, "image-set-items": items}
    path.write_text(json.dumps(doc, indent=1, allow_nan=False))
