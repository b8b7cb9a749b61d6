"""Image formation for a downward-looking AUV stills camera with strobes.

The camera looks straight down; the image's "up" points along the vehicle heading. A pixel sees
the seabed point given by the footprint geometry; its colour is the seabed albedo lit by the
strobe (inverse-square with range), attenuated per wavelength along the light path (red first),
plus blue-green backscatter, vignetting, focus blur with altitude, sensor noise, then JPEG.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFilter

from .seabed import Seabed

# Per-channel attenuation coefficients (1/m) for coastal water: red is absorbed fastest.
ATTENUATION_PER_M = np.array([0.22, 0.06, 0.05], dtype=np.float32)
BACKSCATTER_RGB = np.array([0.01, 0.06, 0.07], dtype=np.float32)
FOCUS_ALTITUDE_M = 2.0
COARSE_STEP_PX = 8  # habitat scores are evaluated on this grid and interpolated
AUTO_EXPOSURE_SHARE = 0.6  # benchmark preset: share of the range falloff auto-exposure undoes
# a class leading the scores at all corners of a cell by more than this keeps the lead over
# the whole cell despite float rounding (interpolation errors are ~1e-15 of the scores)
_CLEAR_MARGIN = 1e-6


@dataclass(frozen=True)
class Imaging:
    """Imaging conditions of one frame (benchmark preset): water, camera settings, strobe.

    ``exposure`` folds together the dive's exposure setting, the strobe power at that moment
    and, for a badly exposed frame, its error factor.
    """

    attenuation_scale: tuple[float, float, float] = (1.0, 1.0, 1.0)  # x ATTENUATION_PER_M
    backscatter_rgb: tuple[float, float, float] = tuple(float(v) for v in BACKSCATTER_RGB)
    turbidity: float = 0.3  # 1/m: how fast backscatter builds up along the light path
    white_balance: tuple[float, float, float] = (1.0, 1.0, 1.0)
    exposure: float = 1.0
    motion_blur_m: float = 0.0  # seabed distance travelled while the shutter is open


def motion_blur(arr: np.ndarray, length_px: float) -> np.ndarray:
    """Box blur of length ``length_px`` along the image's vertical axis (the heading)."""
    n = int(round(length_px))
    if n < 1:
        return arr
    before, after = n // 2, n - n // 2
    padded = np.pad(arr, ((before, after), (0, 0), (0, 0)), mode="edge")
    out = padded[: arr.shape[0]].copy()
    for s in range(1, n + 1):
        out += padded[s : s + arr.shape[0]]
    out /= np.float32(n + 1)
    return out


@dataclass(frozen=True)
class Camera:
    width: int = 320
    height: int = 240
    hfov_deg: float = 60.0
    jpeg_quality: int = 90

    @property
    def tan_half_h(self) -> float:
        return float(np.tan(np.deg2rad(self.hfov_deg) / 2))

    @property
    def tan_half_v(self) -> float:
        return self.tan_half_h * self.height / self.width

    def footprint_m(self, altitude_m: float) -> tuple[float, float]:
        """(across-track width, along-track length) of the footprint on flat seabed."""
        return 2 * altitude_m * self.tan_half_h, 2 * altitude_m * self.tan_half_v


