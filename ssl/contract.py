"""The manifest contract: the one definition of the files the pipeline writes and the trainer
reads (schemas, file names, metadata keys, the schema version and the dataset identity).

The pipeline's writer (``pipeline/schema.py`` re-exports this module), the pipeline's reader
(``pipeline/manifest.py``) and the trainer's reader (``ssl/manifest.py``) all import it. It uses
only pyarrow, numpy and the standard library, so the trainer keeps running on a stock PyTorch box
without the geospatial stack; it must never import torch, Prefect or ``pipeline``.

Version history (``schema_version`` in every file's metadata; readers refuse any other):
  1  builder 0.1.x: locations, pairs, quarantine, images/<dive>.parquet
  2  builder 0.2.x: adds images/<dive>.arrow (the shard's bytes, uncompressed Arrow IPC) and the
     ``dataset`` identity, ``image_validation`` and per-shard content digests in the pairs
     metadata
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

SCHEMA_VERSION = "2"
# which builder writes which schema version (named in the message when a reader refuses a file)
BUILDER_FOR_SCHEMA = {"1": "0.1.0", "2": "0.2.0"}
BUILDER_VERSION = BUILDER_FOR_SCHEMA[SCHEMA_VERSION]

# --- files of a published manifest set (relative to its folder) -----------------------------

LOCATIONS_FILE = "locations.parquet"
PAIRS_FILE = "pairs.parquet"
QUARANTINE_FILE = "quarantine.parquet"
IMAGES_DIR = "images"


def shard_name(dive: str) -> str:
    """The Parquet image shard of a dive: (image_id, jpeg) at the training size."""
    return f"{IMAGES_DIR}/{dive}.parquet"


def store_name(dive: str) -> str:
    """The same bytes as an uncompressed Arrow IPC file: each image is one contiguous range
    of the file, which readers read on demand, so every process of a node shares one copy
    through the page cache."""
    return f"{IMAGES_DIR}/{dive}.arrow"


# --- schemas ---------------------------------------------------------------------------------

LOCATIONS = pa.schema([
    pa.field("idx", pa.int32(), nullable=False),
    pa.field("image_id", pa.string(), nullable=False),
    pa.field("dive", pa.dictionary(pa.int32(), pa.string()), nullable=False),
    pa.field("path", pa.string(), nullable=False),
    pa.field("timestamp", pa.timestamp("us", tz="UTC"), nullable=False),
    pa.field("lat", pa.float64(), nullable=False),
    pa.field("lon", pa.float64(), nullable=False),
    pa.field("easting", pa.float64(), nullable=False),
    pa.field("northing", pa.float64(), nullable=False),
    pa.field("depth_m", pa.float32()),
    pa.field("altitude_m", pa.float32()),
    pa.field("heading_deg", pa.float32()),
    pa.field("width", pa.int32()),
    pa.field("height", pa.int32()),
    pa.field("label", pa.string()),
])

# GeoParquet additions to LOCATIONS: WKB point geometry and the 1.1 bbox covering column.
BBOX_TYPE = pa.struct([
    pa.field("xmin", pa.float64()), pa.field("ymin", pa.float64()),
    pa.field("xmax", pa.float64()), pa.field("ymax", pa.float64()),
])
GEOMETRY_COLUMN = "geometry"
BBOX_COLUMN = "bbox"
GEO_KEY = "geo"  # the GeoParquet metadata key
GEOPARQUET_VERSION = "1.1.0"

PAIRS = pa.schema([
    pa.field("anchor", pa.int32(), nullable=False),
    pa.field("positive", pa.int32(), nullable=False),
    pa.field("distance_m", pa.float32(), nullable=False),
    pa.field("same_dive", pa.bool_(), nullable=False),
    pa.field("dt_s", pa.float32(), nullable=False),
])

QUARANTINE = pa.schema([
    pa.field("dive", pa.string(), nullable=False),
    pa.field("source", pa.string(), nullable=False),  # a file (relative to root) or "file:row"
    pa.field("reason", pa.string(), nullable=False),  # a code from pipeline.reasons
    pa.field("detail", pa.string()),
])

IMAGE_SHARD = pa.schema([
    pa.field("image_id", pa.string(), nullable=False),
    pa.field("jpeg", pa.binary(), nullable=False),
])

# images/<dive>.arrow: large_binary (64-bit offsets), so a dive may exceed 2 GiB of JPEGs
IMAGE_STORE = pa.schema([
    pa.field("image_id", pa.string(), nullable=False),
    pa.field("jpeg", pa.large_binary(), nullable=False),
])

# the columns each reader needs (a file without them is refused with their names)
TRAINER_LOCATION_COLUMNS = ("idx", "image_id", "dive", "easting", "northing", "timestamp",
                            "label")
TRAINER_PAIR_COLUMNS = ("anchor", "positive", "distance_m")

# --- key-value metadata (all values are strings in the Parquet footer) ------------------------

META_SCHEMA_VERSION = "schema_version"
META_CATALOG = "catalog"
META_CATALOG_SHA256 = "catalog_sha256"
META_CRS = "crs"
# the site CRS as WKT (OGC WKT1 as GDAL writes it), recorded on locations.parquet so
# trainer-side tools can write a GeoPackage without pyproj; optional for readers (manifests
# built before it lack it)
META_CRS_WKT = "crs_wkt"
META_BUILDER = "builder_version"
META_CREATED = "created_utc"
META_COUNTS = "counts"
# on pairs.parquet only
META_PAIR_POLICY = "pair_policy"
META_LOCATIONS_SHA256 = "locations_sha256"
META_LOCATIONS_PATH = "locations"
META_DATASET = "dataset"  # JSON: dataset_identity(...)
META_IMAGE_VALIDATION = "image_validation"  # "decode" (shards written) or "header" (none)
PAIRS_REQUIRED_META = (META_SCHEMA_VERSION, META_LOCATIONS_SHA256, META_LOCATIONS_PATH,
                       META_PAIR_POLICY, META_DATASET, META_IMAGE_VALIDATION)

REBUILD = "rebuild the manifests with `python -m pipeline build --catalog <catalog.yaml>`"


def schema_problem(meta: Mapping[str, str], path: object) -> str | None:
    """Why a file's metadata does not match this contract's version, or None when it does."""
    found = meta.get(META_SCHEMA_VERSION)
    if found == SCHEMA_VERSION:
        return None
    builder = meta.get(META_BUILDER, "unknown")
    if found is None:
        return (f"{path}: no '{META_SCHEMA_VERSION}' key in its metadata; expected a manifest "
                f"written by the seafloor-ssl pipeline (schema {SCHEMA_VERSION}, builder "
                f"{BUILDER_VERSION}); {REBUILD}")
    wanted = BUILDER_FOR_SCHEMA.get(found)
    if found in BUILDER_FOR_SCHEMA and int(found) < int(SCHEMA_VERSION):
        return (f"{path}: manifest schema {found} (written by builder {builder}); this "
                f"version reads schema {SCHEMA_VERSION}, written by builder {BUILDER_VERSION} "
                f"and later: {REBUILD} using builder {BUILDER_VERSION}")
    return (f"{path}: manifest schema {found!r} (written by builder {builder}) is not one this "
            f"version knows (it reads schema {SCHEMA_VERSION}, builder {BUILDER_VERSION}); "
            f"use the seafloor-ssl version that wrote it"
            + (f" (builder {wanted})" if wanted else "") + f", or {REBUILD} with this one")


# --- dataset identity: what training depends on, not when or how the files were written -----

IDENTITY_VERSION = 1
POSITION_QUANTUM_M = 1e-4  # positions are compared to 0.1 mm


def _sha(*parts: bytes) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(len(p).to_bytes(8, "little"))
        h.update(p)
    return h.hexdigest()


def _strings_digest(values: Iterable[str]) -> str:
    h = hashlib.sha256()
    for v in values:
        b = v.encode()
        h.update(len(b).to_bytes(8, "little"))
        h.update(b)
    return h.hexdigest()


def _positions_digest(xy: np.ndarray) -> str:
    q = np.round(np.asarray(xy, dtype=np.float64) / POSITION_QUANTUM_M).astype(np.int64)
    return _sha(np.ascontiguousarray(q).tobytes())


def shard_digest(image_ids: Sequence[str], jpegs: Sequence[bytes]) -> str:
    """Content digest of one dive's image bytes, independent of row order and file format."""
    rows = sorted(zip(image_ids, jpegs, strict=True), key=lambda r: r[0])
    h = hashlib.sha256()
    for image_id, jpeg in rows:
        b = image_id.encode()
        h.update(len(b).to_bytes(8, "little"))
        h.update(b)
        h.update(hashlib.sha256(jpeg).digest())
    return h.hexdigest()


