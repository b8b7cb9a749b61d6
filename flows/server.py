"""A local Prefect server on 127.0.0.1 (``make server``), and the helpers that tests and the demo
use to start, probe and stop one.

    python -m flows.server start [--port 4200] [--background]   # PREFECT_HOME = ./.prefect
    python -m flows.server status | stop

The embedded default keeps its SQLite database and logs in the repository's ignored
``.prefect/`` folder. Give ``--database-url postgresql+asyncpg://...`` (or set
PREFECT_SERVER_DATABASE_CONNECTION_URL) for a PostgreSQL-backed server.

Basic auth: with PREFECT_SERVER_API_AUTH_STRING set (or ``--auth-string user:password``) the
server answers every API request but ``GET /api/health`` and ``/api/ready`` with 401 unless it
carries ``Authorization: Basic base64(user:password)``. Clients (the ``prefect`` CLI, serve,
workers, flow runs) send it when PREFECT_API_AUTH_STRING holds the same string; the helpers here
send it too, taking the string from PREFECT_API_AUTH_STRING, else PREFECT_SERVER_API_AUTH_STRING.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_HOME = REPO / ".prefect"
DEFAULT_PORT = 4200
PID_FILE = "server.pid"
LOG_FILE = "server.log"
CLIENT_AUTH_ENV = "PREFECT_API_AUTH_STRING"
SERVER_AUTH_ENV = "PREFECT_SERVER_API_AUTH_STRING"


class AuthError(RuntimeError):
    """The server wants basic auth and the request had none, or the wrong credentials.
    `reason` is the message without the server's address."""

    def __init__(self, api: str, reason: str):
        super().__init__(f"the Prefect API at {api} {reason}")
        self.api, self.reason = api, reason


def auth_from_env(env: dict[str, str] | None = None) -> str | None:
    """The basic-auth string ("user:password") a client should send: PREFECT_API_AUTH_STRING,
    else PREFECT_SERVER_API_AUTH_STRING (a process next to the server it started), else None."""
    env = os.environ if env is None else env
    return env.get(CLIENT_AUTH_ENV) or env.get(SERVER_AUTH_ENV) or None


def auth_headers(auth: str | None = None) -> dict[str, str]:
    """`Authorization: Basic base64(auth)`, as Prefect's own client sends it. `auth` None: from
    the environment (auth_from_env()); an empty string: no header."""
    auth = auth_from_env() if auth is None else auth
    if not auth:
        return {}
    return {"Authorization": "Basic " + base64.b64encode(auth.encode("utf-8")).decode("ascii")}


def _open(url: str, *, auth: str | None = None, data: bytes | None = None,
          method: str | None = None, timeout: float = 10.0):
    """urlopen with the auth header; a 401 becomes an AuthError with a one-line message."""
    headers = {**auth_headers(auth)}
    if data is not None:
        headers["Content-Type"] = "application/json"
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        return urllib.request.urlopen(req, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 401:
            exc.close()
            sent = "Authorization" in headers
            raise AuthError(
                f"{url.split('/api', 1)[0]}/api", "rejected "
                + ("the credentials sent: PREFECT_API_AUTH_STRING must equal the server's "
                   "PREFECT_SERVER_API_AUTH_STRING" if sent else
                   "a request without credentials: set PREFECT_API_AUTH_STRING to the "
                   "server's user:password")) from None
        raise


def api_url(port: int) -> str:
    return f"http://127.0.0.1:{port}/api"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def prefect_env(home: Path, port: int, database_url: str | None = None,
                extra: dict[str, str] | None = None, *,
                auth_string: str | None = None) -> dict[str, str]:
    """Environment for the server and for every client (CLI, serve, workers) talking to it.

    `auth_string` ("user:password"), else one already in the environment (see auth_from_env()),
    becomes the clients' PREFECT_API_AUTH_STRING; start() also gives it to the server."""
    env = {**os.environ,
           "PREFECT_HOME": str(home),
           "PREFECT_API_URL": api_url(port),
           "PREFECT_SERVER_API_HOST": "127.0.0.1",
           "PREFECT_SERVER_API_PORT": str(port),
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "PREFECT_CLI_PROMPT": "false"}
    if database_url:
        env["PREFECT_SERVER_DATABASE_CONNECTION_URL"] = database_url
    env.update(extra or {})
    auth = auth_string or auth_from_env(env)
    if auth:
        env[CLIENT_AUTH_ENV] = auth
    return env


def healthy(url: str, timeout: float = 2.0, *, auth: str | None = None) -> bool:
    """Whether GET /health answers 200 (Prefect leaves it open when auth is on; the header is
    sent anyway, for a proxy in front that checks it)."""
    try:
        with _open(f"{url}/health", auth=auth, timeout=timeout) as r:
            return r.status == 200
    except (AuthError, urllib.error.URLError, OSError):
        return False


def check_auth(url: str, auth: str | None = None, timeout: float = 5.0) -> None:
    """Raise AuthError unless an authenticated request (GET /admin/version) gets through."""
    with _open(f"{url}/admin/version", auth=auth, timeout=timeout):
        pass


def wait_for_deployment(url: str, name: str, timeout: float = 120.0,
                        proc: subprocess.Popen | None = None, *,
                        auth: str | None = None) -> None:
    """Wait until deployment `flow/deployment` is registered (e.g. by a starting serve).
    A 401 raises AuthError at once: waiting would not fix the credentials."""
    target = f"{url}/deployments/name/{urllib.parse.quote(name, safe='/')}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the process serving {name} exited with {proc.returncode}")
        try:
            with _open(target, auth=auth, timeout=2.0) as r:
                if r.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.5)
    raise RuntimeError(f"deployment {name} not registered at {url} after {timeout:.0f} s")