def pixel_to_world(
    cam: Camera, x: float, y: float, altitude_m: float, heading_deg: float,
    u: np.ndarray, v: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """World (x east, y north) of pixel centres (u right, v down) for a nadir camera."""
    gsd = np.float32(2 * altitude_m * cam.tan_half_h / cam.width)
    right = (u + np.float32(0.5 - cam.width / 2)) * gsd
    forward = (np.float32(cam.height / 2 - 0.5) - v) * gsd
    h = np.deg2rad(heading_deg)
    sin_h, cos_h = np.float32(np.sin(h)), np.float32(np.cos(h))
    # forward = (sin h, cos h) in (east, north); right = (cos h, -sin h)
    wx = np.float32(x) + forward * sin_h + right * cos_h
    wy = np.float32(y) + forward * cos_h - right * sin_h
    return wx, wy


class Renderer:
    """Renders images of a Seabed; one per process (the texture tiles are built once)."""

    def __init__(self, seabed: Seabed, cam: Camera):
        self.seabed = seabed
        self.cam = cam
        self._v, self._u = np.mgrid[0 : cam.height, 0 : cam.width].astype(np.float32)
        cv = np.arange(0, cam.height + COARSE_STEP_PX, COARSE_STEP_PX, dtype=np.float32)
        cu = np.arange(0, cam.width + COARSE_STEP_PX, COARSE_STEP_PX, dtype=np.float32)
        self._cv, self._cu = np.meshgrid(cv, cu, indexing="ij")
        # normalised image-plane radius for vignetting and the off-axis light path
        nx = (self._u + 0.5 - cam.width / 2) / (cam.width / 2) * cam.tan_half_h
        ny = (self._v + 0.5 - cam.height / 2) / (cam.height / 2) * cam.tan_half_v
        self._off_axis = np.sqrt(1 + nx**2 + ny**2).astype(np.float32)  # range / altitude
        r2 = (nx**2 + ny**2) / (cam.tan_half_h**2 + cam.tan_half_v**2)
        # Strobe cone falls off towards the corners; the strobe sits aft of the lens, so the
        # top of the frame (forward) is slightly darker than the bottom.
        vignette = (1 - 0.55 * r2) * (1 + 0.12 * (self._v / cam.height - 0.5))
        step = COARSE_STEP_PX
        self._off_axis_coarse = np.ascontiguousarray(self._off_axis[::step, ::step])
        self._vignette_coarse = np.ascontiguousarray(vignette[::step, ::step]).astype(np.float32)
        # coarse cell of each pixel row / column and the position in it, as float64 like the
        # full upsampling these replace (classes_from_scores must reproduce it exactly)
        gh, gw = self._cu.shape
        fy = self._v[:, 0] / COARSE_STEP_PX
        fx = self._u[0, :] / COARSE_STEP_PX
        y0 = np.minimum(fy.astype(np.int64), gh - 2)
        x0 = np.minimum(fx.astype(np.int64), gw - 2)
        self._cell_of_px = (y0, x0, fy - y0, fx - x0)
        self._noise = np.random.default_rng(12345).standard_normal(
            4 * cam.width * cam.height * 3, dtype=np.float32
        )

    def _lighting_coarse(
        self, altitude_m: float, imaging: Imaging | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """RGB gain (strobe, vignetting, attenuation) and backscatter (x255) at every
        COARSE_STEP_PX-th pixel of every COARSE_STEP_PX-th row.

        ``imaging`` (benchmark preset) scales water, white balance and exposure.
        """
        off = self._off_axis_coarse
        path_m = np.float32(2.0 * altitude_m) * off  # strobe -> seabed -> lens, ~2x slant range
        if imaging is None:
            transmission = np.exp(-path_m[..., None] * ATTENUATION_PER_M)
            strobe = np.float32((FOCUS_ALTITUDE_M / altitude_m) ** 2 * 1.45)  # inverse square
            gain = transmission * (strobe * self._vignette_coarse)[..., None]
            back = (255.0 * BACKSCATTER_RGB) * (1 - np.exp(np.float32(-0.3) * path_m))[..., None]
        else:
            atten = ATTENUATION_PER_M * np.asarray(imaging.attenuation_scale, np.float32)
            transmission = np.exp(-path_m[..., None] * atten)
            # auto-exposure follows the altitude part of the way: what is left of the inverse
            # square law is a brightness that still falls with range
            strobe = np.float32((FOCUS_ALTITUDE_M / altitude_m) ** (2 - AUTO_EXPOSURE_SHARE * 2)
                                * 1.2 * imaging.exposure)
            balance = np.asarray(imaging.white_balance, np.float32)
            gain = transmission * (strobe * self._vignette_coarse)[..., None] * balance
            haze = 1 - np.exp(np.float32(-imaging.turbidity) * path_m)
            back = ((255.0 * np.float32(imaging.exposure)) * balance
                    * np.asarray(imaging.backscatter_rgb, np.float32)) * haze[..., None]
            gain, back = gain.astype(np.float32), back.astype(np.float32)
        return gain, back

    def _lighting(
        self, altitude_m: float, imaging: Imaging | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Per-pixel RGB gain and backscatter (H, W, 3): both are smooth over the frame, so they
        are computed on a coarse grid (``_lighting_coarse``) and upsampled."""
        gain, back = self._lighting_coarse(altitude_m, imaging)
        size = (self.cam.width, self.cam.height)
        up = [
            np.asarray(Image.fromarray(np.ascontiguousarray(a[..., c])).resize(size, Image.BILINEAR))
            for a in (gain, back)
            for c in range(3)
        ]
        return np.stack(up[:3], axis=-1), np.stack(up[3:], axis=-1)

    def lighting_in_cells(
        self, altitude_m: float, imaging: Imaging | None = None
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """``_lighting``'s gain and backscatter laid out by coarse cell, (3, S, S, cells_y,
        cells_x) with pixel (v, u) at [:, v % S, u % S, v // S, u // S], S = COARSE_STEP_PX: the
        layout MixtureSeabed.surface renders in, so that it can light the image in the pass that
        blends it. None unless the frame is made of whole cells.

        Pillow's bilinear resize by a factor S samples output pixel p at input position
        (p + 0.5) / S - 0.5, edge-clamped, so each in-cell phase reads two neighbouring coarse
        values (from this cell or the one before) with one fixed weight: the same interpolation,
        done with slices on whole planes rather than a resize per channel.
        """
        s = COARSE_STEP_PX
        if self.cam.width % s or self.cam.height % s:
            return None
        gain, back = self._lighting_coarse(altitude_m, imaging)
        h, w = gain.shape[:2]
        planes = np.moveaxis(np.concatenate([gain, back], axis=-1), -1, 0)  # (6, h, w)
        planes = np.pad(planes, ((0, 0), (1, 1), (1, 1)), mode="edge")  # the edge clamp
        pos = (np.arange(s) + 0.5) / s - 0.5
        lower = np.floor(pos).astype(int) + 1  # lower tap of each phase, in padded indices
        weight = (pos - np.floor(pos)).astype(np.float32)
        rows = np.stack([planes[:, i : i + h] + (planes[:, i + 1 : i + 1 + h]
                                                 - planes[:, i : i + h]) * f
                         for i, f in zip(lower, weight, strict=True)], axis=1)  # (6, S, h, w+2)
        step = rows[..., 1:] - rows[..., :-1]
        out = np.empty((6, s, s, h, w), np.float32)
        for i in np.unique(lower):  # phases sharing a lower tap: a run of columns in the cell
            run = slice(np.argmax(lower == i), s - np.argmax(lower[::-1] == i))
            # contiguous taps: the full-size passes then run over whole planes
            start = np.ascontiguousarray(rows[..., i : i + w])[:, :, None]
            slope = np.ascontiguousarray(step[..., i : i + w])[:, :, None]
            np.multiply(slope, weight[run, None, None], out=out[:, :, run])
            out[:, :, run] += start
        return out[:3], out[3:]

    def habitat_map(self, x: float, y: float, altitude_m: float, heading_deg: float) -> np.ndarray:
        """Per-pixel habitat class (H, W) uint8, from scores interpolated off a coarse grid."""
        cam = self.cam
        cx, cy = pixel_to_world(cam, x, y, altitude_m, heading_deg, self._cu, self._cv)
        scores = self.seabed.class_scores(cx, cy).astype(np.float32)  # (gh, gw, K)
        return self.classes_from_scores(scores)

    def classes_from_scores(self, scores: np.ndarray) -> np.ndarray:
        """Per-pixel arg-max class (H, W) uint8 of float32 scores (gh, gw, K) on the coarse grid.

        The classes are those of bilinearly upsampled scores, but only border cells are
        upsampled: an interpolated score is a convex combination of the cell's corners, so a
        class that leads at all four corners (by more than rounding can undo) leads at every
        pixel of the cell. Cells whose corners disagree (habitat borders, usually a few % of the
        frame) are interpolated pixel by pixel with the arithmetic of a full upsampling, so the
        result is identical to upsampling everything, at a fraction of the cost.
        """
        gh, gw, k = scores.shape
        coarse = np.argmax(scores, axis=-1)
        top2 = np.partition(scores, k - 2, axis=-1)[..., -2:]
        clear = (top2[..., 1] - top2[..., 0]) > _CLEAR_MARGIN
        lead = coarse[:-1, :-1]
        uniform = clear[:-1, :-1] & clear[:-1, 1:] & clear[1:, :-1] & clear[1:, 1:]
        uniform &= (lead == coarse[:-1, 1:]) & (lead == coarse[1:, :-1]) & (lead == coarse[1:, 1:])
        y0, x0, wy, wx = self._cell_of_px
        classes = lead.astype(np.uint8)[y0][:, x0]
        if uniform.all():
            return classes
        vv, uu = np.nonzero(~uniform[y0][:, x0])  # pixels of border cells
        y, x = y0[vv], x0[uu]
        wy, wx = wy[vv, None], wx[uu, None]
        s00, s01 = scores[y, x], scores[y, x + 1]
        s10, s11 = scores[y + 1, x], scores[y + 1, x + 1]
        full = (s00 * (1 - wx) + s01 * wx) * (1 - wy) + (s10 * (1 - wx) + s11 * wx) * wy
        classes[vv, uu] = np.argmax(full, axis=-1)
        return classes

    def render(
        self, x: float, y: float, altitude_m: float, heading_deg: float, rng: np.random.Generator,
        imaging: Imaging | None = None,
    ) -> tuple[bytes, np.ndarray]:
        """JPEG bytes of the image at this true pose and its per-pixel habitat map.

        A seabed with a ``surface(renderer, x, y, altitude_m, heading_deg, light=...)`` method
        (the benchmark's MixtureSeabed) supplies classes and albedo itself, or the lit image
        when given the lighting (``lighting_in_cells``, when there is one); ``imaging`` adds the
        benchmark's per-dive water, white balance, exposure and motion blur.
        """
        cam = self.cam
        surface = getattr(self.seabed, "surface", None)
        light = None
        if surface is not None:
            light = self.lighting_in_cells(altitude_m, imaging)
            classes, img = surface(self, x, y, altitude_m, heading_deg, light=light)
        else:
            classes = self.habitat_map(x, y, altitude_m, heading_deg)
            wx, wy = pixel_to_world(cam, x, y, altitude_m, heading_deg, self._u, self._v)
            img = self.seabed.albedo(wx, wy, classes)  # (H, W, 3), 0..255
        if light is None:  # not lit by the seabed's surface
            # light path strobe -> seabed -> lens is about twice the slant range
            gain, backscatter = self._lighting(altitude_m, imaging)
            img = img * gain
            img += backscatter
        img8 = np.clip(img, 0, 255, out=img).astype(np.uint8)

        pil = Image.fromarray(img8)
        # defocus grows with distance from the focus altitude; scale by image width
        blur_px = (0.5 + 1.2 * abs(altitude_m - FOCUS_ALTITUDE_M)) * cam.width / 320
        pil = pil.filter(ImageFilter.BoxBlur(radius=blur_px))
        arr = np.asarray(pil, dtype=np.float32)
        if imaging is not None and imaging.motion_blur_m > 0:
            gsd = 2 * altitude_m * cam.tan_half_h / cam.width
            arr = motion_blur(arr, imaging.motion_blur_m / gsd)
        # sensor noise: read noise plus signal-dependent shot noise. Unit normals come from a
        # pre-drawn buffer at a random offset: drawing 3 x H x W normals per frame costs more
        # than the rest of the noise model.
        n = arr.size
        start = int(rng.integers(0, self._noise.size - n))
        noise = self._noise[start : start + n].reshape(arr.shape)
        # (in place: each full-size temporary costs about as much as the arithmetic)
        shot = arr * np.float32(0.08)
        shot += np.float32(4.0)
        np.sqrt(shot, out=shot)
        shot *= noise
        arr += shot
        out = Image.fromarray(np.clip(arr, 0, 255, out=arr).astype(np.uint8))
        buf = io.BytesIO()
        out.save(buf, format="JPEG", quality=cam.jpeg_quality)
        return buf.getvalue(), classes
