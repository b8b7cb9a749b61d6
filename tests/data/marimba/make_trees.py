"""Regenerate the marimba dataset trees under tests/data/marimba/ with the ifdo package marimba uses.

CI never runs this script (the trees are committed; tests/test_layouts_real.py builds
catalogs on them). marimba itself needs exiftool, a project and installed pipelines to package
a dataset, so this script does what its packaging step does to the metadata, with the same
ifdo package version marimba pins, and nothing else:

- marimba 1.0.1 (``ifdo>=1.2.5,<1.3``): ``iFDOMetadata.create_dataset_metadata`` builds
  ``iFDO(image_set_header=ImageSetHeader(image_set_name, image_set_uuid, image_set_handle=""),
  image_set_items={<path from the dataset root>: [ImageData, ...]})`` and saves ``to_dict()``
  into ``<dataset>/<name>.json`` (``--metadata-output json``; YAML ``.yml`` by default).
  ``<name>`` is ``ifdo`` at the default metadata level (project) and
  ``<collection>.<pipeline>.ifdo`` at the collection level (``--metadata-level collection``).
- marimba 1.2.0 (``ifdo>=1.6.0,<2``): items keyed by file name, each item's
  ``image-set-local-path`` set to its folder from the dataset root; fields equal in every item
  (the local path too, in a per-collection file) move into the header; saved as
  ``model_dump(mode="json", by_alias=True, exclude_none=True)`` into ``<name>.json``.

Images sit in ``data/<pipeline>/<collection>/`` as marimba packages them. Run, in throwaway
environments::

    python -m venv ifdo125 && ifdo125/bin/pip install "ifdo==1.2.5" pillow
    python -m venv ifdo160 && ifdo160/bin/pip install "ifdo==1.6.0" pillow
    ifdo125/bin/python tests/data/marimba/make_trees.py   # writes marimba_1.0.1/
    ifdo160/bin/python tests/data/marimba/make_trees.py   # writes marimba_1.2.0/

Each tree has ``truth.csv`` (path from the dataset root, lat, lon, depth, heading_deg,
unix_time): the poses given to the writer, computed here.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import math
import shutil
import uuid
from importlib.metadata import version
from pathlib import Path

HERE = Path(__file__).resolve().parent
PIPELINE = "benthic"
COLLECTIONS = {"dive01": (-43.3, 147.9), "dive02": (-43.302, 147.903)}  # start of each track
T0 = dt.datetime(2024, 3, 13, 0, 40, 46, 897000, tzinfo=dt.UTC)
N_IMAGES = 3


def poses() -> list[dict]:
    """Three images per collection, 1 s and about 1 m apart, heading 10 deg and turning."""
    out = []
    for k, (collection, (lat0, lon0)) in enumerate(COLLECTIONS.items()):
        for i in range(N_IMAGES):
            t = T0 + dt.timedelta(hours=k, seconds=i)
            stamp = t.strftime("%Y%m%dT%H%M%S.") + f"{t.microsecond // 1000:03d}Z"
            name = f"CAM_{collection}_{stamp}_{i + 1:04d}.jpg"
            north = i * 1.0
            out.append({
                "collection": collection, "name": name,
                "path": f"data/{PIPELINE}/{collection}/{name}",
                "lat": lat0 + north / 111_132.0, "lon": lon0 + 0.3 * i / (111_320.0 * math.cos(
                    math.radians(lat0))),
                "depth": 40.0 + 0.5 * i, "heading": 10.0 + 5 * i, "t": t,
            })
    return out


def tiny_jpeg(seed: int) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (32, 24), (40 + 30 * seed, 90, 140)).save(buf, "JPEG", quality=60)
    return buf.getvalue()


def write_images(root: Path, ps: list[dict]) -> None:
    for i, p in enumerate(ps):
        f = root / p["path"]
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_bytes(tiny_jpeg(i))


def write_truth(root: Path, ps: list[dict]) -> None:
    with open(root / "truth.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "lat", "lon", "depth", "heading_deg", "unix_time"])
        for p in ps:
            w.writerow([p["path"], repr(p["lat"]), repr(p["lon"]), p["depth"], p["heading"],
                        f"{p['t'].timestamp():.3f}"])


def marimba_101(root: Path, ps: list[dict]) -> None:
    from ifdo.models import ImageData, ImageSetHeader, iFDO

    def image_data(p):
        return ImageData(image_datetime=p["t"].replace(tzinfo=None), image_latitude=p["lat"],
                         image_longitude=p["lon"], image_altitude_meters=-p["depth"],
                         image_camera_yaw_degrees=p["heading"])

    def save(name: str, items: list[dict]) -> None:
        doc = iFDO(image_set_header=ImageSetHeader(image_set_name="SSL-marimba",
                                                   image_set_uuid=str(uuid.uuid4()),
                                                   image_set_handle=""),
                   image_set_items={p["path"]: [image_data(p)] for p in items})
        with open(root / f"{name}.json", "w", encoding="utf-8") as fh:
            json.dump(doc.to_dict(), fh, indent=2)

    save("ifdo", ps)  # the default metadata level: one file for the dataset
    for collection in COLLECTIONS:
        save(f"{collection}.{PIPELINE}.ifdo", [p for p in ps if p["collection"] == collection])


def marimba_120(root: Path, ps: list[dict]) -> None:
    from ifdo import ImageData, ImageSetHeader, iFDO

    def save(name: str, items: list[dict]) -> None:
        data = {}
        for p in items:
            d = ImageData(image_datetime=p["t"], image_latitude=p["lat"], image_longitude=p["lon"],
                          image_altitude_meters=-p["depth"],
                          image_camera_yaw_degrees=p["heading"])
            d.image_set_local_path = str(Path(p["path"]).parent)
            data[p["name"]] = d
        # marimba's header deduplication: a field with one value in every item moves up
        dumped = {k: v.model_dump() for k, v in data.items()}
        common = {f: v for f, v in next(iter(dumped.values())).items()
                  if v is not None and all(d[f] == v for d in dumped.values())}
        for d in data.values():
            for f in common:
                setattr(d, f, None)
        header = ImageSetHeader(image_set_name="SSL-marimba", image_set_uuid=str(uuid.uuid4()),
                                image_set_handle="", **common)
        doc = iFDO(image_set_header=header, image_set_items=data)
        with open(root / f"{name}.json", "w", encoding="utf-8") as fh:
            json.dump(doc.model_dump(mode="json", by_alias=True, exclude_none=True), fh, indent=2)

    save("ifdo", ps)
    for collection in COLLECTIONS:
        save(f"{collection}.{PIPELINE}.ifdo", [p for p in ps if p["collection"] == collection])


def main() -> None:
    ifdo_version = version("ifdo")
    tree = "marimba_1.0.1" if ifdo_version.startswith("1.2.") else "marimba_1.2.0"
    root = HERE / tree
    shutil.rmtree(root, ignore_errors=True)
    ps = poses()
    write_images(root, ps)
    (marimba_101 if tree == "marimba_1.0.1" else marimba_120)(root, ps)
    write_truth(root, ps)
    print(f"ifdo {ifdo_version}: wrote {tree}/ ({len(ps)} images)")


if __name__ == "__main__":
    main()
