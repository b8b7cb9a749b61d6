"""Basic auth on a real Prefect server, as the production stack runs it: a request without (or
with wrong) credentials gets 401, GET /api/health stays open (the compose healthcheck needs it),
and the project's helpers, `python -m flows.server status` and `prefect deployment run` get
through with PREFECT_API_AUTH_STRING and fail cleanly without it."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import urllib.error
import urllib.request

import pytest
import yaml
from prefect_stack import PREFECT, REPO, prefect_stack

from flows import server

pytestmark = pytest.mark.slow

AUTH = "admin:s3cret-for-tests"
AUTH_VARS = (server.CLIENT_AUTH_ENV, server.SERVER_AUTH_ENV)


def status_of(url: str, path: str, auth: str | None = None, body: dict | None = None) -> int:
    """HTTP status of a raw request, with `Authorization: Basic base64(auth)` when given."""
    headers = {"Content-Type": "application/json"}
    if auth is not None:
        headers["Authorization"] = "Basic " + base64.b64encode(auth.encode()).decode()
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(f"{url}{path}", data=data, headers=headers,
                                 method="GET" if body is None else "POST")
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as exc:
        return exc.code


def without_auth(env: dict[str, str], **extra: str) -> dict[str, str]:
    return {**{k: v for k, v in env.items() if k not in AUTH_VARS}, **extra}


def run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    with prefect_stack(tmp_path_factory.mktemp("prefect-auth-home"), auth_string=AUTH) as s:
        yield s


@pytest.fixture(scope="module")
def deployment(stack, tmp_path_factory):
    """build-pairs/authsite registered through the project's own deployment code, in a client
    process that authenticates from its environment (nothing serves it: runs stay scheduled)."""
    folder = tmp_path_factory.mktemp("auth-catalogs")
    cat = yaml.safe_load((REPO / "catalogs" / "seafloor.yaml").read_text())
    cat.pop("name", None)
    cat.update(root=str(folder / "site"), output=str(folder / "out"))
    (folder / "authsite.yaml").write_text(yaml.safe_dump(cat))
    code = ("import sys; from pathlib import Path; from flows.deployments import "
            "runner_deployments; [d.apply() for d in runner_deployments(Path(sys.argv[1]))]")
    res = run([sys.executable, "-c", code, str(folder)], stack.env)
    assert res.returncode == 0, res.stderr[-4000:]
    server.wait_for_deployment(stack.url, "build-pairs/authsite", timeout=30, auth=AUTH)
    return "build-pairs/authsite"


def test_requests_without_or_with_wrong_credentials_get_401(stack):
    assert stack.env[server.CLIENT_AUTH_ENV] == AUTH
    for path, body in (("/flows/filter", {}), ("/admin/version", None),
                       ("/deployments/filter", {})):
        assert status_of(stack.url, path, body=body) == 401, path
        assert status_of(stack.url, path, "admin:wrong", body) == 401, path
        assert status_of(stack.url, path, AUTH.split(":")[1], body) == 401, path
        assert status_of(stack.url, path, AUTH, body) == 200, path
    # the health probe stays open: the compose healthcheck sends no credentials
    assert status_of(stack.url, "/health") == 200
    assert server.healthy(stack.url, auth="")


def test_project_helpers_authenticate(stack, deployment, monkeypatch):
    assert server.healthy(stack.url, auth=AUTH)
    server.check_auth(stack.url, auth=AUTH)
    with server.api_client(stack.url, AUTH) as client:
        assert [f.name for f in client.read_flows()] == ["build-pairs"]
    # from the environment, as the demo and the CLI use them
    for var in AUTH_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv(server.SERVER_AUTH_ENV, AUTH)
    assert isinstance(server.deployment_runs(stack.url, deployment, ["SCHEDULED"]), list)
    monkeypatch.setenv(server.CLIENT_AUTH_ENV, AUTH)
    server.wait_for_deployment(stack.url, deployment, timeout=10)
    # a missing or wrong credential is a one-line AuthError, not a raw HTTP 401
    with pytest.raises(server.AuthError, match="without credentials"):
        server.deployment_runs(stack.url, deployment, ["SCHEDULED"], auth="")
    with pytest.raises(server.AuthError, match="must equal"):
        server.wait_for_deployment(stack.url, deployment, timeout=30, auth="admin:wrong")


def test_status_cli_reports_missing_or_wrong_credentials_in_one_line(stack):
    cmd = [sys.executable, "-m", "flows.server", "status", "--port", str(stack.port)]
    ok = run(cmd, stack.env)
    assert ok.returncode == 0 and "healthy (authenticated)" in ok.stdout, ok
    for env in (without_auth(stack.env), without_auth(stack.env, PREFECT_API_AUTH_STRING="a:b")):
        res = run(cmd, env)
        assert res.returncode == 2, res
        assert "Traceback" not in res.stderr and len(res.stderr.strip().splitlines()) == 1, res
        assert "PREFECT_API_AUTH_STRING" in res.stderr, res.stderr
    assert run([*cmd, "--auth-string", AUTH], without_auth(stack.env)).returncode == 0


def test_prefect_deployment_run_needs_the_auth_string(stack, deployment):
    def manual_runs() -> list:
        return [r for r in stack.flow_runs("authsite") if not r.auto_scheduled]

    assert manual_runs() == []
    for env in (without_auth(stack.env),
                without_auth(stack.env, PREFECT_API_AUTH_STRING="admin:wrong")):
        res = run([*PREFECT, "deployment", "run", deployment], env)
        assert res.returncode != 0, res.stdout[-2000:]
    assert manual_runs() == []

    res = stack.cli("deployment", "run", deployment, timeout=120)
    run_id = next(line.split("UUID:")[1].strip() for line in res.stdout.splitlines()
                  if "UUID:" in line)
    assert [str(r.id) for r in manual_runs()] == [run_id]


def test_server_cli_start_takes_the_auth_string(tmp_path):
    """`python -m flows.server start --auth-string` (the same setting as the server's
    PREFECT_SERVER_API_AUTH_STRING), then status and stop."""
    port = server.free_port()
    url = server.api_url(port)
    cmd = [sys.executable, "-m", "flows.server", "--port", str(port), "--home", str(tmp_path)]
    env = without_auth(server.prefect_env(tmp_path, port, extra={"PREFECT_UI_ENABLED": "false"}))
    res = run([*cmd, "start", "--background", "--auth-string", AUTH], env)
    try:
        assert res.returncode == 0, res.stdout + res.stderr
        assert AUTH not in res.stdout + res.stderr, "the secret is printed"
        assert status_of(url, "/flows/filter", body={}) == 401
        assert status_of(url, "/flows/filter", AUTH, {}) == 200
        assert run([*cmd, "status"], env).returncode == 2
        assert run([*cmd, "status"], {**env, server.CLIENT_AUTH_ENV: AUTH}).returncode == 0
    finally:
        stopped = run([*cmd, "stop"], env)
    assert stopped.returncode == 0 and not server.healthy(url), stopped
