"""Flow ``build-pairs``: one catalog's dives -> manifests, as Prefect tasks around `pipeline`.

Reads like the pipeline's table of contents:

    plan (discover dives, fingerprints, cache)      pipeline.build.plan
    ingest each changed dive   (mapped, on Dask)    pipeline.build.ingest_cached
    site index and pairs                            pipeline.build.assemble_site
    publish manifests                               pipeline.build.publish
    artifacts: summary table and survey map         pipeline.summary

Every computation is a `pipeline` function; this module only decides where it runs, retries
I/O errors, logs progress and records artifacts. The whole flow holds the output folder's file
lock, so it never races a `python -m pipeline build` on the same folder.
"""

from __future__ import annotations

import base64
import os
import time
from pathlib import Path

import dask
from prefect import flow, get_run_logger, task, unmapped
from prefect.artifacts import create_image_artifact, create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.states import Failed
from prefect_dask import DaskTaskRunner

from pipeline import build as pb
from pipeline.catalog import Catalog, find_catalog, load_catalog
from pipeline.summary import summary_markdown, survey_map_png

FLOW_NAME = "build-pairs"
# where catalog names are looked up; the deployments and the flow runs agree on it through
# this variable (serve sets it for its runs), defaulting to the repository's catalogs/
CATALOGS_ENV = "SEAFLOOR_CATALOGS"
DASK_ENV = "DASK_SCHEDULER_ADDRESS"
MAP_NAME = "survey_map.png"


def catalogs_dir() -> Path:
    env = os.environ.get(CATALOGS_ENV)
    return Path(env) if env else Path(__file__).resolve().parents[1] / "catalogs"


def resolve_catalog(catalog: str) -> Catalog:
    """A catalog by name (file stem in the catalogs folder) or by path."""
    return load_catalog(find_catalog(catalog, catalogs_dir()))


def _retry_on_io_error(task, task_run, state) -> bool:
    """Retry a failed task only when the failure was an I/O error (disk, network share)."""
    try:
        state.result()
    except OSError:
        return True
    except Exception:
        return False
    return False


class _ProgressLog:
    """Logs an ingest's progress at every quarter, one line each."""

    def __init__(self, dive: str, total: int):
        self.dive, self.total, self.done, self.next = dive, max(total, 1), 0, 0.25
        self.logger = get_run_logger()

    def __call__(self, k: int) -> None:
        self.done += k
        if self.done / self.total >= self.next:
            self.logger.info("dive %s: %d/%d images checked (%.0f %%)", self.dive, self.done,
                             self.total, 100.0 * self.done / self.total)
            while self.done / self.total >= self.next:
                self.next += 0.25


@task(name="ingest-dive", task_run_name="ingest-{dive}", retries=2, retry_delay_seconds=2,
      retry_condition_fn=_retry_on_io_error, cache_policy=NO_CACHE)
def ingest_dive_task(cat: Catalog, out: Path, dive: str, fingerprint: str,
                     workers: int | None) -> dict:
    from pipeline.ingest import dive_images, nav_choice

    logger = get_run_logger()
    t0 = time.perf_counter()
    # listed here, on the worker: a subflow's parameters go to the API, so the plan's list of
    # the dive's files is not shipped (it may hold a million paths)
    rels = dive_images(cat, dive)
    n = len(rels)
    logger.info("dive %s: ingesting %d images", dive, n)
    if note := nav_choice(cat, dive):
        logger.info(note)
    folder = pb.ingest_cached(cat, out, dive, fingerprint, workers=workers,
                              progress=_ProgressLog(dive, n), rels=rels)
    res = pb.load_cached(out, dive, fingerprint)
    secs = time.perf_counter() - t0
    logger.info("dive %s: %d located, %d quarantined in %.1f s (nav: %s)", dive,
                len(res.locations), len(res.quarantine), secs, res.nav_format)
    return {"dive": dive, "folder": str(folder), "seconds": secs}


