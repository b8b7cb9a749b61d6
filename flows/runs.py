"""Run hygiene: no deployment slot is held by a run that is not running, and late runs do not
pile up. Used by ``python -m flows.serve`` (at start and on a heartbeat), by
``python -m flows.worker`` (the work-pool path) and by ``make demo``.

A run records where it runs (``infrastructure_pid`` = ``host:pid``, see flows.lifeline) as
soon as its flow code starts. Each piece here exists for a fault Prefect 3.8.8 leaves as it is,
with a real server:

- sweep(): a PENDING/RUNNING run whose process is gone becomes CRASHED (a CANCELLING one
  CANCELLED), and so does one that recorded no process within `grace_s`. Fault: serve or the
  worker killed together with its runs (kill -9 of the process group, out of memory, a reboot):
  nobody reports, the run stays RUNNING and holds the deployment's only slot for good
  (tests/test_schedule_faults.py, step 2 asserts the run still RUNNING after its process died;
  tests/test_flows.py, the worker path). Prefect's own remedy, flow-run heartbeats with the
  "crash zombie flows" automation of Prefect's guide "How to detect and respond to zombie
  flows", does not replace it: heartbeats come at most every 30 s
  (PREFECT_FLOWS_HEARTBEAT_FREQUENCY has a floor of 30, default 180) and the automation waits
  for its window of missed ones, while the sweep frees the slot the moment serve is back; a run
  that never reached its flow code sends no heartbeat at all; and it leaves the run's subflows
  and task runs RUNNING.
- settle_children(): a stopped run's live subflows and task runs get the run's ending; Prefect
  changes only the run named (test_schedule_faults.py, the checks after steps 1 and 2, and
  test_settling_a_stopped_run_reaches_every_live_task_past_the_servers_page_limit).
- collapse_late(): a schedule keeps creating runs while nothing serves; when serve comes back
  every one falls due at once, and with one run at a time all but one would be cancelled in
  turn ("Deployment concurrency limit reached"). Each poll submits one run per deployment: the
  newest due run is the catch-up run, the older scheduled ones are deleted, runs started by
  hand are never deleted (test_runs_that_fell_due_while_nothing_served_collapse_to_one_catch_up_run).

A run recorded on another host is left alone (this host cannot see its process). A run stuck
CANCELLING while its process lives is stopped by the run itself (flows.lifeline). Leaving a live
state releases the deployment's concurrency slot (Prefect releases it on every transition out of
PENDING/RUNNING/CANCELLING, forced ones included).
"""

from __future__ import annotations

import datetime as dt
import socket
from dataclasses import dataclass
from uuid import UUID

import psutil

from .server import pid_alive

LIVE = ("PENDING", "RUNNING", "CANCELLING")
GRACE_S = 90.0  # a run with no recorded process for this long in a live state has none
LATE_S = 30.0  # a scheduled run this far past its start time is late
SETTLE_WINDOW_S = 600.0  # runs that ended this recently get their live children settled
PAGE = 200  # rows per read: the Prefect server's default API limit, the most it accepts
MAX_SUBFLOWS = 1000  # a run's subflows looked at, at any depth
MAX_TASK_PAGES = 50  # pages of live task runs settled per run in one round

HOST = socket.gethostname()


@dataclass
class Action:
    run: str  # flow run name
    run_id: str
    deployment: str
    was: str  # state type before
    now: str  # state type after ("DELETED" for a collapsed late run)
    why: str

    def line(self) -> str:
        return f"{self.deployment}: run {self.run} {self.was} -> {self.now}: {self.why}"


# -- processes ---------------------------------------------------------------------------

def process_start(pid: int) -> float | None:
    """Unix time a process started (psutil), or None where that cannot be read."""
    try:
        return psutil.Process(pid).create_time()
    except (psutil.Error, OSError):
        return None


def parse_pid(infrastructure_pid: str | None) -> tuple[str, int] | None:
    """'host:pid' (Prefect's format) -> (host, pid); None when absent or not that shape."""
    if not infrastructure_pid or ":" not in infrastructure_pid:
        return None
    host, _, pid = infrastructure_pid.rpartition(":")
    try:
        return host, int(pid)
    except ValueError:
        return None


def run_process(run) -> str:
    """'alive', 'gone', 'none' (no process recorded) or 'elsewhere' (another host) for a
    flow run. A live pid that started after the run did is another process (pid reuse)."""
    rec = parse_pid(run.infrastructure_pid)
    if rec is None:
        return "none"
    host, pid = rec
    if host != HOST:
        return "elsewhere"
    if not pid_alive(pid):
        return "gone"
    started = process_start(pid)
    run_start = run.start_time or run.created
    if started is not None and run_start is not None and \
            started > run_start.timestamp() + 120.0:
        return "gone"
    return "alive"


def descendants(pid: int) -> list[int]:
    """Every process below `pid` (psutil: children, then theirs)."""
    try:
        return [c.pid for c in psutil.Process(pid).children(recursive=True)]
    except (psutil.Error, OSError):
        return []


