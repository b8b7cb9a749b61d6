"""Per-image results as GIS files, without the geospatial stack: GeoParquet 1.1 and GeoPackage.

The trainer side may not import pyproj, shapely or GDAL, so this module writes both formats
itself with numpy, pyarrow and the standard library's sqlite3:

* GeoParquet 1.1 (:func:`with_points`, then :func:`write_parquet_atomic`): WKB points in a
  ``geometry`` column, the ``bbox`` covering struct column and the ``geo`` metadata with the
  site CRS as PROJJSON, as the pipeline writes ``locations.parquet``. geopandas, GDAL/QGIS and
  DuckDB read it; list columns (embeddings) stay as they are.
* OGC GeoPackage 1.3 (:func:`write_geopackage`): one point layer with scalar attribute
  columns (no spatial index, see there), for QGIS and anything GDAL opens.

The CRS comes from a manifest's metadata (:func:`site_crs`): the EPSG code (``crs``), the
PROJJSON of the ``geo`` metadata and, for manifests that record it, the WKT1 (``crs_wkt``,
which a GeoPackage's ``gpkg_spatial_ref_sys`` needs).
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import re
import sqlite3
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .contract import (
    GEO_KEY,
    META_CRS,
    META_CRS_WKT,
    check_xy,
    geoparquet_points,
    point_bounds,
    point_wkb,
)

__all__ = ["SiteCRS", "point_wkb", "site_crs", "with_points", "write_geopackage",
           "write_parquet_atomic"]


# --- the site CRS ------------------------------------------------------------------------------


@dataclass(frozen=True)
class SiteCRS:
    """The site CRS as a manifest records it; a piece the metadata lacks is None.

    ``epsg``: the EPSG code (from ``crs``, "EPSG:32755" -> 32755, else from the PROJJSON's id);
    ``projjson``: the PROJJSON of the GeoParquet ``geo`` metadata's primary column;
    ``wkt``: OGC WKT1 as GDAL writes it (``crs_wkt``; manifests built before it lack it)."""

    epsg: int | None
    projjson: dict | None
    wkt: str | None


def _text(v: bytes | str | None) -> str | None:
    if v is None:
        return None
    s = v.decode() if isinstance(v, bytes | bytearray) else str(v)
    return s if s.strip() else None


def site_crs(meta: Mapping[bytes | str, bytes | str] | None) -> SiteCRS:
    """The site CRS from a Parquet file's key-value metadata (``schema.metadata`` as pyarrow
    returns it: bytes keys and values; str works too; None gives all None).

    A ``geo`` column without a ``crs`` key (which GeoParquet reads as OGC:CRS84; the pipeline
    never writes one) or with ``crs: null`` gives ``projjson`` None. ValueError when the ``geo``
    metadata is there but is not GeoParquet JSON."""
    kv = {(k.decode() if isinstance(k, bytes | bytearray) else str(k)): v
          for k, v in (meta or {}).items()}
    code = _text(kv.get(META_CRS))
    epsg = None
    if code is not None:
        m = re.fullmatch(r"\s*EPSG:(\d+)\s*", code, flags=re.IGNORECASE)
        epsg = int(m.group(1)) if m else None
    projjson = None
    geo = _text(kv.get(GEO_KEY))
    if geo is not None:
        try:
            doc = json.loads(geo)
            col = doc["columns"][doc["primary_column"]]
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"the '{GEO_KEY}' metadata is not GeoParquet metadata ({exc!r})"
                             ) from None
        crs = col.get("crs") if isinstance(col, dict) else None
        projjson = crs if isinstance(crs, dict) else None
    if epsg is None and projjson is not None:
        ident = projjson.get("id")
        if isinstance(ident, dict) and str(ident.get("authority", "")).upper() == "EPSG":
            try:
                epsg = int(ident["code"])
            except (KeyError, TypeError, ValueError):
                epsg = None
    return SiteCRS(epsg=epsg, projjson=projjson, wkt=_text(kv.get(META_CRS_WKT)))


# --- points ------------------------------------------------------------------------------------

def with_points(table: pa.Table, xy: np.ndarray, crs: SiteCRS) -> pa.Table:
    """``table`` as GeoParquet 1.1: appends the WKB point column ``geometry`` and the ``bbox``
    covering struct column (xmin, ymin, xmax, ymax float64) of ``xy`` (n, 2, site CRS) and sets
    the ``geo`` metadata (primary column, WKB, ["Point"], the CRS as PROJJSON, bbox, covering)
    as the pipeline writes locations.parquet. Columns already named ``geometry`` or ``bbox``
    are replaced; the table's other metadata is kept.

    ValueError when ``crs.projjson`` is None: GeoParquet reads a column without a CRS as
    OGC:CRS84 (longitude/latitude degrees), which would be wrong for site metres."""
    if crs.projjson is None:
        raise ValueError("no PROJJSON for the site CRS: GeoParquet without a 'crs' is read as "
                         "OGC:CRS84 (degrees), which site metres are not; take the CRS from the "
                         "manifest's locations.parquet (site_crs of its metadata)")
    return geoparquet_points(table, check_xy(xy, table.num_rows), crs.projjson)


# --- atomic writes -----------------------------------------------------------------------------


def _temp_name(path: str) -> str:
    """A fresh hidden name beside ``path`` (same filesystem, so os.replace is atomic)."""
    folder, name = os.path.split(path)
    return os.path.join(folder, f".{name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")


def _fsync(path: str) -> None:
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


def _fsync_folder(folder: str) -> None:
    try:
        fd = os.open(folder or ".", os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _remove(*paths: str) -> None:
    for p in paths:
        try:
            os.unlink(p)
        except FileNotFoundError:
            pass


def write_parquet_atomic(path, table: pa.Table, row_group_size: int | None = None) -> None:
    """Write ``table`` (zstd) to a temporary name beside ``path``, fsync it, then os.replace it
    into place: readers see the old file or the whole new one, and a failed write leaves no
    temporary file behind."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = _temp_name(path)
    try:
        pq.write_table(table, tmp, compression="zstd", row_group_size=row_group_size)
        _fsync(tmp)
        os.replace(tmp, path)
    finally:
        _remove(tmp)
    _fsync_folder(folder)


