"""Rows of an earlier embeddings file that a new one can copy (``python -m ssl.embed --reuse``).

Every embeddings file carries each image's content key (``content_sha256``: sha256 of the JPEG
bytes the image store holds for it, the bytes the encoder reads) and the identity of what
computed its embeddings: the checkpoint's sha256, the image size, the embedding width and the
numeric precision (bfloat16 on CUDA, float32 on the CPU). An image of the current manifest whose
content key is in the old file gets the old row's embedding, bit for bit, when that identity is
equal; otherwise nothing is reused and the reason is said. Images are matched by content, not by
name: a renamed image with the same bytes is reused, an image whose bytes changed is embedded.

Finding the keys costs one read and sha256 of each image's bytes, except in dives whose shard
digest (recorded by the pipeline in the manifest's dataset identity, and by ssl.embed in the
embeddings metadata) is unchanged: their keys are copied from the old file by image id.

An old file of another site (another catalog or CRS), a missing file or one that is not an
embeddings file is a mistake (:class:`ReuseError`, one message). Uses numpy and pyarrow only.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .. import contract as c
from ..flags import not_a_file
from . import embeddings as E


class ReuseError(ValueError):
    """An old embeddings file that cannot be reused at all (one message, exit status 2)."""


def content_key(jpeg: bytes) -> str:
    """An image's content key: sha256 (hex) of its stored JPEG bytes."""
    return hashlib.sha256(jpeg).hexdigest()


def manifest_shards(identity: dict) -> dict[str, str]:
    """Each dive's shard content digest from a manifest's dataset identity."""
    return {str(d): str(v["shard"]) for d, v in (identity.get("dives") or {}).items()
            if isinstance(v, dict) and v.get("shard")}


@dataclass
class Reuse:
    rows: np.ndarray  # int64: rows (idx) of the current manifest whose embedding is copied
    X: np.ndarray  # float32 (len(rows), d): their embeddings, from the old file
    keys: np.ndarray  # object (n,): content keys found (hex), None where not known yet
    why_none: str | None = None  # why nothing is reused (None: the identity is equal)
    hashed: int = 0  # images whose bytes were read to find their key
    notes: list[str] = field(default_factory=list)


def _meta(path: Path) -> tuple[dict[str, str], list[str]]:
    why = not_a_file(path, "an embeddings file written by python -m ssl.embed",
                     ("embeddings.parquet",))
    if why:
        raise ReuseError(why)
    try:
        schema = pq.read_schema(path)
    except (OSError, pa.ArrowException) as exc:
        raise ReuseError(f"{path}: not a readable Parquet file ({str(exc)[:120]}); expected an "
                         "embeddings file written by python -m ssl.embed") from None
    meta = {k.decode(): v.decode() for k, v in (schema.metadata or {}).items()}
    if E.META_VERSION not in meta:
        raise ReuseError(f"{path}: not an embeddings file written by python -m ssl.embed (no "
                         f"{E.META_VERSION!r} in its metadata)")
    return meta, schema.names


def _site_problem(meta: dict[str, str], catalog: str, crs: str) -> str | None:
    old_cat, old_crs = meta.get(c.META_CATALOG, ""), meta.get(c.META_CRS, "")
    if old_cat and catalog and old_cat != catalog:
        return f"catalog {old_cat!r}, this manifest's is {catalog!r}"
    if old_crs and crs and old_crs != crs:
        return f"CRS {old_crs}, this manifest's is {crs}"
    return None


