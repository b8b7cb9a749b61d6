"""Orchestration end to end: a real Prefect server, `python -m flows.serve`, the real `prefect`
CLI, scheduled re-indexing, concurrency, artifacts, `prefect deploy --all` with a process worker,
and a real Dask cluster."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from prefect_stack import (
    REPO,
    copy_dive,
    make_survey,
    prefect_stack,
    serving,
    site_with,
    state_name,
    wait_for,
    write_catalog,
)

from flows.server import free_port
from pipeline.build import build
from pipeline.catalog import load_catalog
from pipeline.manifest import read_pairs

pytestmark = pytest.mark.slow


def digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.glob("*.parquet"))}


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A two-dive survey; dive02 revisits dive01 on a later day."""
    return make_survey(tmp_path_factory.mktemp("src") / "site", dives=2, images_per_dive=40)


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    with prefect_stack(tmp_path_factory.mktemp("prefect-home")) as s:
        yield s


@pytest.fixture(scope="module")
def served(stack, source, tmp_path_factory):
    """Serve a catalogs folder with one catalog ('tsite', both dives) from the same folder."""
    base = tmp_path_factory.mktemp("served")
    site = site_with(source, base / "site", ["dive01", "dive02"])
    catalogs = base / "catalogs"
    write_catalog(catalogs, "tsite", site, base / "out")
    with serving(stack, catalogs, base / "serve.log"):
        yield stack, site, base / "out", base / "serve.log"


def assert_one_at_a_time(dep) -> None:
    assert dep.global_concurrency_limit is not None and dep.global_concurrency_limit.limit == 1
    assert dep.concurrency_options.collision_strategy.value == "CANCEL_NEW"


def watch_run(stack, deployment: str, *params: str):
    args = ["deployment", "run", f"build-pairs/{deployment}", "--watch"]
    for p in params:
        args += ["-p", p]
    return stack.cli(*args, timeout=300)


