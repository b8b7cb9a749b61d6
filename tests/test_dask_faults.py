"""The build-pairs flow on a real Dask cluster that fails: every worker lost mid-ingest, a
scheduler address that accepts connections and never answers, a dive that hangs on its worker,
a dive whose I/O fails once, and one worker killed while it ingests a dive; and what distributed
and Prefect alone do with a silent scheduler and a hung task (why the flow bounds them itself).

Real processes throughout: a Prefect server (prefect_stack), `dask scheduler` and `dask worker`
in their own sessions, and the flow run in a subprocess. Faults are injected in the workers by
a `--preload` module written here, which wraps pipeline.build.ingest_cached (FAULT_MODE):

    stall          every ingest blocks (until its worker is killed)
    ioerror-once   each dive's first ingest raises an I/O error (EIO)
    stall-dive01   dive01's first ingest blocks; everything else runs normally
    none           no fault

Every process is stopped with its process group, whatever the outcome.
"""

from __future__ import annotations

import contextlib
import json
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import distributed
import pyarrow.parquet as pq
import pytest
from prefect_stack import REPO, make_survey, prefect_stack, site_with, wait_for, write_catalog

from flows.server import free_port
from pipeline.build import build
from pipeline.catalog import CatalogError, load_catalog

pytestmark = pytest.mark.slow

PRELOAD = '''
import os, time
from pathlib import Path

import pipeline.build as pb

# the worker may run a preload more than once: wrap the original, never the wrapper
_ingest = pb.__dict__.setdefault("_unfaulted_ingest_cached", pb.ingest_cached)
_dir = Path(os.environ["FAULT_DIR"])
_mode = os.environ["FAULT_MODE"]


def _once(name):
    marker = _dir / name
    try:
        marker.touch(exist_ok=False)
        return True
    except FileExistsError:
        return False


def ingest_cached(cat, out, dive, fingerprint, *args, **kwargs):
    (_dir / f"started-{dive}-{os.getpid()}").touch()
    if _mode == "stall" or (_mode == "stall-dive01" and dive == "dive01"
                            and _once("stalled-dive01")):
        time.sleep(600)
    if _mode == "ioerror-once" and _once(f"failed-{dive}"):
        raise OSError(5, "Input/output error (injected)", str(out))
    return _ingest(cat, out, dive, fingerprint, *args, **kwargs)


pb.ingest_cached = ingest_cached
'''

HUNG_TASK = '''
import json, sys, time
from prefect import flow, task
from prefect_dask import DaskTaskRunner


@task(timeout_seconds=1)
def hang():
    time.sleep(12)


@flow(task_runner=DaskTaskRunner(address=sys.argv[1]))
def hung_task():
    t0 = time.monotonic()
    future = hang.submit()
    future.wait()
    print(json.dumps({"seconds": time.monotonic() - t0, "state": future.state.name}))


hung_task()
'''

RUN_FLOW = ("import json, sys; from flows.build_pairs import build_pairs; "
            "s = build_pairs(catalog=sys.argv[1], return_state=True); "
            "print(json.dumps({'state': s.type.value, 'message': s.message, "
            "'id': str(s.state_details.flow_run_id)}))")


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    with prefect_stack(tmp_path_factory.mktemp("prefect-home")) as s:
        yield s


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    return make_survey(tmp_path_factory.mktemp("src") / "site", dives=2, images_per_dive=12)


def catalog(tmp: Path, source: Path, address: str, **limits) -> Path:
    site = site_with(source, tmp / "site", ["dive01", "dive02"])
    return write_catalog(tmp / "catalogs", "faults", site, tmp / "out",
                         dask={"address": address, **limits})


@contextlib.contextmanager
def dask_cluster(stack, tmp: Path, n_workers: int, mode: str, threads: int = 1):
    """A scheduler and `n_workers` worker processes (no nanny: the worker is the process, so
    killing it loses it) with the fault preload; yields (address, worker processes)."""
    faults = tmp / "faults"
    faults.mkdir()
    preload = tmp / "fault_preload.py"
    preload.write_text(PRELOAD)
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    sched = stack.spawn([sys.executable, "-m", "distributed.cli.dask_scheduler", "--host",
                         "127.0.0.1", "--port", str(port), "--no-dashboard"],
                        tmp / "scheduler.log")
    env = {"FAULT_DIR": str(faults), "FAULT_MODE": mode}
    workers = [stack.spawn([sys.executable, "-m", "distributed.cli.dask_worker", address,
                            "--no-nanny", "--nthreads", str(threads), "--no-dashboard",
                            "--preload", str(preload)], tmp / f"worker{i}.log", env=env)
               for i in range(n_workers)]
    try:
        with distributed.Client(address, timeout=60, set_as_default=False) as client:
            client.wait_for_workers(n_workers, timeout=90)
        yield address, workers
    finally:
        for w in workers:
            stack.stop(w)
        stack.stop(sched)


