"""A local Prefect server on 127.0.0.1 (``make server``), and the helpers that tests and the demo
use to start, probe and stop one.

    python -m flows.server start [--port 4200] [--background]   # PREFECT_HOME = ./.prefect
    python -m flows.server status | stop

The embedded default keeps its SQLite database and logs in the repository's ignored
``.prefect/`` folder. Give ``--database-url postgresql+asyncpg://...`` (or set
PREFECT_SERVER_DATABASE_CONNECTION_URL) for a PostgreSQL-backed server. With
PREFECT_SERVER_API_AUTH_STRING (or ``--auth-string user:password``) the server wants basic auth
on every request but ``/api/health``; clients send PREFECT_API_AUTH_STRING.

Prefect does the work: the server is Prefect's own ``prefect server start``, and every API call
goes through Prefect's client (``get_client``, see api_client()), which sends the auth string.
Two small pieces stay here, each for a fault of Prefect's own commands:

- ``start --background`` runs ``prefect server start`` in its own session with its output in
  HOME/server.log, and waits until /health answers, instead of Prefect's ``--background``: that
  mode pipes the server's output to the CLI process, which exits at once, so a server that fails
  to start leaves no log, a pid file naming a dead process, and exit code 0
  (tests/test_server_helper.py::test_prefects_background_start_leaves_no_log_of_a_failed_start).
- ``stop`` signals only a process that is still this home's server. ``start`` records its pid
  in Prefect's own pid file, HOME/server.pid; before signalling, the pid must be a process
  running ``prefect server start`` (or Prefect's ``uvicorn ... prefect.server.api.server:
  create_app``) on the port asked (without --port: the one it serves) with, where its
  environment is readable, that PREFECT_HOME. Anything else (a dead or reused pid, another
  home's server) makes the file stale: it is removed and nothing is signalled. Prefect's
  ``prefect server stop`` signals whatever pid the file names
  (test_server_helper.py::test_prefects_own_stop_signals_whatever_its_pid_file_names).

Exit codes: 0 done (for ``start``: also "already running"); 1 nothing to do (``stop``: no server
of this home was running; ``status``: none answers); 2 refused (the port is taken by another
home's Prefect server or by something else, the server failed to start, or wrong credentials).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import psutil

if TYPE_CHECKING:
    from prefect.client.orchestration import SyncPrefectClient

REPO = Path(__file__).resolve().parents[1]
DEFAULT_HOME = REPO / ".prefect"
DEFAULT_PORT = 4200
PORT_ENV = "SEAFLOOR_PREFECT_PORT"
PID_FILE = "server.pid"  # Prefect's own: the pid as a plain integer
LOG_FILE = "server.log"
CLIENT_AUTH_ENV = "PREFECT_API_AUTH_STRING"
SERVER_AUTH_ENV = "PREFECT_SERVER_API_AUTH_STRING"
PREFECT_APP = "prefect.server.api.server:create_app"


class AuthError(RuntimeError):
    """The server wants basic auth and the request had none, or the wrong credentials.
    `reason` is the message without the server's address."""

    def __init__(self, api: str, reason: str):
        super().__init__(f"the Prefect API at {api} {reason}")
        self.api, self.reason = api, reason


class ServerError(RuntimeError):
    """A server could not be started (or stopped) as asked.

    `message` is one line for the user; `log_tail`, when the server itself failed, holds the last
    lines of its log (str() carries both, so that a test failure shows the log)."""

    def __init__(self, message: str, log_tail: str | None = None):
        super().__init__(message if log_tail is None else f"{message}:\n{log_tail}")
        self.message, self.log_tail = message, log_tail


