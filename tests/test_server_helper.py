"""`python -m flows.server start|stop` as a user meets it: a stale pid file never gets an
unrelated process signalled, a port taken by another home's Prefect server or by something else
is refused in one line (exit 2, no traceback) and the holder is left alone, and a background
server of a home starts and stops. Real processes on 127.0.0.1, each stopped when its test ends."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from flows import server

REPO = Path(__file__).resolve().parents[1]
DROPPED = (server.CLIENT_AUTH_ENV, server.SERVER_AUTH_ENV, server.PORT_ENV)


def cli_env(home: Path, port: int, **extra: str) -> dict[str, str]:
    """The environment of a user's shell for `python -m flows.server`: no auth, no port
    override, no UI (faster start)."""
    env = server.prefect_env(home, port, extra={"PREFECT_UI_ENABLED": "false"})
    return {**{k: v for k, v in env.items() if k not in DROPPED}, **extra}


def cli(command: str, home: Path, port: int | None,
        *flags: str, timeout: float = 240) -> subprocess.CompletedProcess:
    args = [sys.executable, "-m", "flows.server", command, "--home", str(home), *flags]
    if port is not None:
        args += ["--port", str(port)]
    return subprocess.run(args, cwd=REPO, env=cli_env(home, port or server.DEFAULT_PORT),
                          capture_output=True, text=True, timeout=timeout)


def one_line(text: str) -> str:
    lines = text.strip().splitlines()
    assert len(lines) == 1, text
    return lines[0]


@contextlib.contextmanager
def spawned(args: list[str], env: dict[str, str] | None = None, ready: bool = False):
    """A process in its own session, killed (with its group) when the context exits. With
    `ready` the process prints a line once it is set up, and this waits for it."""
    proc = subprocess.Popen(args, env=env, start_new_session=True, text=True,
                            stdout=subprocess.PIPE if ready else subprocess.DEVNULL)
    try:
        if ready:
            assert proc.stdout.readline().strip() == "ready"
        yield proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        if proc.stdout:
            proc.stdout.close()


def write_pid_file(home: Path, content) -> Path:
    home.mkdir(parents=True, exist_ok=True)
    path = home / server.PID_FILE
    path.write_text(f"{content}\n")
    return path


# --- stop and stale pid files (no server needed) -----------------------------------------------

def test_stop_leaves_an_unrelated_process_a_stale_pid_file_names(tmp_path):
    port = server.free_port()
    with spawned(["sleep", "60"]) as sleeper:
        pid_file = write_pid_file(tmp_path, sleeper.pid)
        res = cli("stop", tmp_path, port)
        assert sleeper.poll() is None, "the unrelated process was signalled"
    assert res.returncode == 1, res
    line = one_line(res.stderr)
    assert f"pid {sleeper.pid}" in line and "sleep 60" in line, line
    assert "nothing was signalled" in line, line
    assert not pid_file.exists(), "the stale pid file is left behind"


def test_prefects_own_stop_signals_whatever_its_pid_file_names(tmp_path):
    """Why `stop` verifies before it signals: Prefect's `prefect server stop` sends SIGTERM to
    the pid in HOME/server.pid, whatever process now has it. If this ever fails, Prefect checks
    for itself and flows.server's check can go."""
    env = {**cli_env(tmp_path, server.free_port()), "PREFECT_HOME": str(tmp_path)}
    with spawned(["sleep", "60"]) as stranger:
        (tmp_path / "server.pid").write_text(str(stranger.pid))
        res = subprocess.run([sys.executable, "-m", "prefect", "server", "stop"], env=env,
                             capture_output=True, text=True, timeout=120)
        assert res.returncode == 0, res
        assert stranger.wait(timeout=10) == -signal.SIGTERM, "Prefect checks its pid file now"


