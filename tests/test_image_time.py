"""Capture times in image file names: built-in patterns, the catalog's image_time, no_time."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from pipeline.catalog import CatalogError, load_catalog
from pipeline.ingest import ingest_dive
from pipeline.readers import image_time_from_name
from pipeline.readers.imagetime import BUILTIN_PATTERNS, compile_pattern, patterns_tried

T = 1728387212.0  # 2024-10-08 11:33:32 UTC


@pytest.mark.parametrize(("name", "expected"), [
    ("2024_10_08_11-33-32.JPG", T),
    ("GOPR_2024_10_08_11-33-32.5.jpg", T + 0.5),
    ("20241008113332.JPG", T),
    ("20180611041421.JPG", 1528690461.0),
    ("IMG_20241008113332_123.jpg", T + 0.123),
    ("PR_20240313_004046_897_LC16.jpg", 1710290446.897),
    ("2024-10-08T11:33:32.250Z.png", T + 0.25),
    ("cam_2024-10-08T21:33:32+10:00.jpg", T),
    ("2024-10-08 113332.jpg", T),
    ("dives/20241008113332/IMG_0001.jpg", None),  # folders are never searched
    # fourteen digits that are no date: a counter, month 13, 31 February, hour 25, year 0001
    ("frame_00000000012345.jpg", None),
    ("20241308113332.jpg", None),
    ("20240231113332.jpg", None),
    ("20241008253332.jpg", None),
    ("00011008113332.jpg", None),
    ("12345678901234.jpg", None),
    ("IMG_0001.JPG", None),
])
def test_builtin_patterns(name, expected):
    got = image_time_from_name(name)
    assert got is None if expected is None else got == pytest.approx(expected, abs=1e-6)


def test_every_builtin_example_reads_and_is_listed():
    for p in BUILTIN_PATTERNS:
        assert image_time_from_name(p.example) is not None, p.text
    tried = patterns_tried()
    assert len(tried) == len(BUILTIN_PATTERNS)
    assert all(p.example in line for p, line in zip(BUILTIN_PATTERNS, tried, strict=True))


@pytest.mark.parametrize(("pattern", "name", "expected"), [
    ("%d.%m.%Y-%H.%M.%S", "st7-08.10.2024-11.33.32.jpg", T),
    ("%y%m%d-%H%M%S-%f", "CAM241008-113332-25.jpg", T + 0.25),
    (r"D(?P<day>\d\d)(?P<month>\d\d)(?P<year>\d{4})T(?P<hour>\d\d)(?P<minute>\d\d)"
     r"(?P<second>\d\d)(?:ms(?P<frac>\d{3}))?", "x_D08102024T113332ms500.jpg", T + 0.5),
])
def test_catalog_pattern_is_tried_first(pattern, name, expected):
    assert image_time_from_name(name) is None  # no built-in reads it
    assert image_time_from_name(name, pattern) == pytest.approx(expected, abs=1e-6)
    assert patterns_tried(pattern)[0].startswith(pattern)


@pytest.mark.parametrize(("pattern", "message"), [
    ("%Y-%m-%d", "lacks %H, %M, %S"),
    ("%Y%m%d_%H%M%S_%Q", "%Q is not understood"),
    ("(?P<year>\\d{4})(?P<month>\\d\\d)", "lacks the named group"),
    ("(?P<year>[", "not a valid regular expression"),
])
def test_bad_patterns_say_what_is_wrong(pattern, message):
    with pytest.raises(ValueError, match=message):
        compile_pattern(pattern)


def test_catalog_image_time_is_validated(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("root: .\noutput: out\nnav: [{format: ifdo, path: '{dive}/a.json'}]\n"
                    "image_time: '%Y-%m-%d'\n")
    with pytest.raises(CatalogError, match=r"key 'image_time'.*lacks %H"):
        load_catalog(path)


def jpeg() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), (50, 90, 140)).save(buf, "JPEG")
    return buf.getvalue()


def vehicle_dive(tmp_path: Path, names: list[str], image_time: str | None = None):
    root = tmp_path / "site"
    (root / "d1" / "images").mkdir(parents=True)
    for name in names:
        (root / "d1" / "images" / name).write_bytes(jpeg())
    t = np.arange(T - 20, T + 20, 0.5)
    pd.DataFrame({"t": t, "lat": -43.3 + (t - T) * 1e-5, "lon": 147.9, "depth": 30.0}).to_csv(
        root / "d1" / "nav.csv", index=False)
    doc = {"root": str(root), "output": str(tmp_path / "out"), "dives": "d*",
           "images": "{dive}/images/*.jpg",
           "nav": [{"format": "csv", "path": "{dive}/nav.csv",
                    "columns": {"time": "t", "lat": "lat", "lon": "lon", "depth": "depth"}}]}
    if image_time:
        doc["image_time"] = image_time
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(doc))
    return load_catalog(tmp_path / "c.yaml")


def test_no_time_lists_the_patterns_tried_and_the_key_to_set(tmp_path):
    cat = vehicle_dive(tmp_path, ["2024_10_08_11-33-32.jpg", "st7-08.10.2024-11.33.40.jpg"])
    res = ingest_dive(cat, "d1", workers=1)
    assert res.locations["path"].tolist() == ["d1/images/2024_10_08_11-33-32.jpg"]
    assert res.locations["timestamp"].iat[0] == pytest.approx(T, abs=1e-3)
    assert res.locations["lat"].iat[0] == pytest.approx(-43.3, abs=1e-6)
    q = res.quarantine
    assert q["reason"].tolist() == ["no_time"]
    detail = q["detail"].iat[0]
    for p in BUILTIN_PATTERNS:
        assert p.text in detail and p.example in detail
    assert "set `image_time:`" in detail and "d1/nav.csv" in detail


def test_catalog_image_time_locates_names_the_builtins_miss(tmp_path):
    cat = vehicle_dive(tmp_path, ["st7-08.10.2024-11.33.40.jpg"], image_time="%d.%m.%Y-%H.%M.%S")
    res = ingest_dive(cat, "d1", workers=1)
    assert res.quarantine.empty
    assert res.locations["timestamp"].iat[0] == pytest.approx(T + 8, abs=1e-3)
    assert res.locations["lat"].iat[0] == pytest.approx(-43.3 + 8e-5, abs=1e-7)


def test_a_build_that_locates_nothing_for_want_of_times_says_what_to_set(tmp_path):
    import subprocess
    import sys

    vehicle_dive(tmp_path, ["IMG_0001.jpg", "IMG_0002.jpg"])
    res = subprocess.run([sys.executable, "-m", "pipeline", "build", "--catalog",
                          str(tmp_path / "c.yaml")], capture_output=True, text=True, timeout=300,
                         cwd=Path(__file__).resolve().parents[1])
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert "no_time x2" in res.stderr and "image_time:" in res.stderr
    assert all(p.example in res.stderr for p in BUILTIN_PATTERNS)
