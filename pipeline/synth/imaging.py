"""Per-dive imaging nuisance for the benchmark preset: water, camera settings, strobe drift.

Each dive is flown on its own day, so it sees its own water (attenuation and turbidity), and
the camera is set up anew (white balance, exposure, shutter). Within a dive the strobe power
drifts, and a small share of frames is badly exposed. Everything is drawn from the seed and the
dive index, and ``DiveWater.record()`` is written to survey.json.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .camera import ATTENUATION_PER_M, BACKSCATTER_RGB, Imaging
from .vehicle import SPEED_M_S

ATTENUATION_SCALE_RANGE = (0.6, 1.8)  # x the default per-channel attenuation
BACKSCATTER_SCALE_RANGE = (0.5, 2.0)
TURBIDITY_RANGE_PER_M = (0.15, 0.6)
WHITE_BALANCE_SIGMA = 0.12  # log-gain spread per channel
# the camera is white-balanced on the day for the water's colour at its nominal range, but only
# in part (a grey card is rarely used at sea): this share of the cast is corrected
WHITE_BALANCE_CORRECTION = 0.7
NOMINAL_PATH_M = 4.0  # strobe -> seabed -> lens at the nominal 2 m altitude
EXPOSURE_RANGE = (0.7, 1.4)
STROBE_DRIFT_RANGE = (0.05, 0.20)  # amplitude of the slow strobe-power oscillation
STROBE_PERIOD_RANGE_S = (120.0, 400.0)
STROBE_FADE_RANGE = (0.0, 0.15)  # fractional power loss over a dive (battery sag)
SHUTTER_RANGE_S = (0.002, 0.02)
BAD_EXPOSURE_RATE = 0.015
BAD_EXPOSURE_FACTORS = (0.25, 3.0)  # under- and over-exposed


@dataclass(frozen=True)
class DiveWater:
    """Imaging conditions shared by one dive's frames."""

    attenuation_scale: tuple[float, float, float]
    backscatter_rgb: tuple[float, float, float]
    turbidity: float
    white_balance: tuple[float, float, float]
    exposure: float
    strobe_drift: float
    strobe_period_s: float
    strobe_phase: float
    strobe_fade: float
    shutter_s: float
    duration_s: float

    def strobe_power(self, tau_s: np.ndarray) -> np.ndarray:
        """Relative strobe power at seconds since the dive start."""
        tau = np.asarray(tau_s, float)
        wave = self.strobe_drift * np.sin(2 * np.pi * tau / self.strobe_period_s + self.strobe_phase)
        return (1.0 + wave) * (1.0 - self.strobe_fade * np.clip(tau / self.duration_s, 0, 1))

    def imaging(self, tau_s: float = 0.0, factor: float = 1.0) -> Imaging:
        """Per-frame Imaging at seconds since the dive start (``factor``: exposure error)."""
        return Imaging(
            attenuation_scale=self.attenuation_scale, backscatter_rgb=self.backscatter_rgb,
            turbidity=self.turbidity, white_balance=self.white_balance,
            exposure=float(self.exposure * self.strobe_power(tau_s) * factor),
            motion_blur_m=float(SPEED_M_S * self.shutter_s),
        )

    def record(self) -> dict:
        """JSON-ready parameters (rounded)."""
        def r(v):
            return [round(float(a), 4) for a in v] if isinstance(v, tuple) else round(float(v), 4)

        return {k: r(getattr(self, k)) for k in self.__dataclass_fields__}


def dive_water(seed: int, dive_index: int, duration_s: float = 600.0) -> DiveWater:
    """Draw one dive's water and camera settings."""
    rng = np.random.default_rng([seed, 8801, dive_index])

    def jitter(sigma):
        return np.exp(rng.normal(0.0, sigma, 3))

    atten = rng.uniform(*ATTENUATION_SCALE_RANGE) * jitter(0.15)
    back = BACKSCATTER_RGB * rng.uniform(*BACKSCATTER_SCALE_RANGE) * jitter(0.2)
    cast = np.exp(-NOMINAL_PATH_M * ATTENUATION_PER_M * atten)  # transmission per channel
    balance = jitter(WHITE_BALANCE_SIGMA) * (cast.mean() / cast) ** WHITE_BALANCE_CORRECTION
    balance /= balance.mean()
    return DiveWater(
        attenuation_scale=tuple(float(v) for v in atten),
        backscatter_rgb=tuple(float(v) for v in back),
        turbidity=float(rng.uniform(*TURBIDITY_RANGE_PER_M)),
        white_balance=tuple(float(v) for v in balance),
        exposure=float(np.exp(rng.uniform(*np.log(EXPOSURE_RANGE)))),
        strobe_drift=float(rng.uniform(*STROBE_DRIFT_RANGE)),
        strobe_period_s=float(rng.uniform(*STROBE_PERIOD_RANGE_S)),
        strobe_phase=float(rng.uniform(0, 2 * np.pi)),
        strobe_fade=float(rng.uniform(*STROBE_FADE_RANGE)),
        shutter_s=float(rng.uniform(*SHUTTER_RANGE_S)),
        duration_s=float(duration_s),
    )


def frame_conditions(
    water: DiveWater, tau_s: np.ndarray, seed: int, dive_index: int
) -> list[Imaging]:
    """Imaging of each frame at ``tau_s`` seconds since the dive start; about
    BAD_EXPOSURE_RATE of the frames are badly exposed."""
    rng = np.random.default_rng([seed, 8802, dive_index])
    n = len(tau_s)
    bad = rng.uniform(size=n) < BAD_EXPOSURE_RATE
    which = rng.integers(0, 2, n)
    factor = np.where(bad, np.asarray(BAD_EXPOSURE_FACTORS)[which], 1.0)
    return [water.imaging(float(t), float(f)) for t, f in zip(tau_s, factor, strict=True)]
