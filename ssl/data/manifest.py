"""Reading the pipeline's manifests for training, with the checks that keep them consistent.

``pairs.parquet`` names the ``locations.parquet`` it was built from (a path relative to its own
folder), that file's sha256 (integrity) and the dataset identity (what training depends on) in
its key-value metadata; the uncompressed image files ``images/<dive>.arrow`` lie beside them.
:func:`load_manifest` refuses files of another schema version and a set of files that do not
belong together, so a trainer never pairs indices with the wrong rows. The contract itself
(schemas, keys, version, identity) lives in :mod:`contract`, shared with the pipeline.

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
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .. import contract as c
from ..contract import REBUILD
from ..flags import not_a_file


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
    stores: dict[str, Path] = field(default_factory=dict)  # dive -> images/<dive>.arrow
    locations_sha256: str = ""
    pair_policy: dict = field(default_factory=dict)
    identity: dict = field(default_factory=dict)  # contract.dataset_identity, as recorded

    @property
    def digest(self) -> str:
        """The dataset's content digest (stable across rebuilds that change nothing)."""
        return str(self.identity.get("digest", ""))

    def xy_centred(self) -> np.ndarray:
        """Positions relative to the site centre as float32 (safe at UTM magnitudes)."""
        return (self.xy - self.centre).astype(np.float32)


def file_sha256(path: Path) -> str:
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
    return {k.decode(errors="replace"): v.decode(errors="replace") for k, v in meta.items()}


def _read_table(path: Path, columns: tuple[str, ...], what: str) -> pa.Table:
    try:
        names = set(pq.read_schema(path).names)
    except (OSError, pa.ArrowException) as exc:
        raise ManifestError(f"{path}: cannot read the {what} ({exc}); {REBUILD}") from exc
    missing = [col for col in columns if col not in names]
    if missing:
        raise ManifestError(f"{path}: the {what} has no column(s) {missing} (found "
                            f"{sorted(names)}); {REBUILD}")
    try:
        return pq.read_table(path, columns=list(columns))
    except (OSError, pa.ArrowException) as exc:  # a truncated or damaged file
        raise ManifestError(f"{path}: the {what} is damaged and cannot be read ({exc}); "
                            f"{REBUILD}") from exc


def _strings(col: pa.ChunkedArray) -> np.ndarray:
    if pa.types.is_dictionary(col.type):
        col = col.cast(col.type.value_type)
    return np.array(col.to_pylist(), dtype=object)


def _categories(col: pa.ChunkedArray) -> np.ndarray:
    """A column of few distinct strings (dive, label) as an object array whose rows share one
    Python string per value (not one per row: 55 MB less per million rows)."""
    arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    if not pa.types.is_dictionary(arr.type):
        arr = pc.dictionary_encode(arr)
    values = np.array([*arr.dictionary.to_pylist(), None], dtype=object)  # last: null
    codes = pc.fill_null(arr.indices, -1).to_numpy(zero_copy_only=False).astype(np.int64)
    return values[codes]


def _json_meta(meta: dict[str, str], key: str, path: Path) -> object:
    try:
        return json.loads(meta[key])
    except json.JSONDecodeError as exc:
        raise ManifestError(f"{path}: metadata '{key}' is not JSON ({meta[key][:80]!r}); "
                            f"{REBUILD}") from exc


def _inside_folder(folder: Path, rel: str, what: str, pairs_path: Path) -> Path:
    """The file at ``rel``, a path the pairs metadata names relative to the manifest folder
    (the folder that really holds pairs.parquet), checked BEFORE it is opened: an absolute
    path, a '..' part, or a path that resolves (through symlinks) outside that folder is
    refused with ManifestError. A pipeline writes only plain names inside the folder."""
    text = str(rel)
    parts = text.replace("\\", "/").split("/")
    where = f"the manifest folder {folder}"
    problem = None
    if not text.strip():
        problem = "an empty path"
    elif text.startswith(("/", "\\")) or ":" in text[:3] or Path(text).is_absolute():
        problem = f"an absolute path, outside {where}"
    elif ".." in parts:
        problem = f"a path with '..', which leads outside {where}"
    else:
        real = Path(os.path.realpath(folder / text))
        if not real.is_relative_to(Path(os.path.realpath(folder))):
            problem = f"a path that resolves to {real} through a symlink, outside {where}"
    if problem is not None:
        example = c.LOCATIONS_FILE if what == "locations file" else c.store_name("<dive>")
        raise ManifestError(
            f"{pairs_path}: its metadata names the {what} {text!r}: {problem}; the trainer "
            f"opens only files inside the manifest folder, so it was not opened. Expected a "
            f"path relative to that folder, such as {example!r}; {REBUILD}")
    return folder / text


def _check_pairs_metadata(pairs_path: Path, meta: dict[str, str]) -> tuple[dict, dict]:
    problem = c.schema_problem(meta, pairs_path)
    if problem:
        raise ManifestError(problem)
    missing = [k for k in c.PAIRS_REQUIRED_META if not meta.get(k)]
    if missing:
        raise ManifestError(f"{pairs_path}: metadata key(s) {missing} missing (found "
                            f"{sorted(meta)}); expected a pairs manifest written by the pipeline; "
                            f"{REBUILD}")
    validation = meta[c.META_IMAGE_VALIDATION]
    if validation != "decode":
        why = ("its catalog has `images: null` (navigation only)" if validation == "none" else
               f"its catalog validates images with `validate: {validation}`, which reads only "
               "the headers and writes no training shards")
        raise ManifestError(f"{pairs_path}: this manifest has no training images: {why}; "
                            "set `validate: decode` (the default) in the catalog and "
                            f"{REBUILD}")
    policy = _json_meta(meta, c.META_PAIR_POLICY, pairs_path)
    if not isinstance(policy, dict) or "r_loc_m" not in policy:
        raise ManifestError(f"{pairs_path}: metadata '{c.META_PAIR_POLICY}' has no r_loc_m "
                            f"(found {policy!r}); {REBUILD}")
    identity = _json_meta(meta, c.META_DATASET, pairs_path)
    if not isinstance(identity, dict) or "digest" not in identity:
        raise ManifestError(f"{pairs_path}: metadata '{c.META_DATASET}' is not a dataset "
                            f"identity (found {str(identity)[:80]!r}); {REBUILD}")
    return policy, identity


