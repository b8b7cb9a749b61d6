"""docker/trainer.Dockerfile, validated statically (no Docker engine here)."""

from __future__ import annotations

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


def test_trainer_image_holds_the_trainer_and_nothing_of_the_geo_stack():
    ins = instructions()
    copies = [args.split()[0] for op, args in ins if op == "COPY"]
    assert copies == ["ssl/"]
    installs = " ".join(args for op, args in ins if op == "RUN" and "pip install" in args)
    for heavy in ("geopandas", "pyproj", "prefect", "shapely", "-e ."):
        assert heavy not in installs
    for need in ("pyarrow", "pillow", "numpy"):
        assert need in installs
    assert ("ENTRYPOINT", '["python", "-m", "ssl.train"]') in ins
    assert ("WORKDIR", "/app") in ins


def test_trainer_imports_only_what_the_image_has():
    """Every module under ssl/ imports only torch, torchvision, numpy, pyarrow, PIL and the
    standard library (plus optional tensorboard/tqdm/sklearn/matplotlib guarded at use)."""
    import sys

    allowed = {"torch", "torchvision", "numpy", "pyarrow", "PIL", "__future__"}
    optional = {"sklearn", "matplotlib", "tqdm", "threadpoolctl"}  # evaluation only
    stdlib = set(sys.stdlib_module_names)
    for path in sorted((REPO / "ssl").rglob("*.py")):
        for line in path.read_text().splitlines():
            m = re.match(r"\s*(?:from|import)\s+([A-Za-z_][\w]*)", line)
            if not m or line.lstrip().startswith("from ."):
                continue
            top = m.group(1)
            assert top in allowed | optional | stdlib, f"{path.name}: imports {top}"
