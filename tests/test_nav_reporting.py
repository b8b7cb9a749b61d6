"""A build says what the navigation cleaner did and how fit the navigation is: dropped rows per
dive and reason, images that lost their fixes, wrong item times, degenerate tracks."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import yaml
from surveys import copy_survey

from pipeline import reasons
from pipeline.build import NothingLocated, build
from pipeline.catalog import load_catalog
from pipeline.summary import summary_markdown
from pipeline.synth import SynthConfig, generate

QUIET = {"workers": 1, "log": lambda *_: None}
CAMERA = "nav/auv_ekf_LC.csv"
VEHICLE = "nav/auv_ekf_centre.csv"


@pytest.fixture(scope="module")
def survey(tmp_path_factory):
    root = tmp_path_factory.mktemp("navrep") / "site"
    generate(SynthConfig(out=root, dives=2, images_per_dive=24, seed=8,
                         formats=["oplab-camera-csv"], faults=False, workers=2))
    return root


@pytest.fixture
def site(survey, tmp_path):
    return copy_survey(survey, tmp_path / "site")


def _catalog(site, **changes):
    doc = yaml.safe_load((site / "catalog.yaml").read_text())
    doc.update(changes)
    (site / "catalog.yaml").write_text(yaml.safe_dump(doc))
    return load_catalog(site / "catalog.yaml")


def _build(cat):
    report = build(cat, **QUIET)
    quar = pq.read_table(cat.output / "quarantine.parquet").to_pandas()
    loc = pq.read_table(cat.output / "locations.parquet").to_pandas()
    return report, loc, quar


def _vehicle_only(site):
    return _catalog(site, nav=[{"format": "oplab-nav-csv", "path": "{dive}/" + VEHICLE}])


def test_rows_the_cleaner_drops_are_counted_per_dive_and_reason(site):
    path = site / "dive01" / VEHICLE
    nav = pd.read_csv(path)
    lat = next(c for c in nav.columns if c.startswith("latitude"))
    lon = next(c for c in nav.columns if c.startswith("longitude"))
    nav.loc[[100, 101], lat] = np.nan  # two rows without a position
    nav.loc[50, nav.columns[0]] = 1.0  # one row dated 1970
    nav = pd.concat([nav, nav.iloc[[200, 201, 202]]]).sort_index(kind="stable")  # repeated times
    spike = nav.index.isin([150, 151, 152])
    nav.loc[spike, lon] += 0.0006  # ~45 m east for 0.3 s, then back
    nav.to_csv(path, index=False)
    report, loc, quar = _build(_vehicle_only(site))
    dropped = report["per_dive"]["dive01"]["nav_rows_dropped"]
    assert dropped == {"nan_rows": 2, "implausible_time_rows": 1, "duplicate_timestamps": 3,
                       "position_jumps": 3}
    assert report["per_dive"]["dive02"]["nav_rows_dropped"] == {}
    on_disk = json.loads((site / "manifests" / "report.json").read_text())
    assert on_disk["per_dive"]["dive01"]["nav_rows_dropped"] == dropped
    text = summary_markdown(report)
    assert ("| dive01 | 2 nan_rows, 1 implausible_time_rows, 3 duplicate_timestamps, "
            "3 position_jumps |") in text
    assert len(loc) == 48 and quar.empty  # the images themselves lost nothing


def test_an_image_whose_fixes_were_dropped_is_told_so_with_the_files_span(site):
    path = site / "dive01" / VEHICLE
    nav = pd.read_csv(path)
    time_col = nav.columns[0]
    lat = next(c for c in nav.columns if c.startswith("latitude"))
    t0 = nav[time_col].min()
    nav.loc[nav[time_col] < t0 + 12.0, lat] = np.nan  # the first 12 s have no position
    nav.to_csv(path, index=False)
    report, loc, quar = _build(_vehicle_only(site))
    lost = quar[(quar.dive == "dive01") & (quar.reason == reasons.OUTSIDE_NAV_SPAN)]
    assert len(lost) >= 2
    for detail in lost.detail:
        assert f"itself spans {t0:.3f}" in detail and "dropped by the navigation cleaner" in detail
    assert report["per_dive"]["dive01"]["nav_rows_dropped"]["nan_rows"] > 100


def test_wrong_item_times_are_time_order_not_jumps(site):
    path = site / "dive01" / CAMERA
    cam = pd.read_csv(path)
    time_col = next(c for c in cam.columns if c.startswith("timestamp"))
    wrong = [3, 7, 11, 15, 19]
    cam.loc[wrong, time_col] += np.array([40.0, -35.0, 30.0, -30.0, 45.0])
    cam.to_csv(path, index=False)
    report, loc, quar = _build(_catalog(site))
    bad = quar[quar.reason == reasons.TIME_ORDER]
    assert sorted(bad.source) == sorted(cam["relative_path"].iloc[wrong].map(
        lambda p: f"dive01/{p}"))
    assert "the item's time is wrong, not its position" in bad.detail.iloc[0]
    assert not (quar.reason == reasons.NAV_JUMP).any()
    assert len(loc) == 48 - len(wrong)


def _freeze(site, dive="dive02"):
    """The dive's fix never changes for 4 minutes and its depths lie above the surface."""
    path = site / dive / CAMERA
    cam = pd.read_csv(path)
    cols = {k: next(c for c in cam.columns if c.startswith(k))
            for k in ("timestamp", "latitude", "longitude", "depth")}
    cam[cols["timestamp"]] = cam[cols["timestamp"]].iloc[0] + 10.0 * np.arange(len(cam))
    cam[cols["latitude"]] = cam[cols["latitude"]].iloc[0]
    cam[cols["longitude"]] = cam[cols["longitude"]].iloc[0]
    cam[cols["depth"]] = -3.0
    cam.to_csv(path, index=False)


