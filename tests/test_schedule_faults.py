"""Scheduled re-indexing through faults, with real processes: a Prefect server, `python -m
flows.serve`, its flow-run processes and their local Dask clusters.

The long test leaves a 20-second schedule running through a serve killed mid-run (alone, then
with its whole process group), a server killed and restarted mid-run and a run cancelled just
before another server outage. After each fault it checks that the run tells the truth
(CRASHED / CANCELLED with a cause) and that no deployment slot stays held; at the end, that
scheduled runs keep completing with no manual step."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from pathlib import Path

import pytest
from prefect_stack import (
    FAST,
    Stack,
    make_survey,
    serving,
    state_name,
    wait_for,
    write_catalog,
)

from flows import server as prefect_server
from flows.runs import pid_alive

pytestmark = pytest.mark.slow

HEARTBEAT = ["--heartbeat", "2"]


def deployment(stack: Stack, name: str):
    with stack.client() as c:
        return c.read_deployment_by_name(f"build-pairs/{name}")


def slots_held(stack: Stack, name: str) -> int:
    gcl = deployment(stack, name).global_concurrency_limit
    return gcl.active_slots if gcl is not None else 0


def read_run(stack: Stack, run_id):
    with stack.client() as c:
        return c.read_flow_run(run_id)


def live_runs(stack: Stack, name: str) -> list:
    return [r for r in stack.flow_runs(name) if state_name(r) in ("PENDING", "RUNNING",
                                                                  "CANCELLING")]


def start_run(stack: Stack, name: str, tries: int = 6):
    """A manual full-rebuild run that got the deployment's slot, RUNNING with its process
    recorded. A scheduled run holding the slot makes ours be cancelled (one at a time): wait for
    it to end and try again."""
    for _ in range(tries):
        wait_for(lambda: not live_runs(stack, name), 120, "the deployment to be idle")
        with stack.client() as c:
            run = c.create_flow_run_from_deployment(deployment(stack, name).id,
                                                    parameters={"full_rebuild": True})

        def started(run_id=run.id):
            r = read_run(stack, run_id)
            if state_name(r) == "RUNNING" and r.infrastructure_pid:
                return r
            return "lost" if state_name(r) in ("CANCELLED", "COMPLETED", "FAILED",
                                                 "CRASHED") else None
        got = wait_for(started, 90, "the manual run to start")
        if got != "lost":
            return got
    raise AssertionError("no manual run got the deployment's slot")


def slot_honest(stack: Stack, name: str) -> bool:
    """The slot is free, or held while a run really is live (PENDING, or its process alive)."""
    if slots_held(stack, name) == 0:
        return True
    return any(state_name(r) == "PENDING" or (r.infrastructure_pid and pid_alive(run_pid(r)))
               for r in live_runs(stack, name))


def live_children(stack: Stack, run_id) -> list[str]:
    """Subflow runs and task runs of a run still in a live state."""
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterParentFlowRunId

    from flows.runs import LIVE

    with stack.client() as c:
        subs = c.read_flow_runs(flow_run_filter=FlowRunFilter(
            parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[run_id])))
        from prefect.client.schemas.filters import TaskRunFilter, TaskRunFilterFlowRunId

        tasks = c.read_task_runs(task_run_filter=TaskRunFilter(flow_run_id=TaskRunFilterFlowRunId(
            any_=[run_id, *(r.id for r in subs)])))
    return [f"{r.name} {state_name(r)}" for r in [*subs, *tasks] if state_name(r) in LIVE]


def children_end(stack: Stack, run_id, log: Path, timeout: float = 30) -> None:
    """Wait for a stopped run's subflows and tasks to leave the live states; on a timeout the
    message names what is still live and ends with serve's last log lines."""
    left: list[str] = []

    def none_left():
        left[:] = live_children(stack, run_id)
        return not left
    try:
        wait_for(none_left, timeout, "the crashed run's subflow and tasks to end")
    except AssertionError as exc:
        tail = log.read_text(errors="replace").splitlines()[-25:] if log.exists() else []
        raise AssertionError(f"{exc}; still live: {left}; serve log:\n" + "\n".join(tail)) \
            from None


def run_pid(run) -> int:
    return int(run.infrastructure_pid.rpartition(":")[2])


def ended(stack: Stack, run_id, states: tuple[str, ...], timeout: float):
    try:
        return wait_for(lambda: (r := read_run(stack, run_id)) and state_name(r) in states and r,
                        timeout, f"run {run_id} to become {'/'.join(states)}")
    except AssertionError as exc:
        r = read_run(stack, run_id)
        raise AssertionError(f"{exc}; it is {state_name(r)}: {r.state.message}") from None


