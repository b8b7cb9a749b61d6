"""Writing results safely: the one atomic write of the trainer side, and the output folder a
tool owns.

`write_atomic` fills a hidden temporary file beside the target (`temp_path`), fsyncs it and
renames it into place: readers see the old file or the whole new one, and a failed write leaves
no temporary behind. Checkpoints, embeddings, GeoParquet and GeoPackage results, run records
and the folder markers below are all written through it.

An output folder a tool owns (`OwnedFolder`): a marker file records every file the tool writes
there, before it writes it, so a later run can tell its own results from anything else.

A new run goes only into a folder that is new or empty. A folder whose marker says it holds this
tool's results is refused unless ``overwrite``, and then only the files the marker lists are
removed (everything else stays). A folder that is not empty and has no marker is never written
to.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from collections.abc import Callable
from pathlib import Path, PurePosixPath

import pyarrow as pa
import pyarrow.parquet as pq


def temp_path(path: str | Path) -> Path:
    """Where `write_atomic` writes ``path`` before the rename: a hidden name in the same folder
    (one filesystem, so the rename is atomic) that keeps the suffix, for writers that go by it."""
    path = Path(path)
    return path.with_name(f".{path.stem}.tmp{path.suffix}")


def _fsync_folder(folder: Path) -> None:
    """Make a rename in ``folder`` durable where the filesystem allows it."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_atomic(path: str | Path, write: Callable[[Path], object]) -> None:
    """``write(tmp)`` fills `temp_path(path)`, which is fsynced and renamed onto ``path``; on
    any error the temporary is removed and ``path`` keeps what it held."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    try:
        write(tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_folder(path.parent)


def write_text_atomic(path: str | Path, text: str) -> None:
    write_atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def replace_section(report: str | Path, text: str, begin: str, end: str) -> None:
    """Put ``text`` (which starts with ``begin`` and ends with ``end``) in place of the section
    between those markers in the Markdown file ``report``; append it when there is none. The
    rest of the file is kept as it is (hand-written discussion, other tools' sections)."""
    report = Path(report)
    old = report.read_text() if report.exists() else ""
    if begin in old and end in old[old.index(begin):]:
        a = old.index(begin)
        b = old.index(end, a) + len(end)
        new = old[:a] + text.rstrip("\n") + old[b:]
    else:
        new = old.rstrip("\n") + ("\n\n" if old else "") + text.rstrip("\n") + "\n"
    write_text_atomic(report, new)


def write_parquet_atomic(path: str | Path, table: pa.Table, row_group_size: int | None = None
                         ) -> None:
    """``table`` as zstd Parquet, written with `write_atomic`."""
    write_atomic(path, lambda tmp: pq.write_table(table, tmp, compression="zstd",
                                                  row_group_size=row_group_size))


class FolderError(RuntimeError):
    """The output folder cannot be used (reported as one message, exit status 2)."""


class OwnedFolder:
    def __init__(self, path: Path, tool: str, marker: str, info: dict):
        self.path, self.tool, self.marker = Path(path), tool, marker
        self.record = {"tool": tool, "state": "writing",
                       "started_utc": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                       **info, "written": []}

    @classmethod
    def check(cls, path: str | Path, tool: str, marker: str, overwrite: bool,
              hint: str = "") -> dict | None:
        """Refuse (FolderError) a folder the tool may not write to; return the earlier run's
        record when ``overwrite`` will replace it (None for a new or empty folder). Nothing is
        changed: tools call this before long work, and claim() when they write."""
        path = Path(path)
        if path.exists() and not path.is_dir():
            raise FolderError(f"--out {path} is a file; expected a folder for {tool}'s results")
        if not (path.is_dir() and any(path.iterdir())):
            return None
        old = cls(path, tool, marker, {})._read_marker()
        if old is None:
            raise FolderError(f"--out {path} is not empty and holds no {tool} results (no "
                              f"{marker}); it is never written to: choose a new or empty "
                              "folder")
        if not overwrite:
            what = ("an earlier run that did not finish" if old.get("state") != "complete"
                    else "an earlier run")
            raise FolderError(f"--out {path} holds the results of {what} of {tool} (started "
                              f"{old.get('started_utc', '?')}{hint}); pass --overwrite to "
                              "replace them, or choose another --out")
        return old

    @classmethod
    def claim(cls, path: str | Path, tool: str, marker: str, info: dict,
              overwrite: bool, hint: str = "") -> OwnedFolder:
        old = cls.check(path, tool, marker, overwrite, hint)
        folder = cls(Path(path), tool, marker, info)
        if old is not None:
            folder._remove(old.get("written", []))
        folder.path.mkdir(parents=True, exist_ok=True)
        folder._save()
        return folder

    def _read_marker(self) -> dict | None:
        p = self.path / self.marker
        if not p.is_file():
            return None
        try:
            rec = json.loads(p.read_text())
        except (OSError, ValueError):
            return None
        return rec if isinstance(rec, dict) and rec.get("tool") == self.tool else None

    def _inside(self, name: str) -> Path | None:
        rel = PurePosixPath(name)
        if rel.is_absolute() or ".." in rel.parts:
            return None
        return self.path.joinpath(*rel.parts)

    def _remove(self, names) -> None:
        dirs = set()
        for name in names:
            p = self._inside(str(name))
            if p is not None and (p.is_file() or p.is_symlink()):
                p.unlink()
                dirs.add(p.parent)
        for d in sorted(dirs, key=lambda q: -len(q.parts)):
            while d != self.path and d.is_dir() and not any(d.iterdir()):
                d.rmdir()
                d = d.parent

    def _save(self) -> None:
        write_text_atomic(self.path / self.marker,
                          json.dumps(self.record, indent=1, sort_keys=True) + "\n")

    def file(self, name: str) -> Path:
        """The path of ``name`` (relative, '/'-separated) in the folder, recorded before the
        caller writes it."""
        p = self._inside(name)
        if p is None:
            raise ValueError(f"{name!r} is not a path inside the folder")
        if name not in self.record["written"]:
            self.record["written"].append(name)
            self._save()
        p.parent.mkdir(parents=True, exist_ok=True)
        return p

    def finish(self, summary: dict) -> Path:
        self.record.update(summary)
        self.record["state"] = "complete"
        self.record["finished_utc"] = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        self._save()
        return self.path / self.marker
