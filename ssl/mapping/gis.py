"""Per-image results as an OGC GeoPackage, written by geopandas (GDAL) with its spatial index.

`write_geopackage` writes one point layer with scalar attribute columns for QGIS and anything
GDAL opens. GDAL writes the file, so it carries the R-tree spatial index (the
``gpkg_rtree_index`` extension) and the triggers that keep the index in step when the file is
edited later. The file is written through the trainer side's one atomic write
(`..files.write_atomic`): readers see the old file or the whole new one.

GeoParquet results (the WKB points, ``bbox`` column and ``geo`` metadata) need no geospatial
stack and are written elsewhere: `..contract.with_points`, then `..files.write_parquet_atomic`.
The CRS of both comes from a manifest's metadata (`..contract.site_crs`).

Mapping may use the geospatial stack (training, data and embedding do not): geopandas, pandas,
shapely and pyproj are imported here, when a GeoPackage is written, so that importing this
module (and starting the habitats command) does not load them.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa

from ..contract import SiteCRS, check_xy
from ..files import write_atomic

__all__ = ["write_geopackage"]

_LAYER = re.compile(r"[A-Za-z0-9_]+")
_INT64_MAX = 2**63 - 1
# what SQLite may leave beside a database while it is open or after a failed write
_SIDE_SUFFIXES = ("-journal", "-wal", "-shm")


# --- attribute columns -------------------------------------------------------------------------


def _scalar(v, missing: tuple):
    """A plain Python value: numpy scalars unwrapped; NaN, NaT and the ``missing`` markers
    (pandas NA and NaT) as None."""
    if isinstance(v, np.datetime64):
        return None if np.isnat(v) else v.astype("datetime64[us]").item()
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and math.isnan(v):
        return None
    return None if any(v is m for m in missing) else v


def _utc(values):
    """Datetimes (numpy datetime64, or datetime objects and None) as a pandas UTC column; naive
    values are taken as UTC."""
    import pandas as pd

    return pd.to_datetime(values, utc=True)


def _from_objects(name: str, a: np.ndarray):
    """An object column typed by its non-None values: all bool -> BOOLEAN, all int -> INTEGER,
    int and float -> REAL, all datetime -> DATETIME (UTC), anything else -> TEXT (as str; dates
    as ISO 8601); None, NaN and NaT are NULL."""
    import pandas as pd

    missing = (pd.NA, pd.NaT)
    vals = [_scalar(v, missing) for v in a.tolist()]
    present = [v for v in vals if v is not None]
    kinds = {type(v) for v in present}
    if any(isinstance(v, list | tuple | dict | set | np.ndarray) for v in present):
        raise ValueError(f"column {name!r} holds sequences; a GeoPackage holds one value per "
                         "feature (write arrays such as embeddings to GeoParquet)")
    if not present:
        return pd.array(vals, dtype="string")
    if kinds <= {bool}:
        return pd.array(vals, dtype="boolean")
    if kinds <= {int}:
        if not -_INT64_MAX - 1 <= min(present) <= max(present) <= _INT64_MAX:
            raise ValueError(f"column {name!r} holds integers beyond int64")
        return pd.array(vals, dtype="Int64")
    if kinds <= {int, float}:
        return np.array([math.nan if v is None else float(v) for v in vals])
    if any(isinstance(v, bytes | bytearray | memoryview) for v in present):
        raise ValueError(f"column {name!r} holds bytes, which GDAL writes to a GeoPackage as "
                         "their text (write binary values to GeoParquet)")
    if all(isinstance(v, dt.datetime) for v in present):
        return _utc(vals)
    return pd.array([v if v is None or isinstance(v, str) else str(v) for v in vals],
                    dtype="string")


def _attribute(name: str, values, n: int):
    """One attribute column as an array that GDAL writes with a fitting GeoPackage type:
    integers -> INTEGER, floats -> REAL (NaN -> NULL), bool -> BOOLEAN, str -> TEXT,
    datetimes -> DATETIME (UTC); lists, object arrays and pyarrow arrays with nulls are typed by
    their values (`_from_objects`)."""
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    if isinstance(values, pa.Array):
        if pa.types.is_dictionary(values.type):
            values = values.dictionary_decode()
        t = values.type
        if pa.types.is_floating(t) or pa.types.is_timestamp(t):
            values = values.to_numpy(zero_copy_only=False)  # NaN / NaT; timestamps in UTC
        elif values.null_count == 0 and (pa.types.is_integer(t) or pa.types.is_boolean(t)):
            values = values.to_numpy(zero_copy_only=False)
        else:
            values = values.to_pylist()
    # Python values stay as they are (np.asarray would turn a list of lists into a 2-D array)
    a = values if isinstance(values, np.ndarray) else np.fromiter(values, dtype=object,
                                                                  count=len(values))
    if a.ndim != 1:
        raise ValueError(f"column {name!r} has shape {a.shape}; a GeoPackage holds one value "
                         "per feature (write arrays such as embeddings to GeoParquet)")
    if len(a) != n:
        raise ValueError(f"column {name!r} has {len(a)} values for {n} points")
    kind = a.dtype.kind
    if kind == "b":
        return a
    if kind == "i":
        return a.astype(np.int64)
    if kind == "u":
        if len(a) and int(a.max()) > _INT64_MAX:
            raise ValueError(f"column {name!r} holds integers beyond int64")
        return a.astype(np.int64)
    if kind == "f":
        return a.astype(np.float64)
    if kind == "U":
        return a.astype(object)
    if kind == "M":
        return _utc(a)
    if kind == "O":
        return _from_objects(name, a)
    raise ValueError(f"column {name!r} has dtype {a.dtype}, which a GeoPackage cannot hold")


# --- the GeoPackage ----------------------------------------------------------------------------


def _crs(crs: SiteCRS):
    """The site CRS for GDAL: from the PROJJSON when the manifest has it, else the EPSG code."""
    import pyproj

    try:
        if crs.projjson is not None:
            return pyproj.CRS.from_json_dict(crs.projjson)
        return pyproj.CRS.from_epsg(int(crs.epsg))
    except pyproj.exceptions.CRSError as exc:
        raise ValueError(f"the site CRS is not one PROJ knows ({exc})") from None


def _side_files(path: Path) -> list[Path]:
    return [path.with_name(path.name + s) for s in _SIDE_SUFFIXES]


def _remove_side_files(path: Path) -> None:
    for p in _side_files(path):
        p.unlink(missing_ok=True)


def write_geopackage(path, layer: str, xy: np.ndarray,
                     columns: Mapping[str, np.ndarray | Sequence], crs: SiteCRS) -> None:
    """Write an OGC GeoPackage with one point layer ``layer`` (``fid``, ``geom``, then
    ``columns`` in their order) at ``xy`` (n, 2, in the site CRS) and its R-tree spatial index,
    with geopandas (GDAL) and atomically (`..files.write_atomic`: a temporary file beside
    ``path``, fsynced, then renamed; nothing is left behind on error, SQLite's journal files
    included).

    Attribute types follow the values: integers -> INTEGER, floats -> REAL (NaN -> NULL),
    bool -> BOOLEAN, str -> TEXT, datetimes -> DATETIME (UTC; naive values are taken as UTC);
    None -> NULL. Lists and object arrays are typed by their non-None values (mixed kinds and
    dates -> TEXT); pyarrow arrays work too (dictionary columns as their values). A NaN row
    of ``xy`` (or half of one) is written as an empty point, which the index leaves out.

    The layer's CRS is ``crs.projjson`` when there is one, else EPSG ``crs.epsg``; GDAL records
    it in ``gpkg_spatial_ref_sys`` under its EPSG code. ValueError when ``crs.epsg`` is None
    (or 0 / -1, the GeoPackage's undefined systems), for a CRS PROJ does not know, for a layer
    name other than letters, digits and underscores (or one starting with "gpkg_"), a column
    named fid or geom, two columns differing only in case, columns holding arrays or bytes,
    and columns whose length differs from ``xy``."""
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
    attributes, seen = {}, {"fid", "geom"}
    for name, values in columns.items():
        if not isinstance(name, str) or not name or "\x00" in name:
            raise ValueError(f"column name {name!r} is not a usable name")
        if name.lower() in seen:
            raise ValueError(f"column {name!r} clashes with another column (fid and geom are "
                             "the layer's own; names are compared ignoring case)")
        seen.add(name.lower())
        attributes[name] = _attribute(name, values, n)
    site = _crs(crs)

    import geopandas
    import pandas as pd
    import shapely

    points = shapely.points(a)
    points[np.isnan(a).any(axis=1)] = shapely.Point()  # POINT EMPTY, not POINT (NaN NaN)
    frame = pd.DataFrame(attributes, index=pd.RangeIndex(n), columns=list(attributes))
    # the geometry goes in as the column "geom": a GeoSeries passed as geometry= can land in a
    # column named "geometry", over an attribute of that name
    frame["geom"] = geopandas.GeoSeries(points, index=frame.index, crs=site)
    gdf = geopandas.GeoDataFrame(frame, geometry="geom", crs=site)

    def write(tmp: Path) -> None:
        tmp.unlink(missing_ok=True)  # what a crashed earlier write left
        _remove_side_files(tmp)  # (a stale journal must not touch the new file)
        try:
            gdf.to_file(tmp, driver="GPKG", layer=layer, engine="pyogrio",
                        index=False, geometry_type="Point",
                        layer_options={"SPATIAL_INDEX": "YES"})
            left = [p.name for p in _side_files(tmp) if p.exists()]
            if left:  # GDAL closed the file without merging them in: it is not whole
                raise OSError(f"GDAL left {', '.join(left)} beside the GeoPackage it wrote")
        finally:
            _remove_side_files(tmp)

    write_atomic(path, write)