def test_prefects_background_start_leaves_no_log_of_a_failed_start(tmp_path):
    """Why `start --background` runs `prefect server start` itself: Prefect's own background
    mode pipes the server's output to the CLI process, which exits at once, so a server that
    fails to start (here: no database at the URL) leaves no log, a pid file naming a dead
    process and exit code 0. flows.server says why, with the log's tail, and exits 2."""
    port, dead_db = server.free_port(), "postgresql+asyncpg://nobody@127.0.0.1:9/none"
    home = tmp_path / "prefect"
    home.mkdir()
    env = {**cli_env(home, port), "PREFECT_SERVER_DATABASE_CONNECTION_URL": dead_db}
    res = subprocess.run([sys.executable, "-m", "prefect", "server", "start", "--background",
                          "--host", "127.0.0.1", "--port", str(port)], env=env, cwd=tmp_path,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res
    pid = int((home / "server.pid").read_text())
    deadline = time.monotonic() + 60
    while server.pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not server.pid_alive(pid), "Prefect's background server came up without a database"
    assert not server.healthy(server.api_url(port))
    assert "Connect call failed" not in res.stdout + res.stderr
    assert sorted(p.name for p in home.iterdir()) == ["server.pid"], "Prefect keeps a log now"

    ours = cli("start", tmp_path / "ours", port, "--background", "--database-url", dead_db)
    assert ours.returncode == 2, ours
    assert "prefect server exited" in ours.stderr and "server.log" in ours.stderr, ours.stderr
    assert "Connect call failed ('127.0.0.1', 9)" in ours.stderr  # the log's tail: the cause


def test_stop_with_a_dead_pid_in_the_pid_file(tmp_path):
    dead = subprocess.Popen(["true"])
    dead.wait()
    pid_file = write_pid_file(tmp_path, dead.pid)
    assert server.read_pid_file(tmp_path).pid == dead.pid
    res = cli("stop", tmp_path, server.free_port())
    assert res.returncode == 1, res
    line = one_line(res.stderr)
    assert f"pid {dead.pid}" in line and "not running" in line, line
    assert not pid_file.exists()


@pytest.mark.parametrize("whose", ["another home", "this home"])
def test_stop_checks_the_home_of_a_prefect_server_command_line(tmp_path, whose):
    """A process whose command line reads `prefect server start --port P`: stop signals it only
    when its PREFECT_HOME is the home asked for."""
    port = server.free_port()
    home, other = tmp_path / "home", tmp_path / "other"
    process_home = other if whose == "another home" else home
    lookalike = [sys.executable, "-c", "import time; print('ready', flush=True); time.sleep(60)",
                 "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)]
    with spawned(lookalike, env={**os.environ, "PREFECT_HOME": str(process_home)},
                 ready=True) as proc:
        ok, why = server.verify_server(proc.pid, home, port)
        assert ok == (whose == "this home"), why
        pid_file = write_pid_file(home, proc.pid)
        res = cli("stop", home, port)
        if whose == "another home":
            assert proc.poll() is None, "another home's server was signalled"
            assert res.returncode == 1, res
            line = one_line(res.stderr)
            assert f"pid {proc.pid}" in line and f"PREFECT_HOME={other}" in line, line
        else:
            proc.wait(timeout=30)
            assert res.returncode == 0 and f"pid {proc.pid}" in res.stdout, res
        assert not pid_file.exists()


# --- start on a taken port ----------------------------------------------------------------------

def test_start_on_a_port_a_plain_listener_holds(tmp_path):
    port = server.free_port()
    listener = [sys.executable, "-c",
                "import socket, time\n"
                f"s = socket.socket(); s.bind(('127.0.0.1', {port})); s.listen()\n"
                "print('ready', flush=True); time.sleep(60)"]
    with spawned(listener, ready=True) as holder:
        res = cli("start", tmp_path, port, "--background", timeout=60)
        with pytest.raises(server.PortInUseError) as caught:
            server.start(tmp_path, port, ui=False, wait_s=30)
        assert holder.poll() is None
    assert res.returncode == 2, res
    assert "Traceback" not in res.stderr, res.stderr
    line = one_line(res.stderr)
    assert f"port {port}" in line and f"pid {holder.pid}" in line, line
    assert "not a Prefect server" in line and "--port" in line, line
    assert "starting" not in res.stdout, res.stdout
    assert not caught.value.prefect and caught.value.holder.pid == holder.pid
    assert isinstance(caught.value, server.ServerError) and "\n" not in str(caught.value)
    assert not (tmp_path / server.PID_FILE).exists()


@pytest.fixture(scope="module")
def home_server(tmp_path_factory):
    """A real server started with `start --background` (home, port, pid), stopped at the end
    whatever the tests did to it."""
    home, port = tmp_path_factory.mktemp("server-home"), server.free_port()
    res = cli("start", home, port, "--background")
    try:
        assert res.returncode == 0, res.stdout + res.stderr
        yield home, port, server.read_pid_file(home).pid
    finally:
        cli("stop", home, port)
        rec = server.read_pid_file(home)
        if rec is not None and rec.pid:
            server.stop(rec.pid)


@pytest.mark.slow
def test_start_again_on_the_same_home_says_already_running(home_server):
    home, port, pid = home_server
    res = cli("start", home, port, "--background", timeout=60)
    assert res.returncode == 0, res
    assert "already running" in res.stdout and f"pid {pid}" in res.stdout, res.stdout
    assert f"PREFECT_HOME={home}" in res.stdout, res.stdout
    assert server.read_pid_file(home).pid == pid


@pytest.mark.slow
def test_start_from_another_home_on_its_port(home_server, tmp_path):
    home, port, pid = home_server
    url = server.api_url(port)
    res = cli("start", tmp_path, port, "--background", timeout=60)
    assert res.returncode == 2, res
    assert "Traceback" not in res.stderr, res.stderr
    line = one_line(res.stderr)
    assert url in line and "not started from this home" in line, line
    assert f"pid {pid}" in line and f"PREFECT_HOME={home}" in line, line
    assert "another database" in line and "--port" in line, line
    with pytest.raises(server.PortInUseError) as caught:
        server.start(tmp_path, port, ui=False, wait_s=30)
    assert caught.value.prefect and not caught.value.same_home
    assert not (tmp_path / server.PID_FILE).exists()
    assert server.healthy(url) and server.process_info(pid) is not None, "the server was touched"


@pytest.mark.slow
def test_stop_with_another_port_leaves_the_server_and_its_record(home_server):
    home, port, pid = home_server
    res = cli("stop", home, server.free_port())
    assert res.returncode == 1, res
    line = one_line(res.stderr)
    assert f"port {port}" in line and "nothing was signalled" in line, line
    assert server.healthy(server.api_url(port)) and server.read_pid_file(home).pid == pid


@pytest.mark.slow
def test_background_start_then_stop(tmp_path):
    port = server.free_port()
    url = server.api_url(port)
    res = cli("start", tmp_path, port, "--background")
    try:
        assert res.returncode == 0, res.stdout + res.stderr
        pid = int((tmp_path / "server.pid").read_text())  # Prefect's own pid file
        assert server.healthy(url)
        ok, why = server.verify_server(pid, tmp_path, port)
        assert ok, why
    finally:
        stopped = cli("stop", tmp_path, None)  # no --port: the one the recorded server serves
    assert stopped.returncode == 0, stopped
    assert f"pid {pid}" in stopped.stdout, stopped.stdout
    assert not server.healthy(url) and server.process_info(pid) is None
    assert not (tmp_path / server.PID_FILE).exists()


# --- the message for an API that does not answer ---------------------------------------------

def test_unreachable_message_names_the_url_and_the_reason():
    url = server.api_url(server.free_port())  # nothing listens there
    with pytest.raises(httpx.ConnectError) as caught, server.api_client(url) as client:
        client.api_version()
    text = server.unreachable_message(url, caught.value)
    assert text.startswith(f"the Prefect API at {url} does not answer: connection refused;"), text
    assert "python -m flows.server start" in text and "PREFECT_API_URL" in text, text
    assert "\n" not in text
    bare = server.unreachable_message("http://prefect.example:4200/api")
    assert "http://prefect.example:4200/api does not answer;" in bare, bare
    assert "timed out" in server.unreachable_message(url, TimeoutError("timed out"))
