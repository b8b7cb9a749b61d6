"""`make reproduce` in miniature: every configuration trained and evaluated on a mini-survey,
and the report's claims table computed from the measured numbers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from seafloor_ssl.evaluation.stats import combine, judge
from seafloor_ssl.reproduce import (
    BASELINES,
    CSP_LOSSES,
    DISCUSSION_MARK,
    IMAGE_CONFIGS,
    PRESETS,
    SECTION_MARKS,
    claims,
    main,
    preserved_discussion,
)

from pipeline.build import build
from pipeline.catalog import load_catalog
from pipeline.synth import SynthConfig, generate


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """A mini-survey of two dives and its pairs at a second radius (r2/), shared by the
    reproductions below."""
    top = tmp_path_factory.mktemp("reproduce")
    root = top / "site"
    generate(SynthConfig(out=root, dives=2, images_per_dive=48, seed=11, faults=False,
                         workers=2))
    build(load_catalog(root / "catalog.yaml"), workers=2, log=lambda *_: None)
    # the r_loc sweep: another radius from the same ingest
    build(load_catalog(root / "catalog.yaml"), out=top / "r2", r_loc_m=2.0,
          cache_from=root / "manifests", log=lambda *_: None)
    return top


@pytest.mark.slow
def test_smoke_reproduction_writes_the_table(site, tmp_path):
    root = site / "site"
    report = tmp_path / "REPRODUCTION.md"
    # an earlier reproduction's report (its heading: a file it wrote), discussion written by hand
    report.write_text("# Reproduction: does location help?\n\nold table\n\n## Discussion\n\n"
                      "Kept words.\n")
    code = main(["--manifest", str(root / "manifests" / "pairs.parquet"), "--preset", "smoke",
                 "--steps", "6", "--out", str(tmp_path / "runs"), "--report", str(report),
                 "--device", "cpu", "--workers", "0", "--frameworks", "byol",
                 "--sweep", f"2={site / 'r2' / 'pairs.parquet'}"])
    assert code == 0
    text = report.read_text()
    for name in [*IMAGE_CONFIGS, "byol", "byol+location"]:  # --frameworks: the same path
        assert f"| {name} |" in text
    assert "byol+location − byol, macro-F1 at 128 dims" in text
    for loss in CSP_LOSSES:
        assert f"| {loss} |" in text
    for claim in ("arXiv 2509.06660", "Yamada et al. 2022", "ICML 2023", "arXiv 2605.09963"):
        assert claim in text
    assert "n/a" not in text.split("## The papers' claims")[0], text
    res = json.loads((tmp_path / "runs" / "reproduce.json").read_text())
    assert set(res["evals"]) == (set(IMAGE_CONFIGS) | {f"csp-{x}" for x in CSP_LOSSES}
                                 | set(BASELINES) | {"byol", "byol+location"})
    for name in BASELINES:
        assert f"| {name} |" in text
    assert "## GeoCLR and the positive radius r_loc" in text and "| 2 |" in text
    assert text.endswith("Kept words.\n") and "old table" not in text
    assert "cross-dive split (full)" in text


def _evals(values_by_seed: list[list[float]], spatial: float | None = None) -> list[dict]:
    """metrics.json of ssl.evaluate, one per training seed, with the same value for every
    probe row (only the pairing matters here)."""
    out = []
    for i, vals in enumerate(values_by_seed):
        rows = [{"features": f, "probe": "svm", "dims": d, "regime": "all",
                 "macro_f1": {"values": vals}, "accuracy": {"values": vals}}
                for f in ("image", "location") for d in ("128", "full")]
        sp = None if spatial is None else spatial + 0.01 * i
        out.append({"results": rows, "spatial_tasks": {"position_scale": {"r2_mean": sp},
                                                       "jigsaw": {"accuracy": sp}}})
    return out


def test_every_part_of_every_claim_is_judged_on_paired_differences():
    base = [[0.70, 0.72, 0.71], [0.69, 0.73, 0.70], [0.71, 0.70, 0.72]]
    gain = [[v + 0.05 + 0.002 * j for j, v in enumerate(r)] for r in base]
    noise = [[v + (0.01 if (i + j) % 2 else -0.01) for j, v in enumerate(r)]
             for i, r in enumerate(base)]
    ev = {"simclr": _evals(base, 0.30), "geoclr": _evals(gain, 0.30),
          "simclr+sp": _evals(base, 0.40), "geoclr+sp": _evals(base, 0.20),
          "csp-mc": _evals(gain), "csp-nce": _evals(noise), "csp-l2": _evals(base)}
    got = {claim: [(what, judge(p, sign)) for what, p, sign, _ in parts]
           for claim, parts in claims(ev)}
    assert [v for _, v in got["lrssl"]][:2] == ["reproduced", "reproduced"]
    # the same gain at 128 and at full width: "largest at 128 dims" is not shown
    assert got["lrssl"][2][1] == "not shown"
    assert combine([v for _, v in got["lrssl"]]) == "not shown"
    assert got["geoclr"] == [(got["geoclr"][0][0], "reproduced")]
    assert [v for _, v in got["csp"]] == ["reproduced", "reproduced"]
    sp = dict(got["sp"])
    assert sp["simclr+sp − simclr, position/scale R²"] == "reproduced"
    assert sp["geoclr+sp − geoclr, jigsaw accuracy"] == "contradicted"
    assert combine(list(sp.values())) == "contradicted"  # all four parts judged


def test_regeneration_keeps_the_written_discussion():
    old = "# table\n\n| a |\n\n## Discussion\n\nWhat we saw.\n"
    kept = preserved_discussion(old)
    assert kept.startswith(DISCUSSION_MARK) and kept.endswith("What we saw.\n")
    again = preserved_discussion("# new table\n\n" + kept)
    assert again == kept
    assert preserved_discussion("# table only\n") == ""

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


REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_make_reproduce_gpu_dry_runs_the_gpu_preset_into_its_section(site, tmp_path):
    """`make reproduce-gpu` as the GPU machine runs it, at --tiny sizes on the CPU: the preset's
    runs and seeds, the claims it can judge, its evaluations run as processes beside the training,
    its section of the report written in place of the old one, the rest of the report kept."""
    report = tmp_path / "REPRODUCTION.md"
    begin, end = SECTION_MARKS["gpu"]
    report.write_text(f"# CPU table\n\nKept above.\n\n{begin}\nnot yet measured\n{end}\n\n"
                      "## Discussion\n\nKept below.\n")
    manifest = site / "site" / "manifests" / "pairs.parquet"

    def make(out: Path) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["make", "--no-print-directory", "reproduce-gpu", f"RUN_PY={sys.executable}",
             f"GPU_MANIFEST={manifest}", f"GPU_OUT={out}", f"GPU_REPORT={report}",
             "GPU_ARGS=--tiny --device cpu --workers 0"], cwd=REPO, capture_output=True,
            text=True, timeout=1200, env={**os.environ, "PYTHONPATH": str(REPO)})

    res = make(tmp_path / "runs")
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "started beside the training" in res.stdout
    text = report.read_text()
    assert text.startswith("# CPU table\n\nKept above.\n") and text.endswith("Kept below.\n")
    assert "not yet measured" not in text and text.count(begin) == text.count(end) == 1
    section = text[text.index(begin):text.index(end)]
    assert "## Measured on CPU: `make reproduce-gpu`" in section and "gpu (--tiny)" in section
    preset = PRESETS["gpu"]
    trained = [*preset["configs"], *(f"csp-{loss}" for loss in CSP_LOSSES)]
    for name in [*BASELINES, *preset["configs"], *CSP_LOSSES]:
        assert f"| {name} |" in section
    assert "| simclr+sp |" not in section and "cross-dive" not in section
    assert "n/a" not in section, section  # every claim the preset trains for is judged
    assert "geoclr+sp − geoclr, jigsaw accuracy" in section
    assert "simclr+sp − simclr" not in section
    res_json = json.loads((tmp_path / "runs" / "reproduce.json").read_text())
    assert res_json["config"]["train_seeds"] == preset["train_seeds"] == [0, 1, 2]
    assert set(res_json["evals"]) == set(BASELINES) | set(trained)
    assert all(len(v) == 3 for v in res_json["evals"].values())
    timed = res_json["timings"]
    assert {f"train {n} seed {s}" for n in trained for s in (0, 1, 2)} <= set(timed)
    assert all(v >= 0 for v in timed.values())