def load_manifest(pairs_path: str | Path) -> Manifest:
    """Read ``pairs.parquet``, the locations file it names and the image files, all checked.

    Raises :class:`ManifestError` when a file or metadata key is missing, when the schema
    version is not this contract's, when the locations file's sha256 differs from the one
    recorded in the pairs metadata, when ``idx`` is not ``0..n-1``, when a pair refers to a row
    that does not exist, when the recorded dataset identity does not describe the tables, or
    when a dive has no image file.
    """
    pairs_path = Path(pairs_path)
    why = not_a_file(pairs_path, f"the pairs.parquet of a built manifest folder ({REBUILD})",
                     ("pairs.parquet", "manifests/pairs.parquet"))
    if why:
        raise ManifestError(why)
    # <output>/pairs.parquet links into the current generation: read every file from the folder
    # it really lies in, so a build publishing meanwhile cannot mix two sets
    real = Path(os.path.realpath(pairs_path))
    meta = _read_metadata(real)
    policy, identity = _check_pairs_metadata(pairs_path, meta)

    folder = real.parent
    # every file the metadata names lies in this folder: checked before it is opened or hashed
    loc_path = _inside_folder(folder, meta[c.META_LOCATIONS_PATH], "locations file", pairs_path)
    if not loc_path.is_file():
        raise ManifestError(f"{pairs_path} names the locations file {loc_path}, which does not "
                            f"exist; copy the whole manifest folder, or {REBUILD}")
    expected = meta[c.META_LOCATIONS_SHA256]
    found = file_sha256(loc_path)
    if expected != found:
        raise ManifestError(
            f"{pairs_path.name} was built from a different {loc_path.name} (sha256 {expected} "
            f"expected, found {found} in {loc_path}); the files come from different builds or "
            f"one was modified: {REBUILD}")
    problem = c.schema_problem(_read_metadata(loc_path), loc_path)
    if problem:
        raise ManifestError(problem)

    loc = _read_table(loc_path, c.TRAINER_LOCATION_COLUMNS, "locations manifest")
    loc = loc.sort_by("idx")
    n = loc.num_rows
    idx = loc.column("idx").to_numpy()
    if not np.array_equal(idx, np.arange(n)):
        raise ManifestError(f"{loc_path}: column idx is not 0..{n - 1} (found {n} rows with idx "
                            f"from {idx.min() if n else None} to {idx.max() if n else None}); "
                            f"{REBUILD}")
    image_id = _strings(loc.column("image_id"))
    dive = _categories(loc.column("dive"))
    label = _categories(loc.column("label"))
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

    pairs = _read_table(real, c.TRAINER_PAIR_COLUMNS, "pairs manifest")
    anchor = pairs.column("anchor").to_numpy().astype(np.int32)
    positive = pairs.column("positive").to_numpy().astype(np.int32)
    distance = pairs.column("distance_m").to_numpy().astype(np.float32)
    if len(anchor) and (min(anchor.min(), positive.min()) < 0
                        or max(anchor.max(), positive.max()) >= n):
        raise ManifestError(f"{pairs_path}: pairs refer to idx outside 0..{n - 1} of {loc_path}; "
                            f"{REBUILD}")

    # the recorded identity must describe these tables (the shard digests are the pipeline's,
    # taken when it wrote the bytes; the image files are checked row by row when opened)
    shards = {d: v.get("shard") for d, v in identity.get("dives", {}).items()}
    actual = c.dataset_identity(image_id, dive, xy, anchor, positive, policy, shards)
    if actual["digest"] != identity["digest"]:
        changes = "; ".join(c.identity_changes(identity, actual))
        raise ManifestError(f"{pairs_path}: the recorded dataset identity does not describe "
                            f"the files beside it ({changes}); a file was edited after the "
                            f"build: {REBUILD}")

    stores: dict[str, Path] = {}
    absent = []
    for d in sorted(set(dive.tolist())):
        p = _inside_folder(folder, c.store_name(str(d)), f"image file of dive {d!r}", pairs_path)
        if p.is_file():
            stores[d] = p
        else:
            absent.append(str(p))
    if absent:
        raise ManifestError(f"{loc_path} lists dives whose image files are missing: {absent}; "
                            f"expected one {c.store_name('<dive>')} per dive beside the "
                            f"manifests; copy the images/ folder too, or {REBUILD}")

    del loc, pairs  # everything needed is in numpy arrays now; give the tables' memory back
    pa.default_memory_pool().release_unused()  # (~100 MB at 1M rows)
    return Manifest(
        pairs_path=pairs_path, locations_path=loc_path, folder=folder, n=n, image_id=image_id,
        dive=dive, xy=xy, centre=centre, extent_m=extent, timestamp_s=timestamp_s, label=label,
        anchor=anchor, positive=positive, distance_m=distance, r_loc_m=float(policy["r_loc_m"]),
        stores=stores, locations_sha256=found, pair_policy=policy, identity=identity)
