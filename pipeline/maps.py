"""Habitat maps published beside the manifests, switched atomically like the manifests.

Layout inside the catalog's output folder (the builder's; ``maps`` is recorded as its own)::

    maps/.lock                   one map run at a time
    maps/current -> 000004       the published map: ONE pointer, replaced with one os.replace
    maps/000003/                 the previous map, kept for readers that are still open on it
    maps/000004/                 embeddings.parquet, habitats/ (ssl.habitats' folder), map.json
                                 (written last: what was mapped, from which manifests, when)

A map folder is filled by the commands (``ssl.embed``, ``ssl.habitats``) first; only a complete
one (its ``map.json`` written) is pointed at. A run that fails leaves the published map as it
was; its unfinished folder is removed by the next publish. Older maps than the previous one are
removed too. The manifests' own generations and links are never touched here.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock, Timeout

from .output import (
    OutputRefused,
    _fsync_dir,
    _replace_link,
    claim,
    read_json,
    write_json_atomic,
)

MAPS = "maps"
MAP_RECORD = "map.json"
MAP_LOCK = ".lock"
EMBEDDINGS = "embeddings.parquet"
HABITATS = "habitats"


class MapLocked(RuntimeError):
    """Another map run holds the maps folder's lock."""


@dataclass
class PublishedMap:
    folder: Path  # maps/<n>/, resolved
    record: dict  # its map.json

    @property
    def embeddings(self) -> Path:
        return self.folder / EMBEDDINGS

    @property
    def habitats(self) -> Path:
        return self.folder / HABITATS


def maps_dir(out: Path) -> Path:
    return Path(out) / MAPS


def _numbered(root: Path) -> list[Path]:
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.is_symlink()
                  and p.name.isdigit())


def current_map(out: Path) -> PublishedMap | None:
    """The published map of an output folder, or None (none yet, or a damaged pointer)."""
    link = maps_dir(out) / "current"
    if not link.is_symlink():
        return None
    target = (link.parent / os.readlink(link)).resolve()
    record = read_json(target / MAP_RECORD)
    if not target.is_dir() or record is None:
        return None
    return PublishedMap(target, record)


def lock_maps(out: Path) -> FileLock:
    """The maps folder's lock, held (MapLocked at once when another map run holds it)."""
    root = maps_dir(out)
    root.mkdir(parents=True, exist_ok=True)
    lk = FileLock(str(root / MAP_LOCK), timeout=0)
    try:
        lk.acquire()
    except Timeout:
        raise MapLocked(f"another map run holds the lock on {root} ({root / MAP_LOCK}); wait "
                        "for it to finish") from None
    return lk


def begin_map(out: Path, catalog: str) -> Path:
    """A new, empty map folder ``maps/<n>/`` in the catalog's output folder (which must hold
    its published manifests); ``maps`` is recorded as the builder's before it is created."""
    out = Path(out)
    if not (out / "pairs.parquet").exists():
        raise OutputRefused(f"{out} holds no published manifests (pairs.parquet); run the "
                            f"build-pairs deployment (or python -m pipeline build) for "
                            f"{catalog} first")
    claim(out, catalog).own(MAPS)
    root = maps_dir(out)
    root.mkdir(exist_ok=True)
    number = max([int(p.name) for p in _numbered(root)] + [0]) + 1
    while (folder := root / f"{number:06d}").exists():
        number += 1
    folder.mkdir()
    return folder


def publish_map(out: Path, folder: Path, record: dict) -> PublishedMap:
    """Write ``map.json`` into a filled map folder, then point ``maps/current`` at it (the one
    atomic step), and remove every other map folder but the previous published one."""
    out, folder = Path(out), Path(folder)
    root = maps_dir(out)
    if folder.parent.resolve() != root.resolve():
        raise OutputRefused(f"{folder} is not a map folder of {root}")
    previous = current_map(out)
    record = {**record, "map": folder.name,
              "created_utc": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")}
    write_json_atomic(record, folder / MAP_RECORD)
    _fsync_dir(folder)
    _replace_link(root / "current", folder.name)
    _fsync_dir(root)
    keep = {folder.resolve(), previous.folder if previous else None}
    for other in _numbered(root):
        if other.resolve() not in keep:
            shutil.rmtree(other, ignore_errors=True)
    return PublishedMap(folder.resolve(), record)


def discard_map(folder: Path) -> None:
    """Remove an unfinished map folder (never a published one)."""
    folder = Path(folder)
    link = folder.parent / "current"
    if link.is_symlink() and (folder.parent / os.readlink(link)).resolve() == folder.resolve():
        return
    shutil.rmtree(folder, ignore_errors=True)


def map_age(out: Path, now: dt.datetime | None = None) -> dict:
    """For status: {'published': False} or the map's age in seconds, number and source."""
    pm = current_map(out)
    if pm is None:
        return {"published": False}
    now = now or dt.datetime.now(dt.UTC)
    try:
        created = dt.datetime.strptime(pm.record["created_utc"], "%Y-%m-%dT%H:%M:%SZ") \
            .replace(tzinfo=dt.UTC)
    except (KeyError, TypeError, ValueError):
        return {"published": True, "error": f"{pm.folder / MAP_RECORD} unreadable"}
    return {"published": True, "age_s": max(0.0, (now - created).total_seconds()),
            "created_utc": pm.record["created_utc"], "map": pm.folder.name,
            "generation": pm.record.get("generation"), "k": pm.record.get("k"),
            "images": pm.record.get("images")}
