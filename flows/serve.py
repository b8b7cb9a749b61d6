"""``python -m flows.serve``: one process serving every catalog's build-pairs deployment.

Each catalog in catalogs/ (or --catalogs DIR) becomes ``build-pairs/<stem>`` with the catalog's
schedule; runs start as subprocesses of this one. Needs PREFECT_API_URL pointing at a server
(``make server``). Stopping it (Ctrl-C) leaves the deployments' schedules active
(pause_on_shutdown=False), so a later serve picks them up again.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from .build_pairs import CATALOGS_ENV, FLOW_NAME


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m flows.serve", description=__doc__.split("\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--catalogs", type=Path, default=None,
                    help="folder of catalog YAML files (default: the repository's catalogs/)")
    ap.add_argument("--limit", type=int, default=None,
                    help="most flow runs at once across all deployments (default: no limit)")
    args = ap.parse_args(argv)
    if args.catalogs is not None:
        # the runs are subprocesses of this one: they look catalog names up in the same folder
        os.environ[CATALOGS_ENV] = str(args.catalogs.resolve())

    from prefect import serve

    from pipeline.build import USER_ERRORS

    from .deployments import runner_deployments

    try:
        deployments = runner_deployments(args.catalogs)
    except USER_ERRORS as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print("serving " + ", ".join(f"{FLOW_NAME}/{d.name}" for d in deployments), flush=True)
    serve(*deployments, pause_on_shutdown=False, limit=args.limit)
    return 0


if __name__ == "__main__":
    sys.exit(main())
