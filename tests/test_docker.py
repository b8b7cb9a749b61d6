"""Static checks of the container stack (docker/compose.yaml, docker/*.Dockerfile, .dockerignore).

No Docker engine runs here, so nothing is built or started: the compose file is parsed with
PyYAML and the Dockerfiles line by line, and every name they rely on is checked against the
repository (copied paths, build contexts, bind-mount sources, the commands' executables and
modules, the pinned Prefect version, the work pool the deployments use), and so is the
exposure model: loopback-only ports, no published Dask scheduler, basic auth on the Prefect
server and all its clients, secrets only from the git-ignored docker/.env.
"""

from __future__ import annotations

import ast
import json
import re
import shlex
import shutil
import subprocess
import tomllib
from fnmatch import fnmatch
from importlib.metadata import entry_points
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCKER = ROOT / "docker"
COMPOSE = DOCKER / "compose.yaml"
PIPELINE_DOCKERFILE = DOCKER / "pipeline.Dockerfile"
SERVICES = {"postgres", "prefect-server", "pipeline-worker", "dask-scheduler", "dask-worker"}
# services that run the project's own image (docker/pipeline.Dockerfile)
PIPELINE_SERVICES = {"pipeline-worker", "dask-scheduler", "dask-worker"}
# executables the pipeline image provides: console scripts of the project's dependencies
PIPELINE_EXECUTABLES = {"prefect": "prefect", "dask": "dask"}
INITDB = "/docker-entrypoint-initdb.d"
ENV_FILE = DOCKER / ".env"  # compose's project env file (the project directory is docker/)
ENV_EXAMPLE = DOCKER / "env.example"
# what docker/.env must set (compose refuses to start without): test values
STACK_ENV = {"PREFECT_API_AUTH_STRING": "admin:test-auth", "POSTGRES_PASSWORD": "test-db-pw"}


# --------------------------------------------------------------------------- helpers

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def interpolate(value: str, env: dict[str, str] | None = None) -> str:
    """Compose's variable substitution with the environment `env` (default: STACK_ENV, what
    docker/.env provides): `${X:-default}` / `${X-default}`, `${X:?err}` / `${X?err}`,
    `${X:+alt}` / `${X+alt}`, nested (`${X:-${Y:-d}}`), `$X`, and `$$` -> `$`. An unset variable
    without a default, or a `:?` one, is an AssertionError (with compose's message)."""
    env = STACK_ENV if env is None else env
    out, i = [], 0
    while i < len(value):
        if value.startswith("$$", i):
            out.append("$")
            i += 2
        elif value.startswith("${", i):
            depth, j = 1, i + 2  # find the matching `}`: defaults may nest `${...}`
            while j < len(value) and depth:
                if value.startswith(("${", "$$"), j):
                    depth += value[j + 1] == "{"
                    j += 2
                    continue
                depth -= value[j] == "}"
                j += 1
            assert depth == 0, f"unclosed ${{ in {value!r}"
            out.append(_expand(value[i + 2:j - 1], env, value))
            i = j
        elif value[i] == "$" and (m := _NAME.match(value, i + 1)):
            out.append(_expand(m.group(0), env, value))
            i = m.end()
        else:
            out.append(value[i])
            i += 1
    return "".join(out)


def _expand(expr: str, env: dict[str, str], whole: str) -> str:
    m = _NAME.match(expr)
    assert m, f"bad variable ${{{expr}}} in {whole!r}"
    name, rest = m.group(0), expr[m.end():]
    op = next((o for o in (":-", ":?", ":+", "-", "?", "+") if rest.startswith(o)), "")
    assert rest[len(op):] == "" or op, f"bad variable ${{{expr}}} in {whole!r}"
    arg, val = rest[len(op):], env.get(name)
    present = val is not None and (val != "" or ":" not in op)
    if op.endswith("-"):
        return val if present else interpolate(arg, env)
    if op.endswith("+"):
        return interpolate(arg, env) if present else ""
    if present:
        return val
    raise AssertionError(f"${{{name}}} is unset: {interpolate(arg, env) if op else whole!r}")


def load_compose(path: Path = COMPOSE) -> dict:
    data = yaml.safe_load(path.read_text())
    assert isinstance(data, dict) and isinstance(data.get("services"), dict), path
    return data