# --- GeoPackage --------------------------------------------------------------------------------

GPKG_APPLICATION_ID = 0x47504B47  # "GPKG"
GPKG_USER_VERSION = 10300  # GeoPackage 1.3.0
_CHUNK = 50_000  # rows per executemany
_LAYER = re.compile(r"[A-Za-z0-9_]+")
# EPSG:4326 as GDAL writes it into gpkg_spatial_ref_sys
WGS84_WKT = (
    'GEOGCS["WGS 84",DATUM["WGS_1984",SPHEROID["WGS 84",6378137,298.257223563,'
    'AUTHORITY["EPSG","7030"]],AUTHORITY["EPSG","6326"]],PRIMEM["Greenwich",0,'
    'AUTHORITY["EPSG","8901"]],UNIT["degree",0.0174532925199433,AUTHORITY["EPSG","9122"]],'
    'AXIS["Latitude",NORTH],AXIS["Longitude",EAST],AUTHORITY["EPSG","4326"]]')
_REQUIRED_SRS = [
    ("WGS 84 geodetic", 4326, "EPSG", 4326, WGS84_WKT,
     "longitude/latitude coordinates in decimal degrees on the WGS 84 spheroid"),
    ("Undefined cartesian SRS", -1, "NONE", -1, "undefined",
     "undefined cartesian coordinate reference system"),
    ("Undefined geographic SRS", 0, "NONE", 0, "undefined",
     "undefined geographic coordinate reference system"),
]
# GeoPackage binary: "GP", version 0, flags, srs_id (int32), then the WKB. Flags: bit 0 byte
# order (1 little-endian), bits 1-3 envelope (0: none, the usual for points), bit 4 empty.
_GPKG_POINT = np.dtype([("magic", "S2"), ("version", "u1"), ("flags", "u1"), ("srs_id", "<i4"),
                        ("order", "u1"), ("type", "<u4"), ("x", "<f8"), ("y", "<f8")])
_FLAGS_LE, _FLAG_EMPTY = 0b00000001, 0b00010000

