"""The output folder the builder owns: a marker, generations switched atomically, a dive cache.

Layout of ``<output>/``::

    .seafloor-output.json        marker: which catalog owns the folder, what the builder made here
    .build.lock                  one build at a time
    current -> generations/000008           the published set: ONE pointer, replaced atomically
    locations.parquet -> current/locations.parquet    (fixed links, so the usual paths work)
    pairs.parquet, quarantine.parquet, report.json, images -> current/...
    generations/000007/          the previous set, kept so that open readers can finish
    generations/000008/          files.json (written first), the manifests, images/<dive>.parquet
                                 and images/<dive>.arrow (the same bytes, uncompressed),
                                 manifest.json (written last: size and digests of every file)
    cache/<dive>/<fingerprint>/  per-dive ingest; entry.json (first), tables, done.json (last)

Guarantees:

* A reader that resolves ``<output>/pairs.parquet`` (the trainer and ``pipeline.manifest`` do)
  reads one complete generation, whatever instant a build was killed at: a generation is only
  pointed at after every file in it was written and fsynced, and the pointer is switched with one
  ``os.replace``.
* The builder deletes only what its records list: the marker's ``owned`` names, and inside a
  generation or cache entry the names its own ``files.json``/``entry.json`` listed *before*
  the files were written. A foreign file placed anywhere in the folder is never removed.
* ``verify_generation`` checks a published set against what was recorded when it was written
  (sizes and SHA-256 of the manifests, size, mtime and a readable footer of each shard and
  image store).
* No temporary name survives a write: every ``.{name}.tmp`` is renamed into place or removed,
  also when the write fails; a write that fails for lack of space is reported as ``DiskFull``.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import urllib.parse
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from . import schema
from .manifest import file_sha256

MARKER = ".seafloor-output.json"
LOCK_NAME = ".build.lock"
LAYOUT = 2
CURRENT = "current"
GENERATIONS = "generations"
CACHE = "cache"
MANIFEST_FILES = (schema.LOCATIONS_FILE, schema.PAIRS_FILE, schema.QUARANTINE_FILE, "report.json")
LINKS = (*MANIFEST_FILES, schema.IMAGES_DIR)
GEN_FILES = "files.json"  # a generation's names, written before any of them
GEN_MANIFEST = "manifest.json"  # sizes and digests, written last: the generation is complete
ENTRY_FILES = "entry.json"  # a cache entry's names, written before any of them
ENTRY_DONE = "done.json"  # sizes and digests, written last: the entry is complete
KEPT_IMAGES = "kept_images_folder"  # record key: an adopted images/ folder held foreign files
LEGACY_CACHE_FILES = ("locations.parquet", "quarantine.parquet", "images.parquet",
                      "summary.json", "done")


class OutputRefused(ValueError):
    """The output folder cannot be used; the message says why and what to do."""


class DiskFull(OutputRefused):
    """The output folder's filesystem has no room for what the build must write there.

    Raised before writing when the estimate of the bytes to write (with a margin) exceeds the
    free space, and when a write fails for lack of space (ENOSPC, EDQUOT) after what it had
    written was removed. The message names the folder or the file, the bytes needed and free,
    and what to do. An OutputRefused (a ValueError), so the CLIs print it as one message with
    exit code 2, and the flow's retry on I/O errors does not ingest a dive again into a disk
    that is still full. ``path``: the folder or file; ``needed``, ``free``: bytes (or None)."""

    def __init__(self, message: str, path: Path | None = None, needed: int | None = None,
                 free: int | None = None):
        super().__init__(message)
        self.path, self.needed, self.free = path, needed, free

    def __reduce__(self):  # keeps the fields across processes (Dask, Prefect results)
        return type(self), (str(self), self.path, self.needed, self.free)


# the refused-write vocabulary shared with the trainer (ssl/oserrors.py: torch-free)
_OSERRORS = schema.load_trainer_module("oserrors")
NO_SPACE_ERRNOS = _OSERRORS.NO_SPACE
SPACE_MARGIN = 16 * 2**20  # bytes kept free beyond the estimate (filesystem metadata, footers)
FILE_OVERHEAD = 64 * 1024  # per written file: Parquet footer and schema metadata, JSON records
TRY_AGAIN = ("free space on that disk, or set 'output' in the catalog (or --out) to a folder on "
             "a disk with more room, and run the build again")
human_bytes = _OSERRORS.human_bytes
is_no_space = _OSERRORS.is_space_error
os_error_message = _OSERRORS.os_error_message


def free_bytes(folder: Path) -> int:
    """Bytes this process may still write on the filesystem of ``folder``."""
    return shutil.disk_usage(folder).free


def space_needed(payload: int) -> int:
    """The free space a write of ``payload`` bytes asks for: the payload plus a margin."""
    return payload + max(SPACE_MARGIN, payload // 10)


def check_space(folder: Path, payload: int, what: str, unchanged: str) -> None:
    """Raise DiskFull when the filesystem of ``folder`` cannot take ``payload`` bytes (an upper
    estimate of ``what`` is about to write) plus the margin. ``unchanged``: what the failed
    build leaves as it was, for the message."""
    needed, free = space_needed(payload), free_bytes(folder)
    if free < needed:
        raise DiskFull(
            f"{folder}: not enough free space to {what}: needs ~{human_bytes(needed)}, "
            f"{human_bytes(free)} free on its disk; {unchanged}. To fix: "
            f"{TRY_AGAIN} (at least {human_bytes(needed - free)} more is needed)",
            folder, needed, free)


def disk_full_while_writing(file: Path, folder: Path, exc: OSError, payload: int | None,
                            undone: str) -> DiskFull:
    """The DiskFull for a write of ``file`` that failed for lack of space (``exc``), after
    ``undone`` (what the caller removed or kept) was done."""
    try:
        free = free_bytes(folder)
    except OSError:
        free = None
    why = os.strerror(exc.errno) if exc.errno in NO_SPACE_ERRNOS else str(exc)
    needed = space_needed(payload) if payload is not None else None
    have = (f"needs ~{human_bytes(needed)}, " if needed is not None else "") + (
        f"{human_bytes(free)} free on the disk of {folder}" if free is not None
        else f"free space on the disk of {folder} unknown")
    return DiskFull(f"{file}: the disk filled up while writing it ({why}); {have}; {undone}. "
                    f"To fix: {TRY_AGAIN}", file, needed, free)


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_file(path: Path) -> None:
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


def temp_name(name: str) -> str:
    """The one temporary name the builder writes ``name`` under (callers hold the lock or own
    the folder alone), so that a killed write leaves a name its records can account for."""
    return f".{name}.tmp"


def remove_temp(tmp: Path) -> None:
    """Remove the temporary file or link ``tmp`` if it is there (never a folder); a failure to
    remove it is left to the next build's clean-up rather than hiding the error at hand."""
    try:
        if tmp.is_symlink() or tmp.is_file():
            tmp.unlink()
    except OSError:
        pass


