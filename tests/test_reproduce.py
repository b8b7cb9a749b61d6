"""`make reproduce` in miniature: every configuration trained and evaluated on a mini-survey,
and the report's claims table computed from the measured numbers."""

from __future__ import annotations

import json

import pytest
from seafloor_ssl.reproduce import CSP_LOSSES, IMAGE_CONFIGS, _delta, main, verdict

from pipeline.build import build
from pipeline.catalog import load_catalog
from pipeline.synth import SynthConfig, generate


@pytest.mark.slow
def test_smoke_reproduction_writes_the_table(tmp_path):
    root = tmp_path / "site"
    generate(SynthConfig(out=root, dives=2, images_per_dive=48, seed=11, faults=False,
                         workers=2))
    build(load_catalog(root / "catalog.yaml"), workers=2, log=lambda *_: None)
    report = tmp_path / "REPRODUCTION.md"
    code = main(["--manifest", str(root / "manifests" / "pairs.parquet"), "--preset", "smoke",
                 "--steps", "6", "--out", str(tmp_path / "runs"), "--report", str(report),
                 "--device", "cpu", "--workers", "0"])
    assert code == 0
    text = report.read_text()
    for name in IMAGE_CONFIGS:
        assert f"| {name} |" in text
    for loss in CSP_LOSSES:
        assert f"| {loss} |" in text
    for claim in ("arXiv 2509.06660", "Yamada et al. 2022", "ICML 2023", "arXiv 2605.09963"):
        assert claim in text
    assert "n/a" not in text.split("## The papers' claims")[0], text
    res = json.loads((tmp_path / "runs" / "reproduce.json").read_text())
    assert set(res["evals"]) == set(IMAGE_CONFIGS) | {f"csp-{x}" for x in CSP_LOSSES}


def test_verdicts_follow_the_numbers():
    assert verdict(_delta([0.8, 0.82, 0.81], [0.7, 0.71, 0.69])).startswith("reproduced")
    assert verdict(_delta([0.71, 0.75, 0.67], [0.70, 0.74, 0.66])).startswith("same direction")
    assert verdict(_delta([0.6, 0.61], [0.7, 0.72])).startswith("not reproduced")
    assert verdict(None) == "not measured"


def test_a_previous_reproduction_is_refused_before_anything_is_trained(tmp_path, capsys):
    runs = tmp_path / "runs"
    (runs / "geoclr-s0").mkdir(parents=True)
    (runs / "geoclr-s0" / "last.pt").write_bytes(b"a previous run")
    code = main(["--manifest", str(tmp_path / "no-such.parquet"), "--preset", "smoke",
                 "--out", str(runs), "--report", str(tmp_path / "R.md"), "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 2 and "already holds a reproduction" in err and "geoclr-s0/" in err, err
    assert "--overwrite" in err and "new --out" in err
    assert (runs / "geoclr-s0" / "last.pt").read_bytes() == b"a previous run"
    assert sorted(p.name for p in runs.iterdir()) == ["geoclr-s0"]
    assert not (tmp_path / "R.md").exists()
