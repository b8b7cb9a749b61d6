"""Persisted spatial index: Hilbert-ordered GeoParquet 1.1 with a bbox covering column.

Rows of locations.parquet are sorted along a Hilbert curve over the site, so each row group
covers a compact patch of seabed; the ``bbox`` struct column's row-group statistics then let a
bounding-box read skip every row group outside the box. ``near`` answers radius queries.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from . import schema

HILBERT_ORDER = 16  # 65536 x 65536 grid over the site's bounding box


def hilbert_distance(x: np.ndarray, y: np.ndarray, order: int = HILBERT_ORDER) -> np.ndarray:
    """Position of each point along a Hilbert curve over the points' bounding box."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    n = 1 << order
    if x.size == 0:
        return np.zeros(0, dtype=np.uint64)
    span = max(float(np.ptp(x)), float(np.ptp(y)), 1e-9)
    xi = ((x - x.min()) / span * (n - 1)).astype(np.int64)
    yi = ((y - y.min()) / span * (n - 1)).astype(np.int64)
    d = np.zeros(x.shape, dtype=np.uint64)
    s = n >> 1
    while s > 0:
        rx = (xi & s) > 0
        ry = (yi & s) > 0
        d += np.uint64(s) * np.uint64(s) * ((3 * rx.astype(np.uint64)) ^ ry.astype(np.uint64))
        # rotate the quadrant so the curve stays continuous
        flip = (~ry) & rx
        xi = np.where(flip, n - 1 - xi, xi)
        yi = np.where(flip, n - 1 - yi, yi)
        swap = ~ry
        xi, yi = np.where(swap, yi, xi), np.where(swap, xi, yi)
        s >>= 1
    return d


def row_group_rows(n: int) -> int:
    """Modest row groups: ~512 per file, each between 256 and 16k rows.

    With Hilbert-ordered rows each group covers ~1/512 of the site; a box of 1 % of the site
    then touches its own ~5 groups plus those along its edges (a few % of the file).
    """
    return int(np.clip(n // 512, 256, 16384))


def to_geoparquet_table(locations: pa.Table, crs_projjson: dict) -> pa.Table:
    """Append WKB point geometry and the bbox covering column; attach the ``geo`` metadata
    (the contract's one GeoParquet writer, which the trainer's exports use too)."""
    xy = np.column_stack([locations.column("easting").to_numpy(),
                          locations.column("northing").to_numpy()])
    return schema.geoparquet_points(locations, xy, crs_projjson)


def _row_group_bounds(meta: pq.FileMetaData) -> np.ndarray:
    """(n_row_groups, 4) xmin, ymin, xmax, ymax from the bbox column statistics."""
    names = [meta.schema.column(i).path for i in range(meta.num_columns)]
    cols = {k: names.index(f"{schema.BBOX_COLUMN}.{k}") for k in ("xmin", "ymin", "xmax", "ymax")}
    out = np.empty((meta.num_row_groups, 4))
    for g in range(meta.num_row_groups):
        rg = meta.row_group(g)
        out[g, 0] = rg.column(cols["xmin"]).statistics.min
        out[g, 1] = rg.column(cols["ymin"]).statistics.min
        out[g, 2] = rg.column(cols["xmax"]).statistics.max
        out[g, 3] = rg.column(cols["ymax"]).statistics.max
    return out


def read_bbox(
    path: str | Path, xmin: float, ymin: float, xmax: float, ymax: float,
    columns: list[str] | None = None,
) -> tuple[pa.Table, int]:
    """Rows inside a box (site CRS metres), reading only row groups whose bbox intersects it.

    Returns the rows and the number of row groups read.
    """
    pf = pq.ParquetFile(path)
    bounds = _row_group_bounds(pf.metadata)
    hit = np.flatnonzero(
        (bounds[:, 0] <= xmax) & (bounds[:, 2] >= xmin) & (bounds[:, 1] <= ymax) & (bounds[:, 3] >= ymin)
    )
    read_cols = None if columns is None else sorted(set(columns) | {"easting", "northing"})
    if len(hit) == 0:
        table = pf.schema_arrow.empty_table()
        return (table if read_cols is None else table.select(read_cols)), 0
    table = pf.read_row_groups(hit.tolist(), columns=read_cols)
    e, n = table.column("easting"), table.column("northing")
    mask = pc.and_(pc.and_(pc.greater_equal(e, xmin), pc.less_equal(e, xmax)),
                   pc.and_(pc.greater_equal(n, ymin), pc.less_equal(n, ymax)))
    return table.filter(mask), int(len(hit))


def near(locations: str | Path | pd.DataFrame, x: float, y: float, radius: float) -> pd.DataFrame:
    """Images within ``radius`` metres of (x, y) in the site CRS, nearest first.

    ``locations`` is a locations.parquet path (only the row groups near the point are read) or
    a DataFrame with ``easting`` and ``northing`` columns. Adds a ``distance_m`` column.
    """
    if isinstance(locations, str | Path):
        cols = [c for c in schema.LOCATIONS.names]
        table, _ = read_bbox(locations, x - radius, y - radius, x + radius, y + radius, columns=cols)
        df = table.to_pandas()
    else:
        df = locations
    d = np.hypot(df["easting"].to_numpy() - x, df["northing"].to_numpy() - y)
    keep = d <= radius
    out = df.loc[keep].copy()
    out["distance_m"] = d[keep]
    return out.sort_values(["distance_m", "idx"] if "idx" in out else "distance_m").reset_index(drop=True)