def replace_temp(tmp: Path, dst: Path) -> None:
    """``os.replace(tmp, dst)``, and no ``tmp`` left afterwards.

    POSIX makes a rename of one hard link onto another link of the same inode a no-op that
    reports success and keeps both names; the temporary name is then unlinked (``dst`` already
    is the file), so it never outlives the write."""
    os.replace(tmp, dst)
    try:
        st_tmp = os.lstat(tmp)
    except FileNotFoundError:
        return
    st_dst = os.lstat(dst)
    if (st_tmp.st_dev, st_tmp.st_ino) == (st_dst.st_dev, st_dst.st_ino):
        os.unlink(tmp)


def write_atomic(path: Path, write: Callable[[Path], object]) -> None:
    """The one atomic write: ``write(tmp)`` fills a temporary file beside ``path`` (the name
    temp_name gives), which is fsynced and renamed into place; a complete new ``path`` or the
    previous one, never a half-written one, and no temporary left when the write fails (an
    OSError then names ``path``)."""
    tmp = path.with_name(temp_name(path.name))
    try:
        write(tmp)
        fsync_file(tmp)
        replace_temp(tmp, path)
    except BaseException as exc:
        remove_temp(tmp)
        if isinstance(exc, OSError) and not is_no_space(exc):  # read-only, permission, ...:
            raise _OSERRORS.write_failed(exc, path, "the file") from None  # named, not its temp
        if isinstance(exc, OSError) and exc.filename is None:
            exc.filename = str(path)  # the file that failed, for the message
        raise


