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
    out = np.zeros_like(arr)
    for s in range(n + 1):
        out += padded[s : s + arr.shape[0]]
    return out / np.float32(n + 1)


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
        self._noise = np.random.default_rng(12345).standard_normal(
            4 * cam.width * cam.height * 3, dtype=np.float32
        )

    def _lighting(
        self, altitude_m: float, imaging: Imaging | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Per-pixel RGB gain (strobe, vignetting, attenuation) and backscatter (x255).

        Both are smooth over the frame, so they are computed on the coarse grid and upsampled.
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
        size = (self.cam.width, self.cam.height)
        up = [
            np.asarray(Image.fromarray(np.ascontiguousarray(a[..., c])).resize(size, Image.BILINEAR))
            for a in (gain, back)
            for c in range(3)
        ]
        return np.stack(up[:3], axis=-1), np.stack(up[3:], axis=-1)

    def habitat_map(self, x: float, y: float, altitude_m: float, heading_deg: float) -> np.ndarray:
        """Per-pixel habitat class (H, W) uint8, from scores interpolated off a coarse grid."""
        cam = self.cam
        cx, cy = pixel_to_world(cam, x, y, altitude_m, heading_deg, self._cu, self._cv)
        scores = self.seabed.class_scores(cx, cy).astype(np.float32)  # (gh, gw, K)
        return self.classes_from_scores(scores)

    def classes_from_scores(self, scores: np.ndarray) -> np.ndarray:
        """Per-pixel arg-max class (H, W) uint8 of float32 scores (gh, gw, K) on the coarse grid."""
        cam = self.cam
        gh, gw, k = scores.shape
        top2 = np.sort(scores, axis=-1)[..., -2:]
        coarse = np.argmax(scores, axis=-1)
        if (coarse == coarse.flat[0]).all() and (top2[..., 1] - top2[..., 0]).min() > 0.05:
            # one habitat with a clear margin everywhere: interpolation cannot change it
            return np.full((cam.height, cam.width), coarse.flat[0], dtype=np.uint8)
        # bilinear upsampling of every class score to pixel resolution
        fy = (self._v[:, 0] / COARSE_STEP_PX)
        fx = (self._u[0, :] / COARSE_STEP_PX)
        y0 = np.minimum(fy.astype(np.int64), gh - 2)
        x0 = np.minimum(fx.astype(np.int64), gw - 2)
        wy = (fy - y0)[:, None, None]
        wx = (fx - x0)[None, :, None]
        s00 = scores[y0][:, x0]
        s01 = scores[y0][:, x0 + 1]
        s10 = scores[y0 + 1][:, x0]
        s11 = scores[y0 + 1][:, x0 + 1]
        full = (s00 * (1 - wx) + s01 * wx) * (1 - wy) + (s10 * (1 - wx) + s11 * wx) * wy
        return np.argmax(full, axis=-1).astype(np.uint8)

    def render(
        self, x: float, y: float, altitude_m: float, heading_deg: float, rng: np.random.Generator,
        imaging: Imaging | None = None,
    ) -> tuple[bytes, np.ndarray]:
        """JPEG bytes of the image at this true pose and its per-pixel habitat map.

        A seabed with a ``surface(renderer, x, y, altitude_m, heading_deg)`` method (the
        benchmark's MixtureSeabed) supplies classes and albedo itself; ``imaging`` adds the
        benchmark's per-dive water, white balance, exposure and motion blur.
        """
        cam = self.cam
        surface = getattr(self.seabed, "surface", None)
        if surface is not None:
            classes, albedo = surface(self, x, y, altitude_m, heading_deg)
        else:
            classes = self.habitat_map(x, y, altitude_m, heading_deg)
            wx, wy = pixel_to_world(cam, x, y, altitude_m, heading_deg, self._u, self._v)
            albedo = self.seabed.albedo(wx, wy, classes)  # (H, W, 3), 0..255

        # light path strobe -> seabed -> lens is about twice the slant range
        gain, backscatter = self._lighting(altitude_m, imaging)
        img = albedo * gain
        img += backscatter
        img8 = np.clip(img, 0, 255).astype(np.uint8)

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
        arr += noise * np.sqrt(np.float32(4.0) + np.float32(0.08) * arr)
        out = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
        buf = io.BytesIO()
        out.save(buf, format="JPEG", quality=cam.jpeg_quality)
        return buf.getvalue(), classes
