"""The embeddings file: one GeoParquet row per located image with its frozen encoder features.

``python -m ssl.embed`` writes it, ``python -m ssl.habitats`` reads it; geopandas, DuckDB and
QGIS open it as points in the site CRS. Columns: the locations table's (idx, image_id, dive,
path, timestamp, lat, lon, easting, northing, depth_m, altitude_m, heading_deg, label), the
``embedding`` as a fixed-size list of float32, ``content_sha256`` (sha256 of the image's stored
JPEG bytes: the content key ``ssl.embed --reuse`` matches rows by; absent from files written
before it), then ``geometry`` (WKB points) and its ``bbox`` covering column. Rows keep the locations file's order (``idx``, itself along a Hilbert curve).

Key-value metadata (strings) tie the file to what it was computed from, so a reader can refuse
to mix it with another survey's labels or pairs:

    embeddings_version  this module's EMBEDDINGS_VERSION
    dataset             the manifest's dataset digest (contract.dataset_identity)
    locations_sha256    sha256 of the locations file the rows come from
    pairs               the pairs.parquet it was computed for (absolute path)
    checkpoint, checkpoint_sha256, encoder (JSON: objective, backbone, image size, step)
    embedding_dim, r_loc_m, crs, crs_wkt, catalog, created_utc
    features            JSON: checkpoint_sha256, image_size, precision (bfloat16 on CUDA,
                        float32 on the CPU), dim: what must be equal for --reuse to copy a row
    shards              JSON: each dive's shard content digest (from the manifest's identity)
    reuse               JSON, with --reuse: the old file, rows reused and embedded, or why none
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .. import contract as c
from ..contract import SiteCRS, site_crs
from ..flags import not_a_file

EMBEDDINGS_VERSION = "1"
EMBEDDING_COLUMN = "embedding"
CONTENT_COLUMN = "content_sha256"  # sha256 (hex) of the image's stored JPEG bytes
# the locations columns an embeddings file carries (geometry and bbox are rebuilt from xy)
LOCATION_COLUMNS = ("idx", "image_id", "dive", "path", "timestamp", "lat", "lon", "easting",
                    "northing", "depth_m", "altitude_m", "heading_deg", "label")

META_VERSION = "embeddings_version"
META_DATASET = "dataset"
META_LOCATIONS_SHA256 = c.META_LOCATIONS_SHA256
META_PAIRS = "pairs"
META_CHECKPOINT = "checkpoint"
META_CHECKPOINT_SHA256 = "checkpoint_sha256"
META_ENCODER = "encoder"
META_DIM = "embedding_dim"
META_R_LOC = "r_loc_m"
META_FEATURES = "features"
META_SHARDS = "shards"
META_REUSE = "reuse"
REQUIRED_META = (META_VERSION, META_DATASET, META_PAIRS, META_DIM, META_R_LOC, c.META_CRS)


class EmbeddingsError(ValueError):
    """A file given as embeddings is missing, damaged or not an ssl.embed file."""


@dataclass
class Embeddings:
    """An embeddings file read back, indexed by row (= ``idx`` of its manifest)."""

    path: Path
    idx: np.ndarray  # int32 (n,)
    image_id: np.ndarray  # object (n,)
    dive: np.ndarray  # object (n,)
    rel_path: np.ndarray  # object (n,) relative to the catalog root
    xy: np.ndarray  # float64 (n, 2) site CRS metres
    X: np.ndarray  # float32 (n, d)
    label: np.ndarray  # object (n,), None where unlabelled
    dataset: str  # the manifest's dataset digest
    pairs: Path  # the pairs.parquet the rows were computed for
    r_loc_m: float
    crs: SiteCRS
    meta: dict[str, str]

    @property
    def n(self) -> int:
        return len(self.idx)

    @property
    def encoder(self) -> dict:
        try:
            return json.loads(self.meta.get(META_ENCODER, "{}"))
        except ValueError:
            return {}


def embedding_array(X: np.ndarray) -> pa.FixedSizeListArray:
    """(n, d) float32 as a fixed-size list column (zero copy)."""
    X = np.ascontiguousarray(X, dtype=np.float32)
    return pa.FixedSizeListArray.from_arrays(pa.array(X.reshape(-1)), X.shape[1])


def is_embeddings_file(path: Path) -> bool:
    """Whether ``path`` is a Parquet file with this module's version key (written by ssl.embed)."""
    try:
        meta = pq.read_schema(path).metadata or {}
    except (OSError, pa.ArrowException):
        return False
    return META_VERSION.encode() in meta


