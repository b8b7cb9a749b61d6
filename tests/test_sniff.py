"""sniff_file: every reader's verdict on a file; the best one proposes what a catalog should hold."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from pipeline.catalog import CsvColumns
from pipeline.readers import Head, Sniff, read_nav, sniff_file
from pipeline.readers.csv_guess import classify_time
from pipeline.readers.sniffing import sniff_head

DATA = Path(__file__).parent / "data"


def best(path) -> Sniff:
    verdicts = sniff_file(path)
    assert verdicts, f"no format recognised {path}"
    assert all(v.confidence > 0 for v in verdicts)
    assert [v.confidence for v in verdicts] == sorted((v.confidence for v in verdicts), reverse=True)
    return verdicts[0]


@pytest.mark.parametrize("rel, fmt, per_image", [
    ("oplab_pipeline_1.2.0/auv_ekf_LC.csv", "oplab-camera-csv", True),
    ("oplab_pipeline_1.2.0/auv_ekf_centre.csv", "oplab-nav-csv", False),
    ("oplab_pipeline_1.2.0/stereo_pose_est.data", "acfr-stereo-pose", True),
    ("biigle/dive01_metadata.csv", "biigle-csv", True),
    ("qgc/telemetry.csv", "qgc-csv", False),
    ("exif/dive/a.jpg", "exif", True),
])
def test_named_formats_win_with_high_confidence(rel, fmt, per_image):
    verdict = best(DATA / rel)
    assert (verdict.format, verdict.per_image) == (fmt, per_image)
    assert verdict.confidence >= 0.9


def test_ifdo_is_recognised_by_its_header_key():
    path = next(p for p in sorted((DATA / "ifdo_1.6.0").rglob("*")) if p.suffix in (".json", ".yaml"))
    assert best(path).format == "ifdo"


def test_qgc_sniff_asks_for_the_ground_station_zone():
    verdict = best(DATA / "qgc" / "telemetry.csv")
    assert verdict.options == {"timezone": "UTC"} and "local time" in verdict.note
    assert verdict.found["depth"] == "altitudeRelative"


def test_towed_usbl_export_gets_a_column_map_that_reads():
    path = DATA / "towed_usbl" / "tow03_export.csv"
    verdict = best(path)
    assert verdict.format == "csv" and 0.6 <= verdict.confidence <= 0.8 and not verdict.per_image
    assert verdict.columns == {
        "time": "recorded_time", "time_format": "%d/%m/%Y %H:%M:%S.%f", "lat": "UsblLatitude",
        "lon": "UsblLongitude", "depth": "Pres", "depth_unit": "dbar", "altitude": "Altitude",
        "missing_values": ["-"],
    }
    CsvColumns(**verdict.columns)  # a catalog accepts it as is
    nav = read_nav("csv", path, verdict.columns)
    assert len(nav.table) == 3 and nav.table["depth_m"][0] == pytest.approx(49.597, abs=2e-3)


def test_split_date_time_sniff_infers_format_and_tokens():
    verdict = best(DATA / "csv_split" / "dive02_nav.csv")
    cols = verdict.columns
    assert cols["time"] == ["Date", "Time"]
    # 05/02 and 05/03: month first keeps the rows 11 hours apart, day first a month apart
    assert cols["time_format"] == "%m/%d/%Y %H:%M:%S.%f"
    assert cols["missing_values"] == ["--.--"] and cols["depth"] == "Depth"
    assert verdict.found["time"] == "Date + Time"


def test_full_datetime_column_wins_over_a_time_of_day_column():
    verdict = best(DATA / "csv_split" / "both_time_columns.csv")
    assert verdict.columns["time"] == "datetime" and verdict.columns["time_unit"] == "iso8601"


def test_day_month_order_that_samples_cannot_settle_is_said(tmp_path):
    path = tmp_path / "nav.csv"
    path.write_text("datetime,lat,lon\n05/02/2019 03:04:05,-43.1,147.3\n05/02/2019 03:04:06,-43.1,147.3\n")
    verdict = best(path)
    assert verdict.columns["time_format"] in ("%d/%m/%Y %H:%M:%S", "%m/%d/%Y %H:%M:%S")
    assert "day and month order" in verdict.note


def test_waterlinked_log_has_no_depth_and_says_so():
    verdict = best(DATA / "waterlinked" / "ugps_position_log.csv")
    assert verdict.columns == {"time": "timestamp", "lat": "lat", "lon": "lon"}
    assert "depth" in verdict.note and verdict.confidence == 0.6


def test_unknown_csv_lists_missing_roles_and_candidates(tmp_path):
    path = tmp_path / "log.csv"
    path.write_text("when,Lattitude,Lngitude,speed\nnoon,-43.1,147.3,1\n")
    verdicts = sniff_file(path)
    assert [v.format for v in verdicts] == ["csv"]
    verdict = verdicts[0]
    assert verdict.confidence <= 0.3 and verdict.columns is None
    assert len(verdict.missing) == 3
    assert verdict.missing[1].startswith("a latitude column (looked for: latitude, lat,")
    assert verdict.candidates["lat"][0] == "Lattitude"
    assert verdict.candidates["lon"][0] == "Lngitude"


def test_partial_csv_reports_what_it_found(tmp_path):
    path = tmp_path / "log.csv"
    path.write_text("timestamp,x,y\n1556766245,1,2\n")
    verdict = best(path)
    assert verdict.found == {"time": "timestamp"} and 0.1 <= verdict.confidence <= 0.3
    assert {m.split(" (")[0] for m in verdict.missing} == {"a latitude column", "a longitude column"}


def test_time_classification():
    assert classify_time(["1556766245.25", "1556766246"]) == ("unix_s", None)
    assert classify_time(["1556766245250"]) == ("unix_ms", None)
    assert classify_time(["2019-05-02T03:04:05Z"]) == ("iso8601", None)
    assert classify_time(["13/05/2019 03:04:05"]) == ("datetime", "%d/%m/%Y %H:%M:%S")
    assert classify_time(["2019/05/13"]) == ("date", "%Y/%m/%d")
    assert classify_time(["03:04:05.5"]) == ("tod", "%H:%M:%S.%f")
    assert classify_time(["12.5", "13.5"]) is None  # elapsed seconds are no clock


def test_sniff_never_raises_and_ignores_what_is_not_navigation(tmp_path):
    binary = tmp_path / "blob.csv"
    binary.write_bytes(bytes(range(256)) * 10)
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    truncated = tmp_path / "cut.jpg"
    truncated.write_bytes((DATA / "exif" / "dive" / "a.jpg").read_bytes()[:40])
    notes = tmp_path / "readme.txt"
    notes.write_text("just words\n")
    for path in (binary, empty, truncated, notes, tmp_path / "absent.csv", tmp_path):
        assert sniff_file(path) == []
    # a head no reader expects still gets an answer, not an exception
    assert sniff_head(Head(path=tmp_path / "x.json", lines=None, prefix=b"\xff" * 10)) == []


def test_per_image_csv_needs_image_file_names(tmp_path):
    path = tmp_path / "poses.csv"
    path.write_text("image,unix_time,lat,lon,depth\nimg_001.jpg,1556766245,-43.1,147.3,10\n")
    verdict = best(path)
    assert verdict.per_image and verdict.columns["image"] == "image"
    shutil.copy(path, tmp_path / "copy.csv")
    nav = read_nav("csv", tmp_path / "copy.csv", verdict.columns)
    assert nav.per_image and np.isclose(nav.table["depth_m"][0], 10.0)


def test_prose_in_a_txt_file_is_no_csv(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("Dive 3, calm sea, visibility 5 m\nsecond line\n")
    assert sniff_file(path) == []
    path.rename(tmp_path / "notes.csv")
    assert [v.format for v in sniff_file(tmp_path / "notes.csv")] == ["csv"]  # a .csv is reported
