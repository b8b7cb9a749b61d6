"""The labelling list out to the annotation tools: ``ssl.habitats --export biigle coralnet ifdo``.

Each tool gets a folder ``export/<tool>/`` of the habitats output with the metadata file it
imports, the N images of the labelling list under ``images/`` and their contact sheet
(``contact_sheet.png``, the labelling list's sheet); ``export/file_names.csv`` says which image
(image_id, dive, path, rank) each exported file name is.

- BIIGLE (``biigle/metadata.csv``): the image metadata CSV a volume imports, as BIIGLE's manual
  ("File metadata") defines it: ``filename,taken_at,lng,lat,gps_altitude,distance_to_ground,
  yaw``; ``taken_at`` in UTC (``2016-12-19 12:49:00.000000``), ``gps_altitude`` negative below
  sea level (minus the depth), ``distance_to_ground`` the altitude above the seabed, ``yaw`` the
  heading in [0, 360) (BIIGLE refuses values outside [0, 360]); ``area`` is left out (unknown).
  Create the volume from the ``images/`` folder and upload the CSV as its metadata.
- CoralNet (``coralnet/metadata.csv``): the metadata CSV of CoralNet's "Upload metadata" page,
  whose columns are the labels of its image metadata fields (``Name``, ``Date``, ``Aux1``-
  ``Aux5``, ``Height (cm)``, ``Latitude``, ``Longitude``, ``Depth``, ``Camera``, ...,
  ``Comments``; columns may be left out). Written: ``Name`` (the file name), ``Date``
  (YYYY-MM-DD, UTC), ``Aux1`` (the dive; a source that renamed its first auxiliary field
  reads it under that name only after the column is renamed), ``Latitude``, ``Longitude``,
  ``Depth`` (metres), ``Comments`` (rank, image_id, time, altitude and heading). ``Height (cm)``
  (the substrate the image spans) is not known and left out. Upload the images, then the CSV.
- iFDO (``ifdo/<catalog>_labelling-list_iFDO.json``): an iFDO v2 of the N images written by
  the project's iFDO writer (``ssl/ifdo.py``), ``image-set-local-path`` ``images``, each image's
  ``image-uuid`` the one the survey's iFDO (``python -m pipeline export ifdo``) gives it. When
  that survey iFDO is beside the manifests under its default name (``<catalog>_iFDO.json`` or
  ``.yaml``), its header's survey fields (context, PI, creators, licence, coordinate
  uncertainty, ...) are carried over, so a header completed once serves every list.

File names: an image keeps its file name; a name that several listed images share (dives that
restart their numbering) is replaced, for each of them, by its path from the catalog root with
``/`` written as ``__`` (``dive01/images/IMG_0001.jpg`` -> ``dive01__images__IMG_0001.jpg``).

The images are the survey's original files (the catalog root + the manifest's path), never the
training-size copies of the image store. Each is copied into the export (a list is tens of
images; a hard link would let an edit of the export change the survey), so the originals are
only read, never moved or changed, and nothing is linked. Every file is written through `..files.write_atomic` and
recorded by the command's output folder (the ``out`` callback), so ``--overwrite`` removes
exactly these files.
"""

from __future__ import annotations

import csv
import json
import posixpath
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .. import ifdo
from ..files import write_atomic, write_text_atomic

__all__ = ["BIIGLE_COLUMNS", "CORALNET_COLUMNS", "TOOLS", "ExportError", "Listed",
           "check_sources", "export_labelling_list", "export_names", "listed", "read_locations",
           "survey_header"]

TOOLS = ("biigle", "coralnet", "ifdo")
BIIGLE_COLUMNS = ("filename", "taken_at", "lng", "lat", "gps_altitude", "distance_to_ground",
                  "yaw")
CORALNET_COLUMNS = ("Name", "Date", "Aux1", "Latitude", "Longitude", "Depth", "Comments")
CORALNET_AUX_MAX = 50  # characters of an auxiliary metadata field (CoralNet's Metadata model)
NAMES_FILE = "file_names.csv"
SHEET = "contact_sheet.png"
IMAGES = "images"
# the columns of the embeddings file the exports read (ssl.data.embeddings.LOCATION_COLUMNS)
LOCATION_FIELDS = ("timestamp", "lat", "lon", "depth_m", "altitude_m", "heading_deg")
_DECIMALS = 3  # mm and 0.001 deg, as the iFDO writer


class ExportError(ValueError):
    """An export that cannot be written (the command reports it as one message, exit 2)."""


@dataclass(frozen=True)
class Listed:
    """One image of the labelling list as the exports need it."""

    rank: int
    image_id: str
    dive: str
    path: str  # relative to the catalog root
    source: Path  # the original file
    name: str  # its file name in the exports
    time: float  # unix seconds, UTC
    lat: float
    lon: float
    depth_m: float
    altitude_m: float
    heading_deg: float


