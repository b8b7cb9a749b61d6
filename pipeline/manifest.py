"""Writing and reading the manifests: atomic writes, metadata, the locations hash check."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from . import schema


class ManifestMismatch(ValueError):
    """pairs.parquet does not belong to the locations.parquet beside it, or a manifest is of
    another schema version than the contract's."""


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def base_metadata(catalog_name: str, catalog_sha256: str, crs: str, counts: dict) -> dict[str, str]:
    return {
        schema.META_SCHEMA_VERSION: schema.SCHEMA_VERSION,
        schema.META_CATALOG: catalog_name,
        schema.META_CATALOG_SHA256: catalog_sha256,
        schema.META_CRS: crs,
        schema.META_BUILDER: schema.BUILDER_VERSION,
        schema.META_CREATED: dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        schema.META_COUNTS: json.dumps(counts, sort_keys=True),
    }


def with_metadata(table: pa.Table, meta: dict[str, str]) -> pa.Table:
    merged = dict(table.schema.metadata or {})
    merged.update({k.encode(): str(v).encode() for k, v in meta.items()})
    return table.replace_schema_metadata(merged)


def temp_path(path: Path) -> Path:
    """A temporary name in the same folder (same filesystem, so os.replace is atomic)."""
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def write_parquet_temp(table: pa.Table, path: Path, **kwargs) -> Path:
    """First half of an atomic write: the complete file under a temporary name, fsynced."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    pq.write_table(table, tmp, **kwargs)
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    return tmp


def write_text_atomic(text: str, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    tmp.write_text(text)
    os.replace(tmp, path)
    return path


def read_metadata(path: str | Path) -> dict[str, str]:
    meta = pq.read_schema(path).metadata or {}
    return {k.decode(): v.decode() for k, v in meta.items()}


def _check_schema(meta: dict[str, str], path: Path) -> None:
    """ManifestMismatch when the file's metadata is not of the contract's schema version."""
    problem = schema.schema_problem(meta, path)
    if problem:
        raise ManifestMismatch(problem)


def locations_path_for(pairs_path: str | Path) -> Path:
    """The locations file a pairs manifest names, relative to the folder the pairs file really
    lies in: ``<output>/pairs.parquet`` is a link into the current generation, and resolving it
    first keeps both reads in that one generation while a new one is published. A pairs file
    of another schema version is refused (ManifestMismatch naming the builder to use)."""
    pairs_path = Path(os.path.realpath(pairs_path))
    meta = read_metadata(pairs_path)
    _check_schema(meta, pairs_path)
    rel = meta.get(schema.META_LOCATIONS_PATH)
    if not rel:
        raise ManifestMismatch(f"{pairs_path}: no '{schema.META_LOCATIONS_PATH}' key in its metadata; "
                               "is this a pairs manifest written by the pipeline?")
    return pairs_path.parent / rel


def read_pairs(pairs_path: str | Path) -> tuple[pa.Table, pa.Table]:
    """Read pairs.parquet and the locations.parquet it refers to, refusing mismatched files
    and files of another schema version."""
    pairs_path = Path(os.path.realpath(pairs_path))
    loc_path = locations_path_for(pairs_path)
    meta = read_metadata(pairs_path)
    expected = meta.get(schema.META_LOCATIONS_SHA256)
    if not loc_path.exists():
        raise ManifestMismatch(f"{pairs_path}: its locations file {loc_path} does not exist")
    actual = file_sha256(loc_path)
    if expected != actual:
        raise ManifestMismatch(
            f"{pairs_path} was built for a locations file with sha256 {expected}, but "
            f"{loc_path} has sha256 {actual}; rebuild the manifests "
            "(python -m pipeline build --catalog ...)"
        )
    _check_schema(read_metadata(loc_path), loc_path)
    return pq.read_table(pairs_path), pq.read_table(loc_path)
