"""``make demo``: the main job end to end on the embedded defaults.

1. a local Prefect server on 127.0.0.1 (SQLite in .prefect/), started unless one already answers;
2. ``python -m flows.serve`` serving every catalog's deployment;
3. ``prefect deployment run build-pairs/<catalog> --watch`` through the real CLI;
4. the manifests' summary.

With ``--map CHECKPOINT`` (the demo's last step, once an encoder is trained) step 3 runs
``map-habitats/<catalog>`` instead, with that checkpoint as its parameter, and step 4 shows the
habitat map it published beside the manifests (``maps/current``).

Everything this command started is stopped when it ends, also on Ctrl-C; a server that was
already running (``make server``) is left running.
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

from pipeline.build import USER_ERRORS
from pipeline.maps import current_map

from . import server
from .build_pairs import FLOW_NAME, resolve_catalog
from .names import MAP_FLOW_NAME


def _whose(home: Path, port: int) -> str:
    """Whose server answers on the port: this home's (from its pid record) or another's."""
    rec = server.read_pid_file(home)
    if rec is not None and rec.pid is not None and server.verify_server(rec.pid, home, port)[0]:
        return f"pid {rec.pid}, PREFECT_HOME={home}"
    return (f"not one started from {home}: it keeps its runs in its own database; stop it or "
            "use --port for a server of this home")


def _sweep(env: dict[str, str], deployment: str) -> list:
    """flows.runs.sweep against the demo's server (its settings are the child environment's)."""
    from .runs import sweep_now

    with server.client_settings(env["PREFECT_API_URL"], env.get(server.CLIENT_AUTH_ENV, "")):
        return sweep_now([deployment], log=lambda _msg: None)


def slot_taken(url: str, deployment: str, since: float) -> bool:
    """Was our run cancelled because another run of the deployment held its slot?"""
    return bool(server.deployment_runs(url, deployment, ["RUNNING", "PENDING"])) or \
        finished_since(url, deployment, since)


def finished_since(url: str, deployment: str, since: float) -> bool:
    """Did another run of the deployment complete after `since` (unix seconds)?"""
    return any(r.end_time is not None and r.end_time.timestamp() >= since
               for r in server.deployment_runs(url, deployment, ["COMPLETED"], limit=5))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m flows.demo", description=__doc__.split("\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--catalog", default="seafloor", help="catalog name in catalogs/")
    ap.add_argument("--port", type=int, default=server.DEFAULT_PORT)
    ap.add_argument("--home", type=Path, default=server.DEFAULT_HOME, help="PREFECT_HOME")
    ap.add_argument("--map", type=Path, default=None, metavar="CHECKPOINT",
                    help="run the catalog's map-habitats deployment with this encoder "
                         "(last.pt) instead of building")
    args = ap.parse_args(argv)

    # SIGTERM like Ctrl-C: stop what the demo started before exiting
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        cat = resolve_catalog(args.catalog)
    except USER_ERRORS as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    env = server.prefect_env(args.home, args.port)
    url = server.api_url(args.port)
    started: list[subprocess.Popen] = []
    deployment = f"{MAP_FLOW_NAME if args.map else FLOW_NAME}/{args.catalog}"
    params: list[str] = []
    if args.map is not None:
        if cat.mapping is None:
            print(f"error: {cat.source}: no 'mapping' block, so no {deployment} deployment; "
                  "add one (README, Catalog reference)", file=sys.stderr)
            return 2
        if not args.map.is_file():
            print(f"error: --map {args.map}: no such checkpoint; expected the last.pt of a "
                  "training run (python -m ssl.train)", file=sys.stderr)
            return 2
        params = ["--param", f"checkpoint={args.map.resolve()}"]
    try:
        if server.healthy(url):
            print(f"[demo] using the Prefect server already running at {url} "
                  f"({_whose(args.home, args.port)})", flush=True)
        else:
            print(f"[demo] starting a Prefect server at {url} (PREFECT_HOME={args.home})",
                  flush=True)
            try:
                started.append(server.start(args.home, args.port))
            except server.ServerError as exc:
                print(f"error: {exc.message}", file=sys.stderr)
                return 2
        # runs left RUNNING/PENDING/CANCELLING by an earlier session hold the deployment's
        # single slot: the same sweep serve runs on its heartbeat
        for act in _sweep(env, deployment):
            print(f"[demo] {act.line()}", flush=True)
        log = open(args.home / "serve.log", "ab")  # noqa: SIM115 - handed to the child
        serve = subprocess.Popen([sys.executable, "-m", "flows.serve"], env=env, stdout=log,
                                 stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        started.append(serve)
        server.wait_for_deployment(url, deployment, proc=serve)
        print(f"[demo] serving the deployments (log: {args.home / 'serve.log'}); running "
              f"{deployment}", flush=True)
        t_run = time.time()
        run = subprocess.run([sys.executable, "-m", "prefect", "deployment", "run", deployment,
                              *params, "--watch"], env=env)
        if run.returncode != 0 and slot_taken(url, deployment, t_run):
            # a scheduled run (e.g. one that fell due while no server ran) held the
            # deployment's single slot, so ours was cancelled (CANCEL_NEW): follow that one
            holder = server.deployment_runs(url, deployment, ["RUNNING", "PENDING"])
            if holder:
                print(f"[demo] a scheduled run of {deployment} was already running, so this "
                      f"one was cancelled (one run at a time); watching {holder[0].name}",
                      flush=True)
                run = subprocess.run([sys.executable, "-m", "prefect", "flow-run", "watch",
                                      str(holder[0].id)], env=env)
            elif finished_since(url, deployment, t_run):
                run = subprocess.CompletedProcess(run.args, 0)
        if run.returncode != 0:
            print(f"[demo] the flow run did not complete (exit {run.returncode}); see the log "
                  f"above and {args.home / 'serve.log'}", file=sys.stderr)
            return run.returncode
        if args.map is not None:
            published = current_map(cat.output)
            if published is None:
                print(f"[demo] {deployment} published no map; see {args.home / 'serve.log'}",
                      file=sys.stderr)
                return 1
            rec = published.record
            print(f"\n[demo] habitat map published by {deployment}: {published.folder} "
                  f"(k = {rec.get('k')}, {rec.get('images')} images, manifests "
                  f"{rec.get('generation')}); also {cat.output / 'maps' / 'current'}")
            return 0
        report = json.loads((cat.output / "report.json").read_text())
        from pipeline.summary import summary_markdown

        print()
        print(summary_markdown(report))
        print(f"\n[demo] manifests in {cat.output}; survey map {cat.output / 'survey_map.png'}")
        return 0
    except KeyboardInterrupt:
        print("\n[demo] interrupted; stopping what the demo started", file=sys.stderr)
        return 130
    finally:
        for proc in reversed(started):
            server.stop(proc)


if __name__ == "__main__":
    sys.exit(main())
