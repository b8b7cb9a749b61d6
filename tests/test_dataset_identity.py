"""The manifest contract on the pipeline's side: the dataset identity in the pairs metadata
(stable across rebuilds that change nothing a trainer reads), the memory-mappable image files
images/<dive>.arrow, the schema version check of the pipeline's reader, and cache entries of
an earlier builder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from surveys import built_copy, copy_survey

from pipeline import schema
from pipeline.build import CACHE_FILES, ENTRY_STORE, ENTRY_SUMMARY, build
from pipeline.catalog import load_catalog
from pipeline.manifest import ManifestMismatch, file_sha256, read_metadata, read_pairs
from pipeline.output import ENTRY_DONE, ENTRY_FILES, finish_entry, write_json_atomic
from pipeline.synth import SynthConfig, generate

REPO = Path(__file__).resolve().parents[1]
QUIET = {"workers": 1, "log": lambda *_: None}
contract = schema.contract


@pytest.fixture(scope="module")
def survey(tmp_path_factory):
    root = tmp_path_factory.mktemp("identity") / "site"
    generate(SynthConfig(out=root, dives=2, images_per_dive=16, seed=7, faults=False,
                         workers=2))
    return root


@pytest.fixture
def site(survey, tmp_path):
    """A private copy of the survey, built once: (catalog, output folder)."""
    return built_copy(survey, tmp_path / "site")


def identity(out: Path) -> dict:
    return json.loads(read_metadata(out / "pairs.parquet")[schema.META_DATASET])


def created(out: Path) -> str:
    return read_metadata(out / "pairs.parquet")[schema.META_CREATED]


def test_pairs_metadata_records_identity_validation_and_the_contract_version(site):
    cat, out = site
    meta = read_metadata(out / "pairs.parquet")
    assert meta[schema.META_SCHEMA_VERSION] == contract.SCHEMA_VERSION == "2"
    assert meta[schema.META_BUILDER] == contract.BUILDER_VERSION == "0.2.0"
    assert meta[schema.META_IMAGE_VALIDATION] == "decode"
    for name in ("locations.parquet", "quarantine.parquet"):
        assert read_metadata(out / name)[schema.META_SCHEMA_VERSION] == "2"
    # the recorded identity is the one the tables beside it have
    pairs, locs = read_pairs(out / "pairs.parquet")
    locs = locs.sort_by("idx")
    dive = locs.column("dive").cast(pa.string()).to_pylist()
    shards = {}
    for d in sorted(set(dive)):
        t = pq.read_table(out / schema.shard_name(d))
        shards[d] = contract.shard_digest(t.column("image_id").to_pylist(),
                                          t.column("jpeg").to_pylist())
    xy = np.column_stack([locs.column("easting").to_numpy(), locs.column("northing").to_numpy()])
    expected = contract.dataset_identity(
        locs.column("image_id").to_pylist(), dive, xy, pairs.column("anchor").to_numpy(),
        pairs.column("positive").to_numpy(), json.loads(meta[schema.META_PAIR_POLICY]), shards)
    assert identity(out) == expected
    assert identity(out)["images"] == locs.num_rows and set(identity(out)["dives"]) == set(dive)


def test_full_rebuild_of_unchanged_inputs_keeps_the_identity(site):
    cat, out = site
    before, when = identity(out), created(out)
    time.sleep(1.1)  # created_utc has one-second resolution
    report = build(cat, full_rebuild=True, **QUIET)
    assert sorted(report["ingested"]) == sorted(before["dives"])  # every dive ingested again
    assert created(out) != when
    assert identity(out) == before


def test_changing_a_label_keeps_the_identity(site):
    cat, out = site
    before = identity(out)
    loc_sha = file_sha256(out / "locations.parquet")
    labels = cat.root / cat.labels
    lines = labels.read_text().splitlines()
    image_id, label = lines[1].split(",")
    lines[1] = f"{image_id},not-{label}"
    labels.write_text("\n".join(lines) + "\n")
    report = build(cat, **QUIET)
    assert report["no_change"] is False and report["ingested"] == []
    _, locs = read_pairs(out / "pairs.parquet")
    got = dict(zip(locs.column("image_id").to_pylist(), locs.column("label").to_pylist(),
                   strict=True))
    assert got[image_id] == f"not-{label}"
    assert file_sha256(out / "locations.parquet") != loc_sha
    assert identity(out) == before


def test_removing_an_image_or_changing_r_loc_changes_the_identity_and_says_how(site):
    cat, out = site
    old = identity(out)
    n2 = old["dives"]["dive02"]["images"]
    victim = sorted((cat.root / "dive02" / "images").glob("*.jpg"))[3]
    victim.unlink()
    build(cat, **QUIET)
    new = identity(out)
    assert new["digest"] != old["digest"]
    changes = contract.identity_changes(old, new)
    assert f"dive dive02: {n2} -> {n2 - 1} images" in changes, changes
    assert not any("dive01" in c for c in changes), changes
    # another pair radius: the same images, another policy
    build(cat, r_loc_m=3.0, **QUIET)
    radius = identity(out)
    assert radius["digest"] != new["digest"]
    changes = contract.identity_changes(new, radius)
    policy = [c for c in changes if c.startswith("pair policy:")]
    assert policy and "r_loc_m 5.0 -> 3.0" in policy[0], changes
    assert not any(c.startswith("dive ") for c in changes), changes


def test_published_image_store_is_memory_mappable_and_holds_the_shard_bytes(site):
    cat, out = site
    recorded = identity(out)["dives"]
    for dive in ("dive01", "dive02"):
        path = out / schema.store_name(dive)
        shard = pq.read_table(out / schema.shard_name(dive))
        with pa.memory_map(str(path)) as mm:
            whole = mm.read_buffer(mm.size())
            mm.seek(0)
            reader = pa.ipc.open_file(mm)
            assert reader.schema.remove_metadata().equals(schema.IMAGE_STORE)
            store = reader.read_all()
            # uncompressed: the JPEG bytes are read in place, inside the mapped file
            data = store.column("jpeg").chunk(0).buffers()[2]
            assert whole.address <= data.address < whole.address + whole.size
        assert store.num_rows == shard.num_rows > 0
        assert store.column("image_id").to_pylist() == shard.column("image_id").to_pylist()
        assert store.column("jpeg").to_pylist() == shard.column("jpeg").to_pylist()
        assert contract.shard_digest(store.column("image_id").to_pylist(),
                                     store.column("jpeg").to_pylist()) == recorded[dive]["shard"]
        # a hard link of the cache entry's file, recorded in the generation's manifest
        entry = next((out / "cache" / dive).iterdir())
        assert os.path.samefile(entry / ENTRY_STORE, path)
        manifest = json.loads((out / "current" / "manifest.json").read_text())
        files = json.loads((out / "current" / "files.json").read_text())["files"]
        assert schema.store_name(dive) in manifest["files"] and schema.store_name(dive) in files


def test_a_damaged_image_store_is_repaired(site):
    cat, out = site
    before = identity(out)
    store = out / schema.store_name("dive01")
    size = store.stat().st_size
    os.truncate(store, size // 2)  # the cache entry's file too: it is the same inode
    report = build(cat, **QUIET)
    assert report["no_change"] is False and report["repaired"]
    assert "dive01" in report["ingested"]
    assert identity(out) == before and store.stat().st_size == size
    assert build(cat, **QUIET)["no_change"] is True


def _make_old_entry(entry: Path, fingerprint: str) -> None:
    """Turn a cache entry into one builder 0.1.0 wrote: no images.arrow, no shard digest."""
    old_files = [n for n in CACHE_FILES if n != ENTRY_STORE]
    (entry / ENTRY_STORE).unlink()
    summary = json.loads((entry / ENTRY_SUMMARY).read_text())
    summary.pop("shard_digest")
    (entry / ENTRY_SUMMARY).write_text(json.dumps(summary))
    write_json_atomic({"files": sorted([*old_files, ENTRY_DONE])}, entry / ENTRY_FILES)
    finish_entry(entry, fingerprint, old_files)


def test_a_cache_entry_of_the_previous_builder_is_ingested_again(site):
    cat, out = site
    before = identity(out)
    entry = next((out / "cache" / "dive01").iterdir())
    fingerprint = json.loads((entry / ENTRY_DONE).read_text())["fingerprint"]
    _make_old_entry(entry, fingerprint)
    report = build(cat, **QUIET)
    assert report["no_change"] is False and report["ingested"] == ["dive01"]
    assert any("dive dive01" in r and "images.arrow" in r for r in report["repaired"]), \
        report["repaired"]
    assert (entry / ENTRY_STORE).is_file() and identity(out) == before
    assert build(cat, **QUIET)["no_change"] is True


def test_a_set_published_under_another_schema_version_is_republished(site):
    """Cache entries of this builder and a current set of an earlier one (a build killed
    between its ingests and its publish): the set is not taken for 'no change'."""
    cat, out = site
    gen = (out / "current").resolve()
    manifest = json.loads((gen / "manifest.json").read_text())
    manifest["state"]["schema_version"] = "1"
    (gen / "manifest.json").write_text(json.dumps(manifest))
    report = build(cat, **QUIET)
    assert report["no_change"] is False and report["ingested"] == []
    assert build(cat, **QUIET)["no_change"] is True


def _rewrite_metadata(path: Path, **changes: str) -> None:
    t = pq.read_table(path)
    meta = {**(t.schema.metadata or {}), **{k.encode(): v.encode() for k, v in changes.items()}}
    pq.write_table(t.replace_schema_metadata(meta), path)


def test_read_pairs_refuses_manifests_of_schema_1_naming_the_builder(site, tmp_path):
    cat, out = site
    for name in ("locations.parquet", "pairs.parquet"):
        (tmp_path / name).write_bytes((out / name).read_bytes())
    read_pairs(tmp_path / "pairs.parquet")  # the copies are fine as they are
    pairs = tmp_path / "pairs.parquet"
    _rewrite_metadata(pairs, schema_version="1", builder_version="0.1.0")
    with pytest.raises(ManifestMismatch, match=r"schema 1 \(written by builder 0\.1\.0\)") as info:
        read_pairs(pairs)
    assert "builder 0.2.0" in str(info.value) and str(pairs) in str(info.value)
    # a locations file of schema 1 under a pairs file of schema 2 is refused as well
    _rewrite_metadata(pairs, schema_version="2", builder_version="0.2.0")
    loc = tmp_path / "locations.parquet"
    _rewrite_metadata(loc, schema_version="1", builder_version="0.1.0")
    _rewrite_metadata(pairs, **{schema.META_LOCATIONS_SHA256: file_sha256(loc)})
    with pytest.raises(ManifestMismatch, match="builder 0.2.0") as info:
        read_pairs(pairs)
    assert str(loc) in str(info.value)


def test_pipeline_loads_the_contract_by_path_when_it_is_not_installed():
    code = """