def export_names(dives: Sequence[str], paths: Sequence[str]) -> list[str]:
    """File names for the exports: each path's file name, unless several paths share it; those
    become their path with '/' written as '__' (numbered when even that repeats)."""
    base = [posixpath.basename(p) for p in paths]
    counts: dict[str, int] = {}
    for b in base:
        counts[b] = counts.get(b, 0) + 1
    names = [b if counts[b] == 1 else p.strip("/").replace("/", "__")
             for b, p in zip(base, paths, strict=True)]
    seen: set[str] = set()
    out = []
    for i, n in enumerate(names):
        if n in seen or (n != base[i] and n in counts):
            n = f"{i + 1}__{n}"
        seen.add(n)
        out.append(n)
    return out


def read_locations(path: Path, n: int) -> dict[str, np.ndarray]:
    """Time (unix seconds), lat, lon, depth, altitude and heading of every row of the
    embeddings file ``path`` (NaN where unknown)."""
    try:
        names = pq.read_schema(path).names
        absent = [c for c in LOCATION_FIELDS if c not in names]
        if absent:
            raise ExportError(f"{path}: columns {absent} are missing, which the exports need; "
                              "compute the embeddings again with python -m ssl.embed")
        t = pq.read_table(path, columns=list(LOCATION_FIELDS))
    except (OSError, pa.ArrowException) as exc:
        raise ExportError(f"{path}: cannot be read ({str(exc)[:120]})") from None
    if t.num_rows != n:
        raise ExportError(f"{path}: {t.num_rows} rows of positions for {n} embeddings")

    def num(name: str) -> np.ndarray:
        return t.column(name).to_numpy(zero_copy_only=False).astype(np.float64)

    us = t.column("timestamp").cast(pa.int64()).to_numpy(zero_copy_only=False)
    return {"time": us.astype(np.float64) / 1e6, "lat": num("lat"), "lon": num("lon"),
            "depth_m": num("depth_m"), "altitude_m": num("altitude_m"),
            "heading_deg": num("heading_deg")}


def survey_header(folder: Path, catalog: str, log: Callable[[str], None] = print
                  ) -> tuple[dict, Path | None]:
    """The survey fields of the header of the survey's iFDO beside the manifests (its default
    name ``<catalog>_iFDO.json`` or ``.yaml``), and that file; ({}, None) without a readable
    one."""
    for suffix in ifdo.SUFFIXES:
        path = folder / f"{catalog}{suffix}"
        if not path.is_file():
            continue
        try:
            text = path.read_text(encoding="utf-8")
            if suffix.endswith(".json"):
                doc = json.loads(text)
            else:
                import yaml

                doc = yaml.safe_load(text)
        except Exception as exc:  # noqa: BLE001 - unreadable, not JSON / YAML: not used
            log(f"note: {path} cannot be read ({str(exc)[:120]}); its header is not used")
            continue
        return ifdo.shared_header(doc), path
    return {}, None


def check_sources(items: Sequence[Listed]) -> None:
    """ExportError unless every listed image's original file is there."""
    missing = [it for it in items if not it.source.is_file()]
    if missing:
        raise ExportError(f"--export: {len(missing)} of the {len(items)} listed images are not "
                          f"under the catalog root (first: {missing[0].source}); expected the "
                          "survey's original files: pass --image-root with the folder the "
                          "manifest's paths are relative to")


def _num(x: float, decimals: int | None = None) -> str:
    """A CSV number ('' for NaN)."""
    if not np.isfinite(x):
        return ""
    return repr(float(x) if decimals is None else round(float(x), decimals) + 0.0)


def _heading(x: float) -> str:
    return _num(round(float(x) % 360.0, _DECIMALS) % 360.0) if np.isfinite(x) else ""


def _write_csv(path: Path, header: Sequence[str], rows: list[list[str]]) -> None:
    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh, lineterminator="\n")
            w.writerow(header)
            w.writerows(rows)

    write_atomic(path, write)


def _biigle_rows(items: Sequence[Listed]) -> list[list[str]]:
    return [[it.name, ifdo.format_datetime(it.time), _num(it.lon), _num(it.lat),
             _num(-it.depth_m, _DECIMALS), _num(it.altitude_m, _DECIMALS),
             _heading(it.heading_deg)] for it in items]


def _coralnet_rows(items: Sequence[Listed], n: int) -> list[list[str]]:
    rows = []
    for it in items:
        when = ifdo.format_datetime(it.time)
        aux = (it.dive if len(it.dive) <= CORALNET_AUX_MAX
               else it.dive[:CORALNET_AUX_MAX - 3] + "...")
        notes = [f"rank {it.rank} of {n} in the labelling list", f"image_id {it.image_id}",
                 f"dive {it.dive}", f"taken {when} UTC"]
        if np.isfinite(it.altitude_m):
            notes.append(f"altitude {_num(it.altitude_m, _DECIMALS)} m above the seabed")
        if np.isfinite(it.heading_deg):
            notes.append(f"heading {_heading(it.heading_deg)} deg")
        rows.append([it.name, when[:10], aux, f"{it.lat:.8f}", f"{it.lon:.8f}",
                     _num(it.depth_m, _DECIMALS), "; ".join(notes)])
    return rows


