"""Writers for the navigation formats real AUV surveys arrive in.

- oplab-camera-csv: oplab_pipeline's per-camera pose CSV (local northing/easting to a mission
  origin, plus latitude/longitude), one row per image.
- oplab-nav-csv: the vehicle's 10 Hz navigation CSV; images are matched by the timestamp in
  their file names, so their poses need interpolation.
- acfr-stereo-pose: ACFR's ``stereo_pose_est.data`` (VERSION 2).
- ifdo: iFDO v2 JSON (image-set-header + image-set-items keyed by file name).
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

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


def write_ifdo_v2(
    path: Path, dive: str, poses: dict[str, np.ndarray], hashes: dict[str, str], seed: int
) -> None:
    """iFDO v2 JSON: header values are defaults that items override."""
    path.parent.mkdir(parents=True, exist_ok=True)
    ns = uuid.uuid5(uuid.NAMESPACE_URL, f"seafloor-ssl/synth/{seed}")
    set_uuid = uuid.uuid5(ns, dive)
    header = {
        "image-set-name": f"seafloor-ssl synthetic survey {dive}",
        "image-set-uuid": str(set_uuid),
        "image-set-handle": f"urn:uuid:{set_uuid}",
        "image-set-ifdo-version": "v2.1.0",
        "image-set-local-path": "../images",
        "image-coordinate-reference-system": "EPSG:4326",
        "image-acquisition": "photo",
        "image-quality": "raw",
        "image-deployment": "survey",
        "image-navigation": "reconstructed",
        "image-capture-mode": "timer",
        "image-illumination": "artificial light",
        "image-marine-zone": "seafloor",
        "image-meters-above-ground": 2.0,
    }
    items = {}
    for i, rel in enumerate(poses["relative_path"]):
        name = Path(rel).name
        t = float(poses["t"][i])
        when = dt.datetime.fromtimestamp(t, tz=dt.UTC)
        lat, lon = float(poses["lat"][i]), float(poses["lon"][i])
        item = {
            "image-datetime": when.strftime("%Y-%m-%d %H:%M:%S.%f"),
            "image-latitude": None if np.isnan(lat) else round(lat, 9),
            "image-longitude": None if np.isnan(lon) else round(lon, 9),
            # iFDO altitude is relative to sea level: negative below it
            "image-altitude-meters": round(-float(poses["depth_m"][i]), 4),
            "image-meters-above-ground": round(float(poses["altitude_m"][i]), 4),
            "image-camera-yaw-degrees": round(float(poses["heading_deg"][i]), 3),
            "image-camera-pitch-degrees": round(float(poses["pitch_deg"][i]), 3),
            "image-camera-roll-degrees": round(float(poses["roll_deg"][i]), 3),
            "image-uuid": str(uuid.uuid5(set_uuid, name)),
        }
        if name in hashes:
            item["image-hash-sha256"] = hashes[name]
        items[name] = {k: v for k, v in item.items() if v is not None}
    doc = {"image-set-header": header, "image-set-items": items}
    path.write_text(json.dumps(doc, indent=1))
