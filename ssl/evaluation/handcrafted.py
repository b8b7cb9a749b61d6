"""Hand-crafted image features: the baseline a learned encoder has to beat.

Per image, on the frame resized to `size` x `size` (numpy only):

    colour moments          mean, standard deviation and skewness (cube root) of R, G, B      9
    gradient orientations   magnitude-weighted histograms of gradient direction (8 bins over
                            0-180 degrees) of the grey image, whole frame and 2 x 2 cells    40
                            plus the mean gradient magnitude                                  1
    Fourier band energies   share of the grey image's spectral power (mean removed) in 8
                            radial bands, log-spaced from 1 cycle per frame to Nyquist, log   8

58 numbers in all; the probes standardise them on the training side like any other features.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

ORIENT_BINS = 8
FOURIER_BANDS = 8
DIM = 9 + ORIENT_BINS * 5 + 1 + FOURIER_BANDS


def colour_moments(img: np.ndarray) -> np.ndarray:
    """img (3, H, W) in [0, 1] -> (9,): per channel mean, std, cube root of the third moment."""
    flat = img.reshape(3, -1).astype(np.float64)
    mean = flat.mean(1)
    centred = flat - mean[:, None]
    std = np.sqrt((centred ** 2).mean(1))
    skew = np.cbrt((centred ** 3).mean(1))
    return np.concatenate([mean, std, skew])


def _orientation_hist(mag: np.ndarray, ang: np.ndarray) -> np.ndarray:
    bins = np.minimum((ang / np.pi * ORIENT_BINS).astype(int), ORIENT_BINS - 1)
    h = np.bincount(bins.ravel(), weights=mag.ravel(), minlength=ORIENT_BINS)
    total = h.sum()
    return h / total if total > 0 else h


def gradient_features(grey: np.ndarray) -> np.ndarray:
    """grey (H, W) -> (41,): orientation histograms (whole frame, then 2 x 2 cells, each
    normalised to sum 1) and the mean gradient magnitude."""
    gy, gx = np.gradient(grey.astype(np.float64))
    mag = np.hypot(gx, gy)
    ang = np.mod(np.arctan2(gy, gx), np.pi)  # direction modulo 180 degrees
    h, w = grey.shape
    parts = [_orientation_hist(mag, ang)]
    for rows in (slice(0, h // 2), slice(h // 2, h)):
        for cols in (slice(0, w // 2), slice(w // 2, w)):
            parts.append(_orientation_hist(mag[rows, cols], ang[rows, cols]))
    return np.concatenate([*parts, [mag.mean()]])


def fourier_bands(grey: np.ndarray) -> np.ndarray:
    """grey (H, W) -> (8,): log share of spectral power per radial band (cycles per frame,
    log-spaced from 1 to the Nyquist limit)."""
    g = grey.astype(np.float64) - grey.mean()
    power = np.abs(np.fft.fft2(g)) ** 2
    h, w = g.shape
    fy = np.fft.fftfreq(h) * h
    fx = np.fft.fftfreq(w) * w
    radius = np.hypot(*np.meshgrid(fy, fx, indexing="ij"))
    edges = np.geomspace(1.0, min(h, w) / 2.0, FOURIER_BANDS + 1)
    edges[-1] += 1e-9
    total = power.sum() + 1e-12
    shares = [power[(radius >= lo) & (radius < hi)].sum() / total
              for lo, hi in zip(edges[:-1], edges[1:], strict=True)]
    return np.log(np.asarray(shares) + 1e-8)


def image_features(img: np.ndarray) -> np.ndarray:
    """img (3, H, W) floats in [0, 1] -> (DIM,) float32."""
    grey = img.mean(0)
    return np.concatenate([colour_moments(img), gradient_features(grey),
                           fourier_bands(grey)]).astype(np.float32)


def extract(jpegs: Sequence[bytes], size: int = 128, batch_size: int = 256) -> np.ndarray:
    """The features of every image (n, DIM): decoded and resized as for the learned encoders."""
    import torch

    from ..training.features import full_frames

    out = []
    device = torch.device("cpu")
    for i in range(0, len(jpegs), batch_size):
        frames = full_frames(jpegs[i:i + batch_size], size, device).numpy()
        out.extend(image_features(f) for f in frames)
    return np.stack(out) if out else np.zeros((0, DIM), dtype=np.float32)