def _api(url: str, path: str, body: dict | None = None, *, auth: str | None = None):
    data = None if body is None else json.dumps(body).encode()
    with _open(f"{url}{path}", auth=auth, data=data,
               method="GET" if body is None else "POST", timeout=10) as r:
        return json.loads(r.read())


def deployment_runs(url: str, name: str, states: list[str], limit: int = 20, *,
                    auth: str | None = None) -> list[dict]:
    """Flow runs of deployment `flow/deployment` in the given state types, newest first."""
    dep = _api(url, f"/deployments/name/{urllib.parse.quote(name, safe='/')}", auth=auth)
    return _api(url, "/flow_runs/filter", {
        "deployments": {"id": {"any_": [dep["id"]]}},
        "flow_runs": {"state": {"type": {"any_": states}}},
        "sort": "EXPECTED_START_TIME_DESC", "limit": limit, "offset": 0}, auth=auth)


def crash_orphaned_runs(url: str, name: str, *, auth: str | None = None) -> list[str]:
    """Mark runs of a deployment that are RUNNING/PENDING/CANCELLING as CRASHED: for a server
    just started by us no runner can be executing them (their process died with the last
    session), and left alone they would hold the deployment's single slot for ever."""
    names = []
    for r in deployment_runs(url, name, ["RUNNING", "PENDING", "CANCELLING"], auth=auth):
        _api(url, f"/flow_runs/{r['id']}/set_state", {
            "state": {"type": "CRASHED", "name": "Crashed",
                      "message": "its process ended with an earlier session of the server"},
            "force": True}, auth=auth)
        names.append(r["name"])
    return names


def start(home: Path = DEFAULT_HOME, port: int = DEFAULT_PORT, *, database_url: str | None = None,
          extra_env: dict[str, str] | None = None, wait_s: float = 180.0,
          ui: bool = True, auth_string: str | None = None) -> subprocess.Popen:
    """Start `prefect server start` in its own process group and wait until /health answers.

    `auth_string` ("user:password") turns on basic auth (PREFECT_SERVER_API_AUTH_STRING; without
    it the server inherits that variable from the environment, if set).
    Its output goes to HOME/server.log; on failure the error quotes the log's tail."""
    home = Path(home)
    home.mkdir(parents=True, exist_ok=True)
    env = prefect_env(home, port, database_url, extra_env, auth_string=auth_string)
    if auth_string:
        env[SERVER_AUTH_ENV] = auth_string
    if not ui:
        env["PREFECT_UI_ENABLED"] = "false"
    log = open(home / LOG_FILE, "ab")  # noqa: SIM115 - handed to the child process
    proc = subprocess.Popen(
        [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
         "--port", str(port)],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    log.close()
    url = api_url(port)
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"prefect server exited with {proc.returncode}:\n"
                               f"{_tail(home / LOG_FILE)}")
        if healthy(url, auth=env.get(SERVER_AUTH_ENV) or ""):
            return proc
        time.sleep(0.5)
    stop(proc)
    raise RuntimeError(f"prefect server not healthy at {url} after {wait_s:.0f} s:\n"
                       f"{_tail(home / LOG_FILE)}")