def dataset_identity(image_id: Sequence[str], dive: Sequence[str], xy: np.ndarray,
                     anchor: np.ndarray, positive: np.ndarray, policy: Mapping,
                     shards: Mapping[str, str]) -> dict:
    """The identity of a training dataset: the images in ``idx`` order, their positions, the
    pairs and their policy, and each dive's shard content digest.

    ``image_id``, ``dive`` and ``xy`` (n, 2) are in ``idx`` order; ``shards`` maps each dive to
    its :func:`shard_digest`. Build times, file names and labels are not part of it, so a
    rebuild that changes none of these keeps the identity (and runs stay resumable)."""
    image_id = [str(s) for s in image_id]
    dive = [str(d) for d in dive]
    xy = np.asarray(xy, dtype=np.float64).reshape(len(image_id), 2)
    per_dive: dict[str, dict] = {}
    members: dict[str, list[int]] = {}
    for i, d in enumerate(dive):
        members.setdefault(d, []).append(i)
    for d in sorted(set(members) | set(shards)):
        rows = sorted(members.get(d, []), key=lambda i: image_id[i])
        per_dive[d] = {"images": len(rows),
                       "ids": _strings_digest(image_id[i] for i in rows),
                       "positions": _positions_digest(xy[rows]) if rows else _sha(b""),
                       "shard": shards.get(d)}
    a = np.asarray(anchor, dtype=np.int32)
    p = np.asarray(positive, dtype=np.int32)
    body = {
        "version": IDENTITY_VERSION,
        "images": len(image_id),
        "order": _strings_digest(image_id),
        "positions": _positions_digest(xy),
        "pairs": {"n": int(len(a)), "digest": _sha(a.tobytes(), p.tobytes()),
                  "policy": dict(policy)},
        "dives": per_dive,
    }
    return {**body, "digest": _sha(json.dumps(body, sort_keys=True).encode())}