def serve(stack: Stack, catalogs: Path, log: Path):
    proc = stack.spawn([sys.executable, "-m", "flows.serve", "--catalogs", str(catalogs),
                        *HEARTBEAT], log)
    prefect_server.wait_for_deployment(stack.url, "build-pairs/sched", proc=proc)
    return proc


def test_schedule_keeps_running_through_serve_kill_server_restart_and_cancel(tmp_path):
    site = make_survey(tmp_path / "site", dives=2, images_per_dive=150)
    catalogs = tmp_path / "catalogs"
    write_catalog(catalogs, "sched", site, tmp_path / "out", interval_s=20)
    home, port = tmp_path / "home", prefect_server.free_port()
    srv = prefect_server.start(home, port, extra_env=FAST, ui=False)
    stack = Stack(home, port)
    log = tmp_path / "serve.log"
    try:
        # 1. serve killed with SIGKILL mid-run: the run's lifeline sees its parent go, stops
        # the run's processes and marks it CRASHED with that cause
        s1 = serve(stack, catalogs, log)
        run = start_run(stack, "sched")
        os.kill(s1.pid, signal.SIGKILL)
        crashed = ended(stack, run.id, ("CRASHED",), 60)
        assert "ended while the run was in progress" in crashed.state.message
        first = run
        wait_for(lambda: not pid_alive(run_pid(run)), 30, "the orphaned run's process to exit")
        wait_for(lambda: slot_honest(stack, "sched"), 30, "no slot held by a dead run")
        stack.stop(s1)  # the rest of its process group, if any

        # 2. serve and every process of its group killed mid-run: nobody is left to report;
        # the next serve's sweep marks the run CRASHED and frees the slot
        s2 = serve(stack, catalogs, log)
        # its subflow and tasks end with it (the sweep settles states that arrived late)
        children_end(stack, first.id, log)
        run = start_run(stack, "sched")
        os.killpg(s2.pid, signal.SIGKILL)
        s2.wait(timeout=10)
        wait_for(lambda: not pid_alive(run_pid(run)), 30, "the run's process to die")
        assert state_name(read_run(stack, run.id)) == "RUNNING"  # the lie the sweep fixes
        stack.procs.remove(s2)
        s3 = serve(stack, catalogs, log)
        crashed = ended(stack, run.id, ("CRASHED",), 60)
        assert "its process ended" in crashed.state.message
        children_end(stack, run.id, log)
        wait_for(lambda: slot_honest(stack, "sched"), 30, "no slot held by a dead run")

        # 3. server killed and restarted mid-run: serve waits the outage out, the run ends
        # (in whatever state its process could report), no slot stays held
        run = start_run(stack, "sched")
        os.killpg(srv.pid, signal.SIGKILL)
        srv.wait(timeout=10)
        time.sleep(6)
        srv = prefect_server.start(home, port, extra_env=FAST, ui=False)
        wait_for(lambda: state_name(read_run(stack, run.id)) not in
                 ("PENDING", "RUNNING", "CANCELLING"), 120, "the run to end after the outage")
        wait_for(lambda: slot_honest(stack, "sched"), 120, "no slot held by a dead run")
        assert s3.poll() is None, "serve exited during the server outage"

        # 4. cancelled, and the server killed right after the request (the runner's cancellation
        # watcher does not survive that): the run stops by itself and is CANCELLED, the slot
        # is freed
        run = start_run(stack, "sched")
        stack.cli("flow-run", "cancel", str(run.id))
        os.killpg(srv.pid, signal.SIGKILL)
        srv.wait(timeout=10)
        time.sleep(5)
        srv = prefect_server.start(home, port, extra_env=FAST, ui=False)
        ended(stack, run.id, ("CANCELLED",), 90)
        wait_for(lambda: not pid_alive(run_pid(run)), 30, "the cancelled run's process to exit")
        wait_for(lambda: slot_honest(stack, "sched"), 30, "the cancelled run's slot released")

        # 5. and the schedule goes on: a scheduled run that started after the faults completes
        t_faults = read_run(stack, run.id).end_time

        def completed_after():
            return [r for r in stack.flow_runs("sched") if r.auto_scheduled
                    and state_name(r) == "COMPLETED" and r.start_time > t_faults]
        wait_for(completed_after, 150, "a scheduled run to complete after the faults")
        assert s3.poll() is None
        assert slot_honest(stack, "sched")
    finally:
        for p in list(stack.procs):
            stack.stop(p)
        prefect_server.stop(srv)


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    from prefect_stack import prefect_stack

    with prefect_stack(tmp_path_factory.mktemp("prefect-home")) as s:
        yield s


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_survey(tmp_path_factory.mktemp("tiny") / "site", dives=1, images_per_dive=20)


