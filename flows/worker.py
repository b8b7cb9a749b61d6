"""``python -m flows.worker``: the work-pool path (``prefect deploy --all``, prefect.yaml) with the
same run hygiene as ``flows.serve``.

It runs ``prefect worker start --pool POOL`` as a child process and, on start and every
``--heartbeat`` seconds, sweeps the build-pairs deployments of the catalogs folder (flows.runs):
runs whose process is gone are marked CRASHED, CANCELLING runs nobody stopped are stopped, so
no deployment slot stays held. Ctrl-C or SIGTERM stops the worker too.
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import time
from pathlib import Path

from .names import FLOW_NAME


def main(argv: list[str] | None = None) -> int:
    from .deployments import DEFAULT_POOL, catalog_files

    ap = argparse.ArgumentParser(prog="python -m flows.worker", description=__doc__.split("\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--pool", "-p", default=DEFAULT_POOL, help="process work pool")
    ap.add_argument("--type", "-t", default="process", choices=["process"],
                    help="worker type (the deployments run as local processes)")
    ap.add_argument("--catalogs", type=Path, default=None,
                    help="catalog folder (default catalogs/)")
    ap.add_argument("--heartbeat", type=float, default=30.0, help="seconds between run sweeps")
    ap.add_argument("--limit", type=int, default=None, help="most flow runs at once")
    args = ap.parse_args(argv)
    from prefect.settings import PREFECT_API_URL

    from pipeline.build import USER_ERRORS

    from . import server
    from .runs import sweep_now

    url = PREFECT_API_URL.value()
    if not url or not server.healthy(url, timeout=5.0):
        print(f"error: {server.unreachable_message(url or '(PREFECT_API_URL not set)')}",
              file=sys.stderr)
        return 2
    try:
        names = [f"{FLOW_NAME}/{p.stem}" for p in catalog_files(args.catalogs)]
    except USER_ERRORS as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    worker = subprocess.Popen([sys.executable, "-m", "prefect", "worker", "start", "--pool",
                               args.pool, "--type", args.type,
                               *(["--limit", str(args.limit)] if args.limit else [])],
                              start_new_session=True)
    try:
        while worker.poll() is None:
            try:
                for act in sweep_now(names, log=lambda _m: None):
                    print(f"[worker] {act.line()}", flush=True)
            except Exception as exc:  # noqa: BLE001 - server outage: the next round retries
                print(f"[worker] run sweep failed ({type(exc).__name__}: {exc}); retrying",
                      file=sys.stderr, flush=True)
            deadline = time.monotonic() + args.heartbeat
            while worker.poll() is None and time.monotonic() < deadline:
                time.sleep(0.5)
        return worker.returncode
    except KeyboardInterrupt:
        return 130
    finally:
        server.stop(worker)


if __name__ == "__main__":
    sys.exit(main())
