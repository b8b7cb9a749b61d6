"""A harder seafloor for the benchmark preset: habitats as mixtures of shared visual elements.

In the default seabed (seabed.py) each habitat is one texture, so a habitat is recognisable from
a few pixels. Here the seabed is built from ~12 *elements* (fine sand, shell hash, wave ripples,
pebbles, cobbles, boulders, bare rock, encrusting algae, kelp, seagrass, two sponge morphotypes,
small fauna). A habitat is a vector of element proportions, and several habitats share most
elements and differ mainly in proportion (sand vs shell-hash sand, gravel vs sponge garden on
gravel, reef vs boulder field), so telling them apart takes context, not texture matching.

The field is built in layers, all deterministic functions of world (x, y) and the seed:

* habitat scores: plane-wave sums (patches tens of metres across) plus per-class biases that
  are calibrated at construction so class shares over the site approach ``TARGET_SHARES``; the
  label at a point is their arg-max;
* soft habitat weights: softmax of the scores at ``ECOTONE_TEMPERATURE``, so element fractions
  blend over a few metres across a border;
* heterogeneity: each element's fraction is multiplied by a metre-scale log-normal field and
  the mixture renormalised, so cover varies continuously inside a patch;
* appearance drift: low-frequency fields (~100-300 m) tint sediments, change overall
  brightness and stretch texture grain, so one class never has one look;
* pixels: each element (ripples: one per orientation and wavelength band) is a periodic RGB
  tile with a "claim" channel whose values have Gumbel marginals. A pixel shows the element
  maximising ``claim + log(fraction)`` (softly), which makes each element cover about its
  fraction of the ground in coherent shapes (stones, sponges, ripple patches). Fractions are
  evaluated on the renderer's coarse grid; per pixel only the ``TOP_K`` largest components of
  the nearest grid node are blended.
"""

from __future__ import annotations

import numpy as np

from .camera import COARSE_STEP_PX, Renderer, pixel_to_world
from .seabed import TILE_PX, TILE_RES_M, Seabed, _filtered_noise, _plane_waves, _Waves

ELEMENTS: tuple[str, ...] = (
    "fine_sand",
    "shell_hash",
    "ripples",
    "pebbles",
    "cobbles",
    "boulders",
    "bare_rock",
    "encrusting_algae",
    "kelp",
    "seagrass",
    "sponge_massive",
    "sponge_branching",
    "small_fauna",
)

BENCHMARK_HABITATS: tuple[str, ...] = (
    "sand",
    "shell_hash_sand",
    "gravel",
    "sponge_garden",
    "reef",
    "boulder_field",
    "kelp_forest",
    "seagrass_meadow",
)

# Share of the site each habitat should cover (the bias calibration's target).
TARGET_SHARES: tuple[float, ...] = (0.40, 0.08, 0.14, 0.05, 0.12, 0.07, 0.04, 0.10)

# Element proportions per habitat (renormalised); unlisted elements are absent.
PROPORTIONS: dict[str, dict[str, float]] = {
    "sand": {"fine_sand": 0.62, "ripples": 0.30, "shell_hash": 0.06, "small_fauna": 0.02},
    "shell_hash_sand": {"fine_sand": 0.42, "ripples": 0.22, "shell_hash": 0.30,
                        "small_fauna": 0.04, "pebbles": 0.02},
    "gravel": {"pebbles": 0.50, "cobbles": 0.20, "fine_sand": 0.22, "shell_hash": 0.06,
               "small_fauna": 0.02},
    "sponge_garden": {"pebbles": 0.36, "cobbles": 0.14, "fine_sand": 0.16,
                      "sponge_massive": 0.16, "sponge_branching": 0.12, "small_fauna": 0.06},
    "reef": {"bare_rock": 0.36, "encrusting_algae": 0.30, "boulders": 0.16, "kelp": 0.08,
             "sponge_massive": 0.04, "small_fauna": 0.06},
    "boulder_field": {"boulders": 0.32, "bare_rock": 0.24, "encrusting_algae": 0.24,
                      "cobbles": 0.10, "fine_sand": 0.05, "small_fauna": 0.05},
    "kelp_forest": {"kelp": 0.50, "bare_rock": 0.20, "encrusting_algae": 0.22, "boulders": 0.08},
    "seagrass_meadow": {"seagrass": 0.60, "fine_sand": 0.30, "shell_hash": 0.06,
                        "small_fauna": 0.04},
}