def read_embeddings(path: str | Path) -> Embeddings:
    """Read and check an embeddings file (EmbeddingsError saying what is wrong otherwise)."""
    path = Path(path)
    why = not_a_file(path, "the output of python -m ssl.embed --checkpoint CKPT --manifest "
                     "pairs.parquet --out FILE", ("embeddings.parquet",))
    if why:
        raise EmbeddingsError(why)
    try:
        schema = pq.read_schema(path)
    except (OSError, pa.ArrowException) as exc:
        raise EmbeddingsError(f"{path}: not a readable Parquet file ({str(exc)[:120]}); expected "
                              "the output of python -m ssl.embed") from None
    raw = schema.metadata or {}
    meta = {k.decode(): v.decode() for k, v in raw.items()}
    missing = [k for k in REQUIRED_META if k not in meta]
    if missing:
        raise EmbeddingsError(f"{path}: not an ssl.embed file (metadata keys {missing} are "
                              "missing); compute embeddings with python -m ssl.embed")
    if meta[META_VERSION] != EMBEDDINGS_VERSION:
        raise EmbeddingsError(f"{path}: embeddings version {meta[META_VERSION]!r}, expected "
                              f"{EMBEDDINGS_VERSION!r}; compute them again with python -m "
                              "ssl.embed")
    need = ("idx", "image_id", "dive", "path", "easting", "northing", "label", EMBEDDING_COLUMN)
    absent = [k for k in need if k not in schema.names]
    if absent:
        raise EmbeddingsError(f"{path}: columns {absent} are missing; compute the embeddings "
                              "again with python -m ssl.embed")
    try:
        t = pq.read_table(path, columns=list(need))
    except (OSError, pa.ArrowException) as exc:
        raise EmbeddingsError(f"{path}: cannot be read ({str(exc)[:120]}); the file is damaged: "
                              "compute it again with python -m ssl.embed") from None
    emb = t.column(EMBEDDING_COLUMN).combine_chunks()
    if not pa.types.is_fixed_size_list(emb.type):
        raise EmbeddingsError(f"{path}: column {EMBEDDING_COLUMN!r} is {emb.type}, expected a "
                              "fixed-size list of float32")
    d = emb.type.list_size
    X = emb.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
    X = X.reshape(len(emb), d)
    bad = ~np.isfinite(X).all(axis=1)
    if bad.any():
        raise EmbeddingsError(f"{path}: {int(bad.sum())} of {len(X)} embeddings hold non-finite "
                              "values (NaN or infinite); ssl.embed never writes those, so the "
                              "file was changed or written by another tool: embed again with "
                              "python -m ssl.embed")

    def strings(name: str) -> np.ndarray:
        col = t.column(name)
        if pa.types.is_dictionary(col.type):
            col = col.cast(col.type.value_type)
        return np.array(col.to_pylist(), dtype=object)

    xy = np.stack([t.column("easting").to_numpy(), t.column("northing").to_numpy()], axis=1)
    try:
        r_loc = float(meta[META_R_LOC])
    except ValueError:
        raise EmbeddingsError(f"{path}: metadata {META_R_LOC}={meta[META_R_LOC]!r} is not a "
                              "number; compute the embeddings again") from None
    return Embeddings(
        path=path, idx=t.column("idx").to_numpy().astype(np.int32), image_id=strings("image_id"),
        dive=strings("dive"), rel_path=strings("path"), xy=xy.astype(np.float64), X=X,
        label=strings("label"), dataset=meta[META_DATASET], pairs=Path(meta[META_PAIRS]),
        r_loc_m=r_loc, crs=site_crs(raw), meta=meta)