def dask_runner(cat: Catalog, n_dives: int) -> tuple[DaskTaskRunner, int | None]:
    """The task runner for the ingest, and the image processes each dive's task may use.

    An existing cluster (catalog `dask.address`, else $DASK_SCHEDULER_ADDRESS): every task uses
    its worker's cores. Otherwise a LocalCluster sized to the machine and to the work: one
    worker process per changed dive up to the number of cores, the cores shared among them."""
    settings = cat.dask
    address = (settings.address if settings else None) or os.environ.get(DASK_ENV)
    if address:
        return DaskTaskRunner(address=address), None
    cores = os.cpu_count() or 1
    n_workers = (settings.n_workers if settings else None) or max(1, min(n_dives, cores))
    runner = DaskTaskRunner(cluster_kwargs={
        "n_workers": n_workers, "threads_per_worker": 1, "processes": True,
        "dashboard_address": None})
    return runner, max(1, cores // n_workers)


@flow(name="ingest-dives")
def ingest_dives(cat: Catalog, out: Path, dives: dict[str, str],
                 workers: int | None = None) -> list[dict]:
    """Ingest the changed dives in parallel on the task runner (Dask)."""
    names = list(dives)
    futures = ingest_dive_task.map(unmapped(cat), unmapped(out), names,
                                   [dives[d] for d in names], unmapped(workers))
    return [f.result() for f in futures]


@task(name="artifacts", cache_policy=NO_CACHE)
def artifacts_task(report: dict, out: Path) -> None:
    import pyarrow.parquet as pq

    key = report["catalog"].lower().replace("_", "-")
    create_markdown_artifact(markdown=summary_markdown(report), key=f"{key}-summary",
                             description=f"build-pairs summary for {report['catalog']}")
    locations = pq.read_table(out / "locations.parquet")  # the generation just published
    pairs = pq.read_table(out / "pairs.parquet")
    png = survey_map_png(locations, pairs, None,
                         title=f"{report['catalog']}: {locations.num_rows} images, "
                               f"{pairs.num_rows} pairs within "
                               f"{report['pair_policy']['r_loc_m']:g} m")
    pb.write_extra(report["catalog"], out, MAP_NAME, png)
    create_image_artifact(image_url="data:image/png;base64," + base64.b64encode(png).decode(),
                          key=f"{key}-survey-map",
                          description=f"tracks by dive and a sample of neighbour links ({MAP_NAME})")


def _as_task(name: str, fn, *args):
    """A pipeline stage as a Prefect task of the flow run (its own state, logs and timing)."""
    return task(fn, name=name, cache_policy=NO_CACHE)(*args)


def _dask_ingest(bp: pb.BuildPlan) -> None:
    """The changed dives of a plan, mapped on the Dask task runner."""
    runner, per_dive = dask_runner(bp.catalog, len(bp.changed))
    # local worker processes must not be daemonic: a dive's ingest decodes its images in a
    # process pool of its own
    with dask.config.set({"distributed.worker.daemon": False}):
        ingest_dives.with_options(task_runner=runner)(
            bp.catalog, bp.output, {d: bp.dives[d] for d in bp.changed}, per_dive)


@flow(name=FLOW_NAME, log_prints=True)
def build_pairs(catalog: str = "seafloor", r_loc_m: float | None = None,
                full_rebuild: bool = False) -> dict:
    """Catalog -> locations, pairs and quarantine manifests; only new or changed dives are
    ingested, and a run with nothing new leaves the manifests untouched.

    catalog: a name in catalogs/ (the deployment's own) or a path to a catalog YAML.
    r_loc_m: override the catalog's pairs.r_loc_m (metres). full_rebuild: ignore the dive cache.

    This is pipeline.build.build, with its stages as tasks and the ingest on Dask; a user's
    mistake (catalog, output folder, settings) fails the run with that one message.
    """
    logger = get_run_logger()
    try:
        cat = resolve_catalog(catalog)
        out = pb.output_dir(cat)
        report = pb.build(cat, r_loc_m=r_loc_m, full_rebuild=full_rebuild, log=logger.info,
                          ingest=_dask_ingest, step=_as_task)
    except pb.USER_ERRORS as exc:
        logger.error("%s", exc)
        return Failed(message=str(exc))
    if not report["no_change"]:
        artifacts_task(report, out)
        logger.info("%s: %d located, %d quarantined, %d pairs -> %s", cat.name,
                    report["images_located"], report["quarantined"], report["pairs"], out)
    keys = ("catalog", "output", "images_found", "images_located", "quarantined", "pairs",
            "ingested", "reused", "removed", "no_change")
    return {k: report.get(k) for k in keys} | {"dives": sorted(report.get("per_dive", {}))}
