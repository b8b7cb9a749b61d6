"""One deployment of ``build-pairs`` per catalog: ``catalogs/<stem>.yaml`` -> ``build-pairs/<stem>``,
and for a catalog with a ``mapping:`` block one of ``map-habitats`` (``map-habitats/<stem>``),
triggered by the event build-pairs emits when it publishes new manifests (MANIFESTS_PUBLISHED,
resource ``seafloor.catalog.<name>``): the habitat map follows re-indexing.

The catalog's `schedule` (interval_s or cron) becomes the deployment's schedule, so the same
deployment re-indexes new dives; concurrency is limited to one run per deployment and a run that
arrives while another runs is cancelled (CANCEL_NEW), never queued without end. Adding a catalog
file adds a deployment with no code change: `python -m flows.serve` reads the folder at start,
and ``python -m flows.deployments --write`` regenerates the root ``prefect.yaml`` for
``prefect deploy --all`` (a test checks that the committed file is up to date).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

from pipeline.build import USER_ERRORS
from pipeline.catalog import Catalog, load_catalog

from .names import FLOW_NAME, MANIFESTS_PUBLISHED, MAP_FLOW_NAME, catalog_files, catalog_resource

REPO = Path(__file__).resolve().parents[1]
ENTRYPOINT = "flows.build_pairs.build_pairs"  # a module path: Dask workers import it by name
DEFAULT_POOL = "seafloor-process"
CONCURRENCY = {"limit": 1, "collision_strategy": "CANCEL_NEW"}
MAP_ENTRYPOINT = "flows.map_habitats.map_habitats"
# a map requested while one runs waits for it (the newer manifests must be mapped too)
MAP_CONCURRENCY = {"limit": 1, "collision_strategy": "ENQUEUE"}
TAGS = ["seafloor-ssl"]


def _describe(cat: Catalog) -> str:
    return f"Re-index catalog {cat.name} ({cat.source.name}) into {cat.output}"


def schedule_of(cat: Catalog) -> dict:
    """{'interval': seconds} or {'cron': expr}; empty when the catalog has no schedule."""
    if cat.schedule is None:
        return {}
    if cat.schedule.interval_s is not None:
        return {"interval": float(cat.schedule.interval_s)}
    return {"cron": cat.schedule.cron}


def _describe_map(cat: Catalog) -> str:
    return (f"Habitat map of catalog {cat.name} ({cat.source.name}) into {cat.output}/maps, "
            f"after each new set of manifests")


def map_trigger(cat: Catalog, stem: str) -> dict:
    """The deployment trigger of map-habitats/<stem>: a MANIFESTS_PUBLISHED event about the
    catalog starts a run (the same spec in prefect.yaml and for flows.serve)."""
    return {"type": "event", "enabled": True, "name": f"{stem}: new manifests published",
            "match": {"prefect.resource.id": catalog_resource(cat.name)},
            "expect": [MANIFESTS_PUBLISHED], "posture": "Reactive", "threshold": 1,
            "within": 0, "parameters": {"catalog": stem}}


def _limit(spec: dict):
    from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy

    return ConcurrencyLimitConfig(
        limit=spec["limit"],
        collision_strategy=ConcurrencyLimitStrategy[spec["collision_strategy"]])


def runner_deployments_of(path: Path) -> list:
    """The RunnerDeployments of one catalog file: build-pairs, and map-habitats when the
    catalog has a mapping block; raises the catalog's error for an invalid one."""
    deps = [runner_deployment(path)]
    cat = load_catalog(path)
    if cat.mapping is not None:
        from prefect.deployments.runner import EntrypointType
        from prefect.events import DeploymentEventTrigger

        from .map_habitats import map_habitats

        deps.append(map_habitats.to_deployment(
            name=path.stem, parameters={"catalog": path.stem},
            triggers=[DeploymentEventTrigger(**map_trigger(cat, path.stem))],
            concurrency_limit=_limit(MAP_CONCURRENCY), description=_describe_map(cat),
            tags=TAGS, entrypoint_type=EntrypointType.MODULE_PATH))
    return deps


def runner_deployment(path: Path):
    """The RunnerDeployment of one catalog file, for `prefect.serve` or a Runner; raises the
    catalog's error (pipeline.build.USER_ERRORS) for an invalid one."""
    from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
    from prefect.deployments.runner import EntrypointType

    from .build_pairs import build_pairs

    cat = load_catalog(path)
    return build_pairs.to_deployment(
        name=path.stem, parameters={"catalog": path.stem}, **schedule_of(cat),
        concurrency_limit=ConcurrencyLimitConfig(
            limit=CONCURRENCY["limit"],
            collision_strategy=ConcurrencyLimitStrategy[CONCURRENCY["collision_strategy"]]),
        description=_describe(cat), tags=TAGS, entrypoint_type=EntrypointType.MODULE_PATH)


def runner_deployments(folder: Path | None = None) -> list:
    """RunnerDeployments for `prefect.serve`, one per catalog file in `folder`."""
    return [runner_deployment(path) for path in catalog_files(folder)]