def write_json_atomic(obj, path: Path) -> None:
    """A JSON file written with :func:`write_atomic`."""
    def dump(tmp: Path) -> None:
        with open(tmp, "w") as fh:
            json.dump(obj, fh, indent=1, sort_keys=True)

    write_atomic(path, dump)


def read_json(path: Path) -> dict | None:
    """The JSON object in ``path`` (every record the builder writes is one), or None when it
    is missing, unreadable or not an object: damage is reported, never a crash."""
    try:
        obj = json.loads(path.read_text())
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    return obj if isinstance(obj, dict) else None


def dive_key(dive: str) -> str:
    """A dive id as one safe path component (dive ids may hold '/')."""
    return urllib.parse.quote(dive, safe="")


def delete_listed(folder: Path, names: Iterable[str], record: str) -> list[str]:
    """Remove ``names`` (files this module listed in ``record`` before writing them), then the
    record and the folder when it is empty. Returns what had to be left (foreign files)."""
    for name in [*names, record]:
        for p in (folder / name, (folder / name).with_name(temp_name(Path(name).name))):
            if p.is_symlink() or p.is_file():
                p.unlink()
    for sub in sorted({(folder / n).parent for n in names}, key=lambda q: -len(q.parts)):
        if sub != folder and sub.is_dir() and not any(sub.iterdir()):
            sub.rmdir()
    left = sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []
    if folder.is_dir() and not left:
        folder.rmdir()
    return left


def file_record(path: Path, digest: bool) -> dict:
    st = path.stat()
    rec = {"size": st.st_size, "mtime_ns": st.st_mtime_ns}
    if digest:
        rec["sha256"] = file_sha256(path)
    return rec


def check_file(path: Path, rec: dict) -> str | None:
    """None when ``path`` still is what ``rec`` recorded, else what differs."""
    try:
        st = path.stat()
    except OSError:
        return "missing"
    if st.st_size != rec.get("size"):
        return f"size {st.st_size} bytes, recorded {rec.get('size')}"
    if "sha256" in rec:
        if file_sha256(path) != rec["sha256"]:
            return "content differs from its recorded SHA-256"
        return None
    if st.st_mtime_ns != rec.get("mtime_ns"):
        return "modified since it was written"
    if path.suffix == ".parquet":
        try:
            pq.read_metadata(path)
        except Exception as exc:  # noqa: BLE001 - any unreadable footer is damage
            return f"not readable as Parquet ({exc})"
    elif path.suffix == ".arrow":
        return _arrow_problem(path)
    return None


def _arrow_problem(path: Path) -> str | None:
    """Why ``path`` is not an image store (an Arrow IPC file of schema IMAGE_STORE), or None;
    reads only its footer and schema (memory-mapped, no bytes copied)."""
    try:
        with pa.memory_map(str(path)) as mm:
            found = pa.ipc.open_file(mm).schema
    except Exception as exc:  # noqa: BLE001 - any unreadable footer is damage
        return f"not readable as an Arrow IPC file ({exc})"
    if not found.remove_metadata().equals(schema.IMAGE_STORE):
        return f"schema {found.remove_metadata()} is not the image store's"
    return None


# ---------------------------------------------------------------- ownership

@dataclass
class Generation:
    folder: Path
    manifest: dict | None  # None: incomplete or damaged manifest.json

    @property
    def state(self) -> dict:
        state = (self.manifest or {}).get("state")
        return state if isinstance(state, dict) else {}