import importlib.abc, sys
class NotInstalled(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "seafloor_ssl" or name.startswith("seafloor_ssl."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
sys.meta_path.insert(0, NotInstalled())
from pipeline import schema
print(schema.contract.__name__, schema.contract.__file__, schema.SCHEMA_VERSION)
print("torch" in sys.modules, "prefect" in sys.modules)
"""
    res = subprocess.run([sys.executable, "-c", code], cwd="/", capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=120)
    assert res.returncode == 0, res.stderr
    name, path, version = res.stdout.splitlines()[0].split()
    assert name != "seafloor_ssl.contract" and Path(path) == REPO / "ssl" / "contract.py"
    assert version == "2" and res.stdout.splitlines()[1] == "False False"


# ------------------------------------------------------- contract.identity_changes, by hand

POLICY = {"r_loc_m": 5.0, "r_min_m": 0.0, "cross_dive": True}
POSITIONS = {"a/1": (0.0, 1.0), "a/2": (2.0, 3.0), "a/3": (8.0, 9.0), "b/1": (4.0, 5.0),
             "b/2": (6.0, 7.0), "c/1": (10.0, 11.0)}


def _identity(ids=("a/1", "a/2", "b/1", "b/2"), xy=None, anchor=(0, 2), positive=(1, 3),
              policy=None, shards=None) -> dict:
    ids = list(ids)
    dive = [i.split("/")[0] for i in ids]
    xy = np.array([POSITIONS[i] for i in ids], dtype=np.float64) if xy is None else xy
    shards = {d: f"bytes-of-{d}" for d in sorted(set(dive))} if shards is None else shards
    return contract.dataset_identity(ids, dive, xy, np.array(anchor), np.array(positive),
                                     policy or POLICY, shards)


def test_identity_changes_is_empty_for_equal_identities():
    assert contract.identity_changes(_identity(), _identity()) == []
    # the digest depends on content, not on the order a dict was built in
    assert _identity(policy=dict(reversed(POLICY.items())))["digest"] == _identity()["digest"]


def test_identity_changes_names_dives_added_removed_and_resized():
    base = _identity()
    more = _identity(ids=("a/1", "a/2", "b/1", "b/2", "c/1"), anchor=(0, 2), positive=(1, 3))
    assert "dive(s) added: c (1 images)" in contract.identity_changes(base, more)
    assert "dive(s) removed: c (1 images)" in contract.identity_changes(more, base)
    fewer = _identity(ids=("a/1", "b/1", "b/2"), anchor=(1,), positive=(2,))
    changes = contract.identity_changes(base, fewer)
    assert "dive a: 2 -> 1 images" in changes and "pairs: 2 -> 1" in changes, changes
    assert not any(c.startswith("dive b") for c in changes), changes
    other = _identity(ids=("a/1", "a/3", "b/1", "b/2"))
    assert contract.identity_changes(base, other) == [
        "dive a: the same number of images (2) but other ones"]


def test_identity_changes_names_moved_positions_bytes_policy_pairs_and_order():
    base = _identity()
    xy = np.arange(8, dtype=np.float64).reshape(-1, 2)
    xy[3] += 0.01  # 1 cm: more than the 0.1 mm quantum
    assert contract.identity_changes(base, _identity(xy=xy)) == [
        "dive b: image positions moved (more than 0.1 mm)"]
    tiny = np.arange(8, dtype=np.float64).reshape(-1, 2) + 1e-6
    assert contract.identity_changes(base, _identity(xy=tiny)) == []
    shards = {"a": "bytes-of-a", "b": "other bytes"}
    assert contract.identity_changes(base, _identity(shards=shards)) == [
        "dive b: the image bytes in its shard changed"]
    assert contract.identity_changes(base, _identity(policy={**POLICY, "r_loc_m": 2.0})) == [
        "pair policy: r_loc_m 5.0 -> 2.0"]
    assert contract.identity_changes(base, _identity(anchor=(0, 1), positive=(2, 3))) == [
        "pairs: the same number (2) but other pairs"]
    swapped = _identity(ids=("a/2", "a/1", "b/1", "b/2"),
                        xy=np.array([[2.0, 3.0], [0.0, 1.0], [4.0, 5.0], [6.0, 7.0]]))
    assert contract.identity_changes(base, swapped) == ["the same images in another idx order"]
    assert "version" in contract.identity_changes(base, {**base, "version": 99,
                                                         "digest": "x"})[0]


def test_shard_digest_ignores_row_order_but_not_bytes_or_ids():
    ids, jpegs = ["a/1", "a/2"], [b"\xff\xd8one", b"\xff\xd8two"]
    d = contract.shard_digest(ids, jpegs)
    assert contract.shard_digest(ids[::-1], jpegs[::-1]) == d
    assert contract.shard_digest(ids, [jpegs[0], b"\xff\xd8TWO"]) != d
    assert contract.shard_digest(["a/1", "a/3"], jpegs) != d



def test_image_validation_is_recorded_for_header_only_and_navigation_only_catalogs(
        survey, tmp_path):
    nav_only = tmp_path / "nav-only"
    generate(SynthConfig(out=nav_only, dives=2, images_per_dive=30, nav_only=True,
                         formats=["oplab-camera-csv"]))
    cat = load_catalog(nav_only / "catalog.yaml")
    assert cat.images is None
    build(cat, **QUIET)
    meta = read_metadata(cat.output / "pairs.parquet")
    assert meta[schema.META_IMAGE_VALIDATION] == "none"
    empty = contract.shard_digest([], [])
    assert {d["shard"] for d in json.loads(meta[schema.META_DATASET])["dives"].values()} == {empty}
    for dive in ("dive01", "dive02"):  # the image files are there, and empty
        with pa.memory_map(str(cat.output / schema.store_name(dive))) as mm:
            assert pa.ipc.open_file(mm).read_all().num_rows == 0
    # headers only: the images are located but no bytes are written
    root = copy_survey(survey, tmp_path / "header")
    doc = yaml.safe_load((root / "catalog.yaml").read_text())
    doc["validate"] = "header"
    (root / "catalog.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    cat = load_catalog(root / "catalog.yaml")
    assert cat.validate_images == "header"
    build(cat, **QUIET)
    meta = read_metadata(cat.output / "pairs.parquet")
    assert meta[schema.META_IMAGE_VALIDATION] == "header"
    assert json.loads(meta[schema.META_DATASET])["images"] > 0
