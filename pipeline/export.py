"""Exports of a built site: ``python -m pipeline export ifdo --catalog C [--out F]`` writes an
iFDO v2 file of the located images into the site's output folder.

The file is written by the project's one iFDO writer (``ssl/ifdo.py``, loaded by path like the
contract) from the published ``locations.parquet``: times, positions, depth, altitude and heading
as the build located them, one item per image. Items are keyed by file name, with
``image-set-local-path`` the image's folder relative to the iFDO file (per item when the dives'
folders differ); when two dives hold the same file name, every key is the image's path from the
catalog root instead and the local path is the root. ``image-hash-sha256`` is the SHA-256 of the
original file under the catalog root (every file is read; ``--no-hash`` leaves them out, and a
file that is gone is counted). The header takes the catalog's name (set name, project, event:
each dive is its items' event) and ``nav_checks.position_noise_m`` as the coordinate
uncertainty; the fields the catalog does not hold (PI, creators, licence, ...) are written as
"unknown" and listed in the summary line, to be completed before the file is published.

The file goes into the output folder like the survey map: recorded as the builder's in its
marker, written atomically, under the build lock, never over a file the builder did not write,
never outside a folder the builder made for this catalog.
"""

from __future__ import annotations

import os
import posixpath
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from . import schema
from .build import acquire, lock, write_extra
from .catalog import Catalog
from .output import claim, read_json

ifdo = schema.load_trainer_module("ifdo")

COLUMNS = ("image_id", "dive", "path", "timestamp", "lat", "lon", "depth_m", "altitude_m",
           "heading_deg")


class ExportError(ValueError):
    """An export that cannot be made; the message says what was found and what to do."""


def target(cat: Catalog, out: str | None) -> Path:
    """The iFDO file ``--out`` names (default ``<catalog>_iFDO.json`` in the catalog's output
    folder; a relative name is taken in that folder), checked: an iFDO file name, directly in a
    folder the pipeline built for ``cat``."""
    default = cat.output / f"{cat.name}{ifdo.SUFFIXES[0]}"
    path = default if out is None else (Path(out) if Path(out).is_absolute()
                                        else cat.output / out)
    why = ifdo.check_file_name(path)
    if why:
        raise ExportError(f"--out {out}: {why}")
    folder = path.parent
    if not (folder / schema.LOCATIONS_FILE).is_file():
        found = ("does not exist" if not folder.exists()
                 else "is not a folder" if not folder.is_dir()
                 else f"holds no {schema.LOCATIONS_FILE}")
        if folder == cat.output:
            raise ExportError(
                f"catalog {cat.name!r}: its output folder {folder} {found}: the site has not been "
                f"built yet; expected the manifests of python -m pipeline build --catalog "
                f"{cat.source or cat.name}; build it first, then export")
        raise ExportError(
            f"--out {out}: the folder {folder} {found}; expected an output folder the pipeline "
            f"built for catalog {cat.name!r} (the file goes beside its manifests, never "
            f"elsewhere): give a name in {cat.output}, or a path in a built output folder")
    return path


def _locations(folder: Path) -> pa.Table:
    path = folder / schema.LOCATIONS_FILE
    try:
        names = pq.read_schema(path).names
        absent = [c for c in COLUMNS if c not in names]
        if absent:
            raise ExportError(f"{path}: columns {absent} are missing; expected the manifest of "
                              "a current build; build the site again")
        return pq.read_table(path, columns=list(COLUMNS))
    except (OSError, pa.ArrowException) as exc:
        raise ExportError(f"{path}: cannot be read ({str(exc)[:160]}); build the site again") \
            from None


def _rel(target: Path, start: Path) -> str:
    """``target`` relative to ``start`` ('/'-separated), or absolute where none exists."""
    try:
        return Path(os.path.relpath(target, start)).as_posix()
    except ValueError:  # another drive
        return target.as_posix()


def _values(col: pa.ChunkedArray) -> np.ndarray:
    return col.to_numpy(zero_copy_only=False).astype(np.float64)