@dataclass
class OutputFolder:
    path: Path
    catalog: str
    record: dict = field(default_factory=dict)

    # -- marker and record
    @property
    def marker(self) -> Path:
        return self.path / MARKER

    def save(self) -> None:
        write_json_atomic(self.record, self.marker)

    def own(self, *names: str) -> None:
        """Record names before creating them, so a crash never leaves an unrecorded file."""
        owned = set(self.record.setdefault("owned", []))
        if not set(names) <= owned:
            self.record["owned"] = sorted(owned | set(names))
            self.save()

    # -- cache
    def cache_entry(self, dive: str, fingerprint: str) -> Path:
        return self.path / CACHE / dive_key(dive) / fingerprint[:16]

    def cache_dives(self) -> dict[str, list[Path]]:
        """dive key -> its entry folders (any fingerprint)."""
        root = self.path / CACHE
        if not root.is_dir():
            return {}
        return {d.name: sorted(e for e in d.iterdir() if e.is_dir())
                for d in sorted(root.iterdir()) if d.is_dir()}

    # -- generations
    def generations(self) -> list[Path]:
        root = self.path / GENERATIONS
        if not root.is_dir():
            return []
        return sorted(p for p in root.iterdir()
                      if p.is_dir() and p.name.isdigit() and (p / GEN_FILES).is_file())

    def current(self) -> Generation | None:
        link = self.path / CURRENT
        if not link.is_symlink():
            return None
        target = (self.path / os.readlink(link)).resolve()
        if not target.is_dir() or target.parent != (self.path / GENERATIONS).resolve():
            return Generation(target, None)
        return Generation(target, read_json(target / GEN_MANIFEST))


def _describe_folder(path: Path, limit: int = 5) -> str:
    names = sorted(p.name + ("/" if p.is_dir() else "") for p in path.iterdir())
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def _legacy_owner(path: Path) -> tuple[str, dict] | None:
    """(catalog, report) when ``path`` holds manifests of a builder before the generation layout."""
    report = read_json(path / "report.json") if (path / "report.json").is_file() else None
    loc = path / "locations.parquet"
    if not isinstance(report, dict) or "state" not in report or not loc.is_file() \
            or loc.is_symlink():
        return None
    try:
        meta = {k.decode(): v.decode() for k, v in (pq.read_schema(loc).metadata or {}).items()}
    except Exception:  # noqa: BLE001 - an unreadable file is not ours to adopt
        return None
    if schema.META_BUILDER not in meta or schema.META_CATALOG not in meta:
        return None
    return meta[schema.META_CATALOG], report


def _inside(child: Path, parent: Path) -> bool:
    return child == parent or parent in child.parents


def check_overlap(out: Path, inputs: dict[str, list[Path]], folders: dict[str, list[Path]]) -> None:
    """Refuse an output that is, holds or lies inside an input.

    ``folders``: what -> folders that are inputs (dive folders): the output may be neither
    inside one nor contain one. ``inputs``: what -> input files: none may lie inside the output.
    """
    out = Path(os.path.realpath(out))
    for what, paths in folders.items():
        for p in paths:
            real = Path(os.path.realpath(p))
            if _inside(out, real) or _inside(real, out):
                rel = "is" if out == real else ("lies inside" if _inside(out, real) else "holds")
                raise OutputRefused(
                    f"output folder {out} {rel} the {what} {real}; the builder must never write "
                    "where the survey's inputs are. Set 'output' in the catalog (or --out) to a "
                    "folder of its own, e.g. <root>/manifests, outside every dive folder")
    for what, paths in inputs.items():
        for p in paths:
            real = Path(os.path.realpath(p))
            if _inside(real, out):
                raise OutputRefused(
                    f"output folder {out} holds the {what} {real}; the builder must never write "
                    "where the survey's inputs are. Set 'output' in the catalog (or --out) to a "
                    "folder that holds no input")


