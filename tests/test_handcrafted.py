"""Hand-crafted baseline features on images whose answers are known."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image
from seafloor_ssl.evaluation import handcrafted as hc


def test_colour_moments_of_known_images():
    flat = np.full((3, 32, 32), 0.25)
    flat[1] = 0.5
    m = hc.colour_moments(flat)
    assert m[:3] == pytest.approx([0.25, 0.5, 0.25])
    assert m[3:] == pytest.approx(np.zeros(6))
    two = np.zeros((3, 4, 4))
    two[:, :, :2] = 1.0  # half 0, half 1: std 0.5, no skew
    m = hc.colour_moments(two)
    assert m[:3] == pytest.approx([0.5] * 3) and m[3:6] == pytest.approx([0.5] * 3)
    assert m[6:] == pytest.approx(np.zeros(3), abs=1e-12)


def test_gradient_histogram_peaks_at_the_edge_direction():
    x = np.arange(64)
    vertical_stripes = np.tile(np.sin(2 * np.pi * x / 8), (64, 1))  # varies along x only
    g = hc.gradient_features(vertical_stripes)
    whole = g[:hc.ORIENT_BINS]
    assert whole.sum() == pytest.approx(1.0)
    assert np.argmax(whole) in (0, hc.ORIENT_BINS - 1)  # gradient along x: 0 (= 180) degrees
    horizontal = hc.gradient_features(vertical_stripes.T)[:hc.ORIENT_BINS]
    assert np.argmax(horizontal) == hc.ORIENT_BINS // 2  # along y: 90 degrees
    assert hc.gradient_features(np.zeros((16, 16)))[-1] == 0.0


def test_fourier_bands_find_the_frequency_of_a_grating():
    x = np.arange(128)
    edges = np.geomspace(1.0, 64.0, hc.FOURIER_BANDS + 1)
    for cycles in (3, 12, 40):
        grating = np.tile(np.cos(2 * np.pi * cycles * x / 128), (128, 1))
        band = int(np.argmax(hc.fourier_bands(grating)))
        assert edges[band] <= cycles < edges[band + 1], (cycles, band)


def test_extract_from_jpegs_gives_one_row_per_image():
    def jpeg(colour):
        buf = io.BytesIO()
        Image.new("RGB", (80, 60), colour).save(buf, format="JPEG", quality=95)
        return buf.getvalue()

    X = hc.extract([jpeg((200, 30, 30)), jpeg((30, 30, 200))], size=32)
    assert X.shape == (2, hc.DIM) and np.isfinite(X).all()
    assert X[0, 0] > X[1, 0] and X[0, 2] < X[1, 2]  # red mean, blue mean
    assert hc.extract([], size=32).shape == (0, hc.DIM)