def identity_problem(meta: dict[str, str], features: dict) -> str | None:
    """Why the old file's embeddings are not what this run computes (None: they are)."""
    if meta.get(E.META_VERSION) != E.EMBEDDINGS_VERSION:
        return (f"it is embeddings version {meta.get(E.META_VERSION)!r}, this ssl.embed writes "
                f"{E.EMBEDDINGS_VERSION!r}")
    old_sha, new_sha = meta.get(E.META_CHECKPOINT_SHA256, ""), features["checkpoint_sha256"]
    if old_sha != new_sha:
        return (f"its embeddings come from another encoder (checkpoint sha256 {old_sha[:12]} vs "
                f"{new_sha[:12]} of --checkpoint)")
    try:
        old = json.loads(meta.get(E.META_FEATURES, ""))
    except ValueError:
        old = None
    if not isinstance(old, dict):
        return "it does not record how its features were computed (written by an earlier ssl.embed)"
    for key in ("image_size", "precision"):
        if old.get(key) != features.get(key):
            return f"its {key.replace('_', ' ')} is {old.get(key)}, this run's {features.get(key)}"
    if meta.get(E.META_DIM) != str(features["dim"]):
        return f"its embeddings have {meta.get(E.META_DIM)} dims, this encoder's {features['dim']}"
    return None


def plan(old: str | Path, image_id: np.ndarray, dive: np.ndarray, identity: dict,
         images: Sequence[bytes], features: dict, catalog: str, crs: str,
         log: Callable[[str], None] = print) -> Reuse:
    """Which rows of the current manifest (``image_id``, ``dive`` in idx order, its dataset
    ``identity`` and image store) take their embedding from the file ``old``; ``features``: this
    run's checkpoint_sha256, image_size, precision and dim."""
    path = Path(old)
    meta, names = _meta(path)
    site = _site_problem(meta, catalog, crs)
    if site:
        raise ReuseError(f"{path} holds embeddings of another site ({site}); pass the "
                         "embeddings file of this survey, or leave --reuse out")
    n = len(image_id)
    keys = np.full(n, None, dtype=object)
    empty = np.zeros(0, dtype=np.int64)
    why = identity_problem(meta, features)
    if why is None and E.CONTENT_COLUMN not in names:
        why = "it has no content keys (written by an earlier ssl.embed)"
    if why is not None:
        return Reuse(empty, np.zeros((0, int(features["dim"])), np.float32), keys, why)
    try:
        t = pq.read_table(path, columns=["image_id", "dive", E.CONTENT_COLUMN,
                                         E.EMBEDDING_COLUMN])
    except (OSError, pa.ArrowException, KeyError) as exc:
        raise ReuseError(f"{path}: cannot be read ({str(exc)[:120]}); the file is damaged: "
                         "leave --reuse out to embed every image") from None
    old_ids = np.array(t.column("image_id").to_pylist(), dtype=object)
    old_dive = np.array([str(d) for d in t.column("dive").to_pylist()], dtype=object)
    old_keys = np.array(t.column(E.CONTENT_COLUMN).to_pylist(), dtype=object)
    emb = t.column(E.EMBEDDING_COLUMN).combine_chunks()
    d = emb.type.list_size
    X_old = emb.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
    X_old = X_old.reshape(len(emb), d)
    usable = np.isfinite(X_old).all(axis=1) & np.array([isinstance(k, str) and len(k) == 64
                                                        for k in old_keys], dtype=bool)

    # keys of dives whose shard is unchanged: copied by image id; the others: hashed
    try:
        old_shards = json.loads(meta.get(E.META_SHARDS, "{}"))
    except ValueError:
        old_shards = {}
    new_shards = manifest_shards(identity)
    by_id = {(str(dv), str(i)): k for i, dv, k in zip(old_ids, old_dive, old_keys, strict=True)}
    hashed = 0
    for dv in sorted(set(dive.tolist())):
        rows = np.flatnonzero(dive == dv)
        same = (isinstance(old_shards, dict) and new_shards.get(dv)
                and old_shards.get(dv) == new_shards.get(dv))
        found = [by_id.get((str(dv), str(image_id[r]))) for r in rows] if same else None
        if found is not None and all(isinstance(k, str) for k in found):
            keys[rows] = found
            continue
        for r in rows.tolist():
            keys[r] = content_key(images[r])
        hashed += len(rows)
    first: dict[str, int] = {}
    for j in np.flatnonzero(usable).tolist():
        first.setdefault(old_keys[j], j)
    src = np.array([first.get(k, -1) for k in keys], dtype=np.int64)
    rows = np.flatnonzero(src >= 0)
    return Reuse(rows.astype(np.int64), np.ascontiguousarray(X_old[src[rows]]), keys,
                 None, hashed)