class PortInUseError(ServerError):
    """127.0.0.1:`port` is already taken, so a server for `home` cannot listen there.

    `holder` describes the process listening on it where it can be found (None otherwise);
    `prefect` says whether a Prefect server answers there; `same_home` whether that server is
    known (from its environment) to use `home`, i.e. the same database."""

    def __init__(self, port: int, home: Path | None, holder: ProcessInfo | None, prefect: bool):
        self.port, self.home, self.holder, self.prefect = port, home, holder, prefect
        self.same_home = bool(prefect and holder is not None and holder.prefect
                              and home is not None and holder.home == _resolve(home))
        super().__init__(self._describe())

    def _describe(self) -> str:
        url, h = api_url(self.port), self.holder
        fix = (f"stop it, or pick another port with --port or {PORT_ENV} "
               f"(free one: {free_port()})")
        if self.same_home:
            return (f"a Prefect server of this home already answers at {url} (pid {h.pid}, "
                    f"PREFECT_HOME={h.home}), started without this tool's pid file")
        if self.prefect:
            if h is None:
                who = "its process is not visible to this user"
            elif not h.prefect:  # e.g. a container's port published by a proxy process
                who = f"through pid {h.pid}, `{h.command()}`"
            elif h.home is None:
                who = f"pid {h.pid}; its environment is not readable"
            else:
                who = f"pid {h.pid}, PREFECT_HOME={h.home}"
            here = f" ({self.home})" if self.home is not None else ""
            db = "uses" if h is not None and h.prefect and h.home is not None else "may use"
            return (f"port {self.port} is taken by another Prefect server: {url} ({who}) was not "
                    f"started from this home{here} and {db} another database; {fix}")
        who = (f"pid {h.pid} (`{h.command()}`)" if h is not None
               else "a process not visible to this user")
        return (f"port {self.port} on 127.0.0.1 is in use by {who}, which is not a Prefect "
                f"server; {fix}")


def auth_from_env(env: dict[str, str] | None = None) -> str | None:
    """The basic-auth string ("user:password") a client should send: PREFECT_API_AUTH_STRING,
    else PREFECT_SERVER_API_AUTH_STRING (a process next to the server it started), else None."""
    env = os.environ if env is None else env
    return env.get(CLIENT_AUTH_ENV) or env.get(SERVER_AUTH_ENV) or None


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


# --- the API, through Prefect's own client ---------------------------------------------------

@contextlib.contextmanager
def client_settings(url: str, auth: str | None = None, retries: int | None = None):
    """Prefect's settings for a client of the API at `url`, sending the basic-auth string `auth`
    (None: auth_from_env(); "": none); `retries` replaces PREFECT_CLIENT_MAX_RETRIES (None keeps
    Prefect's). Any client Prefect makes inside the block (get_client, sync or async) uses them."""
    from prefect.settings import (
        PREFECT_API_AUTH_STRING,
        PREFECT_API_URL,
        PREFECT_CLIENT_MAX_RETRIES,
        temporary_settings,
    )

    auth = auth_from_env() if auth is None else auth
    updates: dict = {PREFECT_API_URL: url}
    if auth:
        updates[PREFECT_API_AUTH_STRING] = auth
    if retries is not None:
        updates[PREFECT_CLIENT_MAX_RETRIES] = retries
    with temporary_settings(updates, restore_defaults=[] if auth else [PREFECT_API_AUTH_STRING]):
        yield


@contextlib.contextmanager
def api_client(url: str, auth: str | None = None, timeout: float = 10.0,
               retries: int | None = 0) -> Iterator[SyncPrefectClient]:
    """Prefect's synchronous client (``get_client``) for the API at `url` (client_settings();
    `retries` 0 by default: a probe says at once that a server is down). A 401 anywhere in the
    block becomes an AuthError with one line."""
    from prefect.client.orchestration import get_client

    auth = auth_from_env() if auth is None else auth
    try:
        with client_settings(url, auth, retries), \
                get_client(sync_client=True, httpx_settings={"timeout": timeout}) as client:
            yield client
    except httpx.HTTPStatusError as exc:
        if exc.response.status_code != 401:
            raise
        raise AuthError(url, "rejected " + (
            "the credentials sent: PREFECT_API_AUTH_STRING must equal the server's "
            "PREFECT_SERVER_API_AUTH_STRING" if auth else
            "a request without credentials: set PREFECT_API_AUTH_STRING to the server's "
            "user:password")) from None