def _copy(src: Path, dst: Path) -> None:
    write_atomic(dst, lambda tmp: shutil.copyfile(src, tmp))


def _abstract(catalog: str, items: Sequence[Listed], detail: str) -> str:
    dives = sorted({it.dive for it in items})
    t = [it.time for it in items]
    return (f"The labelling list of the survey {catalog!r}: {len(items)} still images from "
            f"{len(dives)} dive(s), taken from {ifdo.format_datetime(min(t))} to "
            f"{ifdo.format_datetime(max(t))} UTC, chosen by seafloor-ssl (python -m "
            f"ssl.habitats) as the images to label first: {detail}. The files are the survey's "
            "originals; times, positions, depths, altitudes and headings are the ones the "
            "pipeline located each image with.")


def export_labelling_list(tools: Sequence[str], items: Sequence[Listed],
                          out: Callable[[str], Path], sheet: Path | None, catalog: str,
                          manifests: Path, detail: str,
                          log: Callable[[str], None] = print) -> dict:
    """Write the exports of ``items`` (the labelling list in rank order) for ``tools`` into
    ``export/`` of the output folder; ``out(name)`` records a file and gives its path,
    ``sheet``: the labelling list's contact sheet, ``manifests``: the manifest folder (where
    the survey's iFDO may be), ``detail``: how the list was chosen (for the iFDO abstract).
    Returns what was written, per tool."""
    check_sources(items)
    names = [it.name for it in items]
    _write_csv(out(f"export/{NAMES_FILE}"), ("rank", "file_name", "image_id", "dive", "path"),
               [[str(it.rank), it.name, it.image_id, it.dive, it.path] for it in items])
    summary: dict = {"file_names": f"export/{NAMES_FILE}",
                     "renamed": sum(1 for it in items if it.name != posixpath.basename(it.path))}
    for tool in dict.fromkeys(tools):
        base = f"export/{tool}"
        files = []
        for it in items:
            files.append(out(f"{base}/{IMAGES}/{it.name}"))
            _copy(it.source, files[-1])
        if sheet is not None and sheet.is_file():
            _copy(sheet, out(f"{base}/{SHEET}"))
        if tool == "biigle":
            meta = f"{base}/metadata.csv"
            _write_csv(out(meta), BIIGLE_COLUMNS, _biigle_rows(items))
        elif tool == "coralnet":
            meta = f"{base}/metadata.csv"
            _write_csv(out(meta), CORALNET_COLUMNS, _coralnet_rows(items, len(items)))
        elif tool == "ifdo":
            header, source = survey_header(manifests, catalog, log)
            header["image-abstract"] = _abstract(catalog, items, detail)
            images = [ifdo.Image(key=it.name, image_id=it.image_id, time=it.time, lat=it.lat,
                                 lon=it.lon, depth_m=it.depth_m, altitude_m=it.altitude_m,
                                 heading_deg=it.heading_deg, event=it.dive,
                                 sha256=ifdo.sha256_file(f))
                      for it, f in zip(items, files, strict=True)]
            set_name = f"{catalog}_labelling-list"
            doc = ifdo.build(images, set_name, catalog, header=header, local_path=IMAGES)
            meta = f"{base}/{set_name}{ifdo.SUFFIXES[0]}"
            ifdo.write(out(meta), doc, write_text_atomic)
            todo = ifdo.fields_to_complete(doc)
            summary.setdefault("ifdo_header", str(source) if source else None)
            if todo:
                log(f"iFDO: header fields to complete before publishing: {', '.join(todo)}"
                    + ("" if source else " (python -m pipeline export ifdo writes the "
                       "survey's iFDO beside the manifests; its header, completed once, is "
                       "carried into every list)"))
        else:
            raise ExportError(f"--export {tool}: expected one of {', '.join(TOOLS)}")
        summary[tool] = {"metadata": meta, "images": len(names)}
        log(f"export {tool}: {meta} and {len(names)} images (copied)")
    return summary


def listed(chosen: Sequence[int], image_id, dive, rel_path, root: Path,
           loc: Mapping[str, np.ndarray]) -> list[Listed]:
    """The rows ``chosen`` (in rank order) of the embeddings as `Listed` images."""
    idx = [int(i) for i in chosen]
    names = export_names([str(dive[i]) for i in idx], [str(rel_path[i]) for i in idx])
    return [Listed(rank=r, image_id=str(image_id[i]), dive=str(dive[i]), path=str(rel_path[i]),
                   source=root / str(rel_path[i]), name=names[r - 1],
                   time=float(loc["time"][i]), lat=float(loc["lat"][i]),
                   lon=float(loc["lon"][i]), depth_m=float(loc["depth_m"][i]),
                   altitude_m=float(loc["altitude_m"][i]),
                   heading_deg=float(loc["heading_deg"][i]))
            for r, i in enumerate(idx, start=1)]