def stop(proc: subprocess.Popen | int, timeout: float = 20.0) -> None:
    """Stop a process and everything in its process group: SIGTERM, up to `timeout` seconds
    for the leader to exit, then SIGKILL for whatever of the group is left."""
    pid = proc if isinstance(proc, int) else proc.pid
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        gone = proc.poll() is not None if isinstance(proc, subprocess.Popen) else not _alive(pid)
        if gone:
            break
        time.sleep(0.2)
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    if isinstance(proc, subprocess.Popen):
        proc.wait(timeout=10)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie of ours counts as gone
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
    return Path(f"/proc/{pid}").exists() and "zombie" not in _proc_state(pid)


def _proc_state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/status").read_text().split("State:")[1].split("\n")[0].lower()
    except (OSError, IndexError):
        return ""


def _tail(path: Path, n: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log)"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m flows.server",
                                 description="a local Prefect server on 127.0.0.1",
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("command", choices=["start", "status", "stop"])
    ap.add_argument("--port", type=int, default=int(os.environ.get("SEAFLOOR_PREFECT_PORT",
                                                                   DEFAULT_PORT)))
    ap.add_argument("--home", type=Path, default=DEFAULT_HOME, help="PREFECT_HOME")
    ap.add_argument("--database-url", default=None,
                    help="e.g. postgresql+asyncpg://user@host:5432/prefect (default: SQLite in "
                         "--home)")
    ap.add_argument("--background", action="store_true",
                    help="return once healthy, leaving the server running (pid in HOME)")
    # default None, resolved below: a secret taken from the environment must not show in --help
    ap.add_argument("--auth-string", default=None, metavar="USER:PASSWORD",
                    help=f"basic auth. start: the server's string (default: ${SERVER_AUTH_ENV}); "
                         f"status: the credentials to send (default: ${CLIENT_AUTH_ENV}, else "
                         f"${SERVER_AUTH_ENV}). Prefer the environment: a command-line value is "
                         "visible to other users of this machine")
    args = ap.parse_args(argv)
    url = api_url(args.port)
    pid_file = args.home / PID_FILE
    if args.command == "status":
        auth = args.auth_string or auth_from_env()
        if not healthy(url, auth=auth or ""):
            print(f"prefect server at {url}: not running")
            return 1
        try:
            check_auth(url, auth=auth or "")
        except AuthError as exc:
            print(f"prefect server at {url}: running, but {exc.reason}", file=sys.stderr)
            return 2
        except (urllib.error.URLError, OSError) as exc:
            print(f"prefect server at {url}: running, but GET /admin/version failed: {exc}",
                  file=sys.stderr)
            return 1
        print(f"prefect server at {url}: healthy" + (" (authenticated)" if auth else ""))
        return 0
    if args.command == "stop":
        if not pid_file.exists():
            print(f"no server started by this tool ({pid_file} missing)")
            return 1
        stop(int(pid_file.read_text()))
        pid_file.unlink(missing_ok=True)
        print(f"stopped the prefect server at {url}")
        return 0
    server_auth = args.auth_string or os.environ.get(SERVER_AUTH_ENV) or None
    if healthy(url, auth=server_auth or ""):
        print(f"prefect server already running at {url}")
        return 0
    print(f"starting prefect server at {url} (PREFECT_HOME={args.home}); "
          f"log: {args.home / LOG_FILE}", flush=True)
    proc = start(args.home, args.port, database_url=args.database_url, auth_string=server_auth)
    pid_file.write_text(str(proc.pid))
    print(f"prefect server healthy at {url}; UI at http://127.0.0.1:{args.port}", flush=True)
    if server_auth:
        print(f"basic auth on: clients need {CLIENT_AUTH_ENV} set to the same user:password "
              "(the UI asks for it once)", flush=True)
    if args.background:
        return 0
    try:
        print("Ctrl-C stops it", flush=True)
        proc.wait()
    except KeyboardInterrupt:
        pass
    finally:
        stop(proc)
        pid_file.unlink(missing_ok=True)
    return 0

if __name__ == "__main__":
    sys.exit(main())