def command_argv(command: str | list | None) -> list[str]:
    if command is None:
        return []
    if isinstance(command, str):
        return [interpolate(a) for a in shlex.split(command)]
    return [interpolate(str(a)) for a in command]


def env_of(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: interpolate(str(v)) for k, v in env.items()}


def published_ports(service: dict, env: dict[str, str] | None = None
                    ) -> list[tuple[str, str, str]]:
    """(host_ip, host_port, container_port) per `ports:` entry, short or long syntax; host_ip
    "" (every interface) when the entry names none."""
    out = []
    for p in service.get("ports") or []:
        if isinstance(p, dict):
            out.append((interpolate(str(p.get("host_ip", "")), env),
                        interpolate(str(p.get("published", "")), env),
                        interpolate(str(p["target"]), env)))
            continue
        spec = interpolate(str(p), env).split("/")[0]
        if spec.startswith("["):  # [::1]:4200:4200
            host, _, rest = spec[1:].partition("]:")
            out.append((host, *rest.split(":", 1)))
            continue
        parts = spec.split(":")
        parts = [""] * (3 - len(parts)) + parts
        out.append((parts[0], parts[1], parts[2]))
    return out


LOOPBACK = {"127.0.0.1", "::1", "localhost"}


def volume_specs(service: dict) -> list[tuple[str, str]]:
    """(source, target) of each volume entry, short or long syntax."""
    out = []
    for v in service.get("volumes") or []:
        if isinstance(v, dict):
            out.append((interpolate(str(v.get("source", ""))), str(v["target"])))
        else:
            parts = interpolate(v).split(":")
            out.append((parts[0], parts[1]) if len(parts) > 1 else ("", parts[0]))
    return out


