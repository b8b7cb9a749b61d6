"""Run ``pipeline.build.build`` with every file-system write counted, killed at the N-th one.

    python tests/crash_build.py CATALOG N     # SIGKILL just before write number N (1-based)
    python tests/crash_build.py CATALOG 0     # no kill: print "WRITES <count>" at the end

"Writes" are every call that changes the file system: open for writing, Parquet writes, file
copies, hard and symbolic links, renames and replaces, mkdir, unlink and rmdir. The primitives
are patched in this process only, after the imports, so the kill can land at any instant of a
build, ingest and publish included.
"""

from __future__ import annotations

import builtins
import io
import os
import shutil
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pyarrow.parquet as pq  # noqa: E402

import pipeline.build as pb  # noqa: E402
from pipeline.catalog import load_catalog  # noqa: E402

KILL_AT = int(sys.argv[2])
count = 0


def _hit(what: str) -> None:
    global count
    count += 1
    if count == KILL_AT:
        sys.stderr.write(f"killed at write {count}: {what}\n")
        sys.stderr.flush()
        os.kill(os.getpid(), signal.SIGKILL)


def _wrap(owner, name: str, describe=lambda *a, **k: str(a[:2])) -> None:
    real = getattr(owner, name)

    def counted(*args, **kwargs):
        _hit(f"{name} {describe(*args, **kwargs)}")
        return real(*args, **kwargs)

    setattr(owner, name, counted)


_real_open = builtins.open


def _open(file, mode="r", *args, **kwargs):
    if any(c in mode for c in "wax+"):
        _hit(f"open({file}, {mode!r})")
    return _real_open(file, mode, *args, **kwargs)


builtins.open = _open
io.open = _open
for fn in ("replace", "rename", "link", "symlink", "mkdir", "unlink", "rmdir"):
    _wrap(os, fn)
_wrap(shutil, "copyfile")
_wrap(pq, "write_table", lambda table, where, *a, **k: str(where))

pb.build(load_catalog(sys.argv[1]), workers=1, log=lambda *_: None)
print(f"WRITES {count}")