@contextlib.contextmanager
def silent_listener():
    """An address that accepts connections and never writes a byte; yields (address, the
    accepted connections)."""
    listener = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []

    def accept():
        with contextlib.suppress(OSError):
            while True:
                held.append(listener.accept()[0])

    threading.Thread(target=accept, daemon=True).start()
    try:
        yield f"tcp://127.0.0.1:{listener.getsockname()[1]}", held
    finally:
        listener.close()
        for conn in held:
            conn.close()


@contextlib.contextmanager
def flow_run(stack, path: Path, log: Path):
    """`build_pairs(catalog=path)` in a subprocess; yields it, stops it on the way out."""
    with open(log, "wb") as fh:
        proc = subprocess.Popen([sys.executable, "-c", RUN_FLOW, str(path)], cwd=REPO,
                                env=stack.env, stdout=fh, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        yield proc
    finally:
        stack.stop(proc)


def outcome(proc, log: Path, timeout: float) -> tuple[dict, str]:
    """The flow run's final state {state, message, id} and the subprocess' output."""
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"the flow run was still running after {timeout:.0f} s:\n"
                             f"{log.read_text(errors='replace')[-4000:]}") from None
    text = log.read_text(errors="replace")
    assert proc.returncode == 0, text[-4000:]
    return json.loads(text.strip().splitlines()[-1]), text


def test_dask_keys_are_validated_with_the_key_and_what_was_expected(tmp_path):
    base = "root: .\nnav: [{format: ifdo, path: '{dive}/n.json'}]\noutput: out\n"
    for value, expected in (("0", "greater than 0"), ("-5", "greater than 0"),
                            ("'30'", "a valid number"), ("true", "a valid number"),
                            (".inf", "finite")):
        p = tmp_path / "site.yaml"
        p.write_text(base + f"dask: {{worker_wait_s: {value}}}\n")
        with pytest.raises(CatalogError) as info:
            load_catalog(p)
        assert "key 'dask.worker_wait_s'" in str(info.value) and expected in str(info.value)
    p.write_text(base + "dask: {connect_timeout_s: 5, worker_wait_s: 8, seconds_per_image: 0.2,"
                 " min_dive_timeout_s: 20}\n")
    d = load_catalog(p).dask
    assert (d.connect_timeout_s, d.worker_wait_s, d.seconds_per_image,
            d.min_dive_timeout_s) == (5, 8, 0.2, 20)


def test_losing_every_worker_fails_the_run_within_worker_wait(stack, source, tmp_path):
    wait_s = 8
    with dask_cluster(stack, tmp_path, 1, "stall", threads=2) as (address, workers):
        path = catalog(tmp_path, source, address, connect_timeout_s=5, worker_wait_s=wait_s,
                       seconds_per_image=1, min_dive_timeout_s=40)
        with flow_run(stack, path, tmp_path / "flow.log") as proc:
            wait_for(lambda: len(list((tmp_path / "faults").glob("started-*"))) >= 2, 120,
                     "both dives to start on the worker")
            stack.stop(workers[0])
            killed = time.monotonic()
            result, text = outcome(proc, tmp_path / "flow.log", 90)
            took = time.monotonic() - killed
    assert result["state"] == "FAILED", result
    message = result["message"]
    assert message.startswith(f"the Dask cluster at {address} has had no worker for"), message
    assert f"`dask worker {address}`" in message and "remove dask.address" in message
    assert "dive01" in message and "dive02" in message
    # within the bound: worker_wait_s, a poll, the teardown, not the dives' 40 s bound
    assert took < wait_s + 25, f"{took:.0f} s after the workers were killed"
    assert "Traceback" not in text
    logs = stack.logs(result["id"])
    assert sum(m == message for m in logs) == 1, logs
    assert any(f"the Dask cluster at {address} has no worker; dive(s)" in m for m in logs), logs


def test_a_scheduler_that_never_answers_fails_the_run_within_connect_timeout(
        stack, source, tmp_path):
    with silent_listener() as (address, held):
        path = catalog(tmp_path, source, address, connect_timeout_s=4, worker_wait_s=8)
        t0 = time.monotonic()
        with flow_run(stack, path, tmp_path / "flow.log") as proc:
            result, text = outcome(proc, tmp_path / "flow.log", 120)
        took = time.monotonic() - t0
        assert held, "the flow never connected to the address"
    assert result["state"] == "FAILED", result
    message = result["message"]
    assert f"the Dask scheduler at {address} did not answer within 4 s" in message, message
    assert "remove dask.address" in message
    assert "Traceback" not in text
    # the process' start, the plan and 4 s: nowhere near a hang
    assert took < 60, f"{took:.0f} s"
    logs = stack.logs(result["id"])
    assert sum(m == message for m in logs) == 1, logs