_SCHEMA = """
CREATE TABLE gpkg_spatial_ref_sys (srs_name TEXT NOT NULL, srs_id INTEGER NOT NULL PRIMARY KEY,
  organization TEXT NOT NULL, organization_coordsys_id INTEGER NOT NULL,
  definition TEXT NOT NULL, description TEXT);
CREATE TABLE gpkg_contents (table_name TEXT NOT NULL PRIMARY KEY, data_type TEXT NOT NULL,
  identifier TEXT UNIQUE, description TEXT DEFAULT '',
  last_change DATETIME NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now')),
  min_x DOUBLE, min_y DOUBLE, max_x DOUBLE, max_y DOUBLE, srs_id INTEGER,
  CONSTRAINT fk_gc_r_srs_id FOREIGN KEY (srs_id) REFERENCES gpkg_spatial_ref_sys(srs_id));
CREATE TABLE gpkg_geometry_columns (table_name TEXT NOT NULL, column_name TEXT NOT NULL,
  geometry_type_name TEXT NOT NULL, srs_id INTEGER NOT NULL, z TINYINT NOT NULL,
  m TINYINT NOT NULL,
  CONSTRAINT pk_geom_cols PRIMARY KEY (table_name, column_name),
  CONSTRAINT uk_gc_table_name UNIQUE (table_name),
  CONSTRAINT fk_gc_tn FOREIGN KEY (table_name) REFERENCES gpkg_contents(table_name),
  CONSTRAINT fk_gc_srs FOREIGN KEY (srs_id) REFERENCES gpkg_spatial_ref_sys (srs_id));
CREATE TABLE gpkg_extensions (table_name TEXT, column_name TEXT, extension_name TEXT NOT NULL,
  definition TEXT NOT NULL, scope TEXT NOT NULL,
  CONSTRAINT ge_tce UNIQUE (table_name, column_name, extension_name));
"""

def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _utc_text(t: dt.datetime) -> str:
    if t.tzinfo is not None:
        t = t.astimezone(dt.UTC)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


def _scalar(v):
    """A plain Python value (numpy scalars unwrapped, NaN as None)."""
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and math.isnan(v):
        return None
    return v


class _Column:
    """One attribute column: its GeoPackage type and its values, a slice at a time."""

    def __init__(self, name: str, values, n: int):
        self.name = name
        if isinstance(values, pa.ChunkedArray):
            values = values.combine_chunks()
        if isinstance(values, pa.Array):
            if pa.types.is_dictionary(values.type):
                values = values.cast(values.type.value_type)
            values = np.array(values.to_pylist(), dtype=object)
        a = values if isinstance(values, np.ndarray) else np.asarray(values, dtype=object)
        if a.ndim != 1:
            raise ValueError(f"column {name!r} has shape {a.shape}; a GeoPackage holds one value "
                             "per feature (write arrays such as embeddings to GeoParquet)")
        if len(a) != n:
            raise ValueError(f"column {name!r} has {len(a)} values for {n} points")
        kind = a.dtype.kind
        if kind == "O":  # a list or an object array: typed by its values
            a = self._infer(a)
        self.a = a
        if kind == "b":
            self.type = "BOOLEAN"
        elif kind in "iu":
            if kind == "u" and len(a) and int(a.max()) > 2**63 - 1:
                raise ValueError(f"column {name!r} holds integers beyond int64")
            self.type = "INTEGER"
        elif kind == "f":
            self.type = "REAL"
        elif kind == "U":
            self.type = "TEXT"
        elif kind == "S":
            self.type = "BLOB"
        elif kind == "M":
            self.type = "DATETIME"
        elif kind == "O":
            self.type = self._object_type
        else:
            raise ValueError(f"column {name!r} has dtype {a.dtype}, which a GeoPackage cannot "
                             "hold")

    def _infer(self, a: np.ndarray) -> np.ndarray:
        """Object values as plain Python values (None for NULL and NaN) and their GeoPackage
        type (``_object_type``): the one kind of all non-None values, else TEXT."""
        vals = [_scalar(v) for v in a.tolist()]
        present = [v for v in vals if v is not None]
        kinds = {type(v) for v in present}
        out = np.empty(len(vals), dtype=object)
        out[:] = vals
        if not present:
            self._object_type = "TEXT"
        elif kinds <= {bool}:
            self._object_type = "BOOLEAN"
        elif kinds <= {int}:
            self._object_type = "INTEGER"
        elif kinds <= {int, float}:
            self._object_type = "REAL"
            out[:] = [None if v is None else float(v) for v in vals]
        elif kinds <= {bytes, bytearray, memoryview}:
            self._object_type = "BLOB"
        elif all(isinstance(v, dt.datetime) for v in present):
            self._object_type = "DATETIME"
            out[:] = [None if v is None else _utc_text(v) for v in vals]
        else:
            self._object_type = "TEXT"
            out[:] = [v if v is None or isinstance(v, str) else str(v) for v in vals]
        return out

    def values(self, lo: int, hi: int) -> list:
        a = self.a[lo:hi]
        kind = a.dtype.kind
        if kind == "f":
            nan = np.isnan(a)
            if nan.any():
                o = a.astype(object)
                o[nan] = None
                return o.tolist()
            return a.tolist()
        if kind == "M":
            text = np.datetime_as_string(a.astype("datetime64[ms]"), unit="ms")
            return [None if s == "NaT" else s + "Z" for s in text.tolist()]
        if kind == "S":
            return [bytes(v) for v in a.tolist()]
        return a.tolist()


