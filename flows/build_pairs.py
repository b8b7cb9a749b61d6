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

Waiting on Dask is bounded (the catalog's `dask:` keys, see pipeline.catalog.DaskSettings), so
a lost or hung cluster fails the run with one message (a ClusterError) instead of leaving it
running in silence. Each bound, and what enforces it:

    an existing scheduler answers (connect + handshake + reply)    within connect_timeout_s
        check_cluster: distributed.Client(timeout=...), in an asyncio deadline for the
        handshake, which the Client's timeout does not cover
    it has a worker before any dive is sent                        within worker_wait_s
        check_cluster: Client.wait_for_workers
    while dives are pending, the project's watch (_DiveWatch), every POLL_S:
        the scheduler answers the task runner's client             within connect_timeout_s
        (distributed's callback_timeout), and has a worker again   within worker_wait_s
        each attempt at a dive's ingest, from when it starts running:
            bound = max(min_dive_timeout_s, images in the dive x per-image cost)
            per-image cost = seconds_per_image, raised to twice the slowest finished dive's
                             measured seconds per image when that is more
        the whole ingest: the sum of the dives' bounds + worker_wait_s (for queued dives)

While dives are pending the run logs a progress line every PROGRESS_EVERY_S seconds (dives
running and queued, workers, seconds used of the bound), and a line whenever the worker count
drops to zero or comes back. A retry of a dive after an I/O error is logged on the worker.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import dask
import distributed
from distributed.exceptions import WorkerStartTimeoutError
from prefect import flow, get_run_logger, task, unmapped
from prefect.artifacts import create_image_artifact, create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.client.orchestration import get_client
from prefect.context import TaskRunContext
from prefect.exceptions import MissingContextError
from prefect.states import Crashed, Failed, StateType
from prefect_dask import DaskTaskRunner

from pipeline import build as pb
from pipeline.catalog import Catalog, DaskSettings, find_catalog, load_catalog
from pipeline.summary import summary_markdown, survey_map_png

from . import lifeline
from .names import (  # noqa: F401 - CATALOGS_ENV, FLOW_NAME, catalogs_dir re-exported
    CATALOGS_ENV,
    FLOW_NAME,
    MANIFESTS_PUBLISHED,
    catalog_resource,
    catalogs_dir,
)
from .runs import task_runs_by_id

DASK_ENV = "DASK_SCHEDULER_ADDRESS"
MAP_NAME = "survey_map.png"
POLL_S = 2.0  # how often the ingest checks its dives, the workers and the scheduler
PROGRESS_EVERY_S = 30.0  # a progress line at least this often while dives are pending
CLUSTER_FAILED = "ClusterError"  # the name of the ingest subflow's state when the cluster failed


class ClusterError(RuntimeError):
    """The Dask cluster cannot run the ingest (no answer, no worker, a dive over its bound).
    Not the catalog's mistake, but the run still fails with this one message: what happened,
    at which address, and what to do."""


def resolve_catalog(catalog: str) -> Catalog:
    """A catalog by name (file stem in the catalogs folder) or by path."""
    return load_catalog(find_catalog(catalog, catalogs_dir()))


def _retry_on_io_error(task, task_run, state) -> bool:
    """Retry a failed task only when the failure was an I/O error (disk, network share), and
    say so in the run's log ("dive X: I/O error (...), retry 1 of 2 in 2 s"). Prefect asks
    only while retries are left, so a True here is a retry that will happen."""
    try:
        state.result()
    except OSError as exc:
        if task is not None:
            _log_retry(task, task_run, exc)
        return True
    except Exception:
        return False
    return False


def _log_retry(task, task_run, exc: OSError) -> None:
    retries = task.retries or 0
    n = min(max(getattr(task_run, "run_count", 1) or 1, 1), max(retries, 1))
    delay = task.retry_delay_seconds or 0
    if isinstance(delay, list | tuple):
        delay = delay[min(n - 1, len(delay) - 1)] if delay else 0
    ctx = TaskRunContext.get()
    dive = (ctx.parameters.get("dive") if ctx else None) or getattr(task_run, "name", "?")
    try:
        logger = get_run_logger()
    except MissingContextError:
        logger = logging.getLogger(__name__)
    logger.warning("dive %s: I/O error (%s: %s), retry %d of %d in %g s", dive,
                   type(exc).__name__, exc, n, retries, delay)


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
    from pipeline.dives import dive_images, nav_choice

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


def cluster_address(cat: Catalog) -> tuple[str | None, str]:
    """The existing scheduler to use, if any, and where that address came from (for messages
    that say what to change): the catalog's `dask.address`, else $DASK_SCHEDULER_ADDRESS."""
    if cat.dask and cat.dask.address:
        return cat.dask.address, f"dask.address in {cat.source or 'the catalog'}"
    if env := os.environ.get(DASK_ENV):
        return env, f"${DASK_ENV}"
    return None, ""


def dask_runner(cat: Catalog, n_dives: int) -> tuple[DaskTaskRunner, int | None]:
    """The task runner for the ingest, and the image processes each dive's task may use.

    An existing cluster (catalog `dask.address`, else $DASK_SCHEDULER_ADDRESS): every task uses
    its worker's cores, and the client gives up connecting after `dask.connect_timeout_s`.
    Otherwise a LocalCluster sized to the machine and to the work: one worker process per
    changed dive up to the number of cores, the cores shared among them."""
    settings = cat.dask
    address, _ = cluster_address(cat)
    if address:
        limits = settings or DaskSettings()
        return DaskTaskRunner(address=address,
                              client_kwargs={"timeout": limits.connect_timeout_s}), None
    cores = os.cpu_count() or 1
    n_workers = (settings.n_workers if settings else None) or max(1, min(n_dives, cores))
    runner = DaskTaskRunner(cluster_kwargs={
        "n_workers": n_workers, "threads_per_worker": 1, "processes": True,
        "dashboard_address": None})
    return runner, max(1, cores // n_workers)


# --- bounded waits on the Dask cluster ------------------------------------------------------

@dataclass
class _Cluster:
    """What the messages say about the cluster the ingest runs on."""

    address: str
    source: str  # where the address came from ("" for the run's own local cluster)
    settings: DaskSettings

    @property
    def what(self) -> str:
        return (f"the Dask cluster at {self.address}" if self.source
                else f"the local Dask cluster at {self.address}")

    @property
    def local_instead(self) -> str:
        if self.source.startswith("$"):
            return f"unset {self.source[1:]} to use a local cluster"
        return f"remove {self.source} to use a local cluster"

    def no_worker_advice(self) -> str:
        if self.source:
            return f"start workers (`dask worker {self.address}`) or {self.local_instead}"
        return ("its worker processes died (out of memory?); see this run's log, or set "
                "dask.n_workers lower in the catalog")

    def unreachable(self, exc: BaseException, while_: str) -> ClusterError:
        limit = self.settings.connect_timeout_s
        fix = ("check that a Dask scheduler (`dask scheduler`) runs there and is not "
               f"overloaded, or {self.local_instead}" if self.source else "see this run's log")
        if isinstance(exc, TimeoutError):
            return ClusterError(
                f"the Dask scheduler at {self.address} did not answer within {limit:g} s "
                f"(dask.connect_timeout_s) {while_}; it accepts connections but does not "
                f"respond (hung, or not a Dask scheduler); {fix}")
        root = exc  # distributed's "Timed out trying to connect" wraps the reason, if it has one
        while root.__cause__ is not None and str(root.__cause__):
            root = root.__cause__
        return ClusterError(
            f"could not reach the Dask scheduler at {self.address} within {limit:g} s "
            f"(dask.connect_timeout_s) {while_} ({type(root).__name__}: {root}); {fix}")


async def check_cluster(cluster: _Cluster, logger) -> None:
    """Before any dive is sent to an existing scheduler: the Client connects within
    connect_timeout_s, then Client.wait_for_workers waits up to worker_wait_s for a worker, in
    slices of PROGRESS_EVERY_S with a progress line each; else ClusterError.

    The asyncio deadlines are for a scheduler that accepts connections and never answers (or
    hangs during the wait): the Client's timeout bounds the TCP connect, not the handshake
    (test_distributed_client_timeout_alone_does_not_bound_the_handshake)."""
    s = cluster.settings
    logger.info("connecting to the Dask cluster at %s (from %s; up to %g s)", cluster.address,
                cluster.source, s.connect_timeout_s)
    # the Client's own timeout a little shorter, so that a refused connection says so
    client = distributed.Client(cluster.address, timeout=round(0.8 * s.connect_timeout_s, 2),
                                asynchronous=True, set_as_default=False)
    while_ = "when the run connected"
    try:
        async with asyncio.timeout(s.connect_timeout_s):
            await client
        while_ = "while the run waited for a worker"
        t0 = time.monotonic()
        while (n := client.scheduler_info()["n_workers"]) == 0:  # as of the last answer
            if (waited := time.monotonic() - t0) >= s.worker_wait_s:
                raise ClusterError(
                    f"{cluster.what} has had no worker for {waited:.0f} s (dask.worker_wait_s: "
                    f"{s.worker_wait_s:g} s) before any dive could start; "
                    f"{cluster.no_worker_advice()}")
            logger.warning("%s has no worker yet; waiting for one, %.0f s of %g s",
                           cluster.what, waited, s.worker_wait_s)
            wait = min(s.worker_wait_s - waited, PROGRESS_EVERY_S)
            with contextlib.suppress(WorkerStartTimeoutError):
                async with asyncio.timeout(wait + s.connect_timeout_s):
                    await client.wait_for_workers(1, timeout=wait)
    except ClusterError:
        raise
    except (OSError, TimeoutError) as exc:
        raise cluster.unreachable(exc, while_) from None
    except Exception as exc:  # an answer that is not a scheduler's
        raise ClusterError(f"{cluster.address} did not answer as a Dask scheduler {while_} "
                           f"({type(exc).__name__}: {exc}); check {cluster.source or 'it'}"
                           ) from None
    finally:
        await client.close()
    logger.info("the Dask cluster at %s answered: %d worker(s)", cluster.address, n)


def _list(names, limit: int = 6) -> str:
    names = list(names)
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


class _DiveWatch:
    """Waits on the dives' futures with the bounds of the module docstring; every breach
    becomes one ClusterError. Every POLL_S it counts the workers on the task runner's client
    and reads the dives' task runs from the Prefect API.

    Faults it handles, which Prefect and distributed leave running: a dive whose worker is
    alive but hung (test_a_hung_dive_fails_the_run_within_its_bound), as a task's
    timeout_seconds takes effect on a Dask worker only after the blocking call returns
    (test_prefect_task_timeout_does_not_stop_a_hung_task_on_a_dask_worker); and an external
    scheduler with no worker, where tasks wait forever unless that scheduler sets
    distributed.scheduler.no-workers-timeout (default: none)
    (test_losing_every_worker_fails_the_run_within_worker_wait)."""

    def __init__(self, futures: dict, images: dict[str, int], cluster: _Cluster, client,
                 logger):
        self.futures, self.images, self.cluster, self.logger = futures, images, cluster, logger
        self.client = client  # the task runner's
        s = cluster.settings
        self.per_image = s.seconds_per_image
        self.t0 = time.monotonic()
        self.overall = sum(self.bound(d) for d in futures) + s.worker_wait_s
        self.attempt: dict[str, tuple] = {}  # dive -> (its Running state's id, first seen)
        self.no_worker_since: float | None = None
        self.noted = self.t0
        self.workers = -1

    def bound(self, dive: str) -> float:
        s = self.cluster.settings
        return max(s.min_dive_timeout_s, self.images.get(dive, 0) * self.per_image)

    def describe_bound(self, dive: str) -> str:
        return (f"{self.bound(dive):.0f} s: {self.images.get(dive, 0)} images x "
                f"{self.per_image:g} s per image (dask.seconds_per_image), at least "
                f"{self.cluster.settings.min_dive_timeout_s:g} s (dask.min_dive_timeout_s)")

    def count_workers(self, while_: str) -> int:
        """The scheduler's number of workers, asked within connect_timeout_s (distributed's
        callback_timeout: a hung scheduler); a lost one closes the client, an error here too."""
        client = self.client
        try:
            return client.sync(client.scheduler.identity, n_workers=0,
                               callback_timeout=self.cluster.settings.connect_timeout_s
                               )["n_workers"]
        except Exception as exc:
            raise self.cluster.unreachable(exc, while_) from None

    def run(self) -> dict[str, dict]:
        done = threading.Event()
        for f in self.futures.values():
            f.add_done_callback(lambda _f: done.set())
        pending, results = dict(self.futures), {}
        with get_client(sync_client=True) as api:
            while pending:
                done.wait(POLL_S)
                done.clear()
                for dive in [d for d, f in pending.items() if f.wrapped_future.done()]:
                    results[dive] = self.finished(dive, pending.pop(dive))
                if pending:
                    self.check(pending, api)
        return results

    def finished(self, dive: str, future) -> dict:
        try:
            res = future.result()
        except distributed.KilledWorker as exc:
            raise ClusterError(
                f"dive {dive}: the Dask workers of {self.cluster.what} that ran it died each "
                f"time ({exc}); see the workers' logs (out of memory?)") from None
        except distributed.client.FutureCancelledError:
            self.count_workers(f"while dive {dive} was waiting")  # a lost scheduler says so
            raise ClusterError(f"dive {dive}: its task was cancelled on {self.cluster.what}; "
                               "see the scheduler's log") from None
        images = self.images.get(dive, 0)
        if images and isinstance(res, dict) and res.get("seconds"):
            self.per_image = max(self.per_image, 2.0 * res["seconds"] / images)
        return res

    def check(self, pending: dict, api) -> None:
        now = time.monotonic()
        names = _list(pending)
        n = self.count_workers(f"while dive(s) {names} were waiting")
        s = self.cluster.settings
        if n == 0:
            if self.no_worker_since is None:
                self.no_worker_since = now
                self.logger.warning("%s has no worker; dive(s) %s wait for one (up to %g s)",
                                    self.cluster.what, names, s.worker_wait_s)
            if now - self.no_worker_since >= s.worker_wait_s:
                raise ClusterError(
                    f"{self.cluster.what} has had no worker for {now - self.no_worker_since:.0f}"
                    f" s (dask.worker_wait_s: {s.worker_wait_s:g} s) while dive(s) {names} "
                    f"were waiting; {self.cluster.no_worker_advice()}")
        elif self.no_worker_since is not None:
            self.logger.info("%s has %d worker(s) again", self.cluster.what, n)
            self.no_worker_since = None
        self.workers = n
        for dive, state_id in self.running(pending, api).items():
            if self.attempt.get(dive, (None,))[0] != state_id:
                self.attempt[dive] = (state_id, now)  # a new attempt: a retry or a rescheduling
        for dive in pending:
            if dive in self.attempt and now - self.attempt[dive][1] > self.bound(dive):
                raise ClusterError(
                    f"dive {dive} has been ingesting for {now - self.attempt[dive][1]:.0f} s on "
                    f"{self.cluster.what}, over its bound of {self.describe_bound(dive)}; if "
                    "the dive is only slow, raise dask.seconds_per_image or "
                    "dask.min_dive_timeout_s in the catalog, else see the worker's log (a "
                    "hung read of the survey data?)")
        if now - self.t0 > self.overall:
            raise ClusterError(
                f"the ingest has waited {now - self.t0:.0f} s on {self.cluster.what} for "
                f"dive(s) {names}, over its bound of {self.overall:.0f} s (the dives' bounds "
                "and dask.worker_wait_s); see the workers' and the scheduler's logs")
        if now - self.noted >= PROGRESS_EVERY_S:
            self.progress(pending, now)

    def running(self, pending: dict, api) -> dict[str, str]:
        """dive -> the id of its task run's Running state, for the pending dives that run now
        (as far as the Prefect API knows; {} when it cannot be asked)."""
        ids = {pending[d].task_run_id: d for d in pending}
        try:
            runs = task_runs_by_id(api, ids)
        except Exception as exc:  # the bounds still hold through the overall one
            self.logger.debug("could not read the dives' task runs: %s", exc)
            return {}
        return {ids[r.id]: str(r.state.id) for r in runs
                if r.id in ids and r.state and r.state.type == StateType.RUNNING}

    def progress(self, pending: dict, now: float) -> None:
        parts = []
        for dive in pending:
            if dive in self.attempt:
                parts.append(f"dive {dive} running {now - self.attempt[dive][1]:.0f} s of "
                             f"{self.bound(dive):.0f} s")
            else:
                parts.append(f"dive {dive} queued")
        self.logger.info("waiting on %s (%d worker(s)), %.0f s of %.0f s: %s",
                         self.cluster.address, self.workers, now - self.t0, self.overall,
                         _list(parts))
        self.noted = now

    def abandon(self, pending_ids: list, message: str) -> None:
        """After a ClusterError: mark the dives' unfinished task runs Crashed, so that none stays
        Running in the UI (best effort). Their Dask tasks are released when the task runner
        closes its client, at the end of the ingest subflow."""
        try:
            with get_client(sync_client=True) as api:
                for r in task_runs_by_id(api, pending_ids):
                    if r.state and not r.state.is_final():
                        api.set_task_run_state(r.id, Crashed(message=message), force=True)
        except Exception as exc:
            self.logger.debug("could not mark the dives' task runs crashed: %s", exc)


@flow(name="ingest-dives")
def ingest_dives(cat: Catalog, out: Path, dives: dict[str, str], workers: int | None = None,
                 images: dict[str, int] | None = None):
    """Ingest the changed dives in parallel on the task runner (Dask), each wait bounded (see
    the module docstring). `images`: each dive's number of images, for its bound. A cluster
    that fails ends this subflow in a Failed state named CLUSTER_FAILED with the message."""
    from prefect.context import FlowRunContext

    logger = get_run_logger()
    names = list(dives)
    settings = cat.dask or DaskSettings()
    address, source = cluster_address(cat)
    try:  # the task runner's client connects on the first submit
        futures = ingest_dive_task.map(unmapped(cat), unmapped(out), names,
                                       [dives[d] for d in names], unmapped(workers))
    except OSError as exc:  # TimeoutError included
        if not address:
            raise
        error = _Cluster(address, source, settings).unreachable(exc, "when the ingest started")
        return Failed(name=CLUSTER_FAILED, message=str(error))
    client = FlowRunContext.get().task_runner.client
    cluster = _Cluster(address or client.scheduler.address, source, settings)
    watch = _DiveWatch(dict(zip(names, futures, strict=True)), images or {}, cluster, client,
                       logger)
    logger.info("%d dive(s) sent to %s; each may take max(%g s, images x %g s), %.0f s in all",
                len(names), cluster.what, settings.min_dive_timeout_s,
                settings.seconds_per_image, watch.overall)
    try:
        results = watch.run()
    except ClusterError as exc:
        watch.abandon([f.task_run_id for f in futures if not f.wrapped_future.done()], str(exc))
        return Failed(name=CLUSTER_FAILED, message=str(exc))
    return [results[d] for d in names]


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


def announce(cat: Catalog, report: dict) -> None:
    """Emit MANIFESTS_PUBLISHED for the new generation (it triggers map-habitats/<catalog>)."""
    from prefect.events import emit_event

    emit_event(event=MANIFESTS_PUBLISHED,
               resource={"prefect.resource.id": catalog_resource(cat.name),
                         "prefect.resource.name": cat.name},
               payload={"catalog": cat.name, "output": str(report.get("output")),
                        "generation": report.get("generation"),
                        "images_located": report.get("images_located"),
                        "pairs": report.get("pairs")})


def _as_task(name: str, fn, *args):
    """A pipeline stage as a Prefect task of the flow run (its own state, logs and timing)."""
    return task(fn, name=name, cache_policy=NO_CACHE)(*args)


def _dask_ingest(bp: pb.BuildPlan) -> None:
    """The changed dives of a plan, mapped on the Dask task runner; an existing cluster is
    checked first (it answers, it has a worker). ClusterError when the cluster fails."""
    address, source = cluster_address(bp.catalog)
    if address:
        cluster = _Cluster(address, source, bp.catalog.dask or DaskSettings())
        asyncio.run(check_cluster(cluster, get_run_logger()))
    runner, per_dive = dask_runner(bp.catalog, len(bp.changed))
    images = {d: len(bp.images.get(d, ())) for d in bp.changed}
    # local worker processes must not be daemonic: a dive's ingest decodes its images in a
    # process pool of its own
    with dask.config.set({"distributed.worker.daemon": False}):
        state = ingest_dives.with_options(task_runner=runner)(
            bp.catalog, bp.output, {d: bp.dives[d] for d in bp.changed}, per_dive, images,
            return_state=True)
    if state.is_failed() and state.name == CLUSTER_FAILED:
        raise ClusterError(state.message)
    state.result()  # a dive's own error is raised as it was


@flow(name=FLOW_NAME, log_prints=True)
def build_pairs(catalog: str = "seafloor", r_loc_m: float | None = None,
                full_rebuild: bool = False) -> dict:
    """Catalog -> locations, pairs and quarantine manifests; only new or changed dives are
    ingested, and a run with nothing new leaves the manifests untouched.

    catalog: a name in catalogs/ (the deployment's own) or a path to a catalog YAML.
    r_loc_m: override the catalog's pairs.r_loc_m (metres). full_rebuild: ignore the dive cache.

    This is pipeline.build.build, with its stages as tasks and the ingest on Dask; a user's
    mistake (catalog, output folder, settings) or a Dask cluster that fails (no answer, no
    worker, a dive over its bound) fails the run with that one message.
    """
    logger = get_run_logger()
    lifeline.start(logger)  # a deployment run stops (CRASHED) if its serve/worker dies
    try:
        cat = resolve_catalog(catalog)
        out = pb.output_dir(cat)
        report = pb.build(cat, r_loc_m=r_loc_m, full_rebuild=full_rebuild, log=logger.info,
                          ingest=_dask_ingest, step=_as_task)
    except (*pb.USER_ERRORS, ClusterError) as exc:
        logger.error("%s", exc)
        return Failed(message=str(exc))
    if not report["no_change"]:
        artifacts_task(report, out)
        announce(cat, report)
        logger.info("%s: %d located, %d quarantined, %d pairs -> %s", cat.name,
                    report["images_located"], report["quarantined"], report["pairs"], out)
    keys = ("catalog", "output", "images_found", "images_located", "quarantined", "pairs",
            "ingested", "reused", "removed", "no_change")
    return {k: report.get(k) for k in keys} | {"dives": sorted(report.get("per_dive", {}))}