def test_degenerate_navigation_is_warned_and_crowded_positions_called_out(site):
    _freeze(site)
    report, loc, quar = _build(_catalog(site))
    warnings = report["per_dive"]["dive02"]["warnings"]
    assert any("does not move" in w for w in warnings)
    assert any("above the sea surface" in w for w in warnings)
    assert report["per_dive"]["dive01"]["warnings"] == []
    assert any("24 images share one position" in w for w in report["warnings"])
    assert "**warnings**" in summary_markdown(report)
    assert len(loc) == 48  # warn (the default) keeps the dive


def test_a_degenerate_dive_can_be_quarantined(site):
    _freeze(site)
    report, loc, quar = _build(_catalog(site, nav_checks={"degenerate": "quarantine"}))
    assert set(loc.dive) == {"dive01"} and len(loc) == 24
    gone = quar[quar.dive == "dive02"]
    assert len(gone) == 24 and set(gone.reason) == {reasons.NAV_DEGENERATE}
    assert "does not move" in gone.detail.iloc[0]


def test_a_build_that_locates_nothing_names_each_cause_with_its_first_case(site):
    for dive in ("dive01", "dive02"):
        path = site / dive / CAMERA
        cam = pd.read_csv(path)
        cam["relative_path"] = "elsewhere/" + cam["relative_path"].str.rsplit("/", n=1).str[-1]
        cam["relative_path"] = cam["relative_path"].str.replace(".jpg", "_x.jpg")
        cam.to_csv(path, index=False)
    with pytest.raises(NothingLocated) as err:
        build(_catalog(site), **QUIET)
    text = str(err.value)
    assert "no_nav x48: dive01/images/" in text and "no entry in dive01/nav/auv_ekf_LC.csv" in text
    assert "hint: the navigation file lists none of these images" in text
    assert "templates resolve from the root" not in text  # the templates found every file


def test_the_catalogs_motion_limits_reach_the_vehicle_log_cleaner(site):
    # a 1 Hz log of a vehicle at ~0.5 m/s with one fix 3 m off: a vehicle that can accelerate
    # at 5 m/s^2 could reach it (so can 3 m/s), one limited to 0.1 m/s^2 could not
    path = site / "dive01" / VEHICLE
    nav = pd.read_csv(path).iloc[::10].reset_index(drop=True)
    lon = next(c for c in nav.columns if c.startswith("longitude"))
    lat = next(c for c in nav.columns if c.startswith("latitude"))
    nav.loc[12, lon] += 3.0 / (111_195.0 * np.cos(np.radians(nav[lat].mean())))
    nav.to_csv(path, index=False)
    dropped = {}
    for accel in (5.0, 0.1):
        cat = _catalog(site, nav=[{"format": "oplab-nav-csv", "path": "{dive}/" + VEHICLE}],
                       nav_checks={"max_accel_m_s2": accel, "position_noise_m": 0.5},
                       max_interp_gap_s=2.5)
        report, _, _ = _build(cat)
        dropped[accel] = report["per_dive"]["dive01"]["nav_rows_dropped"].get("position_jumps", 0)
    assert dropped == {5.0: 0, 0.1: 1}
