"""Data contracts of the manifests: one place for column names, types and metadata keys.

Writers, readers and tests all use these schemas (see DESIGN.md, "Data contracts").
"""

from __future__ import annotations

import pyarrow as pa

SCHEMA_VERSION = "1"
BUILDER_VERSION = "0.1.0"

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

# Key-value metadata (all values are strings in the Parquet footer).
META_SCHEMA_VERSION = "schema_version"
META_CATALOG = "catalog"
META_CATALOG_SHA256 = "catalog_sha256"
META_CRS = "crs"
META_BUILDER = "builder_version"
META_CREATED = "created_utc"
META_COUNTS = "counts"
META_PAIR_POLICY = "pair_policy"
META_LOCATIONS_SHA256 = "locations_sha256"
META_LOCATIONS_PATH = "locations"