def test_one_broken_catalog_leaves_the_others_served_and_is_picked_up_once_fixed(
        stack, tiny, tmp_path):
    catalogs = tmp_path / "catalogs"
    good = write_catalog(catalogs, "good", tiny, tmp_path / "out-good")
    broken = catalogs / "broken.yaml"
    text = good.read_text()
    broken.write_text(text.replace("r_loc_m:", "r_loc_metres:"))
    log = tmp_path / "serve.log"
    proc = stack.spawn([sys.executable, "-m", "flows.serve", "--catalogs", str(catalogs),
                        *HEARTBEAT], log)
    prefect_server.wait_for_deployment(stack.url, "build-pairs/good", proc=proc, auth=stack.auth)
    out = wait_for(lambda: "broken.yaml" in (t := log.read_text(errors="replace")) and t, 60,
                   "the broken catalog to be reported")
    assert "skipped broken.yaml" in out and "r_loc_metres" in out
    assert "Traceback" not in out
    assert proc.poll() is None
    # fixed in place: served on the next heartbeat, without a restart
    write_catalog(catalogs, "broken", tiny, tmp_path / "out-broken")
    prefect_server.wait_for_deployment(stack.url, "build-pairs/broken", proc=proc,
                                       auth=stack.auth, timeout=60)
    # the serve loop registers the deployment first and logs it just after: wait for the line
    wait_for(lambda: "now serving build-pairs/broken" in log.read_text(errors="replace"), 30,
             "the serve log to say it now serves build-pairs/broken")
    stack.stop(proc)


def test_runs_that_fell_due_while_nothing_served_collapse_to_one_catch_up_run(
        stack, tiny, tmp_path):
    catalogs = tmp_path / "catalogs"
    write_catalog(catalogs, "late", tiny, tmp_path / "out", interval_s=5)
    log = tmp_path / "serve.log"
    with serving(stack, catalogs, log):
        pass  # registers the deployment and its schedule; serve stops here

    def late():
        now = time.time()
        return len([r for r in stack.flow_runs("late") if state_name(r) == "SCHEDULED"
                    and r.expected_start_time.timestamp() < now - 8]) >= 2
    wait_for(late, 120, "scheduled runs to fall due with nothing serving them", every=2)
    before = {r.id: state_name(r) for r in stack.flow_runs("late")}
    due = [r for r in stack.flow_runs("late") if state_name(r) == "SCHEDULED"
           and r.expected_start_time.timestamp() < time.time()]
    assert len(due) >= 2
    proc = stack.spawn([sys.executable, "-m", "flows.serve", "--catalogs", str(catalogs),
                        *HEARTBEAT], log)
    try:
        def caught_up():
            done = [r for r in stack.flow_runs("late")
                    if state_name(r) == "COMPLETED" and before.get(r.id) != "COMPLETED"]
            return sorted(done, key=lambda r: r.expected_start_time)
        wait_for(caught_up, 120, "the catch-up run to complete")
        now = {r.id: state_name(r) for r in stack.flow_runs("late")}
        # of the runs that were due when serve started, at most one ran (the catch-up run, the
        # newest due at the first poll, may also be a later one); the others were dropped, and
        # none was cancelled for want of the slot. (Runs falling due while the catch-up run
        # runs are cancelled as any run arriving during another is: CANCEL_NEW.)
        left = {r.name: now[r.id] for r in due if r.id in now}
        why = {r.name: (str(r.expected_start_time), state_name(r), r.state.message)
               for r in stack.flow_runs("late")}
        assert len(left) <= 1 and set(left.values()) <= {"COMPLETED"}, \
            (left, why, log.read_text(errors="replace")[-4000:])
        assert "as the catch-up run" in log.read_text(errors="replace")
    finally:
        stack.stop(proc)