def identity_changes(old: Mapping, new: Mapping) -> list[str]:
    """What differs between two dataset identities, in words (empty when they are equal)."""
    if old.get("digest") == new.get("digest"):
        return []
    if old.get("version") != new.get("version"):
        return [f"the identity format changed (version {old.get('version')} -> "
                f"{new.get('version')})"]
    out: list[str] = []
    od, nd = old.get("dives", {}), new.get("dives", {})
    added, removed = sorted(set(nd) - set(od)), sorted(set(od) - set(nd))
    if added:
        out.append("dive(s) added: " + ", ".join(f"{d} ({nd[d]['images']} images)"
                                                 for d in added))
    if removed:
        out.append("dive(s) removed: " + ", ".join(f"{d} ({od[d]['images']} images)"
                                                   for d in removed))
    for d in sorted(set(od) & set(nd)):
        o, n = od[d], nd[d]
        if o["images"] != n["images"]:
            out.append(f"dive {d}: {o['images']} -> {n['images']} images")
        elif o["ids"] != n["ids"]:
            out.append(f"dive {d}: the same number of images ({n['images']}) but other ones")
        elif o["positions"] != n["positions"]:
            out.append(f"dive {d}: image positions moved (more than "
                       f"{POSITION_QUANTUM_M * 1000:g} mm)")
        if o.get("shard") != n.get("shard"):
            out.append(f"dive {d}: the image bytes in its shard changed")
    op, np_ = old.get("pairs", {}), new.get("pairs", {})
    if op.get("policy") != np_.get("policy"):
        a, b = op.get("policy", {}), np_.get("policy", {})
        diff = [f"{k} {a.get(k)!r} -> {b.get(k)!r}" for k in sorted(set(a) | set(b))
                if a.get(k) != b.get(k)]
        out.append("pair policy: " + ", ".join(diff))
    if op.get("n") != np_.get("n"):
        out.append(f"pairs: {op.get('n')} -> {np_.get('n')}")
    elif op.get("digest") != np_.get("digest"):
        out.append(f"pairs: the same number ({np_.get('n')}) but other pairs")
    if not out and old.get("order") != new.get("order"):
        out.append("the same images in another idx order")
    if not out:
        out.append("the dataset digest differs")
    return out