def survey_images(cat: Catalog, table: pa.Table, folder: Path, hash_files: bool = True,
                  progress=None) -> tuple[list, str | None, dict]:
    """The located images as iFDO images, the header's local path (None: per item), and the
    counts (hashed, missing files, keyed by path)."""
    paths = [str(p) for p in table.column("path").to_pylist()]
    dives = [str(d) for d in table.column("dive").to_pylist()]
    ids = [str(i) for i in table.column("image_id").to_pylist()]
    t_us = table.column("timestamp").cast(pa.int64()).to_numpy()
    lat, lon = _values(table.column("lat")), _values(table.column("lon"))
    depth, alt = _values(table.column("depth_m")), _values(table.column("altitude_m"))
    heading = _values(table.column("heading_deg"))
    names = [posixpath.basename(p) for p in paths]
    by_name = len(set(names)) == len(names)
    if by_name:
        locals_ = [_rel(cat.root / posixpath.dirname(p), folder) for p in paths]
        keys = names
    else:
        locals_ = [_rel(cat.root, folder)] * len(paths)
        keys = paths
    shared = locals_[0] if locals_ and len(set(locals_)) == 1 else None
    images, hashed, missing = [], 0, 0
    for i, p in enumerate(paths):
        digest = None
        if hash_files:
            try:
                digest = ifdo.sha256_file(cat.root / p)
                hashed += 1
            except OSError:
                missing += 1
        images.append(ifdo.Image(
            key=keys[i], image_id=ids[i], time=int(t_us[i]) / 1e6, lat=lat[i], lon=lon[i],
            depth_m=depth[i], altitude_m=alt[i], heading_deg=heading[i], event=dives[i],
            sha256=digest, local_path=None if shared is not None else locals_[i]))
        if progress is not None:
            progress(1)
    return images, shared, {"hashed": hashed, "missing": missing, "keyed_by_path": not by_name}


def _abstract(cat: Catalog, images: list, report: dict | None) -> str:
    dives = sorted({img.event for img in images})
    formats = {}
    for dive, d in ((report or {}).get("per_dive") or {}).items():
        if isinstance(d, dict) and d.get("nav_format"):
            formats.setdefault(d["nav_format"], []).append(dive)
    how = ("; navigation " + ", ".join(f"{f} ({len(v)} dive{'s' * (len(v) > 1)})"
                                       for f, v in sorted(formats.items()))) if formats else ""
    t = [img.time for img in images]
    return (f"{len(images)} located still images of the survey {cat.name!r} in {len(dives)} "
            f"dive(s) ({', '.join(dives[:8])}{', ...' if len(dives) > 8 else ''}), taken from "
            f"{ifdo.format_datetime(min(t))} to {ifdo.format_datetime(max(t))} UTC. Times, "
            "positions, depths, altitudes and headings are the ones the seafloor-ssl pipeline "
            f"located each image with from the survey's navigation{how}; images it could not "
            "locate are not listed. Written by python -m pipeline export ifdo.")


def export_ifdo(cat: Catalog, out: str | None = None, hash_files: bool = True,
                progress_factory=None) -> dict:
    """Write the iFDO of the site's located images; a summary of what was written."""
    path = target(cat, out)
    folder = path.parent
    lk = lock(folder)
    acquire(lk, folder)
    try:
        claim(folder, cat.name, cat.source, cat.root)  # refuses another catalog's folder
        table = _locations(folder)
        if table.num_rows == 0:
            raise ExportError(f"{folder / schema.LOCATIONS_FILE}: no located images; nothing "
                              "to export (see the build's quarantine.parquet for why)")
        bar = progress_factory(table.num_rows) if progress_factory else None
        images, local, counts = survey_images(cat, table, folder, hash_files,
                                              bar.update if bar is not None else None)
        if bar is not None:
            bar.close()
        header = {"image-coordinate-uncertainty-meters": float(cat.nav_checks.position_noise_m),
                  "image-abstract": _abstract(cat, images, read_json(folder / "report.json"))}
        doc = ifdo.build(images, cat.name, cat.name, header=header, local_path=local)
        write_extra(cat.name, folder, path.name, ifdo.render(doc, path).encode("utf-8"))
    finally:
        lk.release()
    return {"path": path, "n": len(images), **counts,
            "to_complete": ifdo.fields_to_complete(doc)}