def _srs_name(crs: SiteCRS) -> str:
    if crs.wkt:
        m = re.match(r'\s*\w+\s*\[\s*"([^"]*)"', crs.wkt)
        if m:
            return m.group(1)
    if crs.projjson and isinstance(crs.projjson.get("name"), str):
        return crs.projjson["name"]
    return f"EPSG:{crs.epsg}"


def _gpkg_blobs(a: np.ndarray, srs_id: int) -> tuple[bytes, np.ndarray]:
    """The GeoPackage binary of every point, back to back (29 bytes each), and the empty mask."""
    empty = np.isnan(a).any(axis=1)
    rec = np.empty(len(a), dtype=_GPKG_POINT)
    rec["magic"] = b"GP"
    rec["version"] = 0
    rec["flags"] = np.where(empty, _FLAGS_LE | _FLAG_EMPTY, _FLAGS_LE)
    rec["srs_id"] = srs_id
    rec["order"] = 1
    rec["type"] = 1
    rec["x"] = np.where(empty, np.nan, a[:, 0])
    rec["y"] = np.where(empty, np.nan, a[:, 1])
    return rec.tobytes(), empty


def write_geopackage(path, layer: str, xy: np.ndarray,
                     columns: Mapping[str, np.ndarray | Sequence], crs: SiteCRS) -> None:
    """Write an OGC GeoPackage 1.3 with one point layer ``layer`` (``fid``, ``geom``, then
    ``columns`` in their order) at ``xy`` (n, 2, in the site CRS), atomically (a temporary file
    beside ``path``, then os.replace; nothing is left behind on error).

    Attribute types follow the values: integers -> INTEGER, floats -> REAL (NaN -> NULL),
    bool -> BOOLEAN, str -> TEXT, bytes -> BLOB, datetimes -> DATETIME (UTC, ISO 8601);
    None -> NULL. Lists and object arrays are typed by their non-None values (mixed kinds ->
    TEXT); pyarrow arrays work too (dictionary columns as their values). A NaN row of ``xy``
    is written as an empty point. No R-tree spatial index is written: the GeoPackage extension
    needs triggers that call GDAL's own SQL functions to stay valid when the file is edited,
    and a file without one reads and edits correctly everywhere (QGIS builds an index on
    request).

    The site CRS is a ``gpkg_spatial_ref_sys`` row with srs_id = organization_coordsys_id =
    ``crs.epsg`` (organization "EPSG") and definition ``crs.wkt``. Without a WKT the definition
    is "undefined"; GDAL (QGIS) then takes the CRS from the EPSG code, because the srs_id is the
    organization's own code. ValueError when ``crs.epsg`` is None (or 0 / -1, the undefined
    systems), for a layer name other than letters, digits and underscores (or one starting
    with "gpkg_"), a column named fid or geom, two columns differing only in case, and columns
    whose length differs from ``xy``."""
    if not isinstance(layer, str) or not _LAYER.fullmatch(layer) \
            or layer.lower().startswith("gpkg_"):
        raise ValueError(f"layer name {layer!r}: use letters, digits and underscores only "
                         "(and not the reserved prefix 'gpkg_')")
    if crs.epsg is None:
        raise ValueError("no EPSG code for the site CRS; a GeoPackage names its CRS by code "
                         "(take the CRS from the manifest's locations.parquet: site_crs of its "
                         "metadata)")
    epsg = int(crs.epsg)
    if epsg in (0, -1):
        raise ValueError(f"srs_id {epsg} is the GeoPackage's undefined CRS, not a site CRS")
    a = check_xy(xy)
    n = len(a)
    cols, seen = [], {"fid", "geom"}
    for name, values in columns.items():
        if not isinstance(name, str) or not name or "\x00" in name:
            raise ValueError(f"column name {name!r} is not a usable name")
        if name.lower() in seen:
            raise ValueError(f"column {name!r} clashes with another column (fid and geom are "
                             "the layer's own; names are compared ignoring case)")
        seen.add(name.lower())
        cols.append(_Column(name, values, n))

    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = _temp_name(path)
    con = None
    try:
        con = sqlite3.connect(tmp, isolation_level=None)
        con.execute("PRAGMA journal_mode = OFF")  # a fresh file, discarded on any error
        con.execute("PRAGMA synchronous = OFF")  # fsynced once, before the rename
        con.execute(f"PRAGMA application_id = {GPKG_APPLICATION_ID}")
        con.execute(f"PRAGMA user_version = {GPKG_USER_VERSION}")
        con.execute("BEGIN")
        for statement in _SCHEMA.split(";"):
            if statement.strip():
                con.execute(statement)
        srs = list(_REQUIRED_SRS)
        if epsg != 4326:
            srs.append((_srs_name(crs), epsg, "EPSG", epsg, crs.wkt or "undefined", None))
        con.executemany("INSERT INTO gpkg_spatial_ref_sys VALUES (?, ?, ?, ?, ?, ?)", srs)
        blobs, _ = _gpkg_blobs(a, epsg)
        bounds = point_bounds(a) or [None] * 4
        now = _utc_text(dt.datetime.now(dt.UTC))
        con.execute("INSERT INTO gpkg_contents (table_name, data_type, identifier, description, "
                    "last_change, min_x, min_y, max_x, max_y, srs_id) "
                    "VALUES (?, 'features', ?, '', ?, ?, ?, ?, ?, ?)",
                    (layer, layer, now, *bounds, epsg))
        con.execute("INSERT INTO gpkg_geometry_columns VALUES (?, 'geom', 'POINT', ?, 0, 0)",
                    (layer, epsg))
        t = _quote(layer)
        con.execute(f"CREATE TABLE {t} (\"fid\" INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL, "
                    "\"geom\" POINT" + "".join(f", {_quote(c.name)} {c.type}" for c in cols)
                    + ")")
        insert = (f"INSERT INTO {t} (\"fid\", \"geom\"" + "".join(f", {_quote(c.name)}"
                                                              for c in cols)
                  + ") VALUES (" + ", ".join("?" * (len(cols) + 2)) + ")")
        size = _GPKG_POINT.itemsize
        view = memoryview(blobs)
        for lo in range(0, n, _CHUNK):
            hi = min(n, lo + _CHUNK)
            geoms = [view[i:i + size] for i in range(lo * size, hi * size, size)]
            con.executemany(insert, zip(range(lo + 1, hi + 1), geoms,
                                        *(c.values(lo, hi) for c in cols), strict=True))
        con.execute("COMMIT")
        con.close()
        con = None
        _fsync(tmp)
        os.replace(tmp, path)
    finally:
        if con is not None:
            con.close()
        _remove(tmp, tmp + "-journal", tmp + "-wal", tmp + "-shm")
    _fsync_folder(folder)