def is_bind(source: str) -> bool:
    return source.startswith((".", "/", "~"))


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) per instruction: comments dropped, `\\` continuations joined
    (comment lines inside a continuation are skipped, as Docker does)."""
    out: list[tuple[str, str]] = []
    buf = ""
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("#") or (not line and not buf):
            continue
        if line.endswith("\\"):
            buf += line[:-1].rstrip() + " "
            continue
        buf += line
        if buf.strip():
            word, _, args = buf.strip().partition(" ")
            out.append((word.upper(), args.strip()))
        buf = ""
    if buf.strip():
        word, _, args = buf.strip().partition(" ")
        out.append((word.upper(), args.strip()))
    return out


def _copy_sources(args: str) -> tuple[list[str], dict[str, str]]:
    """Sources and --flags of a COPY/ADD (shell or JSON form); the last word is the target."""
    words = json.loads(args) if args.startswith("[") else shlex.split(args)
    flags = {}
    while words and words[0].startswith("--"):
        key, _, val = words.pop(0)[2:].partition("=")
        flags[key] = val
    assert len(words) >= 2, f"COPY/ADD needs a source and a target: {args!r}"
    return words[:-1], flags


def exec_argv(args: str) -> list[str]:
    return json.loads(args) if args.startswith("[") else shlex.split(args)


def dockerignore_patterns(context: Path) -> list[str]:
    path = context / ".dockerignore"
    if not path.exists():
        return []
    lines = [ln.strip() for ln in path.read_text().splitlines()]
    return [ln for ln in lines if ln and not ln.startswith("#")]


def _ignore_regex(pattern: str) -> re.Pattern:
    """A .dockerignore pattern as a regex: `**` any folders, `*` and `?` within one name."""
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out)


def ignored(rel: str, patterns: list[str]) -> bool:
    """Whether .dockerignore excludes `rel` or a folder above it; a later `!pattern` re-includes."""
    parts = rel.strip("/").removeprefix("./").split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    hit = False
    for pat in patterns:
        neg = pat.startswith("!")
        rx = _ignore_regex(pat.lstrip("!").strip("/").removeprefix("./"))
        if any(rx.fullmatch(p) for p in prefixes):
            hit = not neg
    return hit


def dockerfile_problems(text: str, context: Path) -> list[str]:
    """Everything wrong with a Dockerfile that can be seen without building it."""
    problems: list[str] = []
    instr = dockerfile_instructions(text)
    names = [n for n, _ in instr]
    if not names or names[0] not in {"FROM", "ARG"} or "FROM" not in names:
        problems.append("no FROM (or an instruction other than ARG before it)")
    if "WORKDIR" not in names:
        problems.append("no WORKDIR")
    if not {"CMD", "ENTRYPOINT"} & set(names):
        problems.append("no CMD or ENTRYPOINT")
    users = [a for n, a in instr if n == "USER"]
    if not users or users[-1].split(":")[0] in {"root", "0"}:
        problems.append("runs as root (no USER, or USER root last)")
    patterns = dockerignore_patterns(context)
    copied: set[str] = set()
    for name, args in instr:
        if name in {"COPY", "ADD"}:
            sources, flags = _copy_sources(args)
            if "from" in flags:  # another stage or image: nothing to check in the context
                continue
            for src in sources:
                if re.match(r"^[a-z]+://", src):
                    continue
                rel = src.removeprefix("./").rstrip("/") or "."
                copied.add(rel)
                matches = list(context.glob(rel)) if any(c in rel for c in "*?[") else (
                    [context / rel] if (context / rel).exists() else [])
                if not matches:
                    problems.append(f"{name} source {src!r} does not exist in the build context")
                elif rel != "." and ignored(rel, patterns):
                    problems.append(f"{name} source {src!r} is excluded by .dockerignore")
        if name in {"CMD", "ENTRYPOINT"} and not exec_argv(args):
            problems.append(f"empty {name}")
    runs = [a for n, a in instr if n == "RUN"]
    installs = [seg for r in runs for seg in re.split(r"&&|;", r) if "pip install" in seg]
    if not installs:
        problems.append("no pip install")
    for seg in installs:
        if not re.search(r"(-c|--constraint)[ =]+\S*constraints\.txt", seg):
            problems.append(f"pip install without -c constraints.txt: {seg.strip()!r}")
    if installs and "constraints.txt" not in copied:
        problems.append("constraints.txt is not copied into the image")
    return problems


def image_cmd(text: str) -> list[str]:
    cmds = [a for n, a in dockerfile_instructions(text) if n == "CMD"]
    return exec_argv(cmds[-1]) if cmds else []


def constraint_pin(name: str) -> str:
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        m = re.match(rf"^\s*{re.escape(name)}\s*==\s*([^\s;#]+)", line, re.I)
        if m:
            return m.group(1)
    raise AssertionError(f"constraints.txt pins no {name}")


def version_tuple(tag: str) -> tuple[int, ...]:
    m = re.match(r"^(\d+)(?:\.(\d+))?(?:\.(\d+))?", tag)
    assert m, f"image tag {tag!r} starts with no version number"
    return tuple(int(g) for g in m.groups() if g is not None)


def image_tag(image: str) -> str:
    name, _, tag = image.rpartition(":")
    assert name and "/" not in tag, f"image {image!r} has no tag (an unpinned :latest)"
    return tag


def work_pools() -> set[str]:
    """The pools the deployments run on: prefect.yaml's, else flows/deployments.DEFAULT_POOL."""
    prefect_yaml = ROOT / "prefect.yaml"
    if prefect_yaml.exists():
        deps = yaml.safe_load(prefect_yaml.read_text()).get("deployments") or []
        pools = {d["work_pool"]["name"] for d in deps if d.get("work_pool")}
        if pools:
            return pools
    tree = ast.parse((ROOT / "flows" / "deployments.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == "DEFAULT_POOL" for t in node.targets):
            return {ast.literal_eval(node.value)}
    raise AssertionError("no work pool found in prefect.yaml or flows/deployments.py")


def flag(argv: list[str], *names: str) -> str | None:
    for i, a in enumerate(argv):
        for n in names:
            if a == n and i + 1 < len(argv):
                return argv[i + 1]
            if a.startswith(n + "="):
                return a.split("=", 1)[1]
    return None


def command_problems(argv: list[str], *, pipeline_image: bool) -> list[str]:
    """Whether an image can run `argv`: known executable and subcommand, modules that exist."""
    if not argv:
        return ["no command"]
    exe, rest = argv[0], argv[1:]
    if exe in {"python", "python3"}:
        if not pipeline_image:
            return [f"{argv!r}: python commands need the pipeline image"]
        if rest[:1] != ["-m"] or len(rest) < 2:
            return [f"{argv!r}: only `python -m <module>` is checked and allowed"]
        mod = Path(*rest[1].split("."))
        if not ((ROOT / mod).with_suffix(".py").exists() or (ROOT / mod / "__main__.py").exists()):
            return [f"{argv!r}: module {rest[1]} does not exist in the repository"]
        return []
    if pipeline_image and exe not in PIPELINE_EXECUTABLES:
        return [f"{argv!r}: the pipeline image provides no {exe!r}"]
    if not pipeline_image and exe != "prefect":
        return [f"{argv!r}: the Prefect image runs `prefect`"]
    if exe == "dask" and rest[:1] not in (["scheduler"], ["worker"]):
        return [f"{argv!r}: expected `dask scheduler` or `dask worker`"]
    if exe == "prefect" and rest[:2] not in (["worker", "start"], ["server", "start"]):
        return [f"{argv!r}: expected `prefect worker start` or `prefect server start`"]
    return []


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def compose() -> dict:
    return load_compose()


@pytest.fixture(scope="module")
def services(compose) -> dict:
    return compose["services"]


# --------------------------------------------------------------------------- compose file


def test_compose_has_the_five_services(services):
    assert SERVICES <= set(services), f"missing services: {SERVICES - set(services)}"
    for name, svc in services.items():
        assert svc.get("image") or svc.get("build"), f"{name}: neither image nor build"


def test_postgres_is_at_least_14_9(services):
    image = services["postgres"]["image"]
    assert image.split(":")[0].split("/")[-1] == "postgres", image
    assert version_tuple(image_tag(image)) >= (14, 9), image


def test_postgres_creates_pg_trgm(services):
    pg = services["postgres"]
    inits = [(src, tgt) for src, tgt in volume_specs(pg) if tgt.startswith(INITDB)]
    sql = ""
    for src, tgt in inits:
        path = (DOCKER / src).resolve()
        assert path.is_file(), f"init script {src} (mounted at {tgt}) does not exist"
        assert tgt.endswith((".sql", ".sh")) or tgt.rstrip("/") == INITDB, tgt
        sql += path.read_text()
    sql += " ".join(command_argv(pg.get("command")))
    assert re.search(r"create\s+extension\s+(if\s+not\s+exists\s+)?\"?pg_trgm\"?", sql, re.I), (
        "postgres creates no pg_trgm extension (no init script or command with "
        "CREATE EXTENSION pg_trgm)")


def test_postgres_has_a_pg_isready_healthcheck(services):
    test = services["postgres"]["healthcheck"]["test"]
    assert "pg_isready" in (test if isinstance(test, str) else " ".join(test))


def test_no_default_database_password(services):
    """POSTGRES_PASSWORD is required (`${POSTGRES_PASSWORD:?...}`) wherever it is used, with no
    fallback value anywhere: without docker/.env the stack does not start."""
    raw = services["postgres"]["environment"]["POSTGRES_PASSWORD"]
    assert re.fullmatch(r"\$\{POSTGRES_PASSWORD:\?[^}]+\}", raw), raw
    url = services["prefect-server"]["environment"]["PREFECT_SERVER_DATABASE_CONNECTION_URL"]
    assert "${POSTGRES_PASSWORD:?" in url, "the database URL does not take the required password"
    text = COMPOSE.read_text()
    assert not re.search(r"POSTGRES_PASSWORD:?[-+]", text), "a default for POSTGRES_PASSWORD"
    for where in (raw, url):
        with pytest.raises(AssertionError, match="docker/.env"):
            interpolate(where, {})


def test_prefect_server_uses_postgres(services):
    server, pg = services["prefect-server"], services["postgres"]
    url = env_of(server)["PREFECT_SERVER_DATABASE_CONNECTION_URL"]
    parts = urlsplit(url)
    assert parts.scheme == "postgresql+asyncpg", url
    assert parts.hostname == "postgres" and parts.hostname in services, url
    pg_env = env_of(pg)
    assert parts.username == pg_env["POSTGRES_USER"], url
    assert parts.password == pg_env["POSTGRES_PASSWORD"], url
    assert parts.path.lstrip("/") == pg_env["POSTGRES_DB"], url
    assert (parts.port or 5432) == 5432
    deps = server["depends_on"]
    assert "postgres" in deps
    if isinstance(deps, dict):
        assert deps["postgres"].get("condition") == "service_healthy"


def test_prefect_server_command_port_and_healthcheck(services):
    server = services["prefect-server"]
    argv = command_argv(server["command"])
    assert argv[:3] == ["prefect", "server", "start"], argv
    assert flag(argv, "--host") == "0.0.0.0", "the server must listen beyond localhost"
    port = flag(argv, "--port") or env_of(server).get("PREFECT_SERVER_API_PORT", "4200")
    assert any(str(p).endswith(f":{port}") for p in map(interpolate, server["ports"]))
    health = server["healthcheck"]["test"]
    assert "/api/health" in (health if isinstance(health, str) else " ".join(health))


def test_prefect_image_matches_constraints(services):
    image = services["prefect-server"]["image"]
    assert image.startswith("prefecthq/prefect:"), image
    tag = image_tag(image)
    pin = constraint_pin("prefect")
    assert tag == pin or tag.startswith(pin + "-"), f"{image} vs prefect=={pin} in constraints"
    py = re.search(r"python(\d+\.\d+)", tag)
    assert py and py.group(1) == "3.11", f"{image}: the pipeline image runs python 3.11"


def test_build_contexts_and_dockerfiles_exist(services):
    built = 0
    for name, svc in services.items():
        build = svc.get("build")
        if not build:
            continue
        built += 1
        build = {"context": build} if isinstance(build, str) else build
        context = (DOCKER / interpolate(build.get("context", "."))).resolve()
        assert context.is_dir(), f"{name}: build context {context} missing"
        dockerfile = context / build.get("dockerfile", "Dockerfile")
        assert dockerfile.is_file(), f"{name}: dockerfile {dockerfile} missing"
        assert dockerfile_problems(dockerfile.read_text(), context) == [], name
    assert built, "no service builds the pipeline image"


def test_pipeline_services_run_the_pipeline_image(services):
    built = services["pipeline-worker"]["build"]
    assert Path(built["dockerfile"]).name == PIPELINE_DOCKERFILE.name
    assert (DOCKER / built["context"]).resolve() == ROOT
    image = services["pipeline-worker"].get("image")
    for name in PIPELINE_SERVICES:
        svc = services[name]
        assert svc.get("build") == built or (image and svc.get("image") == image), (
            f"{name} does not run the pipeline image")


def test_bind_mounts_exist_or_are_documented_data_folders(compose, services):
    gitignore = (ROOT / ".gitignore").read_text().splitlines()
    readme = (DOCKER / "README.md").read_text()
    named = set(compose.get("volumes") or {})
    for name, svc in services.items():
        for src, tgt in volume_specs(svc):
            assert tgt.startswith("/"), f"{name}: volume target {tgt!r} is not absolute"
            if not src:
                continue  # anonymous volume
            if not is_bind(src):
                assert src in named, f"{name}: named volume {src!r} is not declared"
                continue
            assert not src.startswith(("/", "~")), f"{name}: {src} is a machine path"
            path = (DOCKER / src).resolve()
            assert path.is_relative_to(ROOT), f"{name}: {src} lies outside the repository"
            if path.exists():
                continue
            rel = path.relative_to(ROOT).as_posix()
            # a generated folder (not in git) that the README tells users about
            assert any(g.strip("/") == rel for g in gitignore), (
                f"{name}: bind source {src} does not exist and is not an ignored data folder")
            assert f"{rel}/" in readme, f"{name}: docker/README.md does not mention {rel}/"


def test_commands_are_ones_the_images_provide(services):
    for name, svc in services.items():
        argv = command_argv(svc.get("command"))
        if name == "postgres" and not argv:
            continue
        pipeline_image = name in PIPELINE_SERVICES
        if pipeline_image and not argv:
            argv = image_cmd(PIPELINE_DOCKERFILE.read_text())
        assert command_problems(argv, pipeline_image=pipeline_image) == [], name


def test_pipeline_image_executables_are_installed_console_scripts():
    """`prefect` and `dask` come from the project's dependencies (pyproject.toml), and the
    installed distributions declare them as console scripts, as they will in the image."""
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    dep_names = {re.split(r"[\[<>=!~; ]", d, maxsplit=1)[0].lower() for d in deps}
    for exe, dist in PIPELINE_EXECUTABLES.items():
        assert dist in dep_names, f"{dist} (for `{exe}`) is not a project dependency"
        assert entry_points(group="console_scripts", name=exe), f"no `{exe}` console script"


def test_workers_match_the_deployments_pool(services):
    pools = work_pools()
    argv = command_argv(services["pipeline-worker"].get("command")) or image_cmd(
        PIPELINE_DOCKERFILE.read_text())
    # flows.worker: `prefect worker start` with the run sweep (same flags)
    assert argv[:3] == ["python", "-m", "flows.worker"], argv
    assert flag(argv, "--pool", "-p") in pools, (argv, pools)
    assert flag(argv, "--type", "-t") == "process"
    cmd = image_cmd(PIPELINE_DOCKERFILE.read_text())
    assert cmd[:3] == ["python", "-m", "flows.worker"] and flag(cmd, "--pool", "-p") in pools


def test_dask_wiring(services):
    sched = command_argv(services["dask-scheduler"]["command"])
    assert sched[:2] == ["dask", "scheduler"], sched
    port = flag(sched, "--port") or "8786"
    worker = command_argv(services["dask-worker"]["command"])
    assert worker[:2] == ["dask", "worker"], worker
    address = f"tcp://dask-scheduler:{port}"
    assert address in worker, f"dask worker does not connect to {address}: {worker}"
    assert env_of(services["pipeline-worker"])["DASK_SCHEDULER_ADDRESS"] == address


def test_prefect_api_url_reaches_the_server(services):
    server_port = "4200"
    for name in ("pipeline-worker", "dask-worker"):
        url = urlsplit(env_of(services[name]).get("PREFECT_API_URL", ""))
        assert url.hostname == "prefect-server", f"{name}: PREFECT_API_URL {url.geturl()!r}"
        assert str(url.port) == server_port and url.path == "/api", url.geturl()
        deps = services[name].get("depends_on") or {}
        assert "prefect-server" in deps, f"{name} starts before the Prefect server"


# --------------------------------------------------------------------------- exposure model


def test_published_ports_bind_loopback_by_default(services):
    published = {name: published_ports(svc) for name, svc in services.items()}
    assert published["prefect-server"], "the Prefect API/UI is not published"
    for name, ports in published.items():
        for host_ip, host_port, target in ports:
            assert host_ip in LOOPBACK, (
                f"{name} publishes {target} on {host_ip or 'every interface'} "
                f"(port {host_port}) by default")
    raw = services["prefect-server"]["ports"]
    assert any("${PREFECT_BIND:-127.0.0.1}" in str(p) for p in raw), raw
    # binding elsewhere is a deliberate setting
    moved = published_ports(services["prefect-server"], {**STACK_ENV, "PREFECT_BIND": "0.0.0.0",
                                                         "PREFECT_PORT": "8080"})
    assert moved == [("0.0.0.0", "8080", "4200")], moved


def test_only_the_prefect_server_is_published(services):
    """PostgreSQL and the Dask scheduler are reached on the compose network only: whoever
    reaches a Dask scheduler runs code on the workers, which mount the survey read-write."""
    for name in ("dask-scheduler", "dask-worker", "postgres", "pipeline-worker"):
        assert not services[name].get("ports"), f"{name} publishes {services[name]['ports']}"
    for name, svc in services.items():
        assert svc.get("network_mode") != "host", f"{name} uses the host's network"
        for _, _, target in published_ports(svc):
            assert target not in {"8786", "8787", "5432"}, f"{name} publishes {target}"


def test_prefect_basic_auth_on_the_server_and_every_client(services):
    server = services["prefect-server"]
    raw = server["environment"]["PREFECT_SERVER_API_AUTH_STRING"]
    assert re.fullmatch(r"\$\{PREFECT_API_AUTH_STRING:\?[^}]+\}", raw), raw
    auth = env_of(server)["PREFECT_SERVER_API_AUTH_STRING"]
    assert auth == STACK_ENV["PREFECT_API_AUTH_STRING"] and ":" in auth  # "user:password"
    clients = [n for n, svc in services.items() if "PREFECT_API_URL" in env_of(svc)]
    assert {"pipeline-worker", "dask-worker"} <= set(clients), clients
    for name in clients:
        env = env_of(services[name])
        assert env.get("PREFECT_API_AUTH_STRING") == auth, (
            f"{name} talks to the Prefect API without PREFECT_API_AUTH_STRING")
        assert "PREFECT_API_KEY" not in env, f"{name}: PREFECT_API_KEY is for Prefect Cloud"
    with pytest.raises(AssertionError, match="docker/.env"):
        interpolate(raw, {})
    # the healthcheck sends no credentials: it must probe the one path Prefect leaves open
    health = " ".join(server["healthcheck"]["test"])
    assert re.search(r"http://127\.0\.0\.1:4200/api/health['\"]", health), health


def test_secrets_live_in_the_ignored_env_file():
    """docker/.env (compose's project env file) holds the secrets: ignored by git and kept out
    of every build context; the committed docker/env.example names every required variable
    and holds no value for any of them."""
    rel = ENV_FILE.relative_to(ROOT).as_posix()
    patterns = [ln.strip() for ln in (ROOT / ".gitignore").read_text().splitlines()
                if ln.strip() and not ln.startswith("#")]
    assert any(fnmatch(ENV_FILE.name, p) or fnmatch(rel, p.lstrip("/")) for p in patterns
               if not p.startswith("!")), ".gitignore does not cover docker/.env"
    if (ROOT / ".git").exists() and shutil.which("git"):
        res = subprocess.run(["git", "check-ignore", "-q", rel], cwd=ROOT, capture_output=True)
        assert res.returncode == 0, "docker/.env is not git-ignored"
        res = subprocess.run(["git", "check-ignore", "-q", ENV_EXAMPLE.relative_to(ROOT)],
                             cwd=ROOT, capture_output=True)
        assert res.returncode == 1, "docker/env.example is git-ignored"
    assert ignored("docker/.env", dockerignore_patterns(ROOT)), ".dockerignore lets in .env"
    example = dict(line.split("=", 1) for line in ENV_EXAMPLE.read_text().splitlines()
                   if line.strip() and not line.lstrip().startswith("#"))
    for var in STACK_ENV:
        assert var in example, f"{ENV_EXAMPLE.name} does not name {var}"
        assert example[var].strip() == "", f"{ENV_EXAMPLE.name} sets a value for {var}"
    readme = (DOCKER / "README.md").read_text()
    assert "Exposure model" in readme and "docker/.env" in readme
    assert "secrets.token_urlsafe" in readme, "docker/README.md: how to make the secrets"
    for var in STACK_ENV:
        assert var in readme, f"docker/README.md does not mention {var}"


def test_data_is_shared_between_flow_runs_and_dask_workers(services):
    """Ingest runs on the Dask workers: they must see the data where the flow run does."""
    mounts = {n: dict((t, s) for s, t in volume_specs(services[n]))
              for n in ("pipeline-worker", "dask-worker")}
    assert "/app/data" in mounts["pipeline-worker"], mounts
    assert mounts["dask-worker"].get("/app/data") == mounts["pipeline-worker"]["/app/data"]


# --------------------------------------------------------------------------- Dockerfile


def test_pipeline_dockerfile_is_valid():
    text = PIPELINE_DOCKERFILE.read_text()
    assert dockerfile_problems(text, ROOT) == []
    instr = dockerfile_instructions(text)
    froms = [a for n, a in instr if n == "FROM"]
    assert froms and froms[0].split()[0] == "python:3.11-slim", froms
    assert ("WORKDIR", "/app") in instr


def test_pipeline_dockerfile_copies_every_package_and_the_catalogs():
    text = PIPELINE_DOCKERFILE.read_text()
    copied = {s.removeprefix("./").rstrip("/") for n, a in dockerfile_instructions(text)
              if n in {"COPY", "ADD"} for s in _copy_sources(a)[0]}
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    dirs = {setuptools.get("package-dir", {}).get(p, p.replace(".", "/")).split("/")[0]
            for p in setuptools["packages"]}
    needed = dirs | {"catalogs", "pyproject.toml", "constraints.txt", "README.md"}
    assert needed <= copied, f"not copied into the image: {needed - copied}"


def test_dockerignore_excludes_local_state_but_not_sources():
    patterns = dockerignore_patterns(ROOT)
    for rel in (".venv", "data", "runs", ".prefect", ".git", ".pytest_cache", "ssl/__pycache__"):
        assert ignored(rel, patterns), f".dockerignore lets {rel} into the build context"
    for rel in ("pipeline/build.py", "flows/serve.py", "ssl/train.py", "catalogs/seafloor.yaml",
                "pyproject.toml", "constraints.txt", "README.md"):
        assert not ignored(rel, patterns), f".dockerignore excludes {rel}"


# --------------------------------------------------------------------------- negative tests

GOOD = """\
# syntax=docker/dockerfile:1
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml constraints.txt \\
     README.md ./
COPY pipeline/ ./pipeline/
RUN pip install -c constraints.txt \\
      -e .
USER app
CMD ["prefect", "worker", "start"]
"""


def test_helper_accepts_a_good_dockerfile():
    assert dockerfile_problems(GOOD, ROOT) == []


@pytest.mark.parametrize("broken, expected", [
    (GOOD.replace("COPY pipeline/", "COPY no-such-folder/"), "no-such-folder/"),
    # a missing source hidden on a continuation line
    (GOOD.replace("     README.md ./", "     MISSING.md ./"), "MISSING.md"),
    (GOOD.replace("FROM python:3.11-slim\n", ""), "no FROM"),
    (GOOD.replace("WORKDIR /app\n", ""), "no WORKDIR"),
    (GOOD.replace('CMD ["prefect", "worker", "start"]\n', ""), "no CMD"),
    (GOOD.replace("-c constraints.txt \\\n", "\\\n"), "without -c constraints.txt"),
    (GOOD.replace("USER app", "USER root"), "runs as root"),
])
def test_helper_rejects_broken_dockerfiles(broken, expected):
    problems = dockerfile_problems(broken, ROOT)
    assert any(expected in p for p in problems), problems


def test_helper_rejects_a_copy_excluded_by_dockerignore(tmp_path):
    (tmp_path / "pipeline").mkdir()
    for f in ("pyproject.toml", "constraints.txt", "README.md"):
        (tmp_path / f).write_text("")
    assert dockerfile_problems(GOOD, tmp_path) == []
    (tmp_path / ".dockerignore").write_text("pipeline\n")
    assert any("excluded by .dockerignore" in p for p in dockerfile_problems(GOOD, tmp_path))


def test_compose_checks_reject_broken_services():
    assert command_problems(["python", "-m", "flows.nope"], pipeline_image=True)
    assert command_problems(["celery", "worker"], pipeline_image=True)
    assert command_problems(["dask", "cluster"], pipeline_image=True)
    assert command_problems(["python", "-m", "flows.serve"], pipeline_image=False)
    assert command_problems(["python", "-m", "flows.serve"], pipeline_image=True) == []
    with pytest.raises(AssertionError):
        interpolate("${POSTGRES_PASSWORD}", {})
    with pytest.raises(AssertionError, match="set it"):
        interpolate("${POSTGRES_PASSWORD:?set it}", {"POSTGRES_PASSWORD": ""})
    assert interpolate("${A:-http://h:${B:-1}/api}", {}) == "http://h:1/api"
    assert interpolate("${A:-http://h:${B:-1}/api}", {"B": "2"}) == "http://h:2/api"
    assert interpolate("$${A} ${A:+x}", {"A": "v"}) == "${A} x"
    assert published_ports({"ports": ["4200:4200", "1.2.3.4:1:2/tcp", "[::1]:3:4"]}, {}) == [
        ("", "4200", "4200"), ("1.2.3.4", "1", "2"), ("::1", "3", "4")]
    with pytest.raises(AssertionError):
        version_tuple("alpine")
    assert version_tuple("14.8-alpine") < (14, 9) <= version_tuple("16")
