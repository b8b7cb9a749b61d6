"""The builder never loses a user's data: kills at every write, damaged outputs, overlapping
and foreign output folders, two catalogs on one folder, folders of an earlier builder."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from ssl.data.manifest import load_manifest

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from surveys import copy_survey

from pipeline import schema
from pipeline.build import build
from pipeline.catalog import load_catalog
from pipeline.manifest import read_pairs
from pipeline.output import MARKER, OutputRefused
from pipeline.synth import SynthConfig, generate

REPO = Path(__file__).resolve().parents[1]
QUIET = {"workers": 1, "log": lambda *_: None}


@pytest.fixture(scope="module")
def survey(tmp_path_factory):
    root = tmp_path_factory.mktemp("safe") / "site"
    generate(SynthConfig(out=root, dives=3, images_per_dive=30, seed=5, faults=False, workers=2))
    return root


def _tree_digest(root: Path, skip: Path | None = None) -> dict[str, str]:
    """sha256 of every file under root (the survey's inputs), optionally without one folder."""
    out = {}
    for p in sorted(root.rglob("*")):
        if skip is not None and (p == skip or skip in p.parents):
            continue
        if p.is_file() and not p.is_symlink():
            out[p.relative_to(root).as_posix()] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def _set_digest(pairs_path: Path) -> tuple[int, int, str]:
    """Rows of locations and pairs, and a hash of the sorted pairs as image ids (what a clean
    build of the same inputs must reproduce)."""
    pairs, locs = read_pairs(pairs_path)
    ids = np.asarray(locs.sort_by("idx").column("image_id").to_pylist(), dtype=object)
    a, p = pairs.column("anchor").to_numpy(), pairs.column("positive").to_numpy()
    keys = sorted("\t".join(sorted((ids[i], ids[j]))) for i, j in zip(a, p, strict=True))
    return locs.num_rows, pairs.num_rows, hashlib.sha256("\n".join(keys).encode()).hexdigest()


def _readers_agree(out: Path) -> tuple[int, int, str]:
    """Both readers load one consistent set through <output>/pairs.parquet."""
    digest = _set_digest(out / "pairs.parquet")
    m = load_manifest(out / "pairs.parquet")
    assert m.n == digest[0] and len(m.anchor) == digest[1]
    for store in m.stores.values():  # images/<dive>.arrow, memory-mapped
        pa.ipc.open_file(pa.memory_map(str(store))).read_all().column("image_id")
    for dive in m.stores:
        pq.read_table(m.folder / schema.shard_name(dive), columns=["image_id"])
    return digest


def _edit_catalog(path: Path, **changes) -> None:
    doc = yaml.safe_load(path.read_text())
    doc.update(changes)
    path.write_text(yaml.safe_dump(doc, sort_keys=False))


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipeline", "build", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=300)


def test_kill_at_every_write_of_a_build_leaves_a_consistent_set_and_the_next_build_repairs(
        survey, tmp_path):
    site = copy_survey(survey, tmp_path / "site")
    cat = load_catalog(site / "catalog.yaml")
    build(cat, **QUIET)
    old = _readers_agree(cat.output)
    # the change every kill interrupts: a new dive (ingest + cache) and a new publish
    shutil.copytree(site / "dive01", site / "dive05")
    clean_site = copy_survey(site, tmp_path / "clean")
    clean = load_catalog(clean_site / "catalog.yaml")
    build(clean, **QUIET)
    new = _readers_agree(clean.output)
    assert new != old
    inputs = _tree_digest(site, skip=cat.output)
    # a pristine copy of the output before the interrupted build, restored before each kill
    base = tmp_path / "base-output"
    shutil.copytree(cat.output, base, symlinks=True)

    script = str(REPO / "tests" / "crash_build.py")
    dry = subprocess.run([sys.executable, script, str(cat.source), "0"], capture_output=True,
                         text=True, timeout=300)
    assert dry.returncode == 0, dry.stderr
    total = int(dry.stdout.split("WRITES")[1])
    assert total > 20  # ingest, generation, links and pruning all write
    seen = []
    for n in range(1, total + 1):
        shutil.rmtree(cat.output)
        shutil.copytree(base, cat.output, symlinks=True)
        res = subprocess.run([sys.executable, script, str(cat.source), str(n)],
                             capture_output=True, text=True, timeout=300)
        assert res.returncode == -signal.SIGKILL, (n, res.stderr[-2000:])
        seen.append(res.stderr.strip().splitlines()[-1])
        # whatever instant the kill hit, readers see the old set or the new one, never a mix
        assert _readers_agree(cat.output) in (old, new), seen[-1]
        build(cat, **QUIET)
        assert _readers_agree(cat.output) == new, seen[-1]
        # nothing of the killed build is left beyond the two kept generations
        gens = sorted(p.name for p in (cat.output / "generations").iterdir())
        assert len(gens) <= 2, (seen[-1], gens)
        assert not list(cat.output.glob(".*.tmp")), seen[-1]
    assert any("os.replace" in s or "replace" in s for s in seen)
    assert _tree_digest(site, skip=cat.output) == inputs


def test_output_overlapping_the_survey_is_refused_and_nothing_is_touched(survey, tmp_path):
    """The layout that once lost a survey: dives under dives/, output '.', templates from root."""
    site = tmp_path / "nested"
    (site / "dives").mkdir(parents=True)
    for d in ("dive01", "dive02", "dive03"):
        shutil.copytree(survey / d, site / "dives" / d)
    shutil.copy(survey / "labels.csv", site / "labels.csv")
    doc = yaml.safe_load((survey / "catalog.yaml").read_text())
    doc.update(dives="dives/*", images="dives/{dive}/images/*.jpg", output=".",
               nav=[{**n, "path": "dives/" + n["path"]} for n in doc["nav"]])
    (site / "catalog.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    before = _tree_digest(site)
    for output in (".", "dives", "dives/dive02", "dives/dive02/out", ".."):
        _edit_catalog(site / "catalog.yaml", output=output)
        before = _tree_digest(site)
        res = _cli("--catalog", str(site / "catalog.yaml"))
        assert res.returncode == 2, (output, res.stdout, res.stderr)
        assert "Traceback" not in res.stderr and "output folder" in res.stderr, res.stderr
        assert _tree_digest(site) == before, output
    # the same survey with an output of its own builds, and every input is still there
    _edit_catalog(site / "catalog.yaml", output="manifests")
    before = _tree_digest(site)
    res = _cli("--catalog", str(site / "catalog.yaml"))
    assert res.returncode == 0, res.stderr
    assert _tree_digest(site, skip=site / "manifests") == before
    assert _readers_agree(site / "manifests")[0] > 0
    # an image template that reaches into the output is refused too
    _edit_catalog(site / "catalog.yaml", output="dives/dive01/images")
    res = _cli("--catalog", str(site / "catalog.yaml"))
    assert res.returncode == 2 and "output folder" in res.stderr


def test_dive_glob_that_matches_the_output_does_not_ingest_it(survey, tmp_path):
    site = copy_survey(survey, tmp_path / "site")
    _edit_catalog(site / "catalog.yaml", dives="*", output="manifests")
    cat = load_catalog(site / "catalog.yaml")
    (site / "notes").mkdir()  # a plain folder: a dive without navigation, quarantined
    r1 = build(cat, **QUIET)
    r2 = build(cat, **QUIET)
    assert "manifests" not in r1["per_dive"] and r2["no_change"] is True


def test_foreign_output_folder_is_refused_and_left_intact(survey, tmp_path):
    out = tmp_path / "theirs"
    (out / "images").mkdir(parents=True)
    (out / "images" / "mine.parquet").write_bytes(b"PAR1 not ours")
    (out / ".draft.tmp-123").write_text("half a thesis")
    (out / "notes.txt").write_text("field notes")
    before = _tree_digest(out)
    res = _cli("--catalog", str(survey / "catalog.yaml"), "--out", str(out))
    assert res.returncode == 2 and "not empty" in res.stderr and "Traceback" not in res.stderr
    assert _tree_digest(out) == before and not (out / MARKER).exists()
    assert sorted(p.name for p in out.iterdir()) == [".draft.tmp-123", "images", "notes.txt"]
    # a file in place of the output folder
    res = _cli("--catalog", str(survey / "catalog.yaml"), "--out", str(out / "notes.txt"))
    assert res.returncode == 2 and "is a file" in res.stderr
    # an empty folder is fine, and a foreign file put there later is never removed
    empty = tmp_path / "empty"
    empty.mkdir()
    cat = load_catalog(survey / "catalog.yaml")
    build(cat, out=empty, **QUIET)
    (empty / "generations" / "keep-me.txt").write_text("mine")
    (empty / "cache" / "keep-me.txt").write_text("mine")
    build(cat, out=empty, full_rebuild=True, **QUIET)
    build(cat, out=empty, full_rebuild=True, **QUIET)
    assert (empty / "generations" / "keep-me.txt").read_text() == "mine"
    assert (empty / "cache" / "keep-me.txt").read_text() == "mine"
    # a user's file where the builder's link should be is refused, not overwritten
    os.unlink(empty / "quarantine.parquet")
    (empty / "quarantine.parquet").write_text("my own table")
    with pytest.raises(OutputRefused, match="did not write"):
        build(cat, out=empty, full_rebuild=True, **QUIET)
    assert (empty / "quarantine.parquet").read_text() == "my own table"


def test_two_catalogs_sharing_an_output_are_refused_naming_both(survey, tmp_path):
    a = copy_survey(survey, tmp_path / "alpha")
    b = copy_survey(survey, tmp_path / "beta")
    shared = tmp_path / "shared-manifests"
    for site in (a, b):
        _edit_catalog(site / "catalog.yaml", output=str(shared), name=site.name)
    ca, cb = load_catalog(a / "catalog.yaml"), load_catalog(b / "catalog.yaml")
    build(ca, **QUIET)
    digest = _readers_agree(shared)
    files = _tree_digest(shared)
    res = _cli("--catalog", str(cb.source))
    assert res.returncode == 2, res.stderr
    assert "'alpha'" in res.stderr and "'beta'" in res.stderr and "Traceback" not in res.stderr
    assert _tree_digest(shared) == files and _readers_agree(shared) == digest
    # the same name is not enough: a catalog of another survey (root) is refused as well
    _edit_catalog(b / "catalog.yaml", name="alpha")
    res = _cli("--catalog", str(cb.source))
    assert res.returncode == 2 and str(b) in res.stderr and str(a) in res.stderr, res.stderr
    assert _tree_digest(shared) == files
    assert build(ca, **QUIET)["no_change"] is True


def _damage_in_place(path: Path) -> None:
    """Overwrite bytes in the middle of the file, keeping its size."""
    size = path.stat().st_size
    with open(path, "r+b") as fh:
        fh.seek(size // 2)
        fh.write(b"\0" * min(64, size // 4))


def test_damaged_outputs_are_repaired_or_refused_never_accepted(survey, tmp_path):
    site = copy_survey(survey, tmp_path / "site")
    cat = load_catalog(site / "catalog.yaml")
    build(cat, **QUIET)
    good = _readers_agree(cat.output)
    out = cat.output
    cache_shard = next((out / "cache").glob("dive02/*/images.parquet"))
    damages = {
        "published shard": lambda: _damage_in_place(out / "images" / "dive01.parquet"),
        "cache shard": lambda: _damage_in_place(cache_shard),
        "published image store": lambda: _damage_in_place(out / "images" / "dive02.arrow"),
        "cache image store": lambda: next((out / "cache").glob("dive03/*/images.arrow")).unlink(),
        "cache table": lambda: next((out / "cache").glob("dive03/*/locations.parquet")).write_bytes(b""),
        "cache record": lambda: next((out / "cache").glob("dive01/*/done.json")).write_text("{"),
        "report.json": lambda: (out / "report.json").write_text("{ not json"),
        "pairs": lambda: _damage_in_place(out / "pairs.parquet"),
        "locations truncated": lambda: os.truncate(out / "locations.parquet", 100),
        "generation manifest": lambda: (out / "current" / "manifest.json").write_text("[]"),
        "missing link": lambda: os.unlink(out / "locations.parquet"),
        "mismatched pairs": lambda: pq.write_table(
            pq.read_table(out / "pairs.parquet").slice(0, 10), out / "current" / "pairs.parquet"),
    }
    for what, damage in damages.items():
        damage()
        report = build(cat, **QUIET)
        assert report["no_change"] is False, what
        assert report["repaired"], what
        assert _readers_agree(out) == good, what
        assert build(cat, **QUIET)["no_change"] is True, what
    # a damaged report never blocks a full rebuild either
    (out / "report.json").write_text("{")
    assert build(cat, full_rebuild=True, **QUIET)["no_change"] is False
    assert _readers_agree(out) == good


def test_folder_of_an_earlier_builder_is_adopted_and_foreign_files_kept(survey, tmp_path):
    """Manifests as regular files, shards in images/, the cache in dives/<dive>/<fp16>/."""
    site = copy_survey(survey, tmp_path / "site")
    cat = load_catalog(site / "catalog.yaml")
    ref = tmp_path / "ref"
    build(cat, out=ref, **QUIET)
    good = _readers_agree(ref)
    legacy = cat.output
    (legacy / "images").mkdir(parents=True)
    for name in ("locations.parquet", "pairs.parquet", "quarantine.parquet"):
        shutil.copy(ref / "current" / name, legacy / name)
    report = json.loads((ref / "report.json").read_text())
    (legacy / "report.json").write_text(json.dumps(report))
    for dive, fp in report["state"]["dives"].items():
        shutil.copy(ref / "current" / "images" / f"{dive}.parquet", legacy / "images")
        entry = legacy / "dives" / dive / fp[:16]
        entry.mkdir(parents=True)
        for f in ("locations.parquet", "quarantine.parquet", "images.parquet"):
            shutil.copy(next((ref / "cache" / dive).glob(f"*/{f}")), entry / f)
        (entry / "summary.json").write_text("{}")
        (entry / "done").write_text(fp)
    (legacy / ".build.lock").write_text("")
    (legacy / "my-notes.txt").write_text("keep")
    (legacy / "images" / "extra.parquet").write_bytes(b"someone else's")
    r = build(cat, **QUIET)
    assert r["no_change"] is False and _readers_agree(legacy) == good
    assert (legacy / "my-notes.txt").read_text() == "keep"
    assert (legacy / "images" / "extra.parquet").read_bytes() == b"someone else's"
    assert not (legacy / "dives").exists()  # the old cache, removed by the old report's names
    assert sorted(p.name for p in (legacy / "images").iterdir()) == ["extra.parquet"]
    assert build(cat, **QUIET)["no_change"] is True
    # an earlier builder's folder of another catalog is refused
    _edit_catalog(site / "catalog.yaml", name="other")
    res = _cli("--catalog", str(site / "catalog.yaml"), "--out", str(ref))
    assert res.returncode == 2 and "'other'" in res.stderr


def test_a_reader_open_on_the_previous_generation_keeps_reading(survey, tmp_path):
    site = copy_survey(survey, tmp_path / "site")
    cat = load_catalog(site / "catalog.yaml")
    build(cat, **QUIET)
    m = load_manifest(cat.output / "pairs.parquet")
    build(cat, r_loc_m=3.0, **QUIET)  # a new generation; the old one is kept
    for dive, store in m.stores.items():
        assert pa.ipc.open_file(pa.memory_map(str(store))).read_all().num_rows > 0
        assert pq.read_table(m.folder / schema.shard_name(dive)).num_rows > 0
    assert m.locations_path.is_file()
    assert _set_digest(m.pairs_path.resolve())[0] == m.n


def test_synth_never_empties_a_folder_it_did_not_write(tmp_path):
    real = tmp_path / "real-survey"
    (real / "dive01" / "images").mkdir(parents=True)
    (real / "dive01" / "images" / "0001.jpg").write_bytes(b"a real image")
    res = subprocess.run([sys.executable, "-m", "pipeline.synth", "--out", str(real), "--dives", "1",
                          "--images-per-dive", "5"], cwd=REPO, capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 2 and "not empty" in res.stderr and "Traceback" not in res.stderr
    assert (real / "dive01" / "images" / "0001.jpg").read_bytes() == b"a real image"
    # its own folder is regenerated; a dive folder someone else added there is refused
    own = tmp_path / "own"
    generate(SynthConfig(out=own, dives=1, images_per_dive=5, workers=1))
    generate(SynthConfig(out=own, dives=1, images_per_dive=5, workers=1))
    (own / "dive02").mkdir()
    (own / "dive02" / "keep.txt").write_text("mine")
    with pytest.raises(ValueError, match="did not write"):
        generate(SynthConfig(out=own, dives=2, images_per_dive=5, workers=1))
    assert (own / "dive02" / "keep.txt").read_text() == "mine"