def healthy(url: str, timeout: float = 2.0, *, auth: str | None = None) -> bool:
    """Whether GET /health answers (Prefect leaves it open when auth is on)."""
    try:
        with api_client(url, auth, timeout) as client:
            return client.api_healthcheck() is None
    except (AuthError, httpx.HTTPError, OSError):
        return False


def check_auth(url: str, auth: str | None = None, timeout: float = 5.0) -> None:
    """Raise AuthError unless an authenticated request (GET /admin/version) gets through;
    httpx's error when the server does not answer."""
    with api_client(url, auth, timeout) as client:
        client.api_version()


def wait_for_deployment(url: str, name: str, timeout: float = 120.0,
                        proc: subprocess.Popen | None = None, *,
                        auth: str | None = None) -> None:
    """Wait until deployment `flow/deployment` is registered (e.g. by a starting serve).
    A 401 raises AuthError at once: waiting would not fix the credentials."""
    from prefect.exceptions import ObjectNotFound

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the process serving {name} exited with {proc.returncode}")
        try:
            with api_client(url, auth, timeout=2.0) as client:
                client.read_deployment_by_name(name)
                return
        except (ObjectNotFound, httpx.TransportError):
            pass
        time.sleep(0.5)
    raise RuntimeError(f"deployment {name} not registered at {url} after {timeout:.0f} s")


def deployment_runs(url: str, name: str, states: list[str], limit: int = 20, *,
                    auth: str | None = None) -> list:
    """Flow runs (Prefect's FlowRun) of deployment `flow/deployment` in the given state types,
    newest first."""
    from prefect.client.schemas.sorting import FlowRunSort

    from .runs import run_filters

    with api_client(url, auth) as client:
        dep = client.read_deployment_by_name(name)
        return client.read_flow_runs(**run_filters([dep.id], states), limit=limit,
                                     sort=FlowRunSort.EXPECTED_START_TIME_DESC)


def api_problem(url: str, timeout: float = 5.0) -> str | None:
    """What stops a client from using the API at ``url`` (it does not answer, or it refuses the
    credentials), as one message; None when it is usable. A transient error after /health
    answered is not a problem here: it shows again where the API is used."""
    if not healthy(url, timeout=timeout):
        return unreachable_message(url)
    try:
        check_auth(url)
    except AuthError as exc:
        return str(exc)
    except (httpx.HTTPError, OSError):
        pass
    return None


def unreachable_message(url: str, exc: BaseException | None = None) -> str:
    """One sentence for a Prefect API that does not answer: which URL, why (from `exc`, e.g. the
    httpx error a request raised; None: no reason given) and how to get one."""
    why = "" if exc is None else f": {_reason(exc)}"
    return (f"the Prefect API at {url} does not answer{why}; start one with "
            "`make server` (python -m flows.server start) or set PREFECT_API_URL to a running "
            "server")


def _reason(exc: BaseException) -> str:
    """A short, one-line reason for a failed request (the innermost system error where httpx
    wraps one)."""
    if isinstance(exc, httpx.HTTPStatusError):
        return f"HTTP {exc.response.status_code} {exc.response.reason_phrase}".strip()
    if isinstance(exc, (TimeoutError, socket.timeout, httpx.TimeoutException)):
        return "timed out"
    inner = exc.__cause__ or exc.__context__
    if isinstance(exc, httpx.HTTPError) and inner is not None:
        return _reason(inner)
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, socket.gaierror):
        return f"unknown host ({exc.strerror or exc})"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror[:1].lower() + exc.strerror[1:]
    text = " ".join(str(exc).split())
    if "connection refused" in text.lower():
        return "connection refused"
    return text or type(exc).__name__


# --- which process is which (psutil) ---------------------------------------------------------