def prefect_yaml(folder: Path | None = None, pool: str = DEFAULT_POOL,
                 map_pool: str | None = None) -> str:
    """The text of prefect.yaml for `prefect deploy --all` onto a process work pool
    (`map_pool`: another pool for the map-habitats deployments, e.g. one on a GPU host)."""
    deployments = []
    for path in catalog_files(folder):
        cat = load_catalog(path)
        sched = schedule_of(cat)
        entry = {"name": path.stem, "description": _describe(cat).replace(str(REPO) + "/", ""),
                 "entrypoint": ENTRYPOINT, "parameters": {"catalog": path.stem},
                 "tags": TAGS, "concurrency_limit": dict(CONCURRENCY),
                 "work_pool": {"name": pool}}
        if sched:
            entry["schedules"] = [sched]
        deployments.append(entry)
        if cat.mapping is not None:
            deployments.append({
                "name": path.stem, "description": _describe_map(cat).replace(str(REPO) + "/", ""),
                "entrypoint": MAP_ENTRYPOINT, "parameters": {"catalog": path.stem},
                "tags": TAGS, "concurrency_limit": dict(MAP_CONCURRENCY),
                "work_pool": {"name": map_pool or pool},
                "triggers": [map_trigger(cat, path.stem)]})
    head = ("# Generated by `python -m flows.deployments --write` from catalogs/*.yaml: one\n"
            "# deployment of the build-pairs flow per catalog, and one of map-habitats per\n"
            "# catalog with a mapping block (triggered by seafloor.manifests.published). Use:\n"
            f"#   prefect work-pool create {pool} --type process\n"
            "#   prefect deploy --all\n"
            f"#   prefect worker start --pool {pool}\n"
            "#   python -m flows.deployments --automations   (failure notifications)\n"
            "# Without pull steps, `prefect deploy` records the folder it runs in (this\n"
            "# repository) as the working directory of the flow runs.\n")
    body = {"name": "seafloor-ssl", "prefect-version": "3.8.8", "build": None, "push": None,
            "deployments": deployments}
    return head + yaml.safe_dump(body, sort_keys=False, width=100)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m flows.deployments",
                                 description="list the deployments, or (re)write prefect.yaml")
    ap.add_argument("--catalogs", type=Path, default=None, help="catalog folder (default catalogs/)")
    ap.add_argument("--pool", default=DEFAULT_POOL, help="process work pool for prefect.yaml")
    ap.add_argument("--map-pool", default=None,
                    help="work pool of the map-habitats deployments in prefect.yaml (e.g. one "
                         "whose worker has a GPU; default: --pool)")
    ap.add_argument("--write", action="store_true", help="write prefect.yaml at the repo root")
    ap.add_argument("--automations", action="store_true",
                    help="create (or re-create) the failure-notification automations of every "
                         "catalog with a notify block on the server at PREFECT_API_URL, after "
                         "`prefect deploy --all`")
    ap.add_argument("--check", action="store_true", help="exit 1 if prefect.yaml is out of date")
    args = ap.parse_args(argv)
    try:
        return _run(args)
    except USER_ERRORS as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def apply_automations(folder: Path | None = None) -> list[str]:
    """flows.notify.apply for every catalog of `folder` on the server of PREFECT_API_URL."""
    import asyncio

    from prefect.client.orchestration import get_client

    from . import notify

    async def go() -> list[str]:
        done = []
        async with get_client() as client:
            for path in catalog_files(folder):
                done += await notify.apply(client, path.stem, load_catalog(path))
        return done
    return asyncio.run(go())


def _run(args: argparse.Namespace) -> int:
    if args.automations:
        from prefect.settings import PREFECT_API_URL

        from . import server

        url = PREFECT_API_URL.value()
        problem = (server.api_problem(url) if url else
                   "PREFECT_API_URL is not set: the automations are created on a server; set "
                   "it to the server's API URL")
        if problem:
            print(f"error: {problem}", file=sys.stderr)
            return 2
        names = apply_automations(args.catalogs)
        print("automations: " + (", ".join(names) or "none (no catalog has a notify block)"))
        return 0
    text = prefect_yaml(args.catalogs, args.pool, args.map_pool)
    target = REPO / "prefect.yaml"
    if args.write:
        target.write_text(text)
        print(f"wrote {target.name}")
    elif args.check:
        if not target.exists() or target.read_text() != text:
            print(f"{target.name} is out of date: run python -m flows.deployments --write")
            return 1
        print(f"{target.name} is up to date")
    else:
        for path in catalog_files(args.catalogs):
            cat = load_catalog(path)
            print(f"{FLOW_NAME}/{path.stem}  {schedule_of(cat) or {'schedule': None}}")
            if cat.mapping is not None:
                print(f"{MAP_FLOW_NAME}/{path.stem}  {{'trigger': '{MANIFESTS_PUBLISHED}'}}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
