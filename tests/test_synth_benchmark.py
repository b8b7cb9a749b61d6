"""The benchmark preset of the synthetic survey generator (python -m pipeline.synth --preset
benchmark): habitats as mixtures of shared elements, spatially coherent labels, per-dive
imaging nuisance, footprint-majority labels with their purity."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from pipeline.synth import SynthConfig, generate
from pipeline.synth.imaging import dive_water
from pipeline.synth.mixture import (
    BENCHMARK_HABITATS,
    ELEMENTS,
    TARGET_SHARES,
    MixtureSeabed,
)
from pipeline.synth.vehicle import ALTITUDE_LIMITS_M


@pytest.fixture(scope="module")
def seabed():
    return MixtureSeabed(0)


@pytest.fixture(scope="module")
def survey(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "site"
    generate(SynthConfig(out=out, dives=3, images_per_dive=60, seed=0, size=(160, 120),
                         workers=2, preset="benchmark"))
    return out


def _site_points(rng, n):
    return rng.uniform(-140, 140, n), rng.uniform(-140, 140, n)


def test_element_fractions_are_continuous_and_vary(seabed):
    rng = np.random.default_rng(1)
    x, y = _site_points(rng, 4000)
    f = seabed.element_fractions(x, y)
    assert f.shape == (4000, len(ELEMENTS))
    assert np.allclose(f.sum(-1), 1.0)
    angle = rng.uniform(0, 2 * np.pi, 4000)
    g = seabed.element_fractions(x + 0.05 * np.cos(angle), y + 0.05 * np.sin(angle))
    near = np.abs(f - g).sum(-1)
    assert np.quantile(near, 0.99) < 0.1, "fractions 5 cm apart should differ little"
    far = np.abs(f - np.roll(f, 1, axis=0)).sum(-1)
    assert np.median(far) > 0.5, "fractions should vary across the site"
    # within one habitat the mixture still varies (metre-scale heterogeneity)
    hab = seabed.habitat(x, y)
    sand = f[hab == 0]
    assert sand.std(axis=0).max() > 0.05


def test_labels_coherent_over_metres_not_over_50m(seabed):
    rng = np.random.default_rng(2)
    x, y = _site_points(rng, 6000)
    angle = rng.uniform(0, 2 * np.pi, 6000)
    h = seabed.habitat(x, y)

    def agree(d):
        return np.mean(h == seabed.habitat(x + d * np.cos(angle), y + d * np.sin(angle)))

    near, far = agree(1.0), agree(50.0)
    assert near > 0.93
    assert far < 0.6
    assert (1 - far) > 5 * (1 - near)


def test_class_shares_near_targets(seabed):
    xs = np.arange(-150, 150, 1.1) + 0.4
    gx, gy = np.meshgrid(xs, xs)
    share = np.bincount(seabed.habitat(gx, gy).ravel(), minlength=len(BENCHMARK_HABITATS))
    share = share / gx.size
    target = np.asarray(TARGET_SHARES)
    assert np.all(np.abs(share - target) < 0.25 * target + 0.01), dict(
        zip(BENCHMARK_HABITATS, share.round(3), strict=True))
    assert share.max() == pytest.approx(0.40, abs=0.05)
    assert share.min() > 0.025


def test_habitat_pairs_share_elements(seabed):
    p = seabed.proportions
    unit = p / np.linalg.norm(p, axis=1, keepdims=True)
    cos = unit @ unit.T
    idx = {h: i for i, h in enumerate(BENCHMARK_HABITATS)}
    pairs = [("sand", "shell_hash_sand"), ("gravel", "sponge_garden"), ("reef", "boulder_field")]
    for a, b in pairs:
        assert cos[idx[a], idx[b]] > 0.8, (a, b, cos[idx[a], idx[b]])


def test_ecotones_blend_weights(seabed):
    """Soft habitat weights change over metres across a border, not in one step."""
    x = np.linspace(-150, 150, 30001)  # 1 cm steps along a line
    y = np.full_like(x, 12.3)
    w = seabed.habitat_weights(x, y)
    top = w.max(-1)
    assert (top < 0.8).mean() > 0.005  # blended stretches exist
    assert np.abs(np.diff(w, axis=0)).max() < 0.2  # and change smoothly at 1 cm


def test_survey_layout_and_preset(survey):
    doc = json.loads((survey / "survey.json").read_text())
    assert doc["preset"] == "benchmark"
    assert doc["habitats"] == list(BENCHMARK_HABITATS)
    for name in ("labels.csv", "truth.csv", "catalog.yaml", "site.png", "contact_sheet.png"):
        assert (survey / name).is_file(), name
    labels = pd.read_csv(survey / "labels.csv")
    assert list(labels.columns) == ["image_id", "label"]
    assert set(labels["label"]) <= set(BENCHMARK_HABITATS)
    assert len(labels) == 180


def test_per_dive_nuisance_differs(survey):
    imaging = json.loads((survey / "survey.json").read_text())["imaging"]
    assert set(imaging) == {"dive01", "dive02", "dive03"}
    for key in ("attenuation_scale", "white_balance", "exposure", "turbidity", "shutter_s"):
        values = [json.dumps(imaging[d][key]) for d in imaging]
        assert len(set(values)) == 3, key
    assert dive_water(0, 0) == dive_water(0, 0)


def test_label_purity(survey):
    truth = pd.read_csv(survey / "truth.csv")
    purity = truth["label_purity"]
    assert ((purity > 0) & (purity <= 1)).all()
    assert (purity < 1).any()
    assert (purity >= 1 / len(BENCHMARK_HABITATS)).all()


def test_altitude_follows_terrain_within_limits(survey):
    truth = pd.read_csv(survey / "truth.csv")
    alt = truth["altitude_m"]
    lo, hi = ALTITUDE_LIMITS_M
    assert alt.between(lo - 1e-6, hi + 1e-6).all()
    assert alt.max() - alt.min() > 0.5


def test_exposure_varies_within_dive(survey):
    truth = pd.read_csv(survey / "truth.csv")
    for _, g in truth.groupby("dive"):
        assert g["exposure"].nunique() > 10  # strobe drift
