"""Readers of the formats real surveys hold: BIIGLE metadata, QGroundControl telemetry, towed-camera
USBL exports, Water Linked position logs, split date/time CSVs and EXIF, against golden files."""

from __future__ import annotations

import calendar
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from pipeline.catalog import CsvColumns, NavSource
from pipeline.readers import NavFormatError, read_nav
from pipeline.readers.generic_csv import column_map, dbar_to_metres

DATA = Path(__file__).parent / "data"
EARTH_M_PER_DEG = 111_195.0


def utc(y, mo, d, h, mi, s, ms=0) -> float:
    return calendar.timegm((y, mo, d, h, mi, s, 0, 0, 0)) + ms / 1000.0


def assert_positions(table, expected, tol_m=0.5):
    lat = table["lat"].to_numpy()
    lon = table["lon"].to_numpy()
    for i, (la, lo) in enumerate(expected):
        if la is None:
            assert math.isnan(lat[i]) and math.isnan(lon[i]), f"row {i} should have no position"
            continue
        north = (lat[i] - la) * EARTH_M_PER_DEG
        east = (lon[i] - lo) * EARTH_M_PER_DEG * math.cos(math.radians(la))
        assert math.hypot(north, east) < tol_m, f"row {i}: {lat[i]}, {lon[i]} vs {la}, {lo}"


def assert_headings(values, expected):
    for got, want in zip(values, expected, strict=True):
        if want is None:
            assert math.isnan(got)
        else:
            diff = (got - want + 180.0) % 360.0 - 180.0
            assert abs(diff) < 1e-6 and 0.0 <= got < 360.0


# ------------------------------------------------------------------ BIIGLE


def test_biigle_metadata_csv_golden():
    nav = read_nav("biigle-csv", DATA / "biigle" / "dive01_metadata.csv")
    t = nav.table
    assert nav.per_image and nav.format == "biigle-csv"
    assert list(t["image"]) == ["images/img_0001.jpg", "images/img_0002.jpg", "images/img_0003.jpg"]
    np.testing.assert_allclose(t["timestamp"], [utc(2019, 5, 2, 3, 4, 5), utc(2019, 5, 2, 3, 4, 6, 500),
                                                utc(2019, 5, 2, 3, 4, 8)], atol=1e-3)
    assert_positions(t, [(-43.1201, 147.3301), (-43.12011, 147.33012), (None, None)])
    np.testing.assert_allclose(t["depth_m"], [35.2, 35.4, 35.5])  # -gps_altitude: positive down
    np.testing.assert_allclose(t["altitude_m"][:2], [2.1, 2.0])
    assert_headings(t["heading_deg"], [350.0, 10.5, None])
    assert list(t["line"]) == [2, 3, 4]


def test_biigle_local_times_and_synonyms(tmp_path):
    path = tmp_path / "meta.csv"
    path.write_text("file,SUB_datetime,SUB_longitude,SUB_latitude,SUB_heading\n"
                    "a.png,2019-05-02 13:04:05,147.33,-43.12,-10\n")
    nav = read_nav("biigle-csv", path, timezone="Australia/Hobart")
    assert nav.table["timestamp"][0] == pytest.approx(utc(2019, 5, 2, 3, 4, 5), abs=1e-3)
    assert_headings(nav.table["heading_deg"], [350.0])
    assert math.isnan(nav.table["depth_m"][0]) and nav.notes.get("no_depth") == 1


def test_biigle_errors_name_file_line_and_column(tmp_path):
    bad_time = tmp_path / "bad_time.csv"
    bad_time.write_text("filename,taken_at,lng,lat\na.jpg,2019-05-02 03:04:05,1,2\nb.jpg,yesterday,1,2\n")
    with pytest.raises(NavFormatError, match=r"bad_time.csv: line 3, column 'taken_at': found 'yesterday'; expected an ISO 8601"):
        read_nav("biigle-csv", bad_time)
    twice = tmp_path / "twice.csv"
    twice.write_text("filename,lng,lat\nv.mp4,1,2\nv.mp4,1,2\n")
    with pytest.raises(NavFormatError, match=r"twice.csv: line 3, column 'filename': found 'v.mp4' again"):
        read_nav("biigle-csv", twice)
    no_name = tmp_path / "no_name.csv"
    no_name.write_text("taken_at,lng,lat\n2019-05-02 03:04:05,1,2\n")
    with pytest.raises(NavFormatError, match=r"line 1, column 'filename'"):
        read_nav("biigle-csv", no_name)


