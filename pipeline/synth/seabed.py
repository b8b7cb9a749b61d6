"""The synthetic seafloor: habitat field, bathymetry and per-habitat texture.

Everything here is a deterministic function of world coordinates (metres east and north of the
site origin) and the seed, so two overlapping image footprints show the same patch of seafloor.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

HABITATS: tuple[str, ...] = (
    "sand",
    "rippled_sand",
    "gravel",
    "reef",
    "seagrass",
    "sponge_garden",
)

# Patch scale: each class score is a sum of plane waves with wavelengths in this range (metres);
# the arg-max of the scores gives patches roughly half a wavelength across (~10-80 m).
_WAVELENGTH_M = (28.0, 150.0)
_WAVES_PER_CLASS = 12
_WARP_M = 6.0  # domain warp amplitude: makes patch outlines irregular rather than wave-shaped

TILE_PX = 512  # texture tiles are periodic, TILE_PX x TILE_PX at TILE_RES_M per pixel
TILE_RES_M = 0.01
# The second (modulation) layer is rotated and scaled by incommensurate amounts so the product
# never repeats within a site (quasi-periodic), while each layer stays a cheap periodic lookup.
_LAYER2_ANGLE = np.deg2rad(37.0)
_LAYER2_SCALE = 1.37


@dataclass(frozen=True)
class _Waves:
    directions: np.ndarray  # (2, n) wave vectors in rad/m
    phases: np.ndarray  # (n,)
    weights: np.ndarray  # (n,)


def _plane_waves(rng: np.random.Generator, n: int, wl_range: tuple[float, float]) -> _Waves:
    angle = rng.uniform(0, 2 * np.pi, n)
    wavelength = np.exp(rng.uniform(np.log(wl_range[0]), np.log(wl_range[1]), n))
    k = 2 * np.pi / wavelength
    directions = np.stack([k * np.cos(angle), k * np.sin(angle)])
    # Longer waves carry more weight: a red spectrum gives blob-like, autocorrelated patches.
    weights = (wavelength / wl_range[1]) ** 0.5
    weights = weights / np.sqrt(np.sum(weights**2))
    return _Waves(directions, rng.uniform(0, 2 * np.pi, n), weights)


class Seabed:
    """Habitat classes, depth and albedo of the site as functions of (x, y) in metres."""

    def __init__(self, seed: int = 0):
        rng = np.random.default_rng([seed, 7001])
        n_cls = len(HABITATS)
        self._class_waves = [
            _plane_waves(rng, _WAVES_PER_CLASS, _WAVELENGTH_M) for _ in range(n_cls)
        ]
        all_dirs = np.concatenate([w.directions for w in self._class_waves], axis=1)
        self._dirs = all_dirs.astype(np.float64)
        self._phases = np.concatenate([w.phases for w in self._class_waves])
        self._weights = np.concatenate([w.weights for w in self._class_waves])
        self._warp = [_plane_waves(rng, 8, (25.0, 70.0)) for _ in range(2)]
        self._bathy = _plane_waves(rng, 6, (150.0, 600.0))
        self.tiles = _texture_tiles(rng)  # (n_cls, TILE_PX, TILE_PX, 3) float32 albedo
        # uint8 copy for the per-pixel gathers: 4x less memory traffic than float32
        self._tiles_flat = np.round(self.tiles * 255).astype(np.uint8).reshape(-1, 3)
        self._macro_flat = (1.0 + 0.18 * _filtered_noise(rng, 25.0)).astype(np.float32).ravel()

    @staticmethod
    def _eval(waves: _Waves, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        phase = np.multiply.outer(x, waves.directions[0]) + np.multiply.outer(y, waves.directions[1])
        return np.cos(phase + waves.phases) @ waves.weights

    def class_scores(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Scores (..., n_classes); the habitat at a point is their arg-max."""
        x = np.asarray(x, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        xw = x + _WARP_M * self._eval(self._warp[0], x, y)
        yw = y + _WARP_M * self._eval(self._warp[1], x, y)
        phase = np.multiply.outer(xw, self._dirs[0]) + np.multiply.outer(yw, self._dirs[1])
        terms = np.cos(phase + self._phases) * self._weights
        return terms.reshape(*x.shape, len(HABITATS), _WAVES_PER_CLASS).sum(-1)

    def habitat(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Habitat class index at world points."""
        return np.argmax(self.class_scores(x, y), axis=-1).astype(np.uint8)

    def seabed_depth_m(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Water depth of the seabed (positive down): a gentle 40-50 m shelf."""
        return 45.0 + 4.0 * self._eval(self._bathy, np.asarray(x, float), np.asarray(y, float))

    def albedo(self, x: np.ndarray, y: np.ndarray, cls: np.ndarray) -> np.ndarray:
        """RGB albedo x 255 (float32, nominally 0..255) at world points for the class per point."""
        inv = np.float32(1.0 / TILE_RES_M)
        mask = TILE_PX - 1  # TILE_PX is a power of two: bitwise and is the periodic wrap
        ix1 = np.floor(x * inv).astype(np.int32) & mask
        iy1 = np.floor(y * inv).astype(np.int32) & mask
        c, s = np.float32(np.cos(_LAYER2_ANGLE)), np.float32(np.sin(_LAYER2_ANGLE))
        k2 = np.float32(inv / _LAYER2_SCALE)
        ix2 = np.floor((c * x - s * y) * k2).astype(np.int32) & mask
        iy2 = np.floor((s * x + c * y) * k2).astype(np.int32) & mask
        base = cls.astype(np.int32) * (TILE_PX * TILE_PX)
        flat = self._tiles_flat
        # layer 2 is a shared, colourless low-frequency modulation (patchy shading, sediment
        # cover): it breaks the tile period without duplicating directional structure
        modulation = np.take(self._macro_flat, iy2 * TILE_PX + ix2)
        return np.take(flat, base + iy1 * TILE_PX + ix1, axis=0) * modulation[..., None]


def _filtered_noise(
    rng: np.random.Generator, scale_px: float, anisotropy: float = 1.0, angle: float = 0.0
) -> np.ndarray:
    """Periodic Gaussian-filtered noise on the tile (zero mean, unit std)."""
    f = np.fft.fftfreq(TILE_PX)
    fx, fy = np.meshgrid(f, f)
    c, s = np.cos(angle), np.sin(angle)
    u = c * fx + s * fy
    v = -s * fx + c * fy
    sigma_f = 1.0 / (2 * np.pi * scale_px)
    g = np.exp(-0.5 * ((u / sigma_f) ** 2 + (v * anisotropy / sigma_f) ** 2))
    field = np.real(np.fft.ifft2(np.fft.fft2(rng.standard_normal((TILE_PX, TILE_PX))) * g))
    return (field - field.mean()) / (field.std() + 1e-12)


def _texture_tiles(rng: np.random.Generator) -> np.ndarray:
    """One periodic albedo tile per habitat (1 cm pixels, 5.12 m period)."""
    yy, xx = np.mgrid[0:TILE_PX, 0:TILE_PX].astype(np.float32)
    tiles = []

    def mix(base, *layers):
        out = np.broadcast_to(np.asarray(base, np.float32), (TILE_PX, TILE_PX, 3)).copy()
        for amount, field, tint in layers:
            out += amount * field[..., None] * np.asarray(tint, np.float32)
        return np.clip(out, 0.02, 1.0)

    # sand: pale, fine grain, faint mottling
    tiles.append(mix((0.78, 0.70, 0.52),
                     (0.07, _filtered_noise(rng, 1.0), (1, 1, 1)),
                     (0.08, _filtered_noise(rng, 12.0), (1, 0.9, 0.7)),
                     (0.12, np.clip(_filtered_noise(rng, 1.5) - 1.8, 0, None), (-1, -1, -1))))
    # rippled sand: sand with wave ripples (~9 cm wavelength) whose crests wander
    wander = _filtered_noise(rng, 40.0)
    ripples = np.sin(2 * np.pi * (xx * 1.0 + 0.25 * yy) / (TILE_PX / 56) + 2.5 * wander)
    tiles.append(mix((0.74, 0.66, 0.49),
                     (0.16, ripples.astype(np.float32), (1, 1, 0.9)),
                     (0.04, _filtered_noise(rng, 1.0), (1, 1, 1))))
    # gravel: pebbles 2-4 cm, varied grey-brown
    pebbles = np.tanh(3 * _filtered_noise(rng, 2.5))
    tint = _filtered_noise(rng, 3.0)
    tiles.append(mix((0.52, 0.48, 0.42),
                     (0.18, pebbles, (1, 1, 1)),
                     (0.08, tint, (1, 0.8, 0.6)),
                     (0.05, _filtered_noise(rng, 0.8), (1, 1, 1))))
    # reef / rock: dark, rough, high contrast with pink encrusting algae
    rough = _filtered_noise(rng, 6.0) + 0.5 * _filtered_noise(rng, 1.5)
    encrust = np.clip(_filtered_noise(rng, 10.0) - 0.8, 0, None)
    tiles.append(mix((0.33, 0.30, 0.28),
                     (0.14, rough, (1, 1, 1)),
                     (0.35, encrust, (0.9, 0.35, 0.55))))
    # seagrass: dark green blades, long and thin in a prevailing direction
    blades = np.clip(_filtered_noise(rng, 4.0, anisotropy=8.0, angle=0.4), 0, None)
    tiles.append(mix((0.20, 0.24, 0.14),
                     (0.22, blades, (0.5, 1.0, 0.35)),
                     (0.05, _filtered_noise(rng, 1.0), (1, 1, 1))))
    # sponge garden: sand floor with scattered coloured sponges (5-15 cm)
    sponge_a = np.clip(_filtered_noise(rng, 5.0) - 1.3, 0, None)
    sponge_b = np.clip(_filtered_noise(rng, 4.0) - 1.4, 0, None)
    tiles.append(mix((0.62, 0.56, 0.44),
                     (0.04, _filtered_noise(rng, 1.0), (1, 1, 1)),
                     (0.55, sponge_a, (0.55, 0.15, -0.35)),
                     (0.55, sponge_b, (-0.2, -0.35, 0.25))))
    return np.stack(tiles).astype(np.float32)