def test_distributed_client_timeout_alone_does_not_bound_the_handshake():
    """Why build_pairs puts an asyncio deadline around its distributed.Client: the Client's
    timeout bounds the TCP connect, not the handshake after it. When this fails, distributed
    bounds the handshake itself and the deadline can go."""
    with silent_listener() as (address, held):
        code = f"import distributed; distributed.Client({address!r}, timeout=2)"
        with pytest.raises(subprocess.TimeoutExpired):
            subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                           timeout=12)
        assert held


def test_a_hung_dive_fails_the_run_within_its_bound(stack, source, tmp_path):
    bound = 12
    with dask_cluster(stack, tmp_path, 1, "stall", threads=2) as (address, _):
        path = catalog(tmp_path, source, address, connect_timeout_s=5, worker_wait_s=8,
                       seconds_per_image=0.1, min_dive_timeout_s=bound)
        with flow_run(stack, path, tmp_path / "flow.log") as proc:
            wait_for(lambda: len(list((tmp_path / "faults").glob("started-*"))) >= 2, 120,
                     "both dives to start on the worker")
            started = time.monotonic()
            result, text = outcome(proc, tmp_path / "flow.log", 120)
            took = time.monotonic() - started
    assert result["state"] == "FAILED", result
    message = result["message"]
    assert re.match(rf"dive dive0[12] has been ingesting for \d+ s on the Dask cluster at "
                    rf"{address}, over its bound of {bound} s: ", message), message
    assert "dask.min_dive_timeout_s" in message and "dask.seconds_per_image" in message
    # the bound, a poll and the teardown; the worker would hang for 600 s
    assert took < bound + 25, f"{took:.0f} s after both dives started"
    assert "Traceback" not in text
    logs = stack.logs(result["id"])
    assert sum(m == message for m in logs) == 1, logs


def test_prefect_task_timeout_does_not_stop_a_hung_task_on_a_dask_worker(
        stack, tmp_path):
    """Why build_pairs bounds each dive itself: a task's timeout_seconds on a Dask worker takes
    effect only once the blocking call returns (the task runs in a worker thread). When this
    fails, Prefect stops such a task and the dives' bounds could be task timeouts."""
    script = tmp_path / "hung_task.py"
    script.write_text(HUNG_TASK)
    with dask_cluster(stack, tmp_path, 1, "none") as (address, _):
        res = subprocess.run([sys.executable, str(script), address], cwd=REPO, env=stack.env,
                             capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-4000:]
    result = json.loads(next(line for line in res.stdout.splitlines()
                             if line.startswith('{"seconds"')))
    assert result["seconds"] > 11, result  # ran its 12 s despite its 1 s timeout


def test_a_retried_dive_is_logged_and_the_run_completes(stack, source, tmp_path):
    with dask_cluster(stack, tmp_path, 1, "ioerror-once", threads=2) as (address, _):
        path = catalog(tmp_path, source, address, connect_timeout_s=5, worker_wait_s=20)
        with flow_run(stack, path, tmp_path / "flow.log") as proc:
            result, text = outcome(proc, tmp_path / "flow.log", 180)
    assert result["state"] == "COMPLETED", text[-4000:]
    assert {p.name for p in (tmp_path / "faults").glob("failed-*")} == {"failed-dive01",
                                                                        "failed-dive02"}
    logs = stack.logs(result["id"])
    for dive in ("dive01", "dive02"):
        line = next((m for m in logs if m.startswith(f"dive {dive}: I/O error (")), None)
        assert line is not None, logs
        assert "Input/output error (injected)" in line and line.endswith("retry 1 of 2 in 2 s")
    assert (tmp_path / "out" / "pairs.parquet").is_file()


def test_a_killed_workers_dive_is_rescheduled_and_matches_the_sequential_build(
        stack, source, tmp_path):
    with dask_cluster(stack, tmp_path, 2, "stall-dive01") as (address, workers):
        path = catalog(tmp_path, source, address, connect_timeout_s=5, worker_wait_s=30,
                       min_dive_timeout_s=60)
        with flow_run(stack, path, tmp_path / "flow.log") as proc:
            marker = wait_for(lambda: next((tmp_path / "faults").glob("started-dive01-*"),
                                           None), 120, "dive01 to start")
            pid = int(marker.name.rsplit("-", 1)[1])
            victim = next(w for w in workers if w.pid == pid)
            stack.stop(victim)
            result, text = outcome(proc, tmp_path / "flow.log", 180)
    assert result["state"] == "COMPLETED", text[-4000:]
    started = sorted(p.name for p in (tmp_path / "faults").glob("started-dive01-*"))
    assert len(started) == 2 and f"started-dive01-{pid}" in started, started  # rescheduled

    cat = load_catalog(path)
    seq = tmp_path / "sequential"
    build(cat, out=seq, workers=1, log=lambda *_: None)
    out = tmp_path / "out"
    for name in ("locations.parquet", "pairs.parquet", "quarantine.parquet"):
        assert pq.read_table(out / name).equals(pq.read_table(seq / name)), name
    for shard in sorted((seq / "images").glob("*.parquet")):
        assert pq.read_table(out / "images" / shard.name).equals(pq.read_table(shard))