def claim(out: Path, catalog: str, catalog_source: Path | None = None,
          root: Path | None = None) -> OutputFolder:
    """The output folder for ``catalog``: created and marked, or recognised as its own.

    Refuses (OutputRefused) a folder that holds another catalog's manifests, and a non-empty
    folder the builder did not create. A folder written by a builder before the generation
    layout is adopted: its manifests and cache are recorded as owned and replaced at the
    next publish."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise OutputRefused(f"output {out} is a file, not a folder; set 'output' (or --out) to "
                            "a folder")
    marker = out / MARKER
    if marker.exists():
        stale = out / temp_name(MARKER)
        if stale.is_file():  # a write of the marker that a killed build did not finish
            stale.unlink()
        rec = read_json(marker)
        if not isinstance(rec, dict) or "catalog" not in rec:
            raise OutputRefused(
                f"{marker}: the builder's marker is damaged (not the JSON it writes); if this "
                f"folder holds only manifests of catalog {catalog!r}, delete the marker and run "
                "again with --full-rebuild")
        other_root = rec.get("root")
        if rec["catalog"] != catalog or (root and other_root and other_root != str(root)):
            raise OutputRefused(
                f"output folder {out} holds the manifests of catalog {rec['catalog']!r} "
                f"({rec.get('catalog_file') or 'unknown file'}, root {other_root}); catalog "
                f"{catalog!r} ({catalog_source or 'unknown file'}, root {root}) cannot publish "
                "there without destroying them. Give each catalog its own 'output' folder (if "
                "this is the same survey moved to a new root, delete the old output folder)")
        if root and not other_root:
            rec["root"] = str(root)
        return OutputFolder(out, catalog, rec)
    record = {"tool": "seafloor-ssl pipeline", "layout": LAYOUT, "catalog": catalog,
              "catalog_file": str(catalog_source) if catalog_source else None,
              "root": str(root) if root else None, "created_utc": _now(), "owned": []}
    if out.is_dir() and any(out.iterdir()):
        legacy = _legacy_owner(out)
        if legacy is None:
            raise OutputRefused(
                f"output folder {out} is not empty ({_describe_folder(out)}) and was not created "
                "by the builder; it deletes and replaces files in its output, so it only uses a "
                "new or empty folder, or one it created. Choose another 'output' (or --out)")
        owner, report = legacy
        if owner != catalog:
            raise OutputRefused(
                f"output folder {out} holds the manifests of catalog {owner!r}; catalog "
                f"{catalog!r} cannot publish there without destroying them. Give each catalog "
                "its own 'output' folder")
        record["adopted"] = _legacy_files(out, report)
        record["adopted_utc"] = record.pop("created_utc")
    out.mkdir(parents=True, exist_ok=True)
    folder = OutputFolder(out, catalog, record)
    folder.record["owned"] = sorted({LOCK_NAME, *folder.record.get("owned", [])})
    folder.save()
    return folder


def _legacy_files(out: Path, report: dict) -> list[str]:
    """Files an earlier builder wrote here, named by its own report (nothing by pattern)."""
    names = [n for n in ("locations.parquet", "pairs.parquet", "quarantine.parquet",
                         "report.json", "survey_map.png") if (out / n).is_file()]
    for dive, fp in report.get("state", {}).get("dives", {}).items():
        if (out / schema.shard_name(dive)).is_file():  # that builder wrote no images/*.arrow
            names.append(schema.shard_name(dive))
        entry = out / "dives" / dive / fp[:16]
        done = entry / "done"
        if done.is_file() and done.read_text(errors="replace") == fp:
            names += [f"dives/{dive}/{fp[:16]}/{f}" for f in LEGACY_CACHE_FILES
                      if (entry / f).is_file()]
    return sorted(names)


def retire_legacy(folder: OutputFolder) -> None:
    """After the first publish in the generation layout: remove what an earlier builder wrote
    (only the files its report named) and put the fixed links where its files were."""
    adopted = folder.record.get("adopted")
    if not adopted:
        return
    out = folder.path
    for name in adopted:
        p = out / name
        if name in MANIFEST_FILES:
            continue  # already replaced by a link (os.replace) in link_names
        if p.is_file() and not p.is_symlink():
            p.unlink()
    for d in sorted({(out / n).parent for n in adopted}, key=lambda q: -len(q.parts)):
        while d != out and d.is_dir() and not any(d.iterdir()):
            d.rmdir()
            d = d.parent
    folder.record.pop("adopted")
    if (out / "images").is_dir() and not (out / "images").is_symlink():
        # it holds files the earlier builder did not write: they stay, and the shards are
        # reached through current/images instead of an images link
        folder.record[KEPT_IMAGES] = sorted(p.name for p in (out / "images").iterdir())
    folder.save()


# ---------------------------------------------------------------- generations

def begin_generation(folder: OutputFolder, files: list[str]) -> Path:
    """A new, empty generation folder whose ``files.json`` lists what will be written in it."""
    gens = folder.generations()
    number = max([int(g.name) for g in gens] + [0]) + 1
    folder.own(GENERATIONS, CURRENT, *LINKS)
    root = folder.path / GENERATIONS
    root.mkdir(exist_ok=True)
    gen = root / f"{number:06d}"
    while gen.exists():  # a folder someone else made: never reuse it
        number += 1
        gen = root / f"{number:06d}"
    gen.mkdir()
    try:
        write_json_atomic({"files": sorted(set(files) | {GEN_MANIFEST})}, gen / GEN_FILES)
    except BaseException:
        discard_generation(gen)  # empty but for a temporary files.json: nothing is listed yet
        raise
    return gen


def discard_generation(gen: Path) -> list[str]:
    """Delete a generation folder by its own files.json; returns the names that had to stay.

    A folder without files.json can hold nothing the builder wrote but a temporary files.json
    (it is written before anything else); one whose files.json is damaged is left alone."""
    if not gen.is_dir():
        return []
    listed = read_json(gen / GEN_FILES)
    if isinstance(listed, dict) and isinstance(listed.get("files"), list):
        return delete_listed(gen, listed["files"], GEN_FILES)
    if not (gen / GEN_FILES).exists():
        return delete_listed(gen, [], GEN_FILES)
    return sorted(p.name for p in gen.iterdir())


def finish_generation(gen: Path, state: dict, shard_names: list[str]) -> dict:
    """Record sizes and digests of every file of ``gen`` in its manifest.json (written last).

    ``shard_names``: the image files (images/<dive>.parquet and images/<dive>.arrow), recorded
    by size and mtime (hard links of the cache: hashing them would read every image again)."""
    files = {}
    for name in MANIFEST_FILES:
        fsync_file(gen / name)
        files[name] = file_record(gen / name, digest=True)
    for name in shard_names:
        files[name] = file_record(gen / name, digest=False)
    _fsync_dir(gen)
    if (gen / schema.IMAGES_DIR).is_dir():
        _fsync_dir(gen / schema.IMAGES_DIR)
    manifest = {"created_utc": _now(), "files": files, "state": state}
    write_json_atomic(manifest, gen / GEN_MANIFEST)
    _fsync_dir(gen)
    return manifest


def _replace_link(path: Path, target: str) -> None:
    tmp = path.with_name(temp_name(path.name))
    if tmp.is_symlink():
        tmp.unlink()
    if path.is_symlink() and os.readlink(path) == target:
        return
    try:
        os.symlink(target, tmp)
        replace_temp(tmp, path)
    except BaseException:
        remove_temp(tmp)
        raise


def switch_current(folder: OutputFolder, gen: Path) -> None:
    """Point ``current`` at ``gen``: one os.replace, the step that publishes it."""
    _replace_link(folder.path / CURRENT, f"{GENERATIONS}/{gen.name}")
    _fsync_dir(folder.path)


def link_names(folder: OutputFolder) -> None:
    """The fixed links ``<output>/pairs.parquet -> current/pairs.parquet`` etc.

    A name held by anything the builder did not record (a user's own file) is refused."""
    adopted = set(folder.record.get("adopted", []))
    for name in LINKS:
        p = folder.path / name
        target = f"{CURRENT}/{name}"
        if p.is_symlink():
            _replace_link(p, target)
        elif p.is_file() and name in adopted:
            _replace_link(p, target)  # an earlier builder's manifest: replaced atomically
        elif p.is_dir() and name == "images" and (adopted or folder.record.get(KEPT_IMAGES)):
            continue  # the earlier builder's shard folder (see retire_legacy)
        elif p.exists():
            raise OutputRefused(
                f"{p}: expected the builder's link to {target}, found a "
                f"{'folder' if p.is_dir() else 'file'} it did not write; move it away and "
                "run the build again")
        else:
            _replace_link(p, target)


def prune(folder: OutputFolder) -> None:
    """Delete every generation but the current one and the newest complete one before it (kept
    for readers that are still open on it), each by its own files.json; and generation folders
    a killed build left before its files.json was in place."""
    cur = folder.current()
    current = cur.folder.resolve() if cur else None
    complete = [g for g in folder.generations() if (g / GEN_MANIFEST).is_file()
                and current is not None and int(g.name) < int(current.name)]
    keep = {current, complete[-1].resolve() if complete else None}
    for gen in folder.generations():
        if gen.resolve() not in keep:
            discard_generation(gen)
    root = folder.path / GENERATIONS
    for orphan in (root.iterdir() if root.is_dir() else []):
        if orphan.is_dir() and orphan.name.isdigit() and not (orphan / GEN_FILES).exists():
            discard_generation(orphan)


def remove_temps(folder: OutputFolder, listed: Iterable[tuple[Path, str]] = ()) -> None:
    """Remove the temporary names (``temp_name``) of the builder's own files that a failed
    write left: beside the marker and each name the marker records, and beside each name that
    a generation's files.json or a cache entry's entry.json lists (``listed``: pairs of such a
    folder and its record's name). Only those names: a user's own ``*.tmp`` file stays."""
    def temps(base: Path, names: Iterable[str]) -> list[Path]:
        return [(base / n).with_name(temp_name(Path(n).name)) for n in names]

    doomed = temps(folder.path, [MARKER, *folder.record.get("owned", [])])
    for base, record in listed:
        rec = read_json(base / record)
        names = rec.get("files") if isinstance(rec, dict) else None
        doomed += temps(base, [record, *(names if isinstance(names, list) else [])])
    for tmp in doomed:
        remove_temp(tmp)


def verify_generation(gen: Generation | None) -> list[str]:
    """What is wrong with a published generation (empty: it is exactly as recorded)."""
    if gen is None:
        return ["no published generation"]
    if gen.manifest is None or not isinstance(gen.manifest.get("files"), dict):
        return [f"{gen.folder / GEN_MANIFEST}: missing or damaged"]
    problems = []
    for name, rec in sorted(gen.manifest["files"].items()):
        why = check_file(gen.folder / name, rec if isinstance(rec, dict) else {})
        if why:
            problems.append(f"{gen.folder / name}: {why}")
    return problems


def check_links(folder: OutputFolder) -> list[str]:
    problems = []
    for name in (CURRENT, *LINKS):
        p = folder.path / name
        if name == "images" and folder.record.get(KEPT_IMAGES) and p.is_dir():
            continue
        if not p.is_symlink():
            problems.append(f"{p}: not the builder's link")
        elif name != CURRENT and os.readlink(p) != f"{CURRENT}/{name}":
            problems.append(f"{p}: points at {os.readlink(p)}, expected {CURRENT}/{name}")
    return problems


# ---------------------------------------------------------------- cache entries

def begin_entry(entry: Path, files: list[str]) -> None:
    """A fresh cache entry folder whose entry.json lists the files that will be written."""
    if entry.exists():
        remove_entry(entry)
    entry.mkdir(parents=True, exist_ok=True)
    write_json_atomic({"files": sorted(set(files) | {ENTRY_DONE})}, entry / ENTRY_FILES)


def finish_entry(entry: Path, fingerprint: str, files: list[str]) -> None:
    recs = {}
    for name in files:
        fsync_file(entry / name)
        recs[name] = file_record(entry / name, digest=False)
    write_json_atomic({"fingerprint": fingerprint, "files": recs}, entry / ENTRY_DONE)


def check_entry(entry: Path, fingerprint: str, files: Iterable[str] | None = None) -> str | None:
    """None when the entry is complete and intact, else why not.

    ``files``: the names this builder writes in an entry; an entry whose done.json records
    other names was written by another builder version (an earlier one wrote no image store)
    and is not trusted."""
    done = read_json(entry / ENTRY_DONE)
    if done is None:
        return "incomplete" if entry.exists() else "absent"
    if done.get("fingerprint") != fingerprint or not isinstance(done.get("files"), dict):
        return "recorded for other inputs"
    if files is not None and set(done["files"]) != set(files):
        missing = sorted(set(files) - set(done["files"]))
        return ("written by another builder version (" + (
            f"no {', '.join(missing)}" if missing else
            f"files {', '.join(sorted(done['files']))}") + f"; this is builder "
            f"{schema.BUILDER_VERSION})")
    for name, rec in sorted(done["files"].items()):
        why = check_file(entry / name, rec if isinstance(rec, dict) else {})
        if why:
            return f"{name}: {why}"
    return None


def remove_entry(entry: Path) -> list[str]:
    """Delete one cache entry by its entry.json; returns the foreign names left in it."""
    listed = read_json(entry / ENTRY_FILES)
    if isinstance(listed, dict) and isinstance(listed.get("files"), list):
        left = delete_listed(entry, listed["files"], ENTRY_FILES)
    elif entry.is_dir():
        left = delete_listed(entry, [], ENTRY_FILES)
    else:
        left = []
    parent = entry.parent
    if parent.is_dir() and not any(parent.iterdir()):
        parent.rmdir()
    return left
