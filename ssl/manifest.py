"""Reading the pipeline's manifests for training, with the checks that keep them consistent.

``pairs.parquet`` names the ``locations.parquet`` it was built from (a path relative to its own
folder) and that file's sha256 in its key-value metadata; the image shards live in
``images/<dive>.parquet`` beside them. :func:`load_manifest` refuses a set of files that do not
belong together, so a trainer never pairs indices with the wrong rows.

Only pyarrow and numpy are used here: the trainer must run on a GPU box with stock PyTorch,
without the pipeline's geospatial stack.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

# Metadata keys and column names written by the pipeline (pipeline/schema.py; copied, not
# imported, so that this package has no dependency on the pipeline).
META_LOCATIONS_SHA256 = "locations_sha256"
META_LOCATIONS_PATH = "locations"
META_PAIR_POLICY = "pair_policy"
REQUIRED_META = (META_LOCATIONS_SHA256, META_LOCATIONS_PATH, META_PAIR_POLICY)
LOCATION_COLUMNS = ("idx", "image_id", "dive", "easting", "northing", "timestamp", "label")
PAIR_COLUMNS = ("anchor", "positive", "distance_m")
REBUILD = "rebuild the manifests with `python -m pipeline build --catalog <catalog.yaml>`"


class ManifestError(ValueError):
    """The manifests are missing, incomplete, or do not belong together."""


@dataclass
class Manifest:
    """Everything the trainer needs from one published manifest folder, indexed by ``idx``."""

    pairs_path: Path
    locations_path: Path
    folder: Path
    n: int
    image_id: np.ndarray  # object (n,) "dive/relpath"
    dive: np.ndarray  # object (n,)
    xy: np.ndarray  # float64 (n, 2) easting, northing in the site CRS (metres)
    centre: np.ndarray  # float64 (2,) midpoint of the bounding box of xy
    extent_m: float  # max of the x and y ranges, at least 1
    timestamp_s: np.ndarray  # float64 (n,) seconds since the Unix epoch (UTC)
    label: np.ndarray  # object (n,), None where there is no label
    anchor: np.ndarray  # int32 (p,), anchor < positive
    positive: np.ndarray  # int32 (p,)
    distance_m: np.ndarray  # float32 (p,)
    r_loc_m: float
    shards: dict[str, Path] = field(default_factory=dict)  # dive -> images/<dive>.parquet
    locations_sha256: str = ""
    pair_policy: dict = field(default_factory=dict)

    def xy_centred(self) -> np.ndarray:
        """Positions relative to the site centre as float32 (safe at UTM magnitudes)."""
        return (self.xy - self.centre).astype(np.float32)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _read_metadata(path: Path) -> dict[str, str]:
    try:
        meta = pq.read_schema(path).metadata or {}
    except (OSError, pa.ArrowException) as exc:
        raise ManifestError(f"{path}: cannot read it as Parquet ({exc}); {REBUILD}") from exc
    return {k.decode(): v.decode() for k, v in meta.items()}


def _read_table(path: Path, columns: tuple[str, ...], what: str) -> pa.Table:
    try:
        names = set(pq.read_schema(path).names)
    except (OSError, pa.ArrowException) as exc:
        raise ManifestError(f"{path}: cannot read the {what} ({exc}); {REBUILD}") from exc
    missing = [c for c in columns if c not in names]
    if missing:
        raise ManifestError(f"{path}: the {what} has no column(s) {missing} (found {sorted(names)}); "
                            f"{REBUILD}")
    return pq.read_table(path, columns=list(columns))


def _strings(col: pa.ChunkedArray) -> np.ndarray:
    if pa.types.is_dictionary(col.type):
        col = col.cast(col.type.value_type)
    return np.array(col.to_pylist(), dtype=object)


def load_manifest(pairs_path: str | Path) -> Manifest:
    """Read ``pairs.parquet``, the locations file it names and the shard paths, all checked.

    Raises :class:`ManifestError` when a file or metadata key is missing, when the locations
    file's sha256 differs from the one recorded in the pairs metadata, when ``idx`` is not
    ``0..n-1``, when a pair refers to a row that does not exist, or when a dive has no shard.
    """
    pairs_path = Path(pairs_path)
    if not pairs_path.is_file():
        raise ManifestError(f"{pairs_path}: no such file; expected the pairs.parquet of a built "
                            f"manifest folder ({REBUILD})")
    # <output>/pairs.parquet links into the current generation: read every file from the folder
    # it really lies in, so a build publishing meanwhile cannot mix two sets
    real = Path(os.path.realpath(pairs_path))
    meta = _read_metadata(real)
    missing = [k for k in REQUIRED_META if not meta.get(k)]
    if missing:
        raise ManifestError(f"{pairs_path}: metadata key(s) {missing} missing (found "
                            f"{sorted(meta)}); expected a pairs manifest written by the pipeline; "
                            f"{REBUILD}")
    try:
        policy = json.loads(meta[META_PAIR_POLICY])
    except json.JSONDecodeError as exc:
        raise ManifestError(f"{pairs_path}: metadata '{META_PAIR_POLICY}' is not JSON "
                            f"({meta[META_PAIR_POLICY]!r}); {REBUILD}") from exc
    if not isinstance(policy, dict) or "r_loc_m" not in policy:
        raise ManifestError(f"{pairs_path}: metadata '{META_PAIR_POLICY}' has no r_loc_m "
                            f"(found {policy!r}); {REBUILD}")

    folder = real.parent
    loc_path = folder / meta[META_LOCATIONS_PATH]
    if not loc_path.is_file():
        raise ManifestError(f"{pairs_path} names the locations file {loc_path}, which does not "
                            f"exist; copy the whole manifest folder, or {REBUILD}")
    expected = meta[META_LOCATIONS_SHA256]
    found = _sha256(loc_path)
    if expected != found:
        raise ManifestError(
            f"{pairs_path.name} was built from a different {loc_path.name} (sha256 {expected} "
            f"expected, found {found} in {loc_path}); the files come from different builds or "
            f"one was modified: {REBUILD}")

    loc = _read_table(loc_path, LOCATION_COLUMNS, "locations manifest")
    loc = loc.sort_by("idx")
    n = loc.num_rows
    idx = loc.column("idx").to_numpy()
    if not np.array_equal(idx, np.arange(n)):
        raise ManifestError(f"{loc_path}: column idx is not 0..{n - 1} (found {n} rows with idx "
                            f"from {idx.min() if n else None} to {idx.max() if n else None}); "
                            f"{REBUILD}")
    image_id = _strings(loc.column("image_id"))
    dive = _strings(loc.column("dive"))
    label = _strings(loc.column("label"))
    xy = np.stack([loc.column("easting").to_numpy(), loc.column("northing").to_numpy()],
                  axis=1).astype(np.float64).reshape(n, 2)
    ts = loc.column("timestamp")
    unit = {"s": 1.0, "ms": 1e-3, "us": 1e-6, "ns": 1e-9}[ts.type.unit]
    timestamp_s = ts.cast(pa.int64()).to_numpy().astype(np.float64) * unit
    if n:
        lo, hi = xy.min(axis=0), xy.max(axis=0)
        centre = (lo + hi) / 2.0
        extent = float(max(hi[0] - lo[0], hi[1] - lo[1], 1.0))
    else:
        centre, extent = np.zeros(2), 1.0

    pairs = _read_table(real, PAIR_COLUMNS, "pairs manifest")
    anchor = pairs.column("anchor").to_numpy().astype(np.int32)
    positive = pairs.column("positive").to_numpy().astype(np.int32)
    distance = pairs.column("distance_m").to_numpy().astype(np.float32)
    if len(anchor) and (min(anchor.min(), positive.min()) < 0
                        or max(anchor.max(), positive.max()) >= n):
        raise ManifestError(f"{pairs_path}: pairs refer to idx outside 0..{n - 1} of {loc_path}; "
                            f"{REBUILD}")

    shards: dict[str, Path] = {}
    absent = []
    for d in sorted(set(dive.tolist())):
        p = folder / "images" / f"{d}.parquet"
        if p.is_file():
            shards[d] = p
        else:
            absent.append(str(p))
    if absent:
        raise ManifestError(f"{loc_path} lists dives whose image shards are missing: {absent}; "
                            f"expected one images/<dive>.parquet per dive beside the manifests; "
                            f"copy the images/ folder too, or {REBUILD}")

    return Manifest(
        pairs_path=pairs_path, locations_path=loc_path, folder=folder, n=n, image_id=image_id,
        dive=dive, xy=xy, centre=centre, extent_m=extent, timestamp_s=timestamp_s, label=label,
        anchor=anchor, positive=positive, distance_m=distance, r_loc_m=float(policy["r_loc_m"]),
        shards=shards, locations_sha256=found, pair_policy=policy)
