"""A deployment run's lifeline to the process that started it (serve or a worker).

Started at the top of the build-pairs and map-habitats flows when the run belongs to a
deployment. Each part is for a fault Prefect 3.8.8 leaves as it is:

- it records where the run executes (``infrastructure_pid`` = ``host:pid``), so that the run
  sweep (flows.runs) can tell a live run from an orphan; Prefect's runner (serve) records none
  (a process worker does, and that record is kept);
- it watches the parent. Fault: the serve or worker process that started the run dies (killed,
  crashed, restarted); Prefect's runner took the run's cancellation and its final report with
  it, so the run goes on unsupervised and its output goes to a closed pipe. The run stops at once
  and is marked CRASHED with that cause, its own worker processes (a local Dask cluster) with it
  (tests/test_schedule_faults.py, step 1: CRASHED "ended while the run was in progress" within
  60 s of serve's SIGKILL, and the run's process gone);
- it honours cancellation by itself. Fault: a cancel request, then a server restart; the
  runner's cancellation watcher does not survive the restart, so the run stays CANCELLING,
  running, and holds the deployment's only slot for good. A run left CANCELLING for
  `SELF_CANCEL_S` stops and is marked CANCELLED (test_schedule_faults.py, step 4).

Stopping mid-publish is safe: the manifests switch atomically (pipeline.output) and the output
folder's lock is released with the process.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import os
import signal
import socket
import sys
import threading
import time

from . import runs

PARENT_POLL_S = 0.2
STATE_POLL_S = 5.0
SELF_CANCEL_S = 15.0

_started = False
_relays: list[threading.Thread] = []


def _relay(read_fd: int, target_fd: int) -> None:
    """Copy what the run writes to the parent's pipe, dropping it once the pipe is gone."""
    alive = True
    while True:
        try:
            data = os.read(read_fd, 65536)
        except OSError:
            return
        if not data:
            return
        if alive:
            try:
                os.write(target_fd, data)
            except OSError:  # EPIPE: the parent died; keep draining so no writer ever fails
                alive = False


def _shield_stdio() -> None:
    """Put a pipe of this process between the run (and its worker processes, which inherit the
    descriptors) and the parent's stdout/stderr. A parent that dies closes its pipe, and every
    later write there would fail (EPIPE) in the engine, in Dask's processes or in logging,
    ending the run in an unrelated error before the watcher can report the real cause."""
    for fd, stream in ((1, sys.stdout), (2, sys.stderr)):
        try:
            stream.flush()
            target = os.dup(fd)
            read_fd, write_fd = os.pipe()
            os.dup2(write_fd, fd)
            os.close(write_fd)
        except (OSError, ValueError, AttributeError):
            continue
        relay = threading.Thread(target=_relay, args=(read_fd, target), daemon=True,
                                 name=f"seafloor-relay-{fd}")
        relay.start()
        _relays.append(relay)
    atexit.register(_drain_relays)


def _drain_relays() -> None:
    """At exit: close this process's ends of the relay pipes and let the relays pass on the
    last lines (briefly: a worker process still holding an end keeps its pipe open)."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError, AttributeError):
            pass
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
    except OSError:
        return
    for relay in _relays:
        relay.join(timeout=1.0)


def _flush_logs() -> None:
    try:
        from prefect.logging.handlers import APILogWorker

        APILogWorker.drain_all(timeout=5)
    except Exception:  # noqa: BLE001 - leaving anyway; the state carries the cause
        pass


def _set_state(run_id, state) -> bool:
    """The run's ending, given to it and to its live subflows and task runs."""
    from prefect.client.orchestration import get_client

    async def go() -> None:
        async with get_client() as client:
            await client.set_flow_run_state(run_id, state, force=True)
            await runs.settle_children(client, run_id, lambda: type(state)(
                message=f"its flow run ended {state.type.value}: {state.message}"))

    try:
        asyncio.run(go())
        return True
    except Exception:  # noqa: BLE001 - server unreachable: the sweep finishes the job
        return False


def _end(run_id, state, logger: logging.Logger, message: str, code: int) -> None:
    """The run's ending first, then its processes, then this process, with nothing in between:
    the engine, still running in the main thread, fails the moment its worker processes go
    (e.g. "Nanny failed to start") and would report that Failed over the real cause."""
    logger.error(message) if code else logger.warning(message)
    _set_state(run_id, state)
    _flush_logs()
    for pid in runs.descendants(os.getpid()):
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    os._exit(code)


def _watch(run_id, parent: int, logger: logging.Logger) -> None:
    from prefect.client.orchestration import get_client
    from prefect.states import Cancelled, Crashed

    what = "serve or worker process"
    next_state = time.monotonic() + STATE_POLL_S
    cancelling_since: float | None = None
    while True:
        time.sleep(PARENT_POLL_S)
        if os.getppid() != parent:
            msg = (f"the {what} that started this run (pid {parent} on {socket.gethostname()}) "
                   "ended while the run was in progress; the run stopped here. Restart "
                   "`python -m flows.serve` (or the worker): the next scheduled run builds the "
                   "manifests, reusing every dive already ingested")
            _end(run_id, Crashed(message=msg), logger, msg, 1)
        if time.monotonic() < next_state:
            continue
        next_state = time.monotonic() + STATE_POLL_S
        try:
            with get_client(sync_client=True) as client:
                state = client.read_flow_run(run_id).state
        except Exception:  # noqa: BLE001 - a server outage: ask again later
            continue
        if state is None or state.type.value != "CANCELLING":
            cancelling_since = None
            continue
        cancelling_since = cancelling_since or time.monotonic()
        if time.monotonic() - cancelling_since >= SELF_CANCEL_S:
            msg = (f"cancelled: the run was CANCELLING for {SELF_CANCEL_S:.0f} s and its runner "
                   "had not stopped it, so it stopped itself")
            _end(run_id, Cancelled(message=msg), logger, msg, 0)


def start(logger: logging.Logger) -> None:
    """Record the run's process and start the watcher thread (deployment runs only; a flow
    called in-process has no runner to lose)."""
    global _started
    from prefect.context import FlowRunContext

    ctx = FlowRunContext.get()
    if _started or ctx is None or ctx.flow_run is None or ctx.flow_run.deployment_id is None:
        return
    _started = True
    run = ctx.flow_run
    if not run.infrastructure_pid:
        from prefect.client.orchestration import get_client

        try:
            with get_client(sync_client=True) as client:
                client.update_flow_run(run.id, infrastructure_pid=f"{runs.HOST}:{os.getpid()}")
        except Exception as exc:  # noqa: BLE001 - the run itself does not depend on it
            logger.warning("could not record this run's process (%s); the run sweep will "
                           "treat it as unrecorded", exc)
    _shield_stdio()
    threading.Thread(target=_watch, args=(run.id, os.getppid(), logger), daemon=True,
                     name="seafloor-lifeline").start()