@dataclass(frozen=True)
class ProcessInfo:
    """A live process as far as this user can see it.

    `argv`: its command line (empty when unreadable); `home`: its PREFECT_HOME, resolved (None
    when its environment is unreadable); `port`: the port it serves when it is a Prefect server
    (`prefect server start ... --port P`, or uvicorn running Prefect's app), else None."""

    pid: int
    argv: tuple[str, ...]
    home: Path | None
    port: int | None

    @property
    def prefect(self) -> bool:
        return self.port is not None

    def command(self, width: int = 80) -> str:
        """The command line, on one line, shortened to `width` characters."""
        text = " ".join(shlex.join(self.argv).split()) if self.argv else "?"  # one line
        return text if len(text) <= width else text[:width - 3] + "..."


def process_info(pid: int) -> ProcessInfo | None:
    """What can be told about `pid`; None when it is not running (or a zombie)."""
    if pid <= 0 or not pid_alive(pid):
        return None
    argv = _argv(pid)
    env = _environ(pid)
    home = None
    if env is not None:
        raw = env.get("PREFECT_HOME") or "~/.prefect"  # Prefect's default
        home = Path(raw).expanduser()
        if not home.is_absolute():
            try:
                home = Path(psutil.Process(pid).cwd()) / home
            except (psutil.Error, OSError):
                pass
        home = _resolve(home)
    return ProcessInfo(pid, argv, home, _served_port(argv, env))


def verify_server(pid: int, home: Path, port: int) -> tuple[bool, str]:
    """Whether `pid` is the Prefect server of `home` on `port`, and why (or why not).

    The reason reads after "pid N": "is not running", "is `sleep 60`, not a Prefect server",
    "is the Prefect server of PREFECT_HOME=X", ...; for a match whose environment cannot be read
    it says that only the command line and port were checked."""
    info = process_info(pid)
    if info is None:
        return False, "is not running"
    if not info.prefect:
        return False, f"is `{info.command()}`, not a Prefect server"
    if info.port != port:
        return False, f"is a Prefect server on port {info.port}, not {port}"
    if info.home is not None and info.home != _resolve(home):
        return False, f"is the Prefect server of PREFECT_HOME={info.home}, not of {_resolve(home)}"
    if info.home is None:
        return True, ("is a Prefect server on this port (its environment is not readable: "
                      "checked its command line and port only)")
    return True, f"is the Prefect server of this home on port {port}"


def _argv(pid: int) -> tuple[str, ...]:
    """The command line of `pid` (psutil), empty when it cannot be read."""
    try:
        return tuple(psutil.Process(pid).cmdline())
    except (psutil.Error, OSError):
        return ()


def _environ(pid: int) -> dict[str, str] | None:
    """The environment of `pid` (psutil), None when it cannot be read (another user's)."""
    try:
        return dict(psutil.Process(pid).environ())
    except (psutil.Error, OSError):
        return None


def _served_port(argv: tuple[str, ...], env: dict[str, str] | None) -> int | None:
    """The port of a Prefect server command line, else None."""
    names = [os.path.basename(a) for a in argv]
    is_cli = any(n == "prefect" and list(argv[i + 1:i + 3]) == ["server", "start"]
                 for i, n in enumerate(names))
    is_uvicorn = any(n == "uvicorn" for n in names) and PREFECT_APP in argv
    if not (is_cli or is_uvicorn):
        return None
    for i, a in enumerate(argv):
        value = argv[i + 1] if a == "--port" and i + 1 < len(argv) else (
            a.split("=", 1)[1] if a.startswith("--port=") else None)
        if value is not None:
            try:
                return int(value)
            except ValueError:
                return None
    if is_cli and env is not None:  # no --port: the CLI takes the setting, else its default
        try:
            return int(env.get("PREFECT_SERVER_API_PORT") or DEFAULT_PORT)
        except ValueError:
            return None
    return None if not is_uvicorn else 8000  # uvicorn's default


