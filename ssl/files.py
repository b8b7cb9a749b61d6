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

A report a tool writes into (``--report FILE``, outside its folder) is only ever a Markdown
file: a new ``.md`` file, or an existing UTF-8 ``.md`` file. A tool that writes a section
(`check_report`, `replace_section`) changes nothing outside its two markers; one that writes the
whole file (`check_whole_report`) replaces only a file that starts with its own heading. Tools
check the report before long work, and the write checks it again.
"""

from __future__ import annotations

import datetime as dt
import gc
import json
import os
from collections.abc import Callable
from pathlib import Path, PurePosixPath

import pyarrow as pa
import pyarrow.parquet as pq

from .oserrors import WriteFailed, is_space_error, unwritable, write_failed


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


WHAT = {".pt": "a checkpoint", ".parquet": "a Parquet table", ".json": "a JSON record",
        ".md": "a report", ".png": "a figure", ".csv": "a CSV table", ".gpkg": "a GeoPackage",
        ".tif": "a raster", ".jsonl": "a log"}


def write_atomic(path: str | Path, write: Callable[[Path], object], what: str | None = None,
                 needed: int | None = None) -> None:
    """``write(tmp)`` fills `temp_path(path)`, which is fsynced and renamed onto ``path``; on
    any error the temporary is removed and ``path`` keeps what it held. A refused write (full
    disk, read-only folder, permission) becomes `oserrors.WriteFailed`: one message naming
    ``path``, ``what`` was written and, for space, ``needed`` bytes where the caller knows."""
    path = Path(path)
    tmp = temp_path(path)
    what = what or WHAT.get(path.suffix.lower(), "the file")
    failed: BaseException | None = None
    try:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            write(tmp)
            with open(tmp, "rb") as fh:
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        finally:
            try:
                tmp.unlink(missing_ok=True)
            except OSError:
                pass
    except WriteFailed:
        raise
    except Exception as exc:
        if not (isinstance(exc, OSError) or is_space_error(exc)):
            raise
        chained: BaseException | None = exc
        while chained is not None:  # their frames may hold the writer, and the temporary, open
            chained.__traceback__ = None
            chained = chained.__context__ or chained.__cause__
        failed = exc
    if failed is not None:
        gc.collect()  # close what a writer that died mid-write kept open: its space is free
        raise write_failed(failed, path, what, needed) from None
    _fsync_folder(path.parent)


def write_text_atomic(path: str | Path, text: str) -> None:
    write_atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


class ReportError(ValueError):
    """A report file the tool may not write (reported as one message, exit status 2)."""


def _new_file_error(path: Path, flag: str) -> str | None:
    """Why a new file cannot be created at ``path`` (a file where a folder is needed, a folder
    this user may not write to), or None."""
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        return f"{flag} {path}: {folder} is a file, not a folder; choose a path in a folder"
    if not os.access(folder, os.W_OK | os.X_OK):
        return (f"{flag} {path}: the folder {folder} cannot be written to; choose a path in a "
                "folder you may write to")
    return None


def read_report(path: str | Path, flag: str = "--report") -> str | None:
    """The text of an existing Markdown report (line endings as they are in the file), or None
    when there is no file yet. ReportError for anything a report must never be written into: a
    name that does not end in .md, a folder, a link, a device or pipe, a file that is not UTF-8
    text or that the user may not write, a new file in a folder that cannot take it. The
    message names the file, what was found and what to do."""
    path = Path(path)
    if path.suffix.lower() != ".md":
        found = "a folder" if path.is_dir() else ("a file" if path.exists() else "a name")
        raise ReportError(f"{flag} {path}: {found} that does not end in .md; a report is "
                          "written only into a Markdown (.md) file: choose a .md file")
    if path.is_symlink():
        raise ReportError(f"{flag} {path}: a symbolic link; a report is never written through "
                          "a link: pass the file it points to, or choose another .md file")
    if not path.exists():
        why = _new_file_error(path, flag)
        if why:
            raise ReportError(why)
        return None
    if path.is_dir():
        raise ReportError(f"{flag} {path}: a folder; expected a Markdown file such as "
                          f"{path / 'REPORT.md'}")
    if not path.is_file():
        raise ReportError(f"{flag} {path}: not a regular file (a device, pipe or socket); "
                          "expected a Markdown file: choose another .md file")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ReportError(f"{flag} {path}: not UTF-8 text (byte {exc.start} cannot be decoded); "
                          "a report is written only into a UTF-8 Markdown file: convert it to "
                          "UTF-8, or choose another .md file") from None
    if "\x00" in text:
        raise ReportError(f"{flag} {path}: holds NUL bytes, so it is not a text file; expected "
                          "a Markdown file: choose another .md file")
    if not os.access(path, os.W_OK):
        raise ReportError(f"{flag} {path}: a file you may not write to; make it writable, or "
                          "choose another .md file")
    return text


def _section_bounds(text: str, begin: str, end: str, path: Path, flag: str
                    ) -> tuple[int, int] | None:
    """(start, stop) of the marked section in ``text`` (stop just after ``end``), None when
    neither marker is there; ReportError unless there is exactly one ``begin`` before exactly
    one ``end``."""
    nb, ne = text.count(begin), text.count(end)
    if nb == ne == 0:
        return None
    if nb == ne == 1 and text.index(begin) < text.index(end):
        return text.index(begin), text.index(end) + len(end)
    found = ("the end marker before the begin marker" if nb == ne == 1 else
             f"the begin marker {nb} time(s) and the end marker {ne} time(s)")
    raise ReportError(f"{flag} {path}: its section markers are broken ({found}); expected one "
                      f"{begin!r} followed by one {end!r}; nothing was written: repair the "
                      "markers by hand, or choose another .md file")


def check_report(path: str | Path, begin: str, end: str, flag: str = "--report") -> None:
    """Refuse (ReportError) a report whose marked section a tool may not write: anything
    `read_report` refuses, and markers that are not one ``begin`` followed by one ``end``. A
    Markdown file without the markers is accepted (the section is appended; nothing else
    changes). Writes nothing: tools call this before long work, and `replace_section` checks
    again when it writes."""
    text = read_report(path, flag)
    if text is not None:
        _section_bounds(text, begin, end, Path(path), flag)


def check_whole_report(path: str | Path, heading: str, flag: str = "--report") -> str | None:
    """For a tool that writes a whole report file: the text of the report it wrote before
    (which starts with ``heading``), or None when there is no file yet. ReportError for any
    other file (and anything `read_report` refuses): a file the tool did not write is never
    replaced."""
    text = read_report(path, flag)
    if text is not None and not text.startswith(heading):
        first = text.split("\n", 1)[0].strip()[:60]
        raise ReportError(f"{flag} {path}: a Markdown file this tool did not write (it starts "
                          f"with {first!r}, expected {heading!r}); it is never replaced: "
                          "choose a new .md file, or move that file away first")
    return text


def replace_section(report: str | Path, text: str, begin: str, end: str,
                    flag: str = "--report") -> None:
    """Put ``text`` (which starts with ``begin`` and ends with ``end``) in place of the section
    between those markers in the Markdown file ``report``; append it when there is none. Every
    byte outside the section is kept as it is (hand-written discussion, other tools' sections,
    line endings). ReportError, before anything is written, for a file `check_report` refuses."""
    report = Path(report)
    if text.count(begin) != 1 or text.count(end) != 1:
        raise ReportError(f"{flag} {report}: the new section would hold its markers more than "
                          "once (a name or a file's metadata contains them); nothing was "
                          "written: rename what contains them")
    old = read_report(report, flag) or ""
    bounds = _section_bounds(old, begin, end, report, flag)
    if bounds is not None:
        a, b = bounds
        new = old[:a] + text.rstrip("\n") + old[b:]
    else:
        gap = "" if not old or old.endswith("\n\n") else "\n" if old.endswith("\n") else "\n\n"
        new = old + gap + text.rstrip("\n") + "\n"
    write_atomic(report, lambda tmp: tmp.write_bytes(new.encode("utf-8")))


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
        why = unwritable(path, f"{tool}'s results")
        if why:
            raise FolderError(f"--out {why}")
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
