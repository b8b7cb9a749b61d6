"""Worker processes that do not outlive the process that started them.

A ``kill -9`` of ``pipeline build --workers N`` gives the build no chance to stop its pool, and a
forked pool worker never sees the end of its task queue (every sibling holds the queue's pipe
open), so the workers would run on as orphans. :func:`pool` starts a ``ProcessPoolExecutor`` whose
workers ask the Linux kernel for SIGKILL when their parent dies (``prctl(PR_SET_PDEATHSIG)``)
and exit at once when the parent is already gone; elsewhere the pool is a plain one.
``tests/test_orphans.py`` kills a build with SIGKILL and checks that no worker is left.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import sys
from concurrent.futures import ProcessPoolExecutor

PR_SET_PDEATHSIG = 1  # linux/prctl.h


def die_with_parent(parent: int) -> None:
    """Pool initializer: SIGKILL this worker when ``parent`` dies (Linux)."""
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):  # no prctl: the worker can only check below
            pass
    if os.getppid() != parent:  # the parent died before the request took effect
        os._exit(1)


def pool(workers: int, context: str | None = None) -> ProcessPoolExecutor:
    """A process pool whose workers die with this process (see the module's docstring)."""
    ctx = multiprocessing.get_context(context) if context else None
    return ProcessPoolExecutor(workers, mp_context=ctx, initializer=die_with_parent,
                               initargs=(os.getpid(),))