def port_holder(port: int) -> int | None:
    """The pid listening on TCP `port` (psutil; processes this user may inspect), else the pid of
    a process whose command line is a Prefect server on that port, else None."""
    try:
        conns = psutil.net_connections(kind="tcp")
    except (psutil.Error, OSError):
        conns = []
    for c in conns:
        if c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port and c.pid:
            return c.pid
    for proc in psutil.process_iter(["pid", "cmdline"]):
        cmd = tuple(proc.info.get("cmdline") or ())
        if proc.info["pid"] != os.getpid() and _served_port(cmd, None) == port:
            return proc.info["pid"]
    return None


def _resolve(path: Path) -> Path:
    return Path(path).expanduser().resolve()


# --- the pid file --------------------------------------------------------------------------

@dataclass(frozen=True)
class PidRecord:
    """HOME/server.pid, Prefect's pid file: `pid` None when it does not hold an integer."""

    path: Path
    pid: int | None
    text: str = ""


def read_pid_file(home: Path) -> PidRecord | None:
    """The record in HOME/server.pid, or None when there is no such file."""
    path = Path(home) / PID_FILE
    try:
        text = path.read_text(errors="replace").strip()
    except FileNotFoundError:
        return None
    except OSError:
        text = ""
    return PidRecord(path, int(text) if text.isdigit() else None, text)


def write_pid_file(home: Path, pid: int) -> Path:
    """Record the server `pid` in HOME/server.pid (written whole, then renamed)."""
    path = Path(home) / PID_FILE
    tmp = path.with_name(f".{PID_FILE}.{os.getpid()}")
    tmp.write_text(f"{pid}\n")
    os.replace(tmp, path)
    return path


def served_port(pid: int, default: int) -> int:
    """The port the Prefect server `pid` serves (from its command line), else `default`."""
    info = process_info(pid)
    return info.port if info is not None and info.prefect else default


# --- start / stop ----------------------------------------------------------------------------

