"""The example catalogs in catalogs/examples/ load, and build on trees laid out as they say."""

from __future__ import annotations

import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from PIL import Image

from pipeline.build import build
from pipeline.catalog import load_catalog
from pipeline.synth import SynthConfig, generate

EXAMPLES = Path(__file__).resolve().parents[1] / "catalogs" / "examples"
QUIET = {"workers": 1, "log": lambda *_: None}


def _retarget(example: str, root: Path) -> Path:
    """The example with its root and output pointed at a test tree, nothing else changed."""
    doc = yaml.safe_load((EXAMPLES / example).read_text())
    doc.update(root=str(root), output=str(root.parent / f"{root.name}-manifests"))
    path = root.parent / example
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.yaml")), ids=lambda p: p.name)
def test_every_example_loads(path):
    cat = load_catalog(path)
    assert cat.nav and cat.images


def test_oplab_processed_example_builds(tmp_path):
    src = tmp_path / "flat"
    generate(SynthConfig(out=src, dives=2, images_per_dive=15, seed=2,
                         formats=["oplab-camera-csv"], workers=1))
    root = tmp_path / "tasman"
    for k, dive in enumerate(("dive01", "dive02")):
        shutil.copytree(src / dive / "images", root / "raw" / "2019" / f"c0{k}" / dive / "images")
        ekf = root / "processed" / "2019" / f"c0{k}" / dive / "json_renav_20190403_120000" / "csv" / "ekf"
        ekf.mkdir(parents=True)
        shutil.copy(src / dive / "nav" / "auv_ekf_LC.csv", ekf)
    cat = load_catalog(_retarget("oplab-processed.yaml", root))
    report = build(cat, **QUIET)
    assert report["images_located"] == 30
    assert sorted(report["per_dive"]) == ["2019/c00/dive01", "2019/c01/dive02"]


def test_acfr_cv_example_builds(tmp_path):
    src = tmp_path / "flat"
    generate(SynthConfig(out=src, dives=1, images_per_dive=12, seed=3,
                         formats=["acfr-stereo-pose"], workers=1))
    dive = tmp_path / "cruise" / "r20240313_004000_site"
    cv = dive / "i20240313_004000_cv"
    cv.mkdir(parents=True)
    for jpg in (src / "dive01" / "images").glob("*.jpg"):
        Image.open(jpg).save(cv / (jpg.stem + ".png"))
    (dive / "renav20240314").mkdir()
    text = (src / "dive01" / "nav" / "stereo_pose_est.data").read_text()
    (dive / "renav20240314" / "stereo_pose_est.data").write_text(text.replace(".jpg", ".png"))
    cat = load_catalog(_retarget("acfr-cv.yaml", tmp_path / "cruise"))
    report = build(cat, **QUIET)
    assert report["images_located"] == 12
    loc = pq.read_table(cat.output / "locations.parquet", columns=["path"]).column("path")
    assert all("/i20240313_004000_cv/" in p for p in loc.to_pylist())
