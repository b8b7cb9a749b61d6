"""No worker outlives a killed build: ``kill -9`` of a process that runs the image checks with a
pool of workers (as ``pipeline build --workers 2`` does) leaves no worker behind
(pipeline/children.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

REPO = Path(__file__).resolve().parents[1]

# A build's image checks with two workers, each check slowed down so the pool is certainly busy
# when the parent is killed (forked workers run the patched module).
SCRIPT = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    import pipeline.images as images

    def slow(root, rel, train_hw, decode):
        time.sleep(0.5)
        return images.ImageCheck(rel, None, None, 1, 1, b"")

    images.check_image = slow
    print("started", flush=True)
    images.check_images(Path(sys.argv[1]), [f"{i}.jpg" for i in range(1000)], (8, 8), True,
                        workers=2)
""")


def _workers(pid: int, n: int, timeout: float = 60.0) -> list[psutil.Process]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        kids = psutil.Process(pid).children(recursive=True)
        if len(kids) >= n:
            return kids
        time.sleep(0.1)
    raise AssertionError(f"the pool of {n} workers did not start")


def _gone(procs: list[psutil.Process], timeout: float = 20.0) -> list[psutil.Process]:
    _, alive = psutil.wait_procs(procs, timeout=timeout)
    return alive


def _kill_9_leaves_none(proc: subprocess.Popen, workers: list[psutil.Process]) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    alive = _gone(workers)
    assert not alive, f"orphaned workers: {[p.pid for p in alive]}"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="parent-death signal is Linux")
def test_kill_9_of_the_parent_leaves_no_worker(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT, str(tmp_path)], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert proc.stdout.readline().strip() == "started"
        workers = _workers(proc.pid, 2)
        _kill_9_leaves_none(proc, workers)
    finally:
        for p in psutil.Process().children(recursive=True):
            p.kill()


def test_a_real_build_killed_with_sigkill_leaves_no_worker(tmp_path):
    """The same through ``python -m pipeline build --workers 2`` on a generated site, killed
    as soon as its workers exist."""
    from pipeline.synth import SynthConfig, generate

    site = tmp_path / "site"
    generate(SynthConfig(out=site, dives=2, images_per_dive=400, seed=5, faults=False,
                         workers=2))
    proc = subprocess.Popen([sys.executable, "-m", "pipeline", "build", "--catalog",
                             str(site / "catalog.yaml"), "--workers", "2"], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        try:
            workers = _workers(proc.pid, 2, timeout=120)
        except AssertionError:
            if proc.poll() is not None:
                pytest.fail("the build ended before its workers could be seen")
            raise
        _kill_9_leaves_none(proc, workers)
    finally:
        for p in psutil.Process().children(recursive=True):
            p.kill()