def test_deployment_run_builds_manifests_with_artifacts_then_no_change(served):
    stack, site, out, log = served
    res = watch_run(stack, "tsite")
    assert "Completed" in res.stdout, res.stdout[-3000:]
    report = json.loads((out / "report.json").read_text())
    assert report["images_located"] == 80 and report["quarantined"] == 0
    assert report["cross_dive_pairs"] > 0
    pairs, locations = read_pairs(out / "pairs.parquet")
    assert pairs.num_rows == report["pairs"] and locations.num_rows == 80
    assert (out / "survey_map.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # the newest run started by hand (the scheduler keeps adding future scheduled runs)
    run = max((r for r in stack.flow_runs("tsite") if not r.auto_scheduled),
              key=lambda r: r.created)
    assert state_name(run) == "COMPLETED"
    arts = {a.key: a for a in stack.artifacts(run.id)}
    summary = arts["tsite-summary"]
    assert summary.type == "markdown"
    for needle in ("| dive01 |", "| dive02 |", f"pairs within 5 m: {report['pairs']}",
                   report["crs"], "| publish |", "neighbours mean"):
        assert needle in summary.data, needle
    picture = arts["tsite-survey-map"]
    assert picture.type == "image" and picture.data.startswith("data:image/png;base64,")
    messages = stack.logs(run.id)
    assert any("dive dive01: 40/40 images checked" in m for m in messages), messages
    assert any("dive dive02:" in m and "located" in m for m in messages)

    before = digest(out)
    res = watch_run(stack, "tsite")
    assert "Completed" in res.stdout
    assert digest(out) == before
    # the newest run started by hand (the scheduler keeps adding future scheduled runs)
    run = max((r for r in stack.flow_runs("tsite") if not r.auto_scheduled),
              key=lambda r: r.created)
    assert any("no change" in m for m in stack.logs(run.id))


def test_two_runs_at_once_one_completes_one_is_cancelled(served):
    stack, site, out, log = served
    with stack.client() as c:
        assert_one_at_a_time(c.read_deployment_by_name("build-pairs/tsite"))
    ids = []
    for _ in range(2):
        res = stack.cli("deployment", "run", "build-pairs/tsite", "-p", "full_rebuild=true")
        ids.append(next(line.split("UUID:")[1].strip() for line in res.stdout.splitlines()
                        if "UUID:" in line))

    def finished():
        runs = {str(r.id): r for r in stack.flow_runs("tsite")}
        states = [state_name(runs[i]) for i in ids]
        final = {"COMPLETED", "CANCELLED", "FAILED", "CRASHED"}
        return states if all(s in final for s in states) else None

    states = wait_for(finished, 240, "both runs to finish", every=2)
    assert sorted(states) == ["CANCELLED", "COMPLETED"], states
    pairs, locations = read_pairs(out / "pairs.parquet")
    assert locations.num_rows == 80 and pairs.num_rows > 0


def test_scheduled_run_ingests_only_the_new_dive(stack, source, tmp_path):
    """A short-interval catalog: the schedule picks up a dive added with pipeline.synth."""
    site = site_with(source, tmp_path / "site", ["dive01"])
    catalogs = tmp_path / "catalogs"
    out = tmp_path / "out"
    write_catalog(catalogs, "sched", site, out, interval_s=10)

    def report():
        try:
            return json.loads((out / "report.json").read_text())
        except (OSError, ValueError):
            return None

    with serving(stack, catalogs, tmp_path / "serve.log"):
        first = wait_for(report, 180, "the first scheduled run")
        assert first["per_dive"].keys() == {"dive01"}
        # a cached image is replaced by garbage of the same size and time: if the next run
        # re-read dive01 it would quarantine it
        victim = sorted((site / "dive01" / "images").glob("*.jpg"))[5]
        st = victim.stat()
        victim.write_bytes(b"\0" * st.st_size)
        os.utime(victim, ns=(st.st_atime_ns, st.st_mtime_ns))
        copy_dive(source, site, "dive02")
        second = wait_for(lambda: (r := report()) and "dive02" in r["per_dive"] and r, 180,
                          "a scheduled run that ingests dive02")

        def completed():  # the run publishes report.json, then records its artifacts
            runs = [r for r in stack.flow_runs("sched") if state_name(r) == "COMPLETED"]
            return runs if len(runs) >= 2 else None

        runs = wait_for(completed, 120, "the second scheduled run to complete")
    assert second["state"]["dives"].keys() == {"dive01", "dive02"}
    assert second["quarantined"] == 0 and second["images_located"] == 80
    assert all(r.auto_scheduled for r in runs)
    pairs, locations = read_pairs(out / "pairs.parquet")
    dive = locations.column("dive").to_pylist()
    a, p = pairs.column("anchor").to_pylist(), pairs.column("positive").to_pylist()
    assert any({dive[i], dive[j]} == {"dive01", "dive02"} for i, j in zip(a, p, strict=True))
    ingest_logs = [m for r in runs for m in stack.logs(r.id) if "to ingest" in m]
    assert any("1 to ingest (dive02), 1 cached" in m for m in ingest_logs), ingest_logs


def dead_pid() -> int:
    """A pid no process has: a child that has exited and been reaped."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def stack_run(stack, run_id):
    with stack.client() as c:
        return c.read_flow_run(run_id)


def test_prefect_deploy_all_onto_a_process_work_pool(stack, source, tmp_path):
    """prefect.yaml (generated from catalogs/) deployed with the real CLI, run by a worker."""
    from flows.deployments import DEFAULT_POOL, prefect_yaml

    assert (REPO / "prefect.yaml").read_text() == prefect_yaml(REPO / "catalogs"), \
        "prefect.yaml is out of date: python -m flows.deployments --write"
    site = site_with(source, tmp_path / "site", ["dive01", "dive02"])
    catalogs = tmp_path / "catalogs"
    out = tmp_path / "out"
    write_catalog(catalogs, "seafloor", site, out)  # the name prefect.yaml deploys
    env = {"SEAFLOOR_CATALOGS": str(catalogs)}
    stack.cli("work-pool", "create", DEFAULT_POOL, "--type", "process", "--overwrite")
    stack.cli("deploy", "--all", env=env, timeout=300)
    # a run left RUNNING by a worker that died (its pid gone) holds the deployment's slot
    from prefect.states import Pending, Running

    with stack.client() as c:
        dep = c.read_deployment_by_name("build-pairs/seafloor")
        stale = c.create_flow_run_from_deployment(dep.id)
        c.set_flow_run_state(stale.id, Pending(), force=True)
        c.set_flow_run_state(stale.id, Running(), force=True)
        c.update_flow_run(stale.id, infrastructure_pid=f"{socket.gethostname()}:{dead_pid()}")
    # python -m flows.worker: `prefect worker start` plus the run sweep, which frees it
    worker = stack.spawn([sys.executable, "-m", "flows.worker", "--pool", DEFAULT_POOL,
                          "--limit", "2", "--catalogs", str(catalogs)], tmp_path / "worker.log",
                         env=env)
    try:
        wait_for(lambda: state_name(stack_run(stack, stale.id)) == "CRASHED", 60,
                 "the worker's sweep to mark the orphaned run crashed")
        res = stack.cli("deployment", "run", "build-pairs/seafloor", "--watch", timeout=300)
    finally:
        stack.stop(worker)
    assert "Completed" in res.stdout, res.stdout[-3000:]
    assert "its process ended" in stack_run(stack, stale.id).state.message
    with stack.client() as c:
        dep = c.read_deployment_by_name("build-pairs/seafloor")
    assert dep.work_pool_name == DEFAULT_POOL
    assert_one_at_a_time(dep)
    assert dep.schedules and dep.schedules[0].schedule.interval.total_seconds() == 900
    pairs, locations = read_pairs(out / "pairs.parquet")
    assert locations.num_rows == 80


def test_flow_on_a_real_dask_cluster_matches_the_sequential_build(stack, source, tmp_path):
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    site = site_with(source, tmp_path / "site", ["dive01", "dive02"])
    catalogs = tmp_path / "catalogs"
    out = tmp_path / "out"
    path = write_catalog(catalogs, "dasksite", site, out, dask={"address": address})
    sched = stack.spawn([sys.executable, "-m", "distributed.cli.dask_scheduler", "--host",
                         "127.0.0.1", "--port", str(port), "--dashboard-address", ":0"],
                        tmp_path / "scheduler.log")
    worker = stack.spawn([sys.executable, "-m", "distributed.cli.dask_worker", address,
                          "--nworkers", "2", "--nthreads", "1", "--dashboard-address", ":0"],
                         tmp_path / "worker.log")
    try:
        wait_for(lambda: (tmp_path / "worker.log").read_text().count("Registered to") >= 2, 120,
                 "two dask workers to register")
        code = ("import json; from flows.build_pairs import build_pairs; "
                f"print(json.dumps(build_pairs(catalog={str(path)!r})))")
        res = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=stack.env,
                             capture_output=True, text=True, timeout=300)
        assert res.returncode == 0, res.stderr[-4000:]
    finally:
        stack.stop(worker)
        stack.stop(sched)
    summary = json.loads(res.stdout.strip().splitlines()[-1])
    assert summary["ingested"] == ["dive01", "dive02"]
    assert "ingest-dive" in (tmp_path / "worker.log").read_text(), "tasks did not run on Dask"

    cat = load_catalog(path)
    seq = tmp_path / "sequential"
    build(cat, out=seq, workers=1, log=lambda *_: None)
    for name in ("locations.parquet", "pairs.parquet", "quarantine.parquet"):
        a, b = pq.read_table(out / name), pq.read_table(seq / name)
        assert a.equals(b), name
    for shard in sorted((seq / "images").glob("*.parquet")):
        assert pq.read_table(out / "images" / shard.name).equals(pq.read_table(shard))
    assert yaml.safe_load(path.read_text())["dask"]["address"] == address


def test_a_users_mistake_fails_the_run_with_that_one_message(stack, source, tmp_path):
    """An output folder that holds a dive: the flow run fails with the builder's message."""
    site = site_with(source, tmp_path / "site", ["dive01"])
    path = write_catalog(tmp_path / "catalogs", "badsite", site, site / "dive01" / "out")
    code = ("from flows.build_pairs import build_pairs; "
            f"s = build_pairs(catalog={str(path)!r}, return_state=True); "
            "print(s.type.value); print(s.message)")
    res = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=stack.env,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-4000:]
    state, message = res.stdout.strip().splitlines()[-2:]
    assert state == "FAILED" and "dive folder" in message
    assert "Traceback" not in res.stdout + res.stderr
    assert not (site / "dive01" / "out").exists()
