"""The rules of ssl/'s rooms (README, "Layout"), read from the code itself: the top level holds
the commands and the torch-free shared modules only; a command never imports a command; the
losses import nothing of the trainer; rooms import downwards only; the stock-PyTorch rooms run
without scikit-learn, scipy, matplotlib, pandas or the geo stack. Every list of frameworks is the
registry's."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SSL = REPO / "ssl"
COMMANDS = {"train", "evaluate", "reproduce", "embed", "habitats", "labelling_payoff", "bench",
            "export"}
SHARED = {"contract", "palette", "labels", "flags", "files", "ifdo", "oserrors"}  # torch-free, shared
ROOMS = {"data", "objectives", "training", "evaluation", "mapping"}
STOCK_PYTORCH = {"torch", "torchvision", "numpy", "pyarrow", "PIL", "tqdm"}
STDLIB = set(sys.stdlib_module_names) | {"__future__"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SSL).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imports(path: Path) -> tuple[set[str], set[str]]:
    """(modules of ssl/ that ``path`` imports, top-level names of the other imports); imports
    inside functions count too: a lazy import fails on a box that lacks it all the same."""
    tree = ast.parse(path.read_text(), str(path))
    here = module_name(path).split(".") if module_name(path) else []
    package = here if path.name == "__init__.py" else here[:-1]
    own, other = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            other |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                other.add(node.module.split(".")[0])
                continue
            base = package[: len(package) - (node.level - 1)]
            target = [*base, *(node.module.split(".") if node.module else [])]
            for alias in node.names:  # `from . import x` names a module when x is one
                sub = [*target, alias.name]
                is_module = (SSL.joinpath(*sub).with_suffix(".py").exists()
                             or (SSL.joinpath(*sub) / "__init__.py").exists())
                own.add(".".join(sub if is_module else target))
    own.discard("")
    return own, other


MODULES = {module_name(p): p for p in sorted(SSL.rglob("*.py"))}
GRAPH = {name: imports(path) for name, path in MODULES.items()}


def room(name: str) -> str:
    return name.split(".")[0]


def closure(start: set[str]) -> set[str]:
    seen, todo = set(), list(start)
    while todo:
        m = todo.pop()
        if m in seen or m not in GRAPH:
            continue
        seen.add(m)
        todo += GRAPH[m][0]
        parts = m.split(".")  # importing a.b runs a/__init__ first
        todo += [".".join(parts[:i]) for i in range(1, len(parts))]
    return seen


def test_the_top_level_holds_only_commands_and_shared_modules():
    top = {p.stem for p in SSL.glob("*.py")} - {"__init__"}
    assert top == COMMANDS | SHARED, top ^ (COMMANDS | SHARED)
    folders = {p.name for p in SSL.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert folders == ROOMS
    for name in COMMANDS:
        assert 'if __name__ == "__main__":' in MODULES[name].read_text(), name


def test_shared_modules_are_torch_free():
    for name in SHARED:
        own, other = GRAPH[name]
        # tqdm only where its absence is handled (flags.progress_bar falls back to no bar),
        # yaml too (labels: a YAML iFDO without PyYAML is one message; test_labels checks it)
        assert other - STDLIB <= {"numpy", "pyarrow", "tqdm", "yaml"}, (name, other - STDLIB)
        assert {room(m) for m in own} <= SHARED, (name, own)


def test_a_command_never_imports_a_command():
    for name in COMMANDS:
        reached = closure(GRAPH[name][0])
        assert not reached & (COMMANDS - {name}), (name, reached & COMMANDS)


def test_the_losses_import_nothing_of_the_trainer():
    for name, (own, other) in GRAPH.items():
        if room(name) != "objectives":
            continue
        assert {room(m) for m in own} <= {"objectives"}, (name, own)
        assert other - STDLIB <= {"torch", "numpy"}, (name, other - STDLIB)


@pytest.mark.parametrize("lower, forbidden", [
    ("data", {"training", "evaluation", "mapping", "objectives"}),
    ("objectives", {"data", "training", "evaluation", "mapping"}),
    ("training", {"evaluation", "mapping"}),
    ("evaluation", {"mapping"}),
    ("mapping", {"training", "evaluation"}),
])
def test_rooms_import_downwards_only(lower, forbidden):
    for name, (own, _) in GRAPH.items():
        if room(name) == lower:
            bad = {m for m in closure(own) if room(m) in forbidden | COMMANDS}
            assert not bad, (name, bad)


def test_the_stock_pytorch_rooms_need_nothing_more():
    start = {n for n in MODULES if room(n) in {"data", "objectives", "training"}}
    start |= {"train", "embed", "bench", "export"}
    for name in closure(start):
        extra = GRAPH[name][1] - STDLIB - STOCK_PYTORCH
        assert not extra, f"ssl/{MODULES[name].relative_to(SSL)} imports {sorted(extra)}"


def test_the_stock_pytorch_rooms_import_with_the_rest_blocked():
    """The same rule, run: with scikit-learn, scipy, matplotlib, pandas, the geo stack, tqdm
    and tensorboard made unimportable, every module of data/, objectives/ and training/ and
    the train, embed, bench and export commands import."""
    blocked = ["sklearn", "scipy", "matplotlib", "pandas", "geopandas", "shapely", "pyproj",
               "pyogrio", "prefect", "tqdm", "tensorboard", "timm"]
    names = sorted(n for n in MODULES if room(n) in {"data", "objectives", "training"} and n)
    code = ("import sys\n"
            f"for m in {blocked!r}: sys.modules[m] = None\n"
            "import importlib\n"
            f"for m in {['ssl.' + n for n in [*names, 'train', 'embed', 'bench', 'export']]!r}:\n"
            "    importlib.import_module(m)\n"
            "print('ok')\n")
    res = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                         text=True, timeout=300)
    assert res.returncode == 0 and res.stdout.strip() == "ok", res.stderr[-2000:]


def test_every_list_of_frameworks_is_the_registry():
    from seafloor_ssl import reproduce
    from seafloor_ssl.training.frameworks import ALIASES, BASELINE, FRAMEWORKS, REGISTRY
    from seafloor_ssl.training.run import build_parser

    assert FRAMEWORKS == tuple(REGISTRY) and BASELINE in REGISTRY
    choices = next(a.choices for a in build_parser()._actions if a.dest == "objective")
    assert set(choices) == set(REGISTRY) | set(ALIASES) | {"sp", "csp"}
    assert set(reproduce.FRAMEWORKS) == set(REGISTRY) - {BASELINE}
    assert {n.split("+")[0] for n in reproduce.ALL_FRAMEWORK_CONFIGS} == set(reproduce.FRAMEWORKS)
    # the README's framework table (the one headed "| `--objective` | what it optimises")
    text = (REPO / "README.md").read_text()
    table = text[text.index("| `--objective` | what it optimises"):].split("\n\n")[0]
    rows = re.findall(r"^\| `([a-z][a-z0-9_]*)` \|", table, flags=re.M)
    assert rows == list(REGISTRY), rows
