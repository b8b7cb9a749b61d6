"""benchmarks/gpu_check.sh, dry-run on the CPU at its tiny sizes (the GPU run: BENCHMARKS.md):
every step runs the project's real commands, so the check keeps working as the trainer changes."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.build import build
from pipeline.catalog import load_catalog
from pipeline.synth import SynthConfig, generate

REPO = Path(__file__).resolve().parents[1]
CHECK = REPO / "benchmarks" / "gpu_check.sh"


def _module():
    spec = importlib.util.spec_from_file_location("gpu_check", REPO / "benchmarks" /
                                                  "gpu_check.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _check(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(CHECK), *argv], cwd=REPO, capture_output=True, text=True,
                          timeout=900, env={**os.environ, "PYTHON": sys.executable})


@pytest.fixture(scope="module")
def pairs(tmp_path_factory) -> Path:
    site = tmp_path_factory.mktemp("gpu-check") / "site"
    generate(SynthConfig(out=site, dives=2, images_per_dive=40, seed=3, faults=False, workers=2))
    build(load_catalog(site / "catalog.yaml"), workers=2, log=lambda *_: None)
    return site / "manifests" / "pairs.parquet"


def test_the_tiny_dry_run_passes_every_step(pairs, tmp_path):
    out = tmp_path / "check"
    res = _check("--out", str(out), "--manifest", str(pairs), "--device", "cpu", "--tiny")
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    got = json.loads((out / "gpu_check.json").read_text())
    assert got["failed"] == [] and got["size"] == "tiny"
    assert got["environment"]["device"] == "cpu" and got["environment"]["torch"]
    dec = got["decode"]
    assert dec["images"] == 64 and dec["cpu_img_s"] > 0 and dec["gpu"].startswith("not run")
    (bench,) = got["bench"]
    assert [r["mode"] for r in bench["rows"]] == ["eager"]
    assert 0 < bench["rows"][0]["ratio"] and bench["rows"][0]["peak_memory_gib"] is None
    names = [r["objective"] for r in got["objectives"]]
    assert names == [n for n, _ in _module().OBJECTIVES]
    for r in [*got["objectives"], got["ddp"]]:
        assert r["finite"] and math.isfinite(r["loss"]), r
    assert got["ddp"]["launched"] and got["ddp"]["backend"] == "gloo"
    assert got["ddp"]["process_group"]  # one process under torchrun: a real process group
    assert got["embed_evaluate"]["embed"]["ok"] and got["embed_evaluate"]["evaluate"]["ok"]
    assert (out / "embeddings.parquet").is_file() and (out / "eval" / "metrics.json").is_file()
    md = (out / "gpu_check.md").read_text()
    assert "**Every step passed.**" in md and "| dino |" in md and "torchrun (gloo)" in md


def test_failures_are_named_and_arguments_refused(tmp_path):
    gc = _module()
    ok = {"objective": "simclr", "loss": 4.1, "finite": True}
    res = {"environment": {}, "decode": {"max_abs_diff": 1, "max_abs_diff_concurrent": 9},
           "bench": [{"backbone": "resnet50", "image_size": 224, "error": "OOM"}],
           "objectives": [ok, {"objective": "dino", "loss": float("nan"), "finite": False},
                          {"objective": "csp", "error": "exit status 2"}],
           "ddp": {"loss": 1.0, "finite": True},
           "embed_evaluate": {"embed": {"ok": True}, "evaluate": {"ok": False, "error": "x"}}}
    assert gc.failures(res) == ["decode under concurrent kernels", "bench resnet50 224 px",
                                "train dino", "train csp", "evaluate"]
    res = _check("--out", str(tmp_path / "o"), "--manifest", str(tmp_path / "none.parquet"))
    assert res.returncode == 2 and "--manifest" in res.stderr and "not found" in res.stderr
    assert "Traceback" not in res.stderr