def _can_bind(port: int) -> bool:
    """Whether 127.0.0.1:`port` is free to listen on (the check `prefect server start` makes)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def ensure_port_free(port: int, home: Path | None = None, *, auth: str | None = None) -> None:
    """Raise PortInUseError, naming what holds it, unless 127.0.0.1:`port` is free."""
    if _can_bind(port):
        return
    pid = port_holder(port)
    holder = process_info(pid) if pid is not None else None
    prefect = healthy(api_url(port), auth=auth or "") or bool(holder and holder.prefect)
    raise PortInUseError(port, home, holder, prefect)


def start(home: Path = DEFAULT_HOME, port: int = DEFAULT_PORT, *, database_url: str | None = None,
          extra_env: dict[str, str] | None = None, wait_s: float = 180.0,
          ui: bool = True, auth_string: str | None = None) -> subprocess.Popen:
    """Start `prefect server start` in its own process group and wait until /health answers.

    `auth_string` ("user:password") turns on basic auth (PREFECT_SERVER_API_AUTH_STRING; without
    it the server inherits that variable from the environment, if set).
    Its output goes to HOME/server.log. Raises PortInUseError (a ServerError) when the port is
    taken, by another Prefect server or anything else, and ServerError, quoting the log's tail,
    when the server exits or does not become healthy in `wait_s` seconds."""
    home = _resolve(home)
    home.mkdir(parents=True, exist_ok=True)
    env = prefect_env(home, port, database_url, extra_env, auth_string=auth_string)
    if auth_string:
        env[SERVER_AUTH_ENV] = auth_string
    if not ui:
        env["PREFECT_UI_ENABLED"] = "false"
    server_auth = env.get(SERVER_AUTH_ENV) or ""
    ensure_port_free(port, home, auth=server_auth)
    log_path = home / LOG_FILE
    log_start = log_path.stat().st_size if log_path.exists() else 0
    log = open(log_path, "ab")  # noqa: SIM115 - handed to the child process
    proc = subprocess.Popen(
        [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
         "--port", str(port)],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    log.close()
    url = api_url(port)
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            if "already in use" in _read_from(log_path, log_start).lower():
                # taken between the check and the server's own bind: say by whom
                ensure_port_free(port, home, auth=server_auth)
            raise ServerError(f"prefect server exited with {proc.returncode} (log: {log_path})",
                              _tail(log_path))
        if healthy(url, auth=server_auth):
            return proc
        time.sleep(0.5)
    stop(proc)
    raise ServerError(f"prefect server not healthy at {url} after {wait_s:.0f} s (log: "
                      f"{log_path})", _tail(log_path))


def stop(proc: subprocess.Popen | int, timeout: float = 20.0) -> None:
    """Stop a process and everything in its process group: SIGTERM, up to `timeout` seconds
    for the leader to exit, then SIGKILL for whatever of the group is left.

    The caller vouches for `proc`: it is signalled without checks (the CLI's `stop` verifies a
    pid from its pid file first, see verify_server())."""
    pid = proc if isinstance(proc, int) else proc.pid
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        gone = proc.poll() is not None if isinstance(proc, subprocess.Popen) else not pid_alive(pid)
        if gone:
            break
        time.sleep(0.2)
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    if isinstance(proc, subprocess.Popen):
        proc.wait(timeout=10)


def _stop_pid(pid: int, timeout: float = 20.0) -> None:
    """stop() for a verified server pid: its process group when it leads one (as servers started
    here do), else the process alone (e.g. the uvicorn of Prefect's own background mode)."""
    try:
        if os.getpgid(pid) == pid:
            stop(pid, timeout)
            return
        proc = psutil.Process(pid)
        proc.terminate()
        proc.wait(timeout)
    except psutil.TimeoutExpired:
        proc.kill()
    except (ProcessLookupError, psutil.NoSuchProcess):
        pass


def pid_alive(pid: int) -> bool:
    """Whether a process runs under that pid (a zombie, reaped here if it is ours, is gone)."""
    try:  # a zombie of ours is reaped, and so gone
        os.waitpid(pid, os.WNOHANG)
    except (ChildProcessError, OSError):
        pass
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
    except (psutil.Error, OSError):  # someone else's process that we may not inspect
        return psutil.pid_exists(pid)


def _tail(path: Path, n: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log)"


def _read_from(path: Path, offset: int) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(offset)
            return fh.read().decode(errors="replace")
    except OSError:
        return ""


# --- the command line ------------------------------------------------------------------------

def _fail(message: str, log_tail: str | None = None) -> int:
    print(message, file=sys.stderr)
    if log_tail:
        print(log_tail, file=sys.stderr)
    return 2


def _cmd_stop(home: Path, port: int, port_given: bool) -> int:
    """`stop`: signal the server HOME/server.pid names, once verified (module doc)."""
    rec = read_pid_file(home)
    if rec is None:
        print(f"no server started by this tool ({home / PID_FILE} missing)")
        return 1
    if rec.pid is None:
        rec.path.unlink(missing_ok=True)
        print(f"{rec.path} held no pid ({rec.text[:60]!r}); nothing was signalled; removed it",
              file=sys.stderr)
        return 1
    recorded = served_port(rec.pid, port)
    if port_given and recorded != port:
        ok, _ = verify_server(rec.pid, home, recorded)
        if ok:  # a live server of this home, on another port than asked: leave it and its record
            print(f"{rec.path} names the server of this home on port {recorded} (pid {rec.pid}), "
                  f"not one on port {port}; nothing was signalled (stop it with --port "
                  f"{recorded})", file=sys.stderr)
            return 1
    ok, why = verify_server(rec.pid, home, port if port_given else recorded)
    if not ok:
        rec.path.unlink(missing_ok=True)
        print(f"{rec.path} named pid {rec.pid}, which {why}; nothing was signalled; removed the "
              "stale pid file", file=sys.stderr)
        return 1
    url = api_url(port if port_given else recorded)
    try:
        _stop_pid(rec.pid)
    except PermissionError as exc:
        return _fail(f"could not signal the prefect server at {url} (pid {rec.pid}): {exc}")
    rec.path.unlink(missing_ok=True)
    note = "" if "not readable" not in why else " (its environment was not readable: verified " \
        "by its command line and port only)"
    print(f"stopped the prefect server at {url} (pid {rec.pid}, PREFECT_HOME={home}){note}")
    return 0


def _cmd_start(args: argparse.Namespace, home: Path, port: int) -> int:
    url = api_url(port)
    pid_file = home / PID_FILE
    server_auth = args.auth_string or os.environ.get(SERVER_AUTH_ENV) or None
    rec = read_pid_file(home)
    if rec is not None:
        recorded = served_port(rec.pid, port) if rec.pid is not None else port
        ok, why = verify_server(rec.pid, home, recorded) if rec.pid is not None else \
            (False, "")
        if ok and recorded == port:
            state = "" if healthy(url, auth=server_auth or "") else \
                "; not answering /health yet"
            print(f"prefect server already running at {url} (pid {rec.pid}, "
                  f"PREFECT_HOME={home}{state})")
            return 0
        if ok:
            return _fail(f"the prefect server of this home already runs on port {recorded} "
                         f"(pid {rec.pid}), not {port}; two servers must not share one database:"
                         f" use --port {recorded}, or stop it first (python -m flows.server stop "
                         f"--home {home} --port {recorded})")
        rec.path.unlink(missing_ok=True)
        named = f"pid {rec.pid}, which {why}" if rec.pid is not None else "no pid"
        print(f"removed the stale {pid_file} (it named {named})")
    try:
        ensure_port_free(port, home, auth=server_auth)
    except PortInUseError as exc:
        if exc.same_home:
            print(f"prefect server already running at {url} (pid {exc.holder.pid}, "
                  f"PREFECT_HOME={home}; not started by this tool, so `stop` leaves it alone)")
            return 0
        return _fail(exc.message)
    print(f"starting prefect server at {url} (PREFECT_HOME={home}); "
          f"log: {home / LOG_FILE}", flush=True)
    try:
        proc = start(home, port, database_url=args.database_url, auth_string=server_auth)
    except ServerError as exc:
        return _fail(exc.message, exc.log_tail)
    write_pid_file(home, proc.pid)
    print(f"prefect server healthy at {url} (pid {proc.pid}); UI at http://127.0.0.1:{port}",
          flush=True)
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
        rec = read_pid_file(home)
        if rec is not None and rec.pid == proc.pid:
            pid_file.unlink(missing_ok=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m flows.server",
                                 description="a local Prefect server on 127.0.0.1",
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("command", choices=["start", "status", "stop"])
    ap.add_argument("--port", type=int, default=argparse.SUPPRESS,
                    help=f"default: ${PORT_ENV}, else {DEFAULT_PORT}; stop without either: the "
                         "port the recorded server serves")
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
    port_given = hasattr(args, "port") or bool(os.environ.get(PORT_ENV))
    try:
        port = args.port if hasattr(args, "port") else int(os.environ.get(PORT_ENV)
                                                           or DEFAULT_PORT)
    except ValueError:
        ap.error(f"${PORT_ENV} is not a port number: {os.environ.get(PORT_ENV)!r}")
    home = _resolve(args.home)
    url = api_url(port)
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
        except (httpx.HTTPError, OSError) as exc:
            print(f"prefect server at {url}: running, but GET /admin/version failed: "
                  f"{_reason(exc)}",
                  file=sys.stderr)
            return 1
        print(f"prefect server at {url}: healthy" + (" (authenticated)" if auth else ""))
        return 0
    if args.command == "stop":
        return _cmd_stop(home, port, port_given)
    return _cmd_start(args, home, port)


if __name__ == "__main__":
    sys.exit(main())