# Habitat patches: as in seabed.py, per-class plane-wave sums with a domain warp.
_WAVELENGTH_M = (28.0, 150.0)
_WAVES_PER_CLASS = 12
_WARP_M = 6.0
ECOTONE_TEMPERATURE = 0.06  # softmax temperature of the scores: borders blend over ~2-5 m
_CALIBRATION_STEP_M = 2.0  # grid over the site on which the class biases are calibrated
_CALIBRATION_ROUNDS = 120
_SITE_HALF_M = 150.0

# Metre-scale heterogeneity of element cover inside a patch (log-normal multipliers).
_HETERO_WAVELENGTH_M = (4.0, 12.0)  # correlation length ~1-3 m
_HETERO_WAVES = 6
HETERO_SIGMA = 0.7

# Low-frequency appearance drift across the site.
_DRIFT_WAVELENGTH_M = (100.0, 300.0)
_SEDIMENT_TINT = 0.16  # log-gain amplitude of the sediment colour tint
_BRIGHTNESS_DRIFT = 0.10  # log-gain amplitude of the overall brightness drift
_GRAIN_STRETCH = 0.07  # texture-grain stretch per warp wave (4 waves: about +-25 %)
_GRAIN_WAVES = 4
_SEDIMENTS = ("fine_sand", "shell_hash", "ripples")

# Wave ripples: a smooth orientation field picks among orientation variants, a smooth field
# among two wavelength bands; the grain stretch widens the range to about 5-25 cm.
RIPPLE_ORIENTATIONS = 6
RIPPLE_MEAN_DEG = 30.0  # dominant crest-normal direction across the site
RIPPLE_SWING_DEG = 70.0  # orientations span the mean +- this
RIPPLE_WAVELENGTHS_M = (0.07, 0.17)

TOP_K = 3  # components blended per pixel
_CLAIM_SHARPNESS = 6.0  # softness of the per-pixel choice between components
_CLAIM_RANGE = (-2.6, 6.0)  # Gumbel claim values are stored as uint8 over this range
_TILE_MASK = TILE_PX - 1
_LAYER2_ANGLE = np.deg2rad(37.0)
_LAYER2_SCALE = 1.37


