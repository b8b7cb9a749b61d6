"""The one place where a refused write becomes a message (torch-free: the pipeline loads it too).

A full disk, a read-only folder, a missing permission or an exhausted quota ends every command
the same way: one ``error:`` line naming the file, what was being written and, for space, how
much was free and (where the writer knows it) how much was needed; exit status 2. The atomic
writers (``ssl/files.py``, ``pipeline/output.py``) raise :class:`WriteFailed` after removing their
temporary file, so nothing half-written is left behind.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
from pathlib import Path

NO_SPACE = frozenset({errno.ENOSPC, errno.EDQUOT})
NO_WRITE = frozenset({errno.EACCES, errno.EPERM, errno.EROFS})


class WriteFailed(OSError):
    """A write the operating system refused, with the one-line message already composed (an
    OSError, so handlers of OSError keep catching it)."""

    def __init__(self, message: str, err: int | None, path: str):
        super().__init__(err, message, path)
        self.message = message

    def __str__(self) -> str:
        return self.message


def human_bytes(n: int | float) -> str:
    """``n`` bytes for people: '512 bytes', '3.4 MB', '1.2 GB' (powers of 1000, as df -H)."""
    if n < 1000:
        return f"{int(n)} bytes"
    for unit in ("kB", "MB", "GB", "TB", "PB"):
        n /= 1000
        if n < 999.5 or unit == "PB":
            return f"{n:.1f} {unit}" if n < 9.95 else f"{n:.0f} {unit}"
    raise AssertionError("unreachable")


def free_bytes(path: str | Path) -> int | None:
    """Free space of the filesystem holding ``path`` (or its nearest existing parent)."""
    p = Path(path)
    for candidate in (p, *p.parents):
        try:
            return shutil.disk_usage(candidate).free
        except OSError:
            continue
    return None


def is_space_error(exc: BaseException) -> bool:
    """Whether ``exc`` is a write that failed for lack of space (disk full, quota exceeded):
    an OSError with that errno, pyarrow's errors, which name the errno in their message, and
    the RuntimeError torch.save raises for one (its zip writer reports a short write)."""
    text = str(exc).lower()
    if isinstance(exc, OSError):
        if exc.errno in NO_SPACE or any(f"[errno {e}]" in text for e in NO_SPACE):
            return True
        # numpy and others report a short write without the errno: "N requested and M written"
        return exc.errno is None and bool(re.search(r"\d+ requested and \d+ written", text))
    return isinstance(exc, RuntimeError) and ("file write failed" in text
                                              or "inline_container" in text)


def write_failed(exc: BaseException, path: str | Path, what: str,
                 needed: int | None = None) -> WriteFailed:
    """The message for ``exc``, raised while writing ``what`` to ``path``."""
    path = str(path)
    err = getattr(exc, "errno", None)
    if is_space_error(exc):
        err = errno.ENOSPC if err not in NO_SPACE else err
        free = free_bytes(path)
        room = []
        if needed:
            room.append(f"about {human_bytes(needed)} needed")
        if free is not None:
            room.append(f"{human_bytes(free)} free")
        detail = f" ({', '.join(room)})" if room else ""
        msg = (f"{path}: no space left on the device while writing {what}{detail}; free some "
               "space or write to another folder, then run the command again (nothing "
               "half-written was left behind)")
    elif err in NO_WRITE:
        why = ("the folder is on a read-only filesystem" if err == errno.EROFS
               else "permission denied")
        msg = (f"{path}: cannot write {what}: {why}; choose an output folder you may write to, "
               "or change its permissions")
    else:
        why = getattr(exc, "strerror", None) or str(exc).strip().splitlines()[0][:160]
        msg = (f"{path}: cannot write {what}: {why}; check that the folder exists and that you "
               "may write there, or choose another path")
    return WriteFailed(msg, err, path)


def os_error_message(exc: OSError) -> str:
    """One line for a file the operating system refused (no such folder, permission denied, a
    full disk): which file, why, and what to do."""
    if isinstance(exc, WriteFailed):
        return exc.message
    where = exc.filename if exc.filename is not None else "a file"
    why = exc.strerror or str(exc)
    if exc.errno in NO_SPACE:
        free = free_bytes(where) if exc.filename is not None else None
        why += f" ({human_bytes(free)} free)" if free is not None else ""
        return f"{where}: {why}; free some space or write to another folder, then run it again"
    return (f"{where}: {why}; check that the folder exists, that you may write there and that "
            "the disk has room, or choose another path")


def unwritable(path: str | Path, what: str = "results") -> str | None:
    """Why nothing can be written at ``path`` (a folder to create or fill), checked on its
    nearest existing folder before long work starts; None when it can be. A read-only
    filesystem is seen even by root; permissions as the operating system applies them."""
    p = Path(path)
    for folder in (p, *p.parents):
        if folder.is_dir():
            break
    else:  # pragma: no cover - the filesystem root always exists
        return None
    if os.access(folder, os.W_OK | os.X_OK):
        return None
    err = errno.EROFS if _read_only(folder) else errno.EACCES
    exc = OSError(err, os.strerror(err), str(folder))
    return write_failed(exc, folder, what).message


def _read_only(folder: Path) -> bool:
    try:
        return bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except OSError:
        return False