# ------------------------------------------------------------------ QGroundControl


def test_qgc_telemetry_golden_local_time_and_depth_from_altitude_relative():
    nav = read_nav("qgc-csv", DATA / "qgc" / "telemetry.csv", timezone="Australia/Hobart")
    t = nav.table
    assert not nav.per_image and nav.format == "qgc-csv"
    assert nav.notes["nan_rows"] == 1  # the first row's position is --.--
    # 13:04:05.512 in Hobart (AEST, +10:00 in May) is 03:04:05.512 UTC
    np.testing.assert_allclose(t["timestamp"][:2], [utc(2019, 5, 2, 3, 4, 5, 512),
                                                    utc(2019, 5, 2, 3, 4, 6, 513)], atol=1e-3)
    assert_positions(t, [(-43.1201, 147.3301), (-43.120103, 147.330102)])
    np.testing.assert_allclose(t["depth_m"], [12.4, 12.6, 12.8, 12.9])  # -altitudeRelative
    assert_headings(t["heading_deg"], [359.5, 1.5, 3.0, 4.0])
    assert list(t["line"]) == [3, 4, 5, 6]


def test_qgc_depth_column_wins_over_altitude_relative(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("Timestamp,altitudeRelative,depth,gps.lat,gps.lon\n"
                    "2019-05-02 03:04:05.000,-1.0,20.0,-43.1,147.3\n"
                    "2019-05-02 03:04:06.000,-1.0,20.5,-43.1,147.3\n")
    nav = read_nav("qgc-csv", path)
    np.testing.assert_allclose(nav.table["depth_m"], [20.0, 20.5])


def test_qgc_bad_timestamp_names_line_column_and_format(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("Timestamp,gps.lat,gps.lon\n2019-05-02 03:04:05.000,-43.1,147.3\n"
                    "02/05/2019 03:04:06,-43.1,147.3\n")
    with pytest.raises(NavFormatError) as err:
        read_nav("qgc-csv", path)
    msg = str(err.value)
    assert "t.csv: line 3, column 'Timestamp': found '02/05/2019 03:04:06'" in msg
    assert "'%Y-%m-%d %H:%M:%S.%f'" in msg and msg.count("\n") == 0


# ------------------------------------------------------------------ csv: towed camera, Water Linked


def test_towed_camera_usbl_export_pressure_in_dbar():
    columns = {"time": "recorded_time", "time_format": "%d/%m/%Y %H:%M:%S.%f",
               "lat": "UsblLatitude", "lon": "UsblLongitude", "depth": "Pres",
               "depth_unit": "dbar", "altitude": "Altitude", "missing_values": ["-"]}
    nav = read_nav("csv", DATA / "towed_usbl" / "tow03_export.csv", columns)
    t = nav.table
    assert nav.notes["nan_rows"] == 1  # the "-" row
    np.testing.assert_allclose(t["timestamp"][0], utc(2019, 5, 13, 3, 4, 5, 250), atol=1e-3)
    # 50 dbar at 43 S is 49.60 m (UNESCO 1983), not 50 and not 50 * 1.0197
    np.testing.assert_allclose(t["depth_m"], [49.597, 49.795, 50.192], atol=2e-3)
    np.testing.assert_allclose(t["altitude_m"], [2.1, 2.0, 1.8])
    assert_positions(t, [(-43.1201, 147.3301), (-43.120105, 147.330105), (-43.120115, 147.330115)])


def test_dbar_conversion_matches_the_unesco_check_value():
    # UNESCO technical paper 44: 10000 dbar at 30 degrees latitude is 9712.653 m
    assert dbar_to_metres(np.array([10000.0]), np.array([30.0]))[0] == pytest.approx(9712.653, abs=1e-3)
    assert dbar_to_metres(np.array([0.0]))[0] == 0.0


def test_waterlinked_log_without_depth_gives_nan_and_a_note():
    nav = read_nav("csv", DATA / "waterlinked" / "ugps_position_log.csv",
                   {"time": "timestamp", "lat": "lat", "lon": "lon"})
    assert nav.notes["no_depth"] == 1
    assert np.isnan(nav.table["depth_m"]).all() and len(nav.table) == 4
    np.testing.assert_allclose(nav.table["timestamp"][0], 1556766245.0)


# ------------------------------------------------------------------ csv: split date/time, zones


SPLIT = {"time": ["Date", "Time"], "time_format": "%m/%d/%Y %H:%M:%S.%f", "lat": "Latitude",
         "lon": "Longitude", "depth": "Depth", "heading": "Heading", "missing_values": ["--.--"]}


@pytest.mark.parametrize("zone", ["+10:00", "Australia/Hobart", "UTC+10"])
def test_split_date_and_time_in_a_local_zone(zone):
    nav = read_nav("csv", DATA / "csv_split" / "dive02_nav.csv", dict(SPLIT, timezone=zone))
    t = nav.table
    np.testing.assert_allclose(t["timestamp"], [utc(2019, 5, 2, 3, 4, 5, 250), utc(2019, 5, 2, 3, 4, 6, 250),
                                                utc(2019, 5, 2, 3, 4, 8, 250), utc(2019, 5, 2, 14, 0, 1)],
                               atol=1e-3)
    assert nav.notes["nan_rows"] == 1  # --.-- row
    assert_headings(t["heading_deg"], [350.0, 355.0, 5.0, 6.0])
    assert list(t["line"]) == [2, 3, 5, 6]


def test_split_time_that_does_not_match_the_format_is_one_message(tmp_path):
    path = tmp_path / "nav.csv"
    path.write_text("Date,Time,Latitude,Longitude,Depth,Heading\n"
                    "05/02/2019,13:04:05.250,-43.1,147.3,35,0\n"
                    "2019-05-02,13:04:06.250,-43.1,147.3,35,0\n")
    with pytest.raises(NavFormatError) as err:
        read_nav("csv", path, SPLIT)
    msg = str(err.value)
    assert msg.startswith(f"{path}: line 3, columns 'Date' + 'Time': found '2019-05-02 13:04:06.250'")
    assert "expected a date and time in the format '%m/%d/%Y %H:%M:%S.%f'" in msg


def test_unix_ms_and_units_in_names(tmp_path):
    path = tmp_path / "nav.csv"
    path.write_text("Time (ms),Lat [deg],Lon [deg],Depth [m]\n1556766245250,-43.1,147.3,-5\n"
                    "1556766246250,-43.1,147.3,-5\n")
    nav = read_nav("csv", path, {"time": "time", "time_unit": "unix_ms", "lat": "lat", "lon": "lon",
                                 "depth": "depth", "depth_positive": "up"})
    np.testing.assert_allclose(nav.table["timestamp"], [1556766245.25, 1556766246.25])
    np.testing.assert_allclose(nav.table["depth_m"], [5.0, 5.0])


def test_exact_column_name_wins_over_a_case_blind_match(tmp_path):
    path = tmp_path / "nav.csv"
    path.write_text("depth,Depth,t,lat,lon\n1,2,1556766245,-43.1,147.3\n")
    nav = read_nav("csv", path, {"time": "t", "lat": "lat", "lon": "lon", "depth": "Depth"})
    assert nav.table["depth_m"][0] == 2.0


def test_an_unknown_token_is_still_an_error(tmp_path):
    path = tmp_path / "nav.csv"
    path.write_text("t,lat,lon\n1556766245,-43.1,147.3\n1556766246,n/d,147.3\n")
    with pytest.raises(NavFormatError, match=r"line 3, column 'lat': found 'n/d'; expected a number"):
        read_nav("csv", path, {"time": "t", "lat": "lat", "lon": "lon", "missing_values": ["--.--"]})


def test_column_maps_are_checked_the_same_in_the_catalog_and_the_reader():
    bad = [
        ({"time": "t", "lat": "a", "lon": "b", "timezone": "Mars/Olympus"}, "timezone"),
        ({"time": "t", "lat": "a", "lon": "b", "time_unit": "unix_s", "time_format": "%Y"}, "time_format"),
        ({"time": ["d", "t"], "lat": "a", "lon": "b", "time_unit": "unix_s"}, "several columns"),
        ({"time": "t", "lat": "a", "lon": "b", "time_unit": "format"}, "time_format"),
        ({"time": "t", "lat": "a", "lon": "b", "depth_unit": "psi"}, "depth_unit"),
        ({"time": [], "lat": "a", "lon": "b"}, "'time'"),
    ]
    for columns, word in bad:
        with pytest.raises(ValueError, match=word):
            column_map(columns)
        with pytest.raises(ValueError, match=word):
            CsvColumns(**columns)
    ok = CsvColumns(time=["Date", "Time"], time_format="%m/%d/%Y %H:%M:%S", lat="a", lon="b")
    assert ok.time_unit == "format" and ok.depth is None
    assert CsvColumns(time="t", lat="a", lon="b").time_unit == "unix_s"
    assert CsvColumns(time=["d", "t"], lat="a", lon="b").time_unit == "iso8601"
    for fmt in ("biigle-csv", "qgc-csv"):
        assert NavSource(format=fmt, path="{dive}/nav.csv").format == fmt


# ------------------------------------------------------------------ EXIF


def test_exif_images_golden(tmp_path):
    dive = tmp_path / "dive"
    shutil.copytree(DATA / "exif" / "dive", dive)
    (dive / "broken.jpg").write_bytes(b"not a jpeg")
    images = ["a.jpg", "b.jpg", "c.jpg", "broken.jpg", "absent.jpg"]
    nav = read_nav("exif", dive, images=images, timezone="Australia/Hobart")
    t = nav.table
    assert nav.per_image and list(t["image"]) == images and list(t["line"]) == [1, 2, 3, 4, 5]
    # a.jpg carries +10:00 and 250 ms; b.jpg has no offset: read in Hobart (+10:00 in May)
    np.testing.assert_allclose(t["timestamp"][:3], [utc(2019, 5, 2, 3, 4, 5, 250), utc(2019, 5, 2, 3, 4, 7),
                                                    utc(2019, 5, 2, 3, 4, 9)], atol=1e-3)
    assert t["timestamp"][3:].isna().all()
    assert_positions(t, [(-43.1201, 147.3301), (-43.1202, 147.3302), (None, None), (None, None),
                         (None, None)])
    np.testing.assert_allclose(t["depth_m"][:2], [35.5, -2.0])  # GPSAltitudeRef 1 = below sea level
    assert_headings(t["heading_deg"], [350.0, None, None, None, None])
    assert nav.notes["exif_unreadable"] == 2 and nav.notes["exif_no_position"] == 3


def test_exif_without_offset_defaults_to_utc():
    nav = read_nav("exif", DATA / "exif" / "dive", images=["b.jpg"])
    assert nav.table["timestamp"][0] == pytest.approx(utc(2019, 5, 2, 13, 4, 7), abs=1e-3)


def test_qgc_rows_whose_columns_changed_are_left_out_and_counted(tmp_path):
    # QGroundControl inserted a fact group's columns mid-log: those rows would read shifted
    path = tmp_path / "telemetry.csv"
    rows = ["Timestamp,heading,altitudeRelative,gps.lat,gps.lon"]
    for k in range(6):
        rows.append(f"2019-05-02 13:04:{k:02d}.000,10.0,-12.0,-43.120{k:02d},147.330{k:02d}")
    for k in range(6, 9):  # "battery1.voltage" appeared before gps: one more field
        rows.append(f"2019-05-02 13:04:{k:02d}.000,10.0,-12.0,15.9,-43.120{k:02d},147.330{k:02d}")
    rows.append("2019-05-02 13:04:09.000,10.0,-12.0,-43.12009,147.33009")
    path.write_text("\n".join(rows) + "\n")
    nav = read_nav("qgc-csv", path)
    assert nav.notes["rows_wrong_field_count"] == 3
    assert nav.table["line"].tolist() == [2, 3, 4, 5, 6, 7, 11]
    assert nav.table["lat"].iloc[-1] == pytest.approx(-43.12009)
    assert (nav.table["depth_m"] == 12.0).all()
