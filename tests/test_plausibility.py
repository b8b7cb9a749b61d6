"""Checks that catch real faults: a bad dive costs only itself, implausible times and far CRSs
are refused, the ends of a dive are checked for jumps, images arrive the way they were meant to
be seen, and every file the image template matches ends in locations or quarantine."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import yaml
from PIL import Image
from surveys import copy_survey

from pipeline import reasons
from pipeline.build import build
from pipeline.catalog import load_catalog
from pipeline.images import check_image
from pipeline.synth import SynthConfig, generate

REPO = Path(__file__).resolve().parents[1]
QUIET = {"workers": 1, "log": lambda *_: None}
NAV = "nav/auv_ekf_LC.csv"


@pytest.fixture(scope="module")
def survey(tmp_path_factory):
    root = tmp_path_factory.mktemp("plaus") / "site"
    generate(SynthConfig(out=root, dives=2, images_per_dive=24, seed=4,
                         formats=["oplab-camera-csv"], workers=2))
    return root


@pytest.fixture
def site(survey, tmp_path):
    return copy_survey(survey, tmp_path / "site")


def _tables(out: Path):
    loc = pq.read_table(out / "locations.parquet").to_pandas()
    quar = pq.read_table(out / "quarantine.parquet").to_pandas()
    return loc, quar


def _cli(catalog: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipeline", "build", "--catalog", str(catalog)],
                          cwd=REPO, capture_output=True, text=True, timeout=300)


def _conserved(site: Path, out: Path) -> None:
    """Every file the image template matches is located or quarantined, exactly once."""
    files = {p.relative_to(site).as_posix() for p in site.glob("dive*/images/*")}
    loc, quar = _tables(out)
    seen = list(loc["path"]) + [s for s in quar["source"] if s in files]
    assert sorted(seen) == sorted(files)


def test_a_dive_with_broken_navigation_costs_only_itself(site):
    nav = site / "dive02" / NAV
    nav.write_text(nav.read_text().splitlines()[0] + "\nnot,a,row\n")  # header + garbage
    cat = load_catalog(site / "catalog.yaml")
    report = build(cat, **QUIET)
    loc, quar = _tables(cat.output)
    assert set(loc["dive"]) == {"dive01"} and len(loc) > 0
    bad = quar[quar["dive"] == "dive02"]
    assert len(bad) == 24 and set(bad["reason"]) == {reasons.NAV_UNREADABLE}
    assert bad["detail"].str.contains("dive02/nav/auv_ekf_LC.csv").all()
    assert report["per_dive"]["dive02"]["located"] == 0
    _conserved(site, cat.output)


def test_millisecond_timestamps_are_refused_naming_the_unit(site):
    nav = site / "dive02" / NAV
    df = pd.read_csv(nav)
    df["timestamp [s]"] = (df["timestamp [s]"] * 1000).round()
    df.to_csv(nav, index=False)
    cat = load_catalog(site / "catalog.yaml")
    build(cat, **QUIET)
    _, quar = _tables(cat.output)
    bad = quar[quar["dive"] == "dive02"]
    assert set(bad["reason"]) == {reasons.NAV_UNREADABLE}
    assert bad["detail"].str.contains("milliseconds").all()


@pytest.mark.parametrize("end", [0, -1])
def test_a_jump_at_either_end_of_a_dive_is_caught(site, end):
    nav = site / "dive01" / NAV
    df = pd.read_csv(nav)
    row = df.index[end]
    df.loc[row, "latitude [deg]"] += 0.07  # about 8 km north
    df.to_csv(nav, index=False)
    cat = load_catalog(site / "catalog.yaml")
    build(cat, **QUIET)
    loc, quar = _tables(cat.output)
    name = f"dive01/{df.loc[row, 'relative_path']}"
    assert name not in set(loc["path"])
    assert quar.set_index("source").loc[name, "reason"] == reasons.NAV_JUMP
    # and no healthy pose near the ends is flagged
    assert (quar["reason"] == reasons.NAV_JUMP).sum() == 1


def test_explicit_crs_far_from_the_site_is_refused_unless_forced(site):
    doc = yaml.safe_load((site / "catalog.yaml").read_text())
    doc["crs"] = "EPSG:32741"  # UTM 41S: 14 zones west of the site
    (site / "catalog.yaml").write_text(yaml.safe_dump(doc))
    res = _cli(site / "catalog.yaml")
    assert res.returncode == 2 and "crs_force" in res.stderr and "Traceback" not in res.stderr
    assert "EPSG:32755" in res.stderr
    doc["crs_force"] = True
    (site / "catalog.yaml").write_text(yaml.safe_dump(doc))
    assert _cli(site / "catalog.yaml").returncode == 0


@pytest.mark.parametrize("crs,words", [("EPSG:4326", "geographic"), ("EPSG:2263", "metres"),
                                       ("EPSG:99999", "not a CRS")])
def test_unusable_crs_is_refused_before_any_ingest(site, crs, words):
    doc = yaml.safe_load((site / "catalog.yaml").read_text())
    doc["crs"] = crs
    (site / "catalog.yaml").write_text(yaml.safe_dump(doc))
    res = _cli(site / "catalog.yaml")
    assert res.returncode == 2 and words in res.stderr and "key 'crs'" in res.stderr
    assert not (site / "manifests" / "cache").exists()  # nothing was ingested


def test_labels_file_problems_are_refused_before_any_ingest(site):
    (site / "labels.csv").write_text("image,habitat\nx,y\n")
    res = _cli(site / "catalog.yaml")
    assert res.returncode == 2 and "image_id,label" in res.stderr
    (site / "labels.csv").unlink()
    res = _cli(site / "catalog.yaml")
    assert res.returncode == 2 and "key 'labels'" in res.stderr


def test_image_files_every_case_and_symlink_end_somewhere(site, tmp_path):
    images = site / "dive01" / "images"
    first = sorted(images.iterdir())[0]
    upper = first.with_suffix(".JPG")
    first.rename(upper)
    os.symlink(images / "no-such-file.jpg", images / "PR_20240313_000000_000_LC16.jpg")
    outside = tmp_path / "elsewhere.jpg"
    shutil.copy(sorted(images.glob("*.jpg"))[1], outside)
    os.symlink(outside, images / "PR_20240313_000001_000_LC16.jpg")
    cat = load_catalog(site / "catalog.yaml")
    build(cat, **QUIET)
    loc, quar = _tables(cat.output)
    by_source = quar.set_index("source")["reason"]
    assert by_source["dive01/images/PR_20240313_000000_000_LC16.jpg"] == reasons.UNREADABLE
    assert by_source["dive01/images/PR_20240313_000001_000_LC16.jpg"] == reasons.UNSAFE_PATH
    # the .JPG file is found; its pose row names it .jpg, so it is quarantined, not dropped
    assert f"dive01/images/{upper.name}" in set(loc["path"]) | set(quar["source"])
    _conserved(site, cat.output)


def test_sixteen_bit_palette_and_rotated_images_become_the_right_pixels(tmp_path):
    ramp = np.tile(np.linspace(0, 65535, 64), (48, 1)).astype(np.uint16)  # dark left, bright right
    Image.fromarray(ramp).save(tmp_path / "deep.png")  # mode I;16
    pal = Image.fromarray(np.full((48, 64, 3), (10, 120, 200), np.uint8)).convert(
        "P", palette=Image.Palette.ADAPTIVE)
    pal.save(tmp_path / "pal.png")
    # a 64x48 (landscape) sensor image stored with EXIF orientation 6 (rotate 90 cw to view)
    arr = np.zeros((48, 64, 3), np.uint8)
    arr[:, :8] = 255  # a white band on the stored image's left edge
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(arr).save(tmp_path / "rot.jpg", exif=exif.tobytes(), quality=95)
    import io

    def pixels(name, hw):
        c = check_image(tmp_path, name, hw, decode=True)
        assert c.reason is None, c.detail
        return c, np.asarray(Image.open(io.BytesIO(c.jpeg)).convert("RGB"), np.float64)

    c, px = pixels("deep.png", (48, 64))
    assert px.mean() == pytest.approx(127.5, abs=4)  # a ramp, not white (255)
    assert px[:, :4].mean() < 20 and px[:, -4:].mean() > 235
    c, px = pixels("pal.png", (48, 64))
    assert np.abs(px.reshape(-1, 3).mean(0) - (10, 120, 200)).max() < 6
    c, px = pixels("rot.jpg", (64, 64))
    assert (c.width, c.height) == (48, 64)  # as seen: portrait
    assert px.shape[:2] == (64, 48)
    assert px[:8, :, :].mean() > 200 and px[-8:, :, :].mean() < 60  # left edge is now the top


def test_a_decompression_bomb_is_quarantined_not_a_crash(tmp_path, monkeypatch):
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(tmp_path / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10)
    c = check_image(tmp_path, "big.png", (48, 64), decode=True)
    assert c.reason == reasons.IMAGE_REFUSED