def _eval(waves: _Waves, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return Seabed._eval(waves, x, y)


class _FieldBank:
    """Several plane-wave fields evaluated at the same points in one pass.

    Each output column is ``sum_n w_n cos(k_n . (x, y) + phase_n)`` over its own waves. Evaluating
    the site's ~20 fields one by one in float64 (``Seabed._eval``) was most of the per-image cost
    of the coarse grid: libm's float64 cos takes ~30 ns a value, numpy's SIMD float32 cos ~1 ns.
    So the phase is formed in float64 *in cycles* and reduced to [-1/2, 1/2] before the cast:
    float32 then only carries an angle below pi, and the fields match the float64 evaluation to
    ~1e-6 anywhere on the site (casting the unreduced phase would lose ~1e-5 at 150 m). The
    weighted cosines are summed per column with ``add.reduceat``, not a matrix product, which
    would start BLAS threads inside every render worker.
    """

    def __init__(self, fields: dict[str, list[tuple[_Waves, np.ndarray, float]]]):
        """``fields``: name -> its columns, each (waves, weight per wave, phase shift in cycles);
        a shift of -1/4 turns the column's cosines into sines."""
        cycles, offsets, weights, starts = [], [], [], []
        self.columns: dict[str, slice] = {}
        n = 0
        for name, cols in fields.items():
            self.columns[name] = slice(len(starts), len(starts) + len(cols))
            for waves, w, shift in cols:
                starts.append(n)
                n += len(w)
                cycles.append(waves.directions / (2 * np.pi))
                offsets.append(waves.phases / (2 * np.pi) + shift)
                weights.append(w)
        self._cycles = np.concatenate(cycles, axis=1)
        self._offsets = np.concatenate(offsets)
        self._weights = np.concatenate(weights).astype(np.float32)
        self._starts = np.array(starts)

    def __call__(self, x: np.ndarray, y: np.ndarray,
                 origin: tuple[float, float] | None = None) -> dict[str, np.ndarray]:
        """Fields at points x, y (float64, any shape): name -> float32 (..., n_columns).

        With ``origin``, a point the x, y lie within some tens of metres of (a camera footprint),
        the phase is split into the reduced phase at the origin (float64) plus the phase across
        the offsets from it, which is then small enough to form in float32 directly: same
        accuracy, half the memory traffic and no per-point reduction.
        """
        # wave-major (n_waves, *points): the per-column sums then add whole rows
        per_wave = (-1,) + (1,) * np.ndim(x)
        if origin is None:
            c = np.multiply.outer(self._cycles[0], x)
            c += np.multiply.outer(self._cycles[1], y)
            c += self._offsets.reshape(per_wave)
            c -= np.rint(c)
            terms = c.astype(np.float32)
        else:
            x0, y0 = origin
            at_origin = self._cycles[0] * x0 + self._cycles[1] * y0 + self._offsets
            at_origin -= np.rint(at_origin)
            cycles = self._cycles.astype(np.float32)
            terms = np.multiply.outer(cycles[0], (x - x0).astype(np.float32))
            terms += np.multiply.outer(cycles[1], (y - y0).astype(np.float32))
            terms += at_origin.astype(np.float32).reshape(per_wave)
        terms *= np.float32(2 * np.pi)
        np.cos(terms, out=terms)
        terms *= self._weights.reshape(per_wave)
        values = np.moveaxis(np.add.reduceat(terms, self._starts, axis=0), 0, -1)
        return {name: values[..., cols] for name, cols in self.columns.items()}


def _bilinear(c00: np.ndarray, c01: np.ndarray, c10: np.ndarray, c11: np.ndarray,
              frac: np.ndarray) -> np.ndarray:
    """Bilinear interpolation of per-cell corner values (..., cells_y, cells_x) to the pixels of
    each cell, in "phase-major" layout (..., S, S, cells_y, cells_x): pixel (v, u) of the
    (padded) image is element [v % S, u % S, v // S, u // S], and ``frac`` = arange(S) / S is
    the pixel's position in its cell.

    Values known per cell broadcast over the two leading in-cell axes, so no per-pixel gather
    is needed, and numpy's inner loops run over whole (cells_y, cells_x) planes; in the image's
    own block order they would run over S elements at a time, ~6x slower. Interpolating rows
    first leaves one multiply-add per pixel."""
    f = frac[:, None, None]
    left = c00[..., None, :, :] + (c10 - c00)[..., None, :, :] * f  # (..., S, cells_y, cells_x)
    right = c01[..., None, :, :] + (c11 - c01)[..., None, :, :] * f
    out = (right - left)[..., :, None, :, :] * f
    out += left[..., :, None, :, :]
    return out


def _node_corners(nodes: np.ndarray) -> tuple[np.ndarray, ...]:
    """Corner values (00, 01, 10, 11) of every cell of node values (..., gh, gw)."""
    return nodes[..., :-1, :-1], nodes[..., :-1, 1:], nodes[..., 1:, :-1], nodes[..., 1:, 1:]


class MixtureSeabed:
    """Benchmark seabed: habitats are mixtures of shared elements (see the module docstring).

    Interface used by the generator and renderer: ``habitats``, ``class_scores``, ``habitat``,
    ``seabed_depth_m`` and ``surface`` (per-pixel classes and albedo for a camera pose).
    """

    habitats = BENCHMARK_HABITATS
    elements = ELEMENTS

    def __init__(self, seed: int = 0):
        rng = np.random.default_rng([seed, 9101])
        k = len(BENCHMARK_HABITATS)
        waves = [_plane_waves(rng, _WAVES_PER_CLASS, _WAVELENGTH_M) for _ in range(k)]
        self._warp = [_plane_waves(rng, 8, (25.0, 70.0)) for _ in range(2)]
        self._bathy = _plane_waves(rng, 6, (150.0, 600.0))
        self._relief = _plane_waves(rng, 8, (8.0, 40.0))
        self._hetero = [_plane_waves(rng, _HETERO_WAVES, _HETERO_WAVELENGTH_M) for _ in ELEMENTS]
        self._drift = [_plane_waves(rng, 5, _DRIFT_WAVELENGTH_M) for _ in range(3)]
        self._ripple_dir = _plane_waves(rng, 5, (80.0, 250.0))
        self._ripple_band = _plane_waves(rng, 5, (60.0, 200.0))
        self._grain = _plane_waves(rng, _GRAIN_WAVES, _DRIFT_WAVELENGTH_M)
        # the fields batched for fast evaluation (no random draws: the site is unchanged)
        self._score_bank = _FieldBank({"scores": [(w, w.weights, 0.0) for w in waves]})
        g = self._grain
        amp = _GRAIN_STRETCH / (g.directions**2).sum(0)  # grain potential amplitude per wave
        self._site_bank = _FieldBank({
            "warp": [(w, w.weights, 0.0) for w in self._warp],
            "hetero": [(w, w.weights, 0.0) for w in self._hetero],
            "drift": [(w, w.weights, 0.0) for w in self._drift],
            "ripple_dir": [(self._ripple_dir, self._ripple_dir.weights, 0.0)],
            "ripple_band": [(self._ripple_band, self._ripple_band.weights, 0.0)],
            # offset = -grad(sum amp sin(phase)); sin is cos a quarter cycle later
            "grain": [(g, -amp * g.directions[0], -0.25), (g, -amp * g.directions[1], -0.25)],
        })
        self.proportions = np.array(
            [[PROPORTIONS[h].get(e, 0.0) for e in ELEMENTS] for h in BENCHMARK_HABITATS]
        )
        self.proportions /= self.proportions.sum(axis=1, keepdims=True)
        self.biases = np.zeros(k)
        self.biases = self._calibrate_biases()
        self._sediment = np.array([e in _SEDIMENTS for e in ELEMENTS], dtype=np.float32)

        comps, tiles = _element_tiles(rng)
        self.components = comps  # (element index, ripple orientation or -1, band or -1)
        self._comp_element = np.array([c[0] for c in comps])
        # RGBA texels packed as uint32: one gather fetches colour and claim
        self._tiles_u32 = np.ascontiguousarray(tiles).view(np.uint32).reshape(-1)
        self._macro_flat = (1.0 + 0.15 * _filtered_noise(rng, 25.0)).astype(np.float32).ravel()
        self._grid_cache: dict[tuple[int, int], dict] = {}

    def _fields(self, x: np.ndarray, y: np.ndarray, fields=None,
                origin: tuple[float, float] | None = None) -> dict[str, np.ndarray]:
        """Every smooth field of the site (warp, heterogeneity, drift, ripples, grain) at world
        points (near ``origin``, if given: see ``_FieldBank``); ``fields`` already evaluated
        there are passed through."""
        if fields is None:
            fields = self._site_bank(np.asarray(x, dtype=np.float64),
                                     np.asarray(y, dtype=np.float64), origin)
        return fields

    # ---- habitat field ----------------------------------------------------------------------
    def _raw_scores(self, x: np.ndarray, y: np.ndarray, fields=None,
                    origin: tuple[float, float] | None = None) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        warp = self._fields(x, y, fields, origin)["warp"]
        xw = x + _WARP_M * warp[..., 0]
        yw = y + _WARP_M * warp[..., 1]
        return self._score_bank(xw, yw, origin)["scores"]

    def _calibrate_biases(self) -> np.ndarray:
        """Per-class biases that bring the arg-max shares over the site to TARGET_SHARES."""
        xs = np.arange(-_SITE_HALF_M, _SITE_HALF_M, _CALIBRATION_STEP_M) + _CALIBRATION_STEP_M / 2
        gx, gy = np.meshgrid(xs, xs)
        raw = self._raw_scores(gx, gy).reshape(-1, len(BENCHMARK_HABITATS))
        target = np.asarray(TARGET_SHARES)
        bias = np.zeros(len(target))
        for _ in range(_CALIBRATION_ROUNDS):
            share = np.bincount(np.argmax(raw + bias, axis=1), minlength=len(target)) / len(raw)
            bias += 0.08 * (np.log(target) - np.log(np.maximum(share, 1e-4)))
            bias -= bias.mean()
        return bias

    def class_scores(self, x: np.ndarray, y: np.ndarray, fields=None,
                     origin: tuple[float, float] | None = None) -> np.ndarray:
        """Scores (..., n_habitats); the habitat at a point is their arg-max. ``fields``,
        ``origin``: see ``_fields``."""
        return self._raw_scores(x, y, fields, origin) + self.biases

    def habitat(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Habitat index (arg-max of the scores) at world points."""
        return np.argmax(self.class_scores(x, y), axis=-1).astype(np.uint8)

    def habitat_weights(self, x: np.ndarray, y: np.ndarray, scores=None) -> np.ndarray:
        """Soft habitat weights (..., n_habitats): softmax of the scores (ecotones)."""
        s = self.class_scores(x, y) if scores is None else scores
        z = (s - s.max(axis=-1, keepdims=True)) / ECOTONE_TEMPERATURE
        w = np.exp(z)
        return w / w.sum(axis=-1, keepdims=True)

    def element_fractions(self, x: np.ndarray, y: np.ndarray, scores=None,
                          fields=None) -> np.ndarray:
        """Element cover fractions (..., n_elements) summing to 1 at each point."""
        fields = self._fields(x, y, fields)
        if scores is None:
            scores = self.class_scores(x, y, fields)
        frac = self.habitat_weights(x, y, scores) @ self.proportions
        frac *= np.exp(HETERO_SIGMA * fields["hetero"])
        return frac / frac.sum(axis=-1, keepdims=True)

    def ripple_angle_rad(self, x: np.ndarray, y: np.ndarray, fields=None) -> np.ndarray:
        """Crest-normal direction of wave ripples: a smooth field across the site."""
        f = self._fields(x, y, fields)["ripple_dir"][..., 0]
        return np.deg2rad(RIPPLE_MEAN_DEG + RIPPLE_SWING_DEG * np.tanh(1.2 * f))

    def component_fractions(self, x: np.ndarray, y: np.ndarray, scores=None,
                            fields=None) -> np.ndarray:
        """Fractions (..., n_components): elements, with ripples split by orientation/band."""
        fields = self._fields(x, y, fields)
        out = self.element_fractions(x, y, scores, fields)[..., self._comp_element]
        angle = self.ripple_angle_rad(x, y, fields)
        ang = np.deg2rad(RIPPLE_MEAN_DEG + np.linspace(-RIPPLE_SWING_DEG, RIPPLE_SWING_DEG,
                                                       RIPPLE_ORIENTATIONS))
        spacing = ang[1] - ang[0]
        band = 0.5 + 0.5 * np.tanh(1.5 * fields["ripple_band"])  # (..., 1)
        ripple = [c for c, (_, o, _) in enumerate(self.components) if o >= 0]
        orient = np.array([self.components[c][1] for c in ripple])
        upper = np.array([self.components[c][2] == 1 for c in ripple])
        w_o = np.maximum(0.0, 1.0 - np.abs(angle[..., None] - ang[orient]) / spacing)
        w_b = np.where(upper, band, 1.0 - band)
        out[..., ripple] *= w_o * w_b
        return out

    def seabed_depth_m(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Seabed depth (positive down): a 40-50 m shelf with metre-scale relief."""
        x = np.asarray(x, float)
        y = np.asarray(y, float)
        return 45.0 + 4.0 * _eval(self._bathy, x, y) + 0.7 * _eval(self._relief, x, y)

    # ---- appearance drift -------------------------------------------------------------------
    def _drift_gain(self, x: np.ndarray, y: np.ndarray, comp: np.ndarray,
                    fields=None) -> np.ndarray:
        """RGB gain (..., 3) from component fractions ``comp``: a sediment tint weighted by
        the sediment cover, times an overall brightness drift."""
        f = self._fields(x, y, fields)["drift"]
        f0, f1, f2 = f[..., 0], f[..., 1], f[..., 2]
        tint = np.stack([0.9 * f0 - 0.3 * f1, 0.5 * f0, -0.2 * f0 + 0.7 * f1], -1)
        share = (comp @ self._sediment[self._comp_element])[..., None]
        gain = np.exp(_SEDIMENT_TINT * tint * share + _BRIGHTNESS_DRIFT * f2[..., None])
        return gain.astype(np.float32)

    def _grain_offset(self, x: np.ndarray, y: np.ndarray, fields=None) -> np.ndarray:
        """Texture-coordinate offset (..., 2) in metres: the gradient of a potential whose
        Hessian stretches the grain of every texture by up to about +-25 % across the site."""
        return self._fields(x, y, fields)["grain"]

    # ---- rendering ------------------------------------------------------------------------
    def _grid(self, renderer: Renderer) -> dict:
        """Pixel layout over the renderer's coarse grid (cached per camera size).

        Node (i, j) of the coarse grid sits on pixel (i S, j S), S = COARSE_STEP_PX, so pixel
        (v, u) lies in cell (v // S, u // S) at (v % S, u % S) / S. The grid covers the image with
        whole cells; the work is done on that padded image and cropped at the end.
        """
        cam = renderer.cam
        key = (cam.width, cam.height)
        if key not in self._grid_cache:
            gh, gw = renderer._cu.shape
            s = COARSE_STEP_PX
            self._grid_cache[key] = {
                "frac": np.arange(s, dtype=np.float32) / np.float32(s),
                "cells": (gh - 1, gw - 1),
            }
        return self._grid_cache[key]

    def surface(
        self, renderer: Renderer, x: float, y: float, altitude_m: float, heading_deg: float,
        light: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Per-pixel habitat classes (H, W) uint8 and albedo x 255 (H, W, 3) float32.

        With ``light`` = (gain, backscatter) per pixel in this method's layout (see
        ``Renderer.lighting_in_cells``), the second array is instead the lit image, albedo x
        gain + backscatter, lit in the pass that writes it rather than in two more.

        Component fractions are evaluated on the coarse grid. Each grid cell keeps its TOP_K
        components (by the mean over its corners); per pixel, their log-fractions are
        interpolated bilinearly from the cell corners and combined with the texel claims.
        Per-pixel arrays are in the phase-major layout of ``_bilinear``: what is known per node
        or per cell broadcasts onto the pixels, and the only per-pixel gathers are of texels.
        """
        cam = renderer.cam
        grid = self._grid(renderer)
        frac = grid["frac"]
        cx, cy = pixel_to_world(cam, x, y, altitude_m, heading_deg, renderer._cu, renderer._cv)
        cx = cx.astype(np.float64)
        cy = cy.astype(np.float64)
        pose = (x, y)  # the grid lies within metres of it: see _FieldBank
        fields = self._fields(cx, cy, origin=pose)
        scores = self.class_scores(cx, cy, fields, pose)
        classes = renderer.classes_from_scores(scores.astype(np.float32))
        comp = self.component_fractions(cx, cy, scores, fields)  # (gh, gw, C)

        # Texture coordinates in texels, at the nodes: the world position plus the grain offset,
        # and the rotated, scaled frame of layer 2. Both are smooth, so interpolating node values
        # stands in for evaluating them per pixel. Whole tiles are subtracted first (the tiles
        # are periodic): the values become small and positive, so float32 resolves ~1e-4 texel
        # anywhere on the site and truncation to int is the floor.
        off = self._grain_offset(cx, cy, fields)
        tx = (cx + off[..., 0]) / TILE_RES_M
        ty = (cy + off[..., 1]) / TILE_RES_M
        c, s = np.cos(_LAYER2_ANGLE), np.sin(_LAYER2_ANGLE)
        coords = np.stack([tx, ty, (c * tx - s * ty) / _LAYER2_SCALE,
                           (s * tx + c * ty) / _LAYER2_SCALE])  # (4, gh, gw)
        coords -= (np.floor(coords.min(axis=(1, 2), keepdims=True) / TILE_PX) - 1) * TILE_PX
        texel = _bilinear(*_node_corners(coords.astype(np.float32)), frac).astype(np.int32)
        texel &= _TILE_MASK
        pix = texel[1] * TILE_PX + texel[0]  # layer 1, (S, S, cells_y, cells_x)
        macro = np.take(self._macro_flat, texel[3] * TILE_PX + texel[2])  # layer 2

        # per cell: its TOP_K components and their log-fractions at the four corners
        logf = np.log(np.maximum(comp, 1e-6)).astype(np.float32)
        corners = _node_corners(np.moveaxis(logf, -1, 0))  # each (C, cells_y, cells_x)
        top = np.argpartition(-sum(corners), TOP_K - 1, axis=0)[:TOP_K]  # (K, cells_y, cells_x)
        sharp = np.float32(_CLAIM_SHARPNESS)
        lf_corners = [np.take_along_axis(c, top, axis=0) * sharp for c in corners]

        base = (top * (TILE_PX * TILE_PX)).astype(np.int32)[:, None, None]
        texels = np.take(self._tiles_u32, pix + base).view(np.uint8)
        texels = texels.reshape(*texels.shape[:-1], -1, 4)  # (K, S, S, cells_y, cells_x, RGBA)
        lo, hi = _CLAIM_RANGE
        z = texels[..., 3] * np.float32(_CLAIM_SHARPNESS * (hi - lo) / 255.0)
        z += _bilinear(*lf_corners, frac)
        z -= z.max(axis=0)
        e = np.exp(z, out=z)  # (K, ...): soft choice between the pixel's components
        e *= macro / e.sum(axis=0)

        gain = self._drift_gain(cx, cy, comp, fields)
        gain = _bilinear(*_node_corners(np.moveaxis(gain, -1, 0)), frac)  # (3, ...)
        if light is not None:
            gain *= light[0]

        # blend channel by channel: reads the texels' RGB bytes in place (no float copy of all
        # four channels) and writes straight into the image-order result
        cells_y, cells_x = grid["cells"]
        n = COARSE_STEP_PX
        out = np.empty((cells_y * n, cells_x * n, 3), np.float32)
        out_phase = out.reshape(cells_y, n, cells_x, n, 3).transpose(4, 1, 3, 0, 2)
        acc, term = np.empty_like(e[0]), np.empty_like(e[0])
        for ch in range(3):
            np.multiply(e[0], texels[0, ..., ch], out=acc)
            for k in range(1, len(e)):
                acc += np.multiply(e[k], texels[k, ..., ch], out=term)
            if light is None:
                np.multiply(acc, gain[ch], out=out_phase[ch])
            else:
                acc *= gain[ch]
                np.add(acc, light[1][ch], out=out_phase[ch])
        return classes, out[: cam.height, : cam.width]


def _gumbel_claim(field: np.ndarray) -> np.ndarray:
    """Map a field to uint8-coded claims with standard Gumbel marginals (rank transform)."""
    rank = np.empty(field.size, dtype=np.float64)
    rank[np.argsort(field, axis=None, kind="stable")] = np.arange(field.size)
    u = (rank + 0.5) / field.size
    g = -np.log(-np.log(u))
    lo, hi = _CLAIM_RANGE
    return np.clip(np.round((g - lo) / (hi - lo) * 255), 0, 255).reshape(field.shape)


def _element_tiles(rng: np.random.Generator) -> tuple[list[tuple[int, int, int]], np.ndarray]:
    """Periodic RGBA tiles (1 cm texels): RGB albedo and the claim channel per component."""
    yy, xx = np.mgrid[0:TILE_PX, 0:TILE_PX].astype(np.float32)

    def noise(scale, anisotropy=1.0, angle=0.0):
        return _filtered_noise(rng, scale, anisotropy, angle).astype(np.float32)

    def colour(base, *layers):
        out = np.broadcast_to(np.asarray(base, np.float32), (TILE_PX, TILE_PX, 3)).copy()
        for amount, field, tint in layers:
            out += amount * field[..., None] * np.asarray(tint, np.float32)
        return np.clip(out, 0.02, 1.0)

    def sand_rgb():
        return colour((0.76, 0.68, 0.52), (0.06, noise(1.0), (1, 1, 1)),
                      (0.06, noise(10.0), (1, 0.9, 0.7)))

    comps: list[tuple[int, int, int]] = []
    tiles: list[np.ndarray] = []

    def add(name, rgb, claim_field, orientation=-1, band=-1):
        comps.append((ELEMENTS.index(name), orientation, band))
        rgba = np.empty((TILE_PX, TILE_PX, 4), np.uint8)
        rgba[..., :3] = np.round(rgb * 255)
        rgba[..., 3] = _gumbel_claim(claim_field)
        tiles.append(rgba)

    add("fine_sand", sand_rgb(), noise(50.0))
    flecks = np.clip(noise(1.2) - 1.0, 0, None)
    shards = np.clip(noise(2.0) - 1.4, 0, None)
    add("shell_hash", colour((0.80, 0.76, 0.66), (0.45, flecks, (1, 0.95, 0.9)),
                             (0.35, shards, (-0.4, -0.45, -0.5)),
                             (0.05, noise(1.0), (1, 1, 1))), noise(30.0))
    angles = np.deg2rad(RIPPLE_MEAN_DEG + np.linspace(-RIPPLE_SWING_DEG, RIPPLE_SWING_DEG,
                                                      RIPPLE_ORIENTATIONS))
    period_m = TILE_PX * TILE_RES_M
    for b, wavelength in enumerate(RIPPLE_WAVELENGTHS_M):
        cycles = period_m / wavelength
        wander = noise(40.0)
        for o, a in enumerate(angles):
            m, q = round(cycles * np.cos(a)), round(cycles * np.sin(a))  # periodic on the tile
            phase = 2 * np.pi * (m * xx + q * yy) / TILE_PX + 2.0 * wander
            profile = (np.sin(phase) + 0.35 * np.sin(2 * phase)).astype(np.float32)
            add("ripples", colour((0.74, 0.66, 0.50), (0.14, profile, (1, 1, 0.9)),
                                  (0.04, noise(1.0), (1, 1, 1))), noise(60.0), o, b)
    add("pebbles", colour((0.52, 0.48, 0.42), (0.18, np.tanh(3 * noise(2.5)), (1, 1, 1)),
                          (0.08, noise(3.0), (1, 0.8, 0.6)), (0.05, noise(0.8), (1, 1, 1))),
        noise(6.0))
    stones = noise(8.0)
    add("cobbles", colour((0.46, 0.44, 0.41), (0.16, np.tanh(2 * stones), (1, 1, 1)),
                          (0.07, noise(12.0), (1, 0.85, 0.7)), (0.04, noise(1.0), (1, 1, 1))),
        stones)
    big = noise(30.0)
    shade = np.gradient(big, axis=1) * 25.0  # side-lit relief
    add("boulders", colour((0.40, 0.38, 0.36), (0.12, big, (1, 1, 1)), (0.10, shade, (1, 1, 1)),
                           (0.20, np.clip(noise(8.0) - 1.0, 0, None), (0.8, 0.3, 0.5)),
                           (0.05, noise(1.5), (1, 1, 1))), big)
    add("bare_rock", colour((0.32, 0.30, 0.28), (0.12, noise(6.0) + 0.5 * noise(1.5), (1, 1, 1)),
                            (0.10, -np.clip(np.abs(noise(3.0)) < 0.08, 0, 1), (1, 1, 1))),
        noise(60.0))
    add("encrusting_algae", colour((0.62, 0.32, 0.44), (0.10, noise(3.0), (1, 0.6, 0.8)),
                                   (0.05, noise(1.0), (1, 1, 1))), noise(25.0))
    fronds = np.clip(noise(6.0, anisotropy=6.0, angle=1.1), 0, None)
    add("kelp", colour((0.16, 0.14, 0.07), (0.30, fronds, (1.0, 0.85, 0.35)),
                       (0.04, noise(1.0), (1, 1, 1))), noise(40.0))
    blades = np.clip(noise(4.0, anisotropy=8.0, angle=0.4), 0, None)
    add("seagrass", colour((0.20, 0.24, 0.14), (0.22, blades, (0.5, 1.0, 0.35)),
                           (0.05, noise(1.0), (1, 1, 1))), noise(30.0))
    lumps = noise(6.0)
    add("sponge_massive", colour((0.80, 0.55, 0.18), (0.10, lumps, (1, 0.8, 0.3)),
                                 (0.06, noise(1.0), (1, 1, 1))), lumps)
    branch = noise(2.0, anisotropy=5.0, angle=2.0)
    add("sponge_branching", colour((0.55, 0.20, 0.38), (0.12, branch, (1, 0.5, 0.8)),
                                   (0.04, noise(1.0), (1, 1, 1))), noise(4.0) + 0.5 * branch)
    dots = noise(2.5)
    add("small_fauna", colour((0.60, 0.22, 0.18), (0.20, noise(2.0), (0.2, 0.8, 1.0)),
                              (0.05, noise(1.0), (1, 1, 1))), dots)
    return comps, np.stack(tiles)
