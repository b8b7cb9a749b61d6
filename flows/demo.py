"""``make demo``: the main job end to end on the embedded defaults.

1. a local Prefect server on 127.0.0.1 (SQLite in .prefect/), started unless one already answers;
2. ``python -m flows.serve`` serving every catalog's deployment;
3. ``prefect deployment run build-pairs/<catalog> --watch`` through the real CLI;
4. the manifests' summary.

Everything this command started is stopped when it ends, also on Ctrl-C; a server that was
already running (``make server``) is left running.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from . import server
from .build_pairs import FLOW_NAME, resolve_catalog


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m flows.demo", description=__doc__.split("\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--catalog", default="seafloor", help="catalog name in catalogs/")
    ap.add_argument("--port", type=int, default=server.DEFAULT_PORT)
    ap.add_argument("--home", type=Path, default=server.DEFAULT_HOME, help="PREFECT_HOME")
    args = ap.parse_args(argv)

    cat = resolve_catalog(args.catalog)
    env = server.prefect_env(args.home, args.port)
    url = server.api_url(args.port)
    started: list[subprocess.Popen] = []
    try:
        if server.healthy(url):
            print(f"[demo] using the Prefect server already running at {url}", flush=True)
        else:
            print(f"[demo] starting a Prefect server at {url} (PREFECT_HOME={args.home})",
                  flush=True)
            started.append(server.start(args.home, args.port))
        log = open(args.home / "serve.log", "ab")  # noqa: SIM115 - handed to the child
        serve = subprocess.Popen([sys.executable, "-m", "flows.serve"], env=env, stdout=log,
                                 stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        started.append(serve)
        deployment = f"{FLOW_NAME}/{args.catalog}"
        server.wait_for_deployment(url, deployment, proc=serve)
        print(f"[demo] serving the deployments (log: {args.home / 'serve.log'}); running "
              f"{deployment}", flush=True)
        run = subprocess.run([sys.executable, "-m", "prefect", "deployment", "run", deployment,
                              "--watch"], env=env)
        if run.returncode != 0:
            print(f"[demo] the flow run did not complete (exit {run.returncode}); see the log "
                  f"above and {args.home / 'serve.log'}", file=sys.stderr)
            return run.returncode
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