# -- a run's own subflows and tasks ---------------------------------------------------------

def _filters():
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterParentFlowRunId,
        TaskRunFilter,
        TaskRunFilterFlowRunId,
        TaskRunFilterState,
        TaskRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType

    live = [StateType(s) for s in LIVE]
    return (lambda ids: FlowRunFilter(parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=ids)),
            lambda ids: TaskRunFilter(flow_run_id=TaskRunFilterFlowRunId(any_=ids),
                                      state=TaskRunFilterState(type=TaskRunFilterStateType(
                                          any_=live))))


def task_runs_by_id(client, ids) -> list:
    """The task runs with these ids (sync client), read PAGE ids at a time."""
    from prefect.client.schemas.filters import TaskRunFilter, TaskRunFilterId

    ids, out = list(ids), []
    for i in range(0, len(ids), PAGE):
        chunk = ids[i:i + PAGE]
        out += client.read_task_runs(task_run_filter=TaskRunFilter(
            id=TaskRunFilterId(any_=chunk)), limit=len(chunk))
    return out


def _is_live(run) -> bool:
    return run.state is not None and run.state.type.value in LIVE


async def settle_children(client, run_id, make_state) -> int:
    """Give the live subflow runs (at any depth) and the live task runs of a stopped run, and
    of every one of its subflows whatever their state, the state `make_state()` (the run's own
    ending): a process that is gone leaves them RUNNING otherwise, and a state sent before the
    process died can arrive after an earlier settling. Async client; returns how many.

    Reads ask for at most PAGE rows (the server refuses a `limit` above its default of 200
    with 422): subflows are read page by page, and live task runs are read again after each
    page is settled, until none is left (settled ones leave the filter)."""
    subs_f, tasks_f = _filters()
    every, todo = [], [run_id]
    while todo and len(every) < MAX_SUBFLOWS:
        found: list = []
        while True:
            page = await client.read_flow_runs(flow_run_filter=subs_f(todo), limit=PAGE,
                                               offset=len(found))
            found += page
            if len(page) < PAGE:
                break
        every += found
        todo = [r.id for r in found]
    live = [sub for sub in every if _is_live(sub)]
    for sub in live:
        await client.set_flow_run_state(flow_run_id=sub.id, state=make_state(), force=True)
    n, ids = len(live), [run_id, *(sub.id for sub in every)]
    for _ in range(MAX_TASK_PAGES):
        tasks = await client.read_task_runs(task_run_filter=tasks_f(ids), limit=PAGE)
        for t in tasks:
            await client.set_task_run_state(task_run_id=t.id, state=make_state(), force=True)
        n += len(tasks)
        if len(tasks) < PAGE:
            break
    return n


# -- the sweep ---------------------------------------------------------------------------

_settle_said: set[tuple[str, str]] = set()  # (run id, error) already logged


async def _settle_or_say(client, run, make_state, log) -> None:
    """Settle a stopped run's children; a failure is logged (once per run and error) and the
    next round tries again. The run's own state is already right, so nothing else waits."""
    try:
        await settle_children(client, run.id, make_state)
    except Exception as exc:  # noqa: BLE001 - logged; retried on the next round
        what = f"{type(exc).__name__}: {exc}"
        if (str(run.id), what) not in _settle_said:
            _settle_said.add((str(run.id), what))
            log(f"could not settle the subflows and tasks of run {run.name} ({what}); "
                "retrying on the next round")


def _age_s(state) -> float:
    ts = state.timestamp if state is not None else None
    if ts is None:
        return 0.0
    return (dt.datetime.now(dt.UTC) - ts).total_seconds()


async def _deployments(client, names: list[str]) -> dict[UUID, str]:
    """{id: 'flow/deployment'} of the named deployments that exist."""
    from prefect.exceptions import ObjectNotFound

    out = {}
    for name in names:
        try:
            dep = await client.read_deployment_by_name(name)
        except ObjectNotFound:
            continue
        out[dep.id] = name
    return out