# ---------------------------------------------------------------- GeoParquet points

# ISO WKB Point, little-endian: byte order 1, type 1 (uint32), x, y (float64); 21 bytes, packed
_WKB_POINT = np.dtype([("order", "u1"), ("type", "<u4"), ("x", "<f8"), ("y", "<f8")])
_INT32_MAX = 2**31 - 1


def check_xy(xy: np.ndarray, n: int | None = None) -> np.ndarray:
    a = np.asarray(xy, dtype=np.float64)
    if a.ndim != 2 or a.shape[1] != 2:
        raise ValueError(f"xy must have shape (n, 2), got {a.shape}")
    if n is not None and len(a) != n:
        raise ValueError(f"xy has {len(a)} rows but the table has {n}")
    if np.isinf(a).any():
        raise ValueError(f"xy holds infinite coordinates (row {int(np.isinf(a).any(1).argmax())})")
    return np.ascontiguousarray(a)


def point_wkb(xy: np.ndarray) -> pa.Array:
    """Little-endian ISO WKB Points of ``xy`` (n, 2) as a pyarrow binary array (large_binary
    past 2 GiB of WKB, about 100 million points). Built in one numpy pass; a NaN row gives
    NaN coordinates (how WKB writes an empty point)."""
    a = check_xy(xy)
    n = len(a)
    rec = np.empty(n, dtype=_WKB_POINT)
    rec["order"] = 1
    rec["type"] = 1
    rec["x"] = a[:, 0]
    rec["y"] = a[:, 1]
    size = _WKB_POINT.itemsize
    big = n * size > _INT32_MAX
    offsets = np.arange(n + 1, dtype=np.int64 if big else np.int32) * size
    return pa.Array.from_buffers(pa.large_binary() if big else pa.binary(), n,
                                 [None, pa.py_buffer(offsets), pa.py_buffer(rec.tobytes())])


def point_bounds(a: np.ndarray) -> list[float] | None:
    """[xmin, ymin, xmax, ymax] of the non-empty points, None when there are none."""
    ok = ~np.isnan(a).any(axis=1)
    if not ok.any():
        return None
    b = a[ok]
    return [float(b[:, 0].min()), float(b[:, 1].min()), float(b[:, 0].max()),
            float(b[:, 1].max())]

def geoparquet_points(table: pa.Table, xy: np.ndarray, crs_projjson: dict) -> pa.Table:
    """``table`` as GeoParquet 1.1, the one writer of both sides: the WKB point column
    ``geometry`` and the ``bbox`` covering struct column of ``xy`` (n, 2, site CRS metres) are
    appended (columns of those names replaced) and the ``geo`` metadata set (primary column,
    WKB, ["Point"], the CRS as PROJJSON, bbox of the non-empty points, covering); the table's
    other metadata is kept."""
    a = check_xy(xy, table.num_rows)
    meta = dict(table.schema.metadata or {})
    for name in (GEOMETRY_COLUMN, BBOX_COLUMN):
        while name in table.column_names:
            table = table.remove_column(table.column_names.index(name))
    x, y = pa.array(a[:, 0]), pa.array(a[:, 1])
    table = table.append_column(GEOMETRY_COLUMN, point_wkb(a))
    table = table.append_column(BBOX_COLUMN, pa.StructArray.from_arrays(
        [x, y, x, y], fields=list(BBOX_TYPE)))
    column = {
        "encoding": "WKB",
        "geometry_types": ["Point"],
        "crs": crs_projjson,
        "covering": {"bbox": {k: [BBOX_COLUMN, k] for k in ("xmin", "ymin", "xmax", "ymax")}},
    }
    bbox = point_bounds(a)
    if bbox is not None:
        column["bbox"] = bbox
    meta[GEO_KEY.encode()] = json.dumps({"version": GEOPARQUET_VERSION,
                                         "primary_column": GEOMETRY_COLUMN,
                                         "columns": {GEOMETRY_COLUMN: column}}).encode()
    return table.replace_schema_metadata(meta)


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
