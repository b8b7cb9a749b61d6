"""Real Prefect servers, serve processes, workers and synthetic sites for the orchestration tests.

Every server runs on 127.0.0.1 on a free port with a temporary PREFECT_HOME, and every process
started here is stopped (with its whole process group) when its context exits. With
`auth_string` the server requires basic auth and every client started here sends it.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

from flows import server as prefect_server
from pipeline.synth import SynthConfig, generate

REPO = Path(__file__).resolve().parents[1]
PREFECT = [sys.executable, "-m", "prefect"]
# fast schedulers and runner polls, so that scheduled runs arrive within seconds in tests
FAST = {"PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS": "2",
        "PREFECT_RUNNER_POLL_FREQUENCY": "2",
        "PREFECT_WORKER_QUERY_SECONDS": "2",
        "PREFECT_LOGGING_LEVEL": "INFO"}


class Stack:
    """A running server and the environment for its clients."""

    def __init__(self, home: Path, port: int, database_url: str | None = None,
                 auth_string: str | None = None):
        self.home, self.port = home, port
        self.url = prefect_server.api_url(port)
        self.env = prefect_server.prefect_env(home, port, database_url, FAST,
                                              auth_string=auth_string)
        self.env["PYTHONPATH"] = str(REPO)
        # what the clients send ("" for none), for the flows.server helpers
        self.auth = self.env.get(prefect_server.CLIENT_AUTH_ENV) or ""
        self.procs: list[subprocess.Popen] = []

    def cli(self, *args: str, timeout: float = 300, check: bool = True,
            env: dict | None = None) -> subprocess.CompletedProcess:
        res = subprocess.run([*PREFECT, *args], cwd=REPO, env={**self.env, **(env or {})},
                             capture_output=True, text=True, timeout=timeout)
        if check and res.returncode != 0:
            raise AssertionError(f"prefect {' '.join(args)} -> {res.returncode}\n"
                                 f"{res.stdout[-4000:]}\n{res.stderr[-4000:]}")
        return res

    def spawn(self, args: list[str], log: Path, env: dict | None = None) -> subprocess.Popen:
        """A long-running client process (serve, worker, dask) in its own process group."""
        with open(log, "ab") as fh:
            proc = subprocess.Popen(args, cwd=REPO, env={**self.env, **(env or {})}, stdout=fh,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        self.procs.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen) -> None:
        prefect_server.stop(proc)
        if proc in self.procs:
            self.procs.remove(proc)

    def client(self):
        """A context manager yielding a sync Prefect client bound to this server."""
        from prefect.client.orchestration import get_client
        from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL, temporary_settings

        updates = {PREFECT_API_URL: self.url}
        if self.auth:
            updates[PREFECT_API_AUTH_STRING] = self.auth

        @contextlib.contextmanager
        def bound():
            with temporary_settings(updates), get_client(sync_client=True) as c:
                yield c
        return bound()

    def flow_runs(self, deployment: str) -> list:
        from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
        from prefect.client.schemas.sorting import FlowRunSort

        with self.client() as c:
            dep = c.read_deployment_by_name(f"build-pairs/{deployment}")
            return c.read_flow_runs(deployment_filter=DeploymentFilter(
                id=DeploymentFilterId(any_=[dep.id])), limit=200,
                sort=FlowRunSort.EXPECTED_START_TIME_DESC)

    def artifacts(self, flow_run_id) -> list:
        from prefect.client.schemas.filters import (
            ArtifactFilter,
            FlowRunFilter,
            FlowRunFilterId,
            TaskRunFilter,
        )
        from prefect.client.schemas.sorting import ArtifactSort

        with self.client() as c:
            return c.read_artifacts(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])),
                artifact_filter=ArtifactFilter(), task_run_filter=TaskRunFilter(),
                limit=50, offset=0, sort=ArtifactSort.KEY_ASC)

    def logs(self, flow_run_id) -> list[str]:
        """Log messages of a flow run and of its subflow runs (the Dask ingest)."""
        from prefect.client.schemas.filters import (
            FlowRunFilter,
            FlowRunFilterParentFlowRunId,
            LogFilter,
            LogFilterFlowRunId,
        )
        from prefect.client.schemas.sorting import FlowRunSort, LogSort

        with self.client() as c:
            children = c.read_flow_runs(flow_run_filter=FlowRunFilter(
                parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[flow_run_id])),
                limit=50, sort=FlowRunSort.EXPECTED_START_TIME_DESC)
            ids = [flow_run_id, *(r.id for r in children)]
            return [lg.message for lg in c.read_logs(log_filter=LogFilter(
                flow_run_id=LogFilterFlowRunId(any_=ids)), limit=200, offset=0,
                sort=LogSort.TIMESTAMP_ASC)]


@contextlib.contextmanager
def prefect_stack(home: Path, database_url: str | None = None, auth_string: str | None = None):
    """Start a server (SQLite in `home`, or `database_url`; basic auth with `auth_string`);
    stop it and every spawned process."""
    port = prefect_server.free_port()
    stack = Stack(home, port, database_url, auth_string)
    proc = prefect_server.start(home, port, database_url=database_url, extra_env=FAST, ui=False,
                                auth_string=auth_string)
    try:
        yield stack
    finally:
        for p in list(stack.procs):
            stack.stop(p)
        prefect_server.stop(proc)


@contextlib.contextmanager
def serving(stack: Stack, catalogs: Path, log: Path):
    """`python -m flows.serve --catalogs DIR` until the context exits."""
    proc = stack.spawn([sys.executable, "-m", "flows.serve", "--catalogs", str(catalogs)], log)
    try:
        for path in sorted(catalogs.glob("*.yaml")):
            try:
                prefect_server.wait_for_deployment(stack.url, f"build-pairs/{path.stem}",
                                                   proc=proc, auth=stack.auth)
            except RuntimeError as exc:
                raise AssertionError(f"{exc}\n{log.read_text(errors='replace')[-4000:]}") from None
        yield proc
    finally:
        stack.stop(proc)


def wait_for(cond, timeout: float, what: str, every: float = 1.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def make_survey(folder: Path, dives: int, images_per_dive: int = 40, seed: int = 5) -> Path:
    generate(SynthConfig(out=folder, dives=dives, images_per_dive=images_per_dive, seed=seed,
                         faults=False, workers=2))
    return folder


def write_catalog(catalogs: Path, stem: str, site: Path, output: Path, *,
                  interval_s: float = 3600.0, **extra) -> Path:
    """A catalog for `site` (a pipeline.synth survey) under `catalogs/<stem>.yaml`."""
    cat = yaml.safe_load((site / "catalog.yaml").read_text())
    cat.update(name=stem, root=str(site), output=str(output), schedule={"interval_s": interval_s},
               **extra)
    catalogs.mkdir(parents=True, exist_ok=True)
    path = catalogs / f"{stem}.yaml"
    path.write_text(yaml.safe_dump(cat, sort_keys=False))
    return path


def copy_dive(src_site: Path, dst_site: Path, dive: str) -> None:
    """Copy one dive folder keeping file times (copy2), so its fingerprint is stable."""
    shutil.copytree(src_site / dive, dst_site / dive, copy_function=shutil.copy2)


def site_with(src_site: Path, dst_site: Path, dives: list[str]) -> Path:
    dst_site.mkdir(parents=True, exist_ok=True)
    for name in ("labels.csv", "catalog.yaml"):
        shutil.copy2(src_site / name, dst_site / name)
    for d in dives:
        copy_dive(src_site, dst_site, d)
    return dst_site


def state_name(run) -> str:
    return run.state.type.value if run.state else "NONE"