def run_filters(dep_ids, states, **expected_start) -> dict:
    """Filters for read_flow_runs and count_flow_runs: the runs of these deployments in these
    state types ('RUNNING', ...), optionally by expected start time (e.g. before_=now)."""
    from prefect.client.schemas.filters import (
        DeploymentFilter,
        DeploymentFilterId,
        FlowRunFilter,
        FlowRunFilterExpectedStartTime,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType

    by_time = ({"expected_start_time": FlowRunFilterExpectedStartTime(**expected_start)}
               if expected_start else {})
    return {"deployment_filter": DeploymentFilter(id=DeploymentFilterId(any_=list(dep_ids))),
            "flow_run_filter": FlowRunFilter(state=FlowRunFilterState(
                type=FlowRunFilterStateType(any_=[StateType(s) for s in states])), **by_time)}


async def _runs(client, dep_ids, states) -> list:
    from prefect.client.schemas.sorting import FlowRunSort

    if not dep_ids:
        return []
    return await client.read_flow_runs(**run_filters(dep_ids, states), limit=200,
                                       sort=FlowRunSort.EXPECTED_START_TIME_DESC)


async def sweep(client, names: list[str], *, grace_s: float = GRACE_S, own: set | None = None,
                log=print) -> list[Action]:
    """Release every slot held by a run of `names` ('flow/deployment') that is not running
    (module docstring). Returns what was done.

    `own`: ids of the runs the calling runner is starting or running right now (left alone
    whatever their record says); serve passes them with a shorter `grace_s`, since any other
    unrecorded run of its deployments has no process starting it."""
    from prefect.states import Cancelled, Crashed

    deps = await _deployments(client, names)
    actions = []
    for run in await _runs(client, deps, LIVE):
        if own and run.id in own:
            continue
        kind = run.state.type.value
        age = _age_s(run.state)
        where = run_process(run)
        dep = deps.get(run.deployment_id, "?")
        if where in ("alive", "elsewhere") or (where == "none" and age < grace_s):
            continue
        why = ("its process ended" if where == "gone" else
               f"no process took it up within {grace_s:.0f} s")
        if kind == "CANCELLING":
            new = Cancelled(message=f"cancelled; {why} (pid record: "
                                    f"{run.infrastructure_pid or 'none'})")
        else:
            new = Crashed(message=(
                f"{why} while the run was {kind} (pid record: "
                f"{run.infrastructure_pid or 'none'}): the serve or worker process that ran "
                "it stopped or was killed. The deployment's slot is released; the next "
                "scheduled run starts afresh"))
        await client.set_flow_run_state(run.id, new, force=True)
        await _settle_or_say(client, run, lambda n=new, name=run.name: type(n)(
            message=f"its flow run {name} ended {n.type.value}: {n.message}"), log)
        act = Action(run.name, str(run.id), dep, kind, new.type.value, why)
        log(act.line())
        actions.append(act)
    # a run that ended abruptly (its process killed, or stopped by its lifeline) can have
    # subflow or task states that arrive after its ending, or none at all: settle those too
    from prefect.states import Failed

    ending = {"CRASHED": Crashed, "CANCELLED": Cancelled, "FAILED": Failed}
    for run in await _runs(client, deps, tuple(ending)):
        if _age_s(run.state) > SETTLE_WINDOW_S:
            continue
        kind = run.state.type.value
        await _settle_or_say(client, run, lambda r=run, k=kind: ending[k](
            message=f"its flow run {r.name} ended {k}: {r.state.message}"), log)
    return actions


async def collapse_late(client, runs: list, *, late_s: float = LATE_S, log=print) -> list:
    """Of the scheduled runs a poll found, the ones to submit now: one per deployment.

    With one run at a time, every further run submitted in the same poll would be cancelled
    for want of the slot. So per deployment: of the runs already due, a run started by hand is
    preferred (the newest), else the newest scheduled one is the catch-up run; older due runs
    that the scheduler created are deleted (logged with how late the first one was); runs by
    hand are never deleted, and every run not chosen stays scheduled for a later poll."""
    now = dt.datetime.now(dt.UTC)

    def start(r):
        return r.next_scheduled_start_time or r.expected_start_time or now

    by_dep: dict[UUID, list] = {}
    for r in runs:
        by_dep.setdefault(r.deployment_id, []).append(r)
    chosen = []
    for rs in by_dep.values():
        rs.sort(key=start)
        due = [r for r in rs if start(r) <= now]
        if not due:
            chosen.append(rs[0])
            continue
        manual = [r for r in due if not r.auto_scheduled]
        keep = manual[-1] if manual else due[-1]
        older = [r for r in due if r.auto_scheduled and r is not keep and start(r) <= start(keep)]
        dropped = []
        for r in older:
            try:
                await client.delete_flow_run(r.id)
            except Exception as exc:  # noqa: BLE001 - taken by another runner, or gone: keep it
                log(f"could not drop the late run {r.name}: {exc}")
                continue
            dropped.append(r)
        if dropped:
            late = (now - start(dropped[0])).total_seconds()
            why = (f"fell due while nothing served them (the first {late:.0f} s ago)"
                   if late > late_s else "were due at once")
            log(f"{len(dropped) + 1} runs of one deployment {why}: running one, {keep.name}, "
                f"as the catch-up run, and dropping the {len(dropped)} older scheduled ones")
        chosen.append(keep)
    return chosen


def sweep_now(names: list[str], **kw) -> list[Action]:
    """`sweep` from synchronous code, with a client from the current settings
    (PREFECT_API_URL, PREFECT_API_AUTH_STRING)."""
    import asyncio

    from prefect.client.orchestration import get_client

    async def go():
        async with get_client() as client:
            return await sweep(client, names, **kw)

    return asyncio.run(go())
