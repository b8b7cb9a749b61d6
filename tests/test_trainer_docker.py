"""docker/trainer.Dockerfile, validated statically (no Docker engine here)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from test_docker import dockerfile_instructions, dockerfile_problems

REPO = Path(__file__).resolve().parents[1]
TRAINER = REPO / "docker" / "trainer.Dockerfile"


def instructions() -> list[tuple[str, str]]:
    return dockerfile_instructions(TRAINER.read_text())


def test_trainer_dockerfile_is_valid_and_copies_existing_paths():
    problems = [p for p in dockerfile_problems(TRAINER.read_text(), REPO)
                if "constraints" not in p]  # the base image pins torch; no project install
    assert problems == []


def test_trainer_image_is_an_official_pytorch_cuda_image():
    text = TRAINER.read_text()
    base = re.search(r"ARG BASE_IMAGE=(\S+)", text).group(1)
    assert base.startswith("pytorch/pytorch:") and "cuda" in base and "runtime" in base
    assert ("FROM", "${BASE_IMAGE}") in instructions()


def test_trainer_image_holds_the_trainer_and_no_pipeline():
    ins = instructions()
    copies = [args.split()[0] for op, args in ins if op == "COPY"]
    assert copies == ["ssl/"]
    installs = " ".join(args for op, args in ins if op == "RUN" and "pip install" in args)
    for heavy in ("prefect", "-e ."):
        assert heavy not in installs
    for need in ("pyarrow", "pillow", "numpy"):
        assert need in installs
    assert ("ENTRYPOINT", '["python", "-m", "ssl.train"]') in ins
    assert ("WORKDIR", "/app") in ins


# import name -> the distribution that provides it
DISTRIBUTIONS = {"PIL": "pillow", "sklearn": "scikit-learn", "numpy": "numpy",
                 "pyarrow": "pyarrow", "matplotlib": "matplotlib", "tqdm": "tqdm",
                 "geopandas": "geopandas", "shapely": "shapely", "pyproj": "pyproj",
                 "yaml": "pyyaml"}
BASE_IMAGE_HAS = {"torch", "torchvision"}  # what the official PyTorch image brings
# installed along with a distribution the image installs (never installed on its own)
BROUGHT_BY = {"threadpoolctl": "scikit-learn", "scipy": "scikit-learn",
              "pandas": "geopandas", "pyogrio": "geopandas"}
GEO_STACK = {"geopandas", "shapely", "pyproj", "pyogrio", "pandas"}


def _installed() -> set[str]:
    """Distribution names in the Dockerfile's pip install lines (without version specs)."""
    text = " ".join(args for op, args in instructions() if op == "RUN" and "pip install" in args)
    names = set()
    for quoted in re.findall(r'"([^"]+)"', text):  # the Dockerfile quotes every requirement
        names.add(re.split(r"[<>=!~\[ ]", quoted, maxsplit=1)[0].lower())
    return names


def _imported(path: Path) -> set[str]:
    """The top-level names of the absolute imports in ``path``, at any depth (a lazy import
    fails in the image all the same); relative imports are the project's own."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_trainer_imports_only_what_the_image_installs():
    """Every module under ssl/ (trainer and evaluation) imports only the standard library, what
    the base image brings and what the Dockerfile installs; nothing is exempt."""
    import sys

    installed = _installed()
    assert {"scikit-learn", "matplotlib", "pyarrow", "pillow", "numpy"} <= installed, installed
    stdlib = set(sys.stdlib_module_names) | {"__future__"}
    for path in sorted((REPO / "ssl").rglob("*.py")):
        for top in _imported(path):
            if top in stdlib or top in BASE_IMAGE_HAS:
                continue
            dist = DISTRIBUTIONS.get(top) or BROUGHT_BY.get(top)
            assert dist in installed, f"{path.relative_to(REPO)}: imports {top}, which the " \
                                      "trainer image does not install"


def test_the_image_checks_that_evaluation_and_habitat_mapping_start():
    runs = [args for op, args in instructions() if op == "RUN"]
    for tool in ("ssl.evaluate", "ssl.embed", "ssl.habitats"):
        assert any(f"{tool} --help" in r for r in runs), tool


def test_only_mapping_imports_the_geo_stack():
    """The geo stack is habitat mapping's (GIS formats): training, data and embedding never
    import it, so they run where it is not installed."""
    for path in sorted((REPO / "ssl").rglob("*.py")):
        rel = path.relative_to(REPO / "ssl").as_posix()
        if rel.startswith("mapping/"):
            continue
        assert not _imported(path) & GEO_STACK, f"ssl/{rel}: {_imported(path) & GEO_STACK}"