def test_settling_a_stopped_run_reaches_every_live_task_past_the_servers_page_limit(stack):
    """More live task runs than one read may return (the server refuses a limit above 200):
    every one of them, and the subflow's, ends with the run."""
    from prefect import flow, task
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL, temporary_settings
    from prefect.states import Crashed, Running

    from flows.runs import LIVE, PAGE, settle_children, task_runs_by_id

    def settle(stack, run_id, message: str) -> int:
        async def go() -> int:
            async with get_client() as client:
                return await settle_children(client, run_id, lambda: Crashed(message=message))

        updates = {PREFECT_API_URL: stack.url, **({PREFECT_API_AUTH_STRING: stack.auth}
                                                  if stack.auth else {})}
        with temporary_settings(updates):
            return asyncio.run(go())

    @flow(name="settle-probe")
    def probe():
        pass

    @task(name="step")
    def step():
        pass

    with stack.client() as c:
        run = c.create_flow_run(probe, state=Running())
        parent_tasks = [c.create_task_run(step, run.id, dynamic_key=str(i), state=Running())
                        for i in range(PAGE + 37)]
        # a subflow's parent task run takes the subflow's state (Prefect's own rule)
        holder = c.create_task_run(step, run.id, dynamic_key="holder", state=Running())
        sub = c.create_flow_run(probe, parent_task_run_id=holder.id, state=Running())
        sub_tasks = [c.create_task_run(step, sub.id, dynamic_key=f"s{i}", state=Running())
                     for i in range(5)]
        c.set_flow_run_state(run.id, Crashed(message="probe"), force=True)
        n = settle(stack, run.id, "its flow run ended")
        states = [c.read_task_run(t.id).state for t in (*parent_tasks, *sub_tasks)]
        assert [s.type.value for s in states if s.type.value in LIVE] == []
        assert {s.message for s in states} == {"its flow run ended"}
        assert c.read_flow_run(sub.id).state.type.value == "CRASHED"
        assert c.read_task_run(holder.id).state.type.value == "CRASHED"
        assert n == 1 + len(parent_tasks) + len(sub_tasks)
        # reading task runs by id goes past the limit the same way (the ingest's dive tasks)
        ids = [t.id for t in parent_tasks]
        assert sorted(r.id for r in task_runs_by_id(c, ids)) == sorted(ids)
        # a second round finds nothing left to do
        assert settle(stack, run.id, "again") == 0


NAP_FLOW = '''
import time

from prefect import flow


@flow
def nap():
    time.sleep(120)


if __name__ == "__main__":
    nap.serve(name="plain")
'''


def test_sigterm_stops_serve_and_ends_its_run_where_prefects_own_handler_leaves_it(stack,
                                                                                  tmp_path):
    """Why flows.serve replaces Runner.handle_sigterm: Prefect's handler calls the sync
    Runner.stop() from inside the runner's own event loop, where the stop coroutine is never
    awaited, so a plain `flow.serve()` given SIGTERM leaves its run RUNNING. flows.serve stops
    from the loop: it exits and its run in progress ends. If the first half ever fails,
    Prefect's handler works and the override can go."""
    (tmp_path / "nap.py").write_text(NAP_FLOW)
    plain = stack.spawn([sys.executable, str(tmp_path / "nap.py")], tmp_path / "plain.log")
    try:
        prefect_server.wait_for_deployment(stack.url, "nap/plain", proc=plain, auth=stack.auth)
        with stack.client() as c:
            run = c.create_flow_run_from_deployment(
                c.read_deployment_by_name("nap/plain").id)
        wait_for(lambda: state_name(read_run(stack, run.id)) == "RUNNING", 90,
                 "the plain serve's run to start")
        plain.send_signal(signal.SIGTERM)
        time.sleep(20)
        assert state_name(read_run(stack, run.id)) == "RUNNING", \
            "Prefect's own SIGTERM handler now ends the run"
        assert "was never awaited" in (tmp_path / "plain.log").read_text(errors="replace")
    finally:
        stack.stop(plain)

    site = make_survey(tmp_path / "site", dives=1, images_per_dive=150)
    catalogs = tmp_path / "catalogs"
    write_catalog(catalogs, "sigterm", site, tmp_path / "out")
    log = tmp_path / "serve.log"
    ours = stack.spawn([sys.executable, "-m", "flows.serve", "--catalogs", str(catalogs),
                        *HEARTBEAT], log)
    try:
        prefect_server.wait_for_deployment(stack.url, "build-pairs/sigterm", proc=ours,
                                           auth=stack.auth)
        run = start_run(stack, "sigterm")
        ours.send_signal(signal.SIGTERM)
        assert ours.wait(timeout=60) is not None
        text = log.read_text(errors="replace")
        assert "SIGTERM received: stopping" in text and "was never awaited" not in text, text
        ended = wait_for(lambda: (r := read_run(stack, run.id)) and state_name(r) not in
                         ("PENDING", "RUNNING") and r, 60, "the run to end with its serve")
        assert state_name(ended) in ("CANCELLED", "CANCELLING", "CRASHED"), state_name(ended)
        wait_for(lambda: not pid_alive(run_pid(run)), 30, "the run's process to exit")
    finally:
        stack.stop(ours)
