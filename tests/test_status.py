"""`python -m flows.status` against a real Prefect server (with basic auth, as in production):
a completed run with its published manifests, a run stuck CANCELLING holding the concurrency
slot, a slot held by no run, a CRASHED run and its cause, a catalog not registered, an invalid
catalog among valid ones, and a server that does not answer.

One server for the module; `python -m flows.serve` registers three deployments and runs one of
them once, then stops, so that nothing else moves the runs the tests put into given states."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys

import pytest
from prefect_stack import REPO, make_survey, prefect_stack, serving, write_catalog

from flows import server, status

pytestmark = pytest.mark.slow

AUTH = "operator:status-check"
SERVED = ("done", "stuck", "crash")


def flows_status(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "flows.status", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    return make_survey(tmp_path_factory.mktemp("status-site"), dives=1, images_per_dive=20)


@pytest.fixture(scope="module")
def served(tmp_path_factory, site):
    """(stack, catalogs folder): build-pairs/{done,stuck,crash} registered, `done` run once."""
    tmp = tmp_path_factory.mktemp("status")
    catalogs = tmp / "catalogs"
    for stem in SERVED:
        write_catalog(catalogs, stem, site, tmp / f"out-{stem}")
    with prefect_stack(tmp / "home", auth_string=AUTH) as stack:
        with serving(stack, catalogs, tmp / "serve.log"):
            stack.cli("deployment", "run", "build-pairs/done", "--watch")
        yield stack, catalogs


def in_future_run(client, name: str):
    """A run of deployment `name` scheduled a day ahead (so no runner would start it)."""
    from prefect.states import Scheduled

    dep = client.read_deployment_by_name(f"build-pairs/{name}")
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=1)
    return dep, client.create_flow_run_from_deployment(dep.id, state=Scheduled(scheduled_time=later))


def test_completed_run_and_published_manifests(served):
    stack, catalogs = served
    res = flows_status(stack.env, "--catalogs", str(catalogs), "--catalog", "done")
    assert res.returncode == 0, res.stdout + res.stderr
    out = res.stdout
    assert out.startswith(f"Prefect API {stack.url}")
    assert "build-pairs/done  (done.yaml)" in out
    assert "COMPLETED/Completed, ended" in out
    assert "published " in out and "(20 images, " in out
    assert "every 1 h, active" in out and "(in 5" in out  # the next hourly run
    assert "0/1 in use" in out and "problems   none" in out
    assert "build-pairs/stuck" not in out  # --catalog selects one

    res = flows_status(stack.env, "--catalogs", str(catalogs), "--catalog", "done", "--json")
    assert res.returncode == 0
    block, = json.loads(res.stdout)["deployments"]
    assert block["last_run"]["state_type"] == "COMPLETED"
    assert block["manifests"]["images"] == 20 and block["manifests"]["age_s"] < 600
    assert block["late_runs"]["count"] == 0 and block["problems"] == []


def test_a_run_stuck_cancelling_holds_the_slot_then_a_slot_held_by_no_run(served):
    from prefect.states import Cancelled, Cancelling, Pending

    stack, catalogs = served
    with stack.client() as c:
        dep, run = in_future_run(c, "stuck")
        assert c.set_flow_run_state(run.id, Pending()).status.value == "ACCEPT"  # takes the slot
        c.set_flow_run_state(run.id, Cancelling(), force=True)
    args = ("--catalogs", str(catalogs), "--catalog", "stuck")

    young = flows_status(stack.env, *args)  # just started cancelling: not yet a problem
    assert young.returncode == 0, young.stdout + young.stderr
    assert f"1/1 held by {run.name}" in young.stdout
    assert f"{run.name}  CANCELLING/Cancelling since" in young.stdout

    res = flows_status(stack.env, *args, "--stuck-after", "0")
    assert res.returncode == 1, res.stdout + res.stderr
    assert f"1/1 held by {run.name}" in res.stdout
    assert f"- run {run.name} CANCELLING for " in res.stdout

    with stack.client() as c:  # the run ends (its slot is released), then a slot leaks
        c.set_flow_run_state(run.id, Cancelled(), force=True)
        gcl = c.read_deployment_by_name("build-pairs/stuck").global_concurrency_limit
        assert gcl.active_slots == 0
        c.increment_concurrency_slots(names=[gcl.name], slots=1, mode="concurrency")
    res = flows_status(stack.env, *args)
    assert res.returncode == 1, res.stdout + res.stderr
    assert "1/1 held by no live run" in res.stdout
    assert "concurrency slot held (1/1) but no run is RUNNING, PENDING or CANCELLING" in res.stdout
    assert f"prefect gcl update {gcl.name} --active-slots 0" in res.stdout


def test_a_crashed_run_shows_its_cause(served):
    from prefect.states import Crashed

    stack, catalogs = served
    with stack.client() as c:
        _, run = in_future_run(c, "crash")
        c.set_flow_run_state(run.id, Crashed(
            message="Flow run infrastructure exited with non-zero status code -9.\n"
                    "The process was killed (out of memory?)"), force=True)
    res = flows_status(stack.env, "--catalogs", str(catalogs), "--catalog", "crash")
    assert res.returncode == 1, res.stdout + res.stderr
    assert f"{run.name}  CRASHED/Crashed, ended" in res.stdout
    assert ("cause      Flow run infrastructure exited with non-zero status code -9. / "
            "The process was killed (out of memory?)") in res.stdout
    assert f"- last run {run.name} CRASHED: Flow run infrastructure" in res.stdout
    assert "no manifests published yet" in res.stdout


def test_unregistered_and_invalid_catalogs_among_valid_ones(served, site, tmp_path):
    stack, _ = served
    folder = tmp_path / "catalogs"
    write_catalog(folder, "done", site, tmp_path / "elsewhere")  # registered
    write_catalog(folder, "fresh", site, tmp_path / "out-fresh")  # not served yet
    (folder / "broken.yaml").write_text("name: broken\nroot: .\nnav: []\noutput: out\nzzz: 1\n")
    res = flows_status(stack.env, "--catalogs", str(folder))
    assert res.returncode == 1, res.stdout + res.stderr
    blocks = res.stdout.rstrip("\n").split("\n\n")
    assert [b.splitlines()[0] for b in blocks[1:-1]] == [
        "build-pairs/broken  (broken.yaml)", "build-pairs/done  (done.yaml)",
        "build-pairs/fresh  (fresh.yaml)"]
    broken, done, fresh = blocks[1:-1]
    assert "INVALID:" in broken and "key 'zzz'" in broken and "invalid catalog file" in broken
    assert "COMPLETED/Completed" in done
    assert f"not registered: start python -m flows.serve --catalogs {folder}" in fresh
    assert "no manifests published yet" in fresh
    assert blocks[-1] == "3 deployments checked: 1 with problems"


def test_credentials_refused_and_server_down_exit_2_with_one_message(served, tmp_path):
    stack, catalogs = served
    anonymous = {k: v for k, v in stack.env.items()
                 if k not in (server.CLIENT_AUTH_ENV, server.SERVER_AUTH_ENV)}
    res = flows_status(anonymous, "--catalogs", str(catalogs))
    assert res.returncode == 2, res.stdout + res.stderr
    assert f"the Prefect API at {stack.url} rejected" in res.stderr
    assert "Traceback" not in res.stderr

    down = server.api_url(server.free_port())
    res = flows_status({**stack.env, "PREFECT_API_URL": down}, "--catalogs", str(catalogs))
    assert res.returncode == 2
    assert res.stdout == ""
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and down in lines[0] and "python -m flows.server start" in lines[0]
    res = flows_status({**stack.env, "PREFECT_API_URL": down}, "--catalogs", str(catalogs),
                       "--json")
    assert res.returncode == 2 and down in json.loads(res.stdout)["error"]
    assert "Traceback" not in res.stderr


def test_durations_and_messages_read_well():
    assert [status.span(s) for s in (0.4, 45, 125, 3 * 3600 + 5, 3 * 86400)] == [
        "0 s", "45 s", "2 min", "3 h", "3 d"]
    assert status.relative(720) == "in 12 min" and status.relative(-180) == "late by 3 min"
    assert status.ago(0.2) == "just now" and status.ago(7200) == "2 h ago"
    assert status.one_line("a\n\n  b  \n") == "a / b"
    assert status.one_line("x" * 500, limit=20) == "x" * 19 + "…"
    assert status.one_line(None) is None
    from prefect.client.schemas.schedules import CronSchedule, IntervalSchedule

    every = [status.describe_schedule(IntervalSchedule(interval=dt.timedelta(seconds=s)))
             for s in (3600, 5400, 86400, 90)]
    assert every == ["every 1 h", "every 90 min", "every 1 d", "every 90 s"]
    assert status.describe_schedule(CronSchedule(cron="0 3 * * *")) == "cron 0 3 * * *"


