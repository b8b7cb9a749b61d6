"""``python -m flows.serve``: one process serving every catalog's deployments.

Each catalog in catalogs/ (or --catalogs DIR) becomes ``build-pairs/<stem>`` with the catalog's
schedule, and with a ``mapping:`` block ``map-habitats/<stem>``, triggered when build-pairs
publishes new manifests; a catalog's ``notify:`` becomes its failure-notification automations
(flows.notify, re-created idempotently whenever the catalog is served). Runs start as
subprocesses of this one. Needs PREFECT_API_URL pointing at a server
(``make server``). Stopping it (Ctrl-C) leaves the deployments' schedules active
(pause_on_shutdown=False), so a later serve picks them up again.

Left alone for weeks, it keeps the schedule going through faults:

- each site on its own: an invalid catalog is reported (file, key) and skipped, the others are
  served; the folder is read again on every heartbeat, so a fixed or new catalog is served
  without a restart (a removed one has its schedule paused);
- on start and on every heartbeat (``--heartbeat``, default 30 s) the run sweep (flows.runs)
  marks runs whose process is gone CRASHED (a CANCELLING one CANCELLED), so no deployment slot
  stays held by a run that is not running; a CANCELLING run that still runs stops itself
  (flows.lifeline);
- a server outage is waited out (one line when it starts, one when it ends) instead of ending
  the process, and the runs that fell due meanwhile collapse to one catch-up run.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path

from .names import CATALOGS_ENV, FLOW_NAMES, catalogs_dir

HEARTBEAT_S = 30.0
# a run of the served deployments that this runner is not handling and that recorded no process
# this long after entering PENDING/RUNNING has none (a run's process records itself within seconds)
OWN_GRACE_S = 20.0
START_GRACE_S = 5.0


class Sites:
    """The catalog folder as served: which files are valid, which were reported."""

    def __init__(self, folder: Path, say):
        self.folder, self.say = folder, say
        self.seen: dict[Path, tuple] = {}  # file -> (mtime_ns, size) last looked at
        self.served: set[str] = set()  # deployment names ('build-pairs/<stem>') applied
        self.pending: list[Path] = []  # valid catalogs applied since their automations were

    def _files(self) -> list[Path]:
        return sorted([*self.folder.glob("*.yaml"), *self.folder.glob("*.yml")])

    def changes(self) -> tuple[list, list[Path]]:
        """(deployments to apply: new, fixed or edited catalogs; files gone since last time).
        An invalid catalog is reported once per version of the file."""
        from pipeline.build import USER_ERRORS

        from .deployments import runner_deployments_of

        todo, files = [], self._files()
        for path in files:
            try:
                st = path.stat()
            except OSError:
                continue
            key = (st.st_mtime_ns, st.st_size)
            if self.seen.get(path) == key:
                continue
            try:
                todo += runner_deployments_of(path)
                self.pending.append(path)
            except USER_ERRORS as exc:
                self.say(f"skipped {path.name}: {exc}. Fix it: the folder is read again on "
                         "every heartbeat", error=True)
            self.seen[path] = key
        gone = [p for p in self.seen if p not in files]
        for p in gone:
            del self.seen[p]
        return todo, gone


def full_name(dep) -> str:
    return f"{dep.flow_name}/{dep.name}"


async def apply_notifications(client, sites: Sites, say) -> None:
    """The failure-notification automations of the catalogs applied since the last call
    (flows.notify: idempotent). An API error is raised (the caller retries on the next
    heartbeat); a catalog that became invalid meanwhile is left to the next rescan."""
    from pipeline.build import USER_ERRORS
    from pipeline.catalog import load_catalog

    from . import notify

    while sites.pending:
        path = sites.pending[0]
        try:
            cat = load_catalog(path)
        except USER_ERRORS:
            sites.pending.pop(0)
            continue
        names = await notify.apply(client, path.stem, cat)
        if names:
            say(f"notifications of {path.stem} go to {cat.notify.webhook} "
                f"({', '.join(names)})")
        sites.pending.pop(0)


def _make_runner(limit, say):
    """Prefect's Runner with two of its methods replaced, each for a fault of Prefect 3.8.8's:

    - the poll for scheduled runs waits a server outage out. Prefect's poller runs in a
      critical_service_loop that gives up after 3 failed polls in a row, and the runner stops
      with it, so serve would exit minutes into an outage
      (tests/test_schedule_faults.py, step 3: serve still running after the server restart);
      its result goes through collapse_late (flows.runs; late runs collapse to one);
    - SIGTERM stops the runner from its own event loop. Prefect's handler calls the sync
      Runner.stop() from inside that loop, where the stop coroutine is never awaited, so serve
      stays up and its run stays RUNNING (test_schedule_faults.py::
      test_sigterm_stops_serve_and_ends_its_run_where_prefects_own_handler_leaves_it)."""
    import httpx
    from prefect.runner import Runner

    from .runs import collapse_late

    class SiteRunner(Runner):
        outage: str | None = None

        def handle_sigterm(self, *_args) -> None:
            # from the loop (woken through its self-pipe): see above
            say("SIGTERM received: stopping (runs in progress are cancelled)")
            self._loop.call_soon_threadsafe(lambda: asyncio.ensure_future(self.astop()))

        async def __aenter__(self):
            out = await super().__aenter__()
            poller = self._scheduled_run_poller
            original = poller._get_scheduled_flow_runs

            async def poll():
                try:
                    found = await original()
                except (httpx.TransportError, httpx.HTTPStatusError) as exc:
                    if isinstance(exc, httpx.HTTPStatusError) and exc.response.status_code < 500:
                        raise
                    if self.outage is None:
                        self.outage = str(exc) or type(exc).__name__
                        say(f"the Prefect API does not answer ({self.outage}); waiting for it "
                            "(runs in progress continue)", error=True)
                    return []
                if self.outage is not None:
                    say("the Prefect API answers again; serving")
                    self.outage = None
                return await collapse_late(self._client, found, log=say)

            poller._get_scheduled_flow_runs = poll
            return out

    return SiteRunner(pause_on_shutdown=False, limit=limit)


def _own_runs(runner) -> set:
    """Ids of the runs this runner is submitting or running (private attributes of Prefect's
    Runner, read defensively: an empty set only makes the sweep rely on the process records)."""
    ids: set = set()
    for holder, attr in ((runner, "_flow_run_process_map"), (runner, "_submitting_flow_run_ids"),
                         (getattr(runner, "_scheduled_run_poller", None),
                          "_submitting_flow_run_ids")):
        try:
            ids |= set(getattr(holder, attr))
        except (AttributeError, TypeError):
            pass
    return ids


async def _pause(client, name: str) -> None:
    from prefect.exceptions import ObjectNotFound

    try:
        dep = await client.read_deployment_by_name(name)
        await client.pause_deployment(dep.id)
    except ObjectNotFound:
        pass


async def _housekeeping(runner, sites: Sites, heartbeat: float, say) -> None:
    """On start and every `heartbeat` seconds: sweep the served deployments' runs and pick up
    catalog changes. A failing round (server down) is retried on the next one."""
    from prefect.client.orchestration import get_client

    from .notify import owner as notify_owner
    from .runs import sweep

    while True:
        try:
            # in a thread: building a deployment is sync code that Prefect would otherwise
            # hand back as a coroutine inside this loop
            todo, gone = await asyncio.to_thread(sites.changes)
            for dep in todo:
                await runner.aadd_deployment(dep)
                name = full_name(dep)
                say(("serving again " if name in sites.served else "now serving ") + name)
                sites.served.add(name)
            async with get_client() as client:
                # a catalog edited to drop its mapping block: its map deployment is paused
                applied = {full_name(d) for d in todo}
                for stem in {d.name for d in todo}:
                    for name in {f"{f}/{stem}" for f in FLOW_NAMES} - applied:
                        if name in sites.served:
                            await _pause(client, name)
                            sites.served.discard(name)
                            say(f"{name} is no longer served (its catalog changed) and is "
                                "paused", error=True)
                await apply_notifications(client, sites, say)
                for path in gone:
                    await client.delete_resource_owned_automations(notify_owner(path.stem))
                    for name in [f"{f}/{path.stem}" for f in FLOW_NAMES]:
                        if name not in sites.served:
                            continue
                        await _pause(client, name)
                        sites.served.discard(name)
                        say(f"{path.name} was removed: {name} is no longer served and its "
                            "schedule is paused", error=True)
                await sweep(client, sorted(sites.served), grace_s=OWN_GRACE_S,
                            own=_own_runs(runner), log=say)
        except Exception as exc:  # noqa: BLE001 - an outage or a transient error: next round
            say(f"housekeeping round failed ({type(exc).__name__}: {exc}); retrying in "
                f"{heartbeat:.0f} s", error=True)
        await asyncio.sleep(heartbeat)


async def _serve(deployments, sites: Sites, limit, heartbeat: float, say) -> None:
    from prefect.client.orchestration import get_client

    from .runs import sweep

    runner = _make_runner(limit, say)
    for dep in deployments:
        await runner.aadd_deployment(dep)
        sites.served.add(full_name(dep))
    # before the first poll: runs an earlier session left PENDING/RUNNING/CANCELLING would hold
    # the slots the runs due now need. Nothing of this runner's is running yet, so an
    # unrecorded run is an orphan as soon as it is older than a moment
    async with get_client() as client:
        try:
            await apply_notifications(client, sites, say)
        except Exception as exc:  # noqa: BLE001 - retried on the next heartbeat
            say(f"could not apply the notification automations ({type(exc).__name__}: "
                f"{exc}); retrying in {heartbeat:.0f} s", error=True)
        await sweep(client, sorted(sites.served), grace_s=START_GRACE_S, log=say)
    tasks = [asyncio.create_task(runner.start()),
             asyncio.create_task(_housekeeping(runner, sites, heartbeat, say))]
    done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    for t in pending:
        t.cancel()
    for t in done:
        t.result()


def _sayer():
    from prefect.logging import get_logger

    logger = get_logger("seafloor.serve")

    def say(msg: str, error: bool = False) -> None:
        (logger.warning if error else logger.info)(msg)
    return say


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m flows.serve", description=__doc__.split("\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--catalogs", type=Path, default=None,
                    help="folder of catalog YAML files (default: the repository's catalogs/)")
    ap.add_argument("--limit", type=int, default=None,
                    help="most flow runs at once across all deployments (default: no limit)")
    ap.add_argument("--heartbeat", type=float, default=HEARTBEAT_S,
                    help="seconds between run sweeps and catalog rescans")
    args = ap.parse_args(argv)
    if args.heartbeat <= 0 or (args.limit is not None and args.limit <= 0):
        print("error: --heartbeat and --limit must be positive", file=sys.stderr)
        return 2
    if args.catalogs is not None:
        # the runs are subprocesses of this one: they look catalog names up in the same folder
        os.environ[CATALOGS_ENV] = str(args.catalogs.resolve())

    from prefect.settings import PREFECT_API_URL

    from pipeline.build import USER_ERRORS

    from . import server
    from .names import catalog_files

    folder = args.catalogs or catalogs_dir()
    try:
        catalog_files(folder)
    except USER_ERRORS as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    url = PREFECT_API_URL.value()
    if not url:
        print("error: PREFECT_API_URL is not set: serve needs a Prefect server to register the "
              "deployments with; start one with `make server` (python -m flows.server start) "
              f"and set PREFECT_API_URL={server.api_url(server.DEFAULT_PORT)}", file=sys.stderr)
        return 2
    problem = server.api_problem(url)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    say = _sayer()
    sites = Sites(folder, say)
    deployments, _ = sites.changes()
    if not deployments:
        print(f"error: no valid catalog in {folder} (each one's problem is above); fix them and "
              "start again", file=sys.stderr)
        return 2
    print("serving " + ", ".join(full_name(d) for d in deployments), flush=True)
    try:
        asyncio.run(_serve(deployments, sites, args.limit, args.heartbeat, say))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
