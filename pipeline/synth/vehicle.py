"""AUV dives: lawnmower tracks, true poses, and the navigation the vehicle logs.

Positions are metres east (x) and north (y) of the site origin. The true trajectory drives the
camera; the logged navigation adds white noise and a slow dead-reckoning drift, as a DVL/INS
solution does.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SPEED_M_S = 0.5
NAV_HZ = 10.0
CAMERA_HZ = 1.0
SITE_HALF_M = 150.0  # the site is about 300 m x 300 m around its origin

# Terrain following (benchmark preset): the depth controller tracks seabed depth minus a
# commanded altitude through a first-order lag, so altitude varies with the relief.
ALTITUDE_LIMITS_M = (1.2, 4.0)
TARGET_ALTITUDE_RANGE_M = (1.9, 2.8)  # per-dive commanded altitude
TARGET_SWING_M = 0.6  # slow changes of the commanded altitude within a dive
CONTROLLER_LAG_RANGE_S = (5.0, 12.0)
_CONTROL_STEP_S = 0.1


@dataclass(frozen=True)
class DivePlan:
    name: str
    index: int
    start_unix: float
    centre_xy: tuple[float, float]
    line_bearing_deg: float  # survey-line direction, 0 = north
    line_length_m: float
    line_spacing_m: float
    n_images: int
    revisits: str | None = None  # name of the dive whose area this one partly covers again


@dataclass
class Track:
    """Samples of a dive at arbitrary times (arrays of equal length)."""

    t: np.ndarray  # unix seconds
    x: np.ndarray
    y: np.ndarray
    depth_m: np.ndarray
    altitude_m: np.ndarray
    heading_deg: np.ndarray
    roll_deg: np.ndarray
    pitch_deg: np.ndarray


def plan_dives(
    n_dives: int, images_per_dive: int, seed: int, start_unix: float, nav_only: bool = False
) -> list[DivePlan]:
    """Lay out dives over the site; dive 2 (index 1) partly revisits dive 1 on a later day.

    With ``nav_only`` (huge surveys for pair-search benchmarks) the dives instead tile one
    square side by side, with 2 m line spacing: at 0.5 m between images, one image per m².
    """
    rng = np.random.default_rng([seed, 1201])
    if nav_only:
        return _tiled_plans(n_dives, images_per_dive, start_unix)
    track_m = images_per_dive * SPEED_M_S / CAMERA_HZ
    plans: list[DivePlan] = []
    for i in range(n_dives):
        spacing = float(rng.choice([2.5, 3.0, 3.5, 4.0]))
        # long lines crossing several habitat patches, as many as the image budget allows
        length = float(np.clip(np.sqrt(track_m * spacing * 10.0), 30.0, 240.0))
        n_lines = max(1, int(np.ceil(track_m / (length + spacing * np.pi / 2))))
        width = n_lines * spacing
        if i == 1:
            base = plans[0]
            # perpendicular lines over a third of dive 1's block, two days later
            bearing = (base.line_bearing_deg + 90.0) % 180.0
            off = np.array([base.line_length_m / 4, 0.0])
            centre = np.asarray(base.centre_xy) + _rotate(off, base.line_bearing_deg)
            start = start_unix + 2 * 86400 + 3600 * float(rng.uniform(0, 4))
            revisits = base.name
        else:
            bearing = float(rng.choice([0.0, 45.0, 90.0, 135.0]) + rng.uniform(-10, 10))
            angle = 2 * np.pi * (i / max(n_dives, 2)) + rng.uniform(-0.3, 0.3)
            radius = 0.0 if i == 0 else 70.0 + 30.0 * float(rng.uniform())
            centre = np.array([radius * np.cos(angle), radius * np.sin(angle)])
            # dive 2 (the revisit) takes day 2; later dives follow on days 3, 4, ...
            start = start_unix + (i + 1 if i else 0) * 86400 + 3600 * float(rng.uniform(0, 4))
            revisits = None
        half = max(length, width) / 2 + 5.0
        centre = np.clip(centre, -SITE_HALF_M + half, SITE_HALF_M - half)
        plans.append(DivePlan(
            name=f"dive{i + 1:02d}", index=i, start_unix=float(round(start, 1)),
            centre_xy=(float(centre[0]), float(centre[1])), line_bearing_deg=float(bearing),
            line_length_m=length, line_spacing_m=spacing, n_images=images_per_dive,
            revisits=revisits,
        ))
    return plans


def _tiled_plans(n_dives: int, images_per_dive: int, start_unix: float) -> list[DivePlan]:
    side = float(np.sqrt(n_dives * images_per_dive))  # metres, at 1 image per m²
    width = side / n_dives
    return [
        DivePlan(
            name=f"dive{i + 1:02d}", index=i, start_unix=start_unix + i * 86400.0,
            centre_xy=(-side / 2 + (i + 0.5) * width, 0.0), line_bearing_deg=0.0,
            line_length_m=side, line_spacing_m=2.0, n_images=images_per_dive,
        )
        for i in range(n_dives)
    ]


def _rotate(v: np.ndarray, bearing_deg: float) -> np.ndarray:
    """Rotate a vector given in (across, along) line axes into (east, north)."""
    b = np.deg2rad(bearing_deg)
    along = np.array([np.sin(b), np.cos(b)])
    across = np.array([np.cos(b), -np.sin(b)])
    return v[0] * along + v[1] * across


def lawnmower_path(plan: DivePlan) -> np.ndarray:
    """Densely sampled (x, y) path: straight lines joined by semicircular turns."""
    # 5 cm steps for image surveys; coarser for millions of poses (memory), never above 0.5 m
    step_m = float(np.clip(plan.n_images * SPEED_M_S / 4e6, 0.05, 0.5))
    pts = []
    n_lines = max(1, int(np.ceil(
        plan.n_images * SPEED_M_S / CAMERA_HZ / (plan.line_length_m + plan.line_spacing_m * 1.6)
    ))) + 1
    L, s = plan.line_length_m, plan.line_spacing_m
    for k in range(n_lines):
        across = (k - (n_lines - 1) / 2) * s
        along = np.arange(-L / 2, L / 2, step_m)
        if k % 2:
            along = along[::-1]
        pts.append(np.stack([along, np.full_like(along, across)], axis=1))
        if k < n_lines - 1:
            end = L / 2 if k % 2 == 0 else -L / 2
            direction = 1 if k % 2 == 0 else -1
            theta = np.arange(0, np.pi, step_m / (s / 2))
            arc_along = end + direction * (s / 2) * np.sin(theta)
            arc_across = across + s / 2 - (s / 2) * np.cos(theta)
            pts.append(np.stack([arc_along, arc_across], axis=1))
    local = np.concatenate(pts)
    b = np.deg2rad(plan.line_bearing_deg)
    east = local[:, 0] * np.sin(b) + local[:, 1] * np.cos(b)
    north = local[:, 0] * np.cos(b) - local[:, 1] * np.sin(b)
    return np.stack([east + plan.centre_xy[0], north + plan.centre_xy[1]], axis=1)


class DiveMotion:
    """True motion of one dive as a function of time."""

    def __init__(self, plan: DivePlan, seabed_depth, seed: int, terrain_following: bool = False):
        self.plan = plan
        rng = np.random.default_rng([seed, 3301, plan.index])
        path = lawnmower_path(plan)
        seg = np.linalg.norm(np.diff(path, axis=0), axis=1)
        self._arc = np.concatenate([[0.0], np.cumsum(seg)])
        self._path = path
        self._seabed_depth = seabed_depth
        # speed wobbles a few percent (currents, controller); altitude follows terrain loosely
        self._speed_ph = rng.uniform(0, 2 * np.pi, 3)
        self._alt_ph = rng.uniform(0, 2 * np.pi, 3)
        self._yaw_ph = rng.uniform(0, 2 * np.pi, 2)
        self.duration_s = plan.n_images / CAMERA_HZ + 2.0
        self._depth_track = self._terrain_following(seed) if terrain_following else None

    def _terrain_following(self, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """Vehicle depth on a time grid: a lagged track of seabed depth - commanded altitude."""
        rng = np.random.default_rng([seed, 3302, self.plan.index])
        target = rng.uniform(*TARGET_ALTITUDE_RANGE_M)
        lag = rng.uniform(*CONTROLLER_LAG_RANGE_S)
        period = rng.uniform(90.0, 240.0)
        phase = rng.uniform(0, 2 * np.pi)
        tau = np.arange(-5.0, self.duration_s + 5.0, _CONTROL_STEP_S)
        s = np.clip(self._arc_length(tau), 0, self._arc[-1])
        floor = self._seabed_depth(np.interp(s, self._arc, self._path[:, 0]),
                                   np.interp(s, self._arc, self._path[:, 1]))
        wanted = floor - (target + TARGET_SWING_M * np.sin(2 * np.pi * tau / period + phase))
        depth = np.empty_like(wanted)
        depth[0] = wanted[0]
        gain = _CONTROL_STEP_S / lag
        for i in range(1, len(tau)):
            depth[i] = depth[i - 1] + gain * (wanted[i] - depth[i - 1])
        lo, hi = ALTITUDE_LIMITS_M
        depth = np.clip(depth, floor - hi, floor - lo)  # obstacle avoidance / bottom lock
        return tau, depth

    def _arc_length(self, tau: np.ndarray) -> np.ndarray:
        p = self._speed_ph
        # integral of v(t) = v0 (1 + 0.04 sin(w1 t + p0) + 0.03 sin(w2 t + p1))
        w1, w2 = 2 * np.pi / 37.0, 2 * np.pi / 11.0
        return SPEED_M_S * (
            tau
            - 0.04 / w1 * (np.cos(w1 * tau + p[0]) - np.cos(p[0]))
            - 0.03 / w2 * (np.cos(w2 * tau + p[1]) - np.cos(p[1]))
        )

    def sample(self, t_unix: np.ndarray) -> Track:
        tau = np.asarray(t_unix, dtype=np.float64) - self.plan.start_unix
        s = np.clip(self._arc_length(tau), 0, self._arc[-1])
        x = np.interp(s, self._arc, self._path[:, 0])
        y = np.interp(s, self._arc, self._path[:, 1])
        ds = 0.05
        dx = np.interp(s + ds, self._arc, self._path[:, 0]) - np.interp(s - ds, self._arc, self._path[:, 0])
        dy = np.interp(s + ds, self._arc, self._path[:, 1]) - np.interp(s - ds, self._arc, self._path[:, 1])
        course = np.degrees(np.arctan2(dx, dy))
        a, q = self._alt_ph, self._yaw_ph
        # the vehicle crabs a few degrees into the current, so heading != course over ground
        heading = (course + 2.5 * np.sin(2 * np.pi * tau / 53.0 + q[0])
                   + 1.0 * np.sin(2 * np.pi * tau / 7.0 + q[1])) % 360.0
        if self._depth_track is None:
            altitude = (2.0 + 0.25 * np.sin(2 * np.pi * tau / 47.0 + a[0])
                        + 0.12 * np.sin(2 * np.pi * tau / 13.0 + a[1])
                        + 0.05 * np.sin(2 * np.pi * tau / 3.1 + a[2]))
            depth = self._seabed_depth(x, y) - altitude
        else:
            floor = self._seabed_depth(x, y)
            depth = np.interp(tau, *self._depth_track)
            altitude = np.clip(floor - depth, *ALTITUDE_LIMITS_M)
            depth = floor - altitude
        roll = 1.5 * np.sin(2 * np.pi * tau / 5.3 + a[1])
        pitch = 1.0 * np.sin(2 * np.pi * tau / 8.9 + a[2])
        return Track(t=np.asarray(t_unix, float), x=x, y=y, depth_m=depth, altitude_m=altitude,
                     heading_deg=heading, roll_deg=roll, pitch_deg=pitch)


def navigation_estimate(true: Track, seed: int, dive_index: int) -> Track:
    """What the vehicle logs: true motion + slow drift (random walk) + white noise."""
    rng = np.random.default_rng([seed, 4401, dive_index])
    n = len(true.t)
    dt = np.diff(true.t, prepend=true.t[0])
    # dead-reckoning drift: random walk in velocity error, ~0.2-0.5 m after a 10-minute dive
    drift_v = np.cumsum(rng.standard_normal((n, 2)) * 2e-5 * np.sqrt(np.maximum(dt, 1e-3))[:, None], axis=0)
    drift = np.cumsum(drift_v * dt[:, None], axis=0)
    drift += 1e-3 * np.cumsum(rng.standard_normal((n, 2)) * np.sqrt(np.maximum(dt, 1e-3))[:, None], axis=0)
    return Track(
        t=true.t.copy(),
        x=true.x + drift[:, 0] + rng.normal(0, 0.02, n),
        y=true.y + drift[:, 1] + rng.normal(0, 0.02, n),
        depth_m=true.depth_m + rng.normal(0, 0.02, n),
        altitude_m=true.altitude_m + rng.normal(0, 0.01, n),
        heading_deg=(true.heading_deg + rng.normal(0, 0.3, n)) % 360.0,
        roll_deg=true.roll_deg + rng.normal(0, 0.1, n),
        pitch_deg=true.pitch_deg + rng.normal(0, 0.1, n),
    )
