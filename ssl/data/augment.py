"""Batched view augmentations on the device (SimCLR views and the crops of the SP objective).

Everything works on whole batches on the tensors' device under ``torch.no_grad``; randomness
comes only from the ``generator`` passed in (a :class:`torch.Generator` on the same device), so
a seeded generator reproduces the views exactly.

Input is the padded canvas from :func:`ssl.data.pad_batch`: uint8 (B, 3, H, W) with each image
top-left aligned and ``sizes`` (B, 2) = (h, w). Boxes are continuous pixel coordinates
(x1, y1, x2, y2) with the image spanning [0, w] x [0, h] (pixel i covers [i, i + 1]).

Frame convention of :func:`flip_rotate`, :func:`transform_boxes` and :func:`sp_crops`: first a
horizontal flip, x -> w - x; then ``k`` counter-clockwise rotations by 90 degrees, the same as
``torch.rot90(img, k, dims=(-2, -1))``: each one maps a point (x, y) of an image of width W and
height H to (y, W - x) and the image size (W, H) to (H, W).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torchvision.ops import roi_align

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)

# RGB -> YIQ (NTSC); Y is the luma used for grayscale, contrast and saturation.
_LUMA = (0.299, 0.587, 0.114)
_YIQ = ((0.299, 0.587, 0.114),
        (0.595716, -0.274453, -0.321263),
        (0.211456, -0.522591, 0.311135))


def _rand(shape: tuple[int, ...], generator: torch.Generator | None,
          device: torch.device) -> torch.Tensor:
    return torch.rand(shape, generator=generator, device=device)


def _randk(n: int, generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    return torch.randint(0, 4, (n,), generator=generator, device=device)


@torch.no_grad()
def random_boxes(sizes_hw: torch.Tensor, scale: tuple[float, float] = (0.2, 1.0),
                 ratio: tuple[float, float] = (3 / 4, 4 / 3),
                 generator: torch.Generator | None = None, tries: int = 10) -> torch.Tensor:
    """RandomResizedCrop boxes (x1, y1, x2, y2), float32 (B, 4), inside each image's (h, w).

    Area fraction uniform in ``scale``, aspect w/h log-uniform in ``ratio``; like torchvision,
    up to ``tries`` candidates per image and the first that fits is kept, at a position uniform
    over the valid range; if none fits, the largest centred box with its aspect clamped to
    ``ratio`` (for images far from square its area may fall outside ``scale``).
    """
    dev = sizes_hw.device
    b = sizes_hw.shape[0]
    h = sizes_hw[:, 0].to(torch.float32)
    w = sizes_hw[:, 1].to(torch.float32)
    area = (h * w)[:, None]
    frac = scale[0] + (scale[1] - scale[0]) * _rand((b, tries), generator, dev)
    lo, hi = math.log(ratio[0]), math.log(ratio[1])
    ar = torch.exp(lo + (hi - lo) * _rand((b, tries), generator, dev))
    cw = torch.sqrt(area * frac * ar)
    ch = torch.sqrt(area * frac / ar)
    ok = (cw <= w[:, None]) & (ch <= h[:, None])
    found = ok.any(dim=1)
    first = torch.argmax(ok.to(torch.int8), dim=1, keepdim=True)  # 0 when none fits
    # torchvision's fallback: the largest centred box with the aspect clamped to ``ratio``
    aspect = w / h
    fw = torch.where(aspect > ratio[1], h * ratio[1], w)
    fh = torch.where(aspect < ratio[0], w / ratio[0], h)
    bw = torch.where(found, cw.gather(1, first)[:, 0], fw)
    bh = torch.where(found, ch.gather(1, first)[:, 0], fh)
    bw = torch.minimum(bw, w).clamp_min(1.0)
    bh = torch.minimum(bh, h).clamp_min(1.0)
    pos = torch.where(found[:, None], _rand((b, 2), generator, dev), 0.5)
    x1 = pos[:, 0] * (w - bw).clamp_min(0)
    y1 = pos[:, 1] * (h - bh).clamp_min(0)
    return torch.stack([x1, y1, x1 + bw, y1 + bh], dim=1)


@torch.no_grad()
def replicate_edges(canvas: torch.Tensor, sizes_hw: torch.Tensor) -> torch.Tensor:
    """Fill each image's padding with its last row/column, so that bilinear sampling right at
    the bottom/right border never mixes in the zero padding. Returns a new (B, C, H, W)."""
    b, _, hh, ww = canvas.shape
    dev = canvas.device
    rows = torch.minimum(torch.arange(hh, device=dev)[None], sizes_hw[:, :1] - 1)  # (B, H)
    cols = torch.minimum(torch.arange(ww, device=dev)[None], sizes_hw[:, 1:] - 1)  # (B, W)
    bi = torch.arange(b, device=dev)[:, None, None]
    out = canvas[bi, :, rows[:, :, None], cols[:, None, :]]  # (B, H, W, C)
    return out.permute(0, 3, 1, 2).contiguous()


@torch.no_grad()
def crop_resize(canvas: torch.Tensor, boxes_xyxy: torch.Tensor, out_size: int) -> torch.Tensor:
    """Crop box i of image i and resize it to (out_size, out_size): (B, C, out, out).

    ``roi_align`` with ``aligned=True`` (pixel centres at i + 0.5) and 2x2 samples per bin.
    """
    b = canvas.shape[0]
    ids = torch.arange(b, device=canvas.device, dtype=canvas.dtype)[:, None]
    rois = torch.cat([ids, boxes_xyxy.to(canvas.dtype)], dim=1)
    return roi_align(canvas, rois, output_size=(out_size, out_size), spatial_scale=1.0,
                     sampling_ratio=2, aligned=True)


@torch.no_grad()
def flip_rotate(x: torch.Tensor, hflip: torch.Tensor, rot_k: torch.Tensor) -> torch.Tensor:
    """Per sample: horizontal flip where ``hflip``, then ``torch.rot90(., rot_k, dims=(-2, -1))``.

    ``x`` must be square in its last two dimensions (odd rotations swap them).
    """
    if x.shape[-1] != x.shape[-2]:
        raise ValueError(f"flip_rotate needs square images, got {tuple(x.shape[-2:])}")
    mask = hflip.to(device=x.device, dtype=torch.bool).view(-1, *([1] * (x.dim() - 1)))
    out = torch.where(mask, x.flip(-1), x)  # a new tensor: x is never written
    k = rot_k.to(x.device).remainder(4)
    for r in (1, 2, 3):  # the groups are disjoint, so reading `out` while writing it is safe
        sel = torch.nonzero(k == r).squeeze(1)
        if sel.numel():
            out[sel] = torch.rot90(out[sel], r, dims=(-2, -1))
    return out


def _luma(x: torch.Tensor) -> torch.Tensor:
    wts = torch.tensor(_LUMA, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    return (x * wts).sum(dim=1, keepdim=True)


def _per_sample(v: torch.Tensor) -> torch.Tensor:
    return v.view(-1, 1, 1, 1)


@torch.no_grad()
def colour_jitter(x: torch.Tensor, strength: float = 1.0, generator: torch.Generator | None = None,
                  p: float = 0.8, p_gray: float = 0.2) -> torch.Tensor:
    """SimCLR colour distortion on x in [0, 1] (B, 3, H, W), per sample.

    With probability ``p``: brightness, contrast and saturation factors uniform in
    [1 - 0.8 s, 1 + 0.8 s] and a hue rotation of up to +-0.2 s of a turn (a rotation of the
    chroma plane in YIQ space), s = ``strength``, clamped to [0, 1] after each. Then grayscale
    with probability ``p_gray``.
    """
    b = x.shape[0]
    dev, dt = x.device, x.dtype
    r = _rand((b, 6), generator, dev).to(dt)
    s = 0.8 * strength
    bright = _per_sample((1 + s * (2 * r[:, 0] - 1)).clamp_min(0))
    contrast = _per_sample((1 + s * (2 * r[:, 1] - 1)).clamp_min(0))
    sat = _per_sample((1 + s * (2 * r[:, 2] - 1)).clamp_min(0))
    theta = 2 * math.pi * 0.2 * strength * (2 * r[:, 3] - 1)

    y = (x * bright).clamp(0, 1)
    mean = _luma(y).mean(dim=(-2, -1), keepdim=True)
    y = ((y - mean) * contrast + mean).clamp(0, 1)
    lum = _luma(y)
    y = ((y - lum) * sat + lum).clamp(0, 1)
    # hue: RGB -> YIQ, rotate (I, Q) by theta, back; one 3x3 matrix per sample
    t = torch.tensor(_YIQ, device=dev, dtype=dt)
    rot = torch.zeros((b, 3, 3), device=dev, dtype=dt)
    rot[:, 0, 0] = 1
    rot[:, 1, 1], rot[:, 1, 2] = torch.cos(theta), -torch.sin(theta)
    rot[:, 2, 1], rot[:, 2, 2] = torch.sin(theta), torch.cos(theta)
    m = torch.linalg.inv(t) @ rot @ t  # (B, 3, 3)
    y = torch.einsum("bij,bjhw->bihw", m, y).clamp(0, 1)

    out = torch.where(_per_sample(r[:, 4] < p), y, x)
    return torch.where(_per_sample(r[:, 5] < p_gray), _luma(out).expand_as(out), out)


@torch.no_grad()
def gaussian_blur(x: torch.Tensor, p: float = 0.5, sigma: tuple[float, float] = (0.1, 2.0),
                  generator: torch.Generator | None = None,
                  kernel_size: int | None = None) -> torch.Tensor:
    """Gaussian blur with probability ``p`` per sample, sigma uniform in ``sigma``.

    Separable, one kernel per sample (a grouped convolution over all B x C planes); reflect
    padding. Samples not blurred get a delta kernel (unchanged up to rounding).
    """
    b, c, hh, ww = x.shape
    dev, dt = x.device, x.dtype
    if kernel_size is None:
        kernel_size = 2 * math.ceil(3 * sigma[1]) + 1
    half = max(0, min(kernel_size // 2, hh - 1, ww - 1))
    r = _rand((b, 2), generator, dev).to(dt)
    sig = (sigma[0] + (sigma[1] - sigma[0]) * r[:, 0])[:, None]
    t = torch.arange(-half, half + 1, device=dev, dtype=dt)[None]
    kern = torch.exp(-(t**2) / (2 * sig**2))
    kern = kern / kern.sum(dim=1, keepdim=True)
    delta = (t == 0).to(dt).expand_as(kern)
    kern = torch.where(r[:, 1:2] < p, kern, delta)  # (B, K)
    if half == 0:
        return x
    k = 2 * half + 1
    wts = kern.repeat_interleave(c, dim=0)  # (B*C, K), plane order matches x.reshape
    planes = x.reshape(1, b * c, hh, ww)
    planes = F.conv2d(F.pad(planes, (half, half, 0, 0), mode="reflect"),
                      wts.view(b * c, 1, 1, k), groups=b * c)
    planes = F.conv2d(F.pad(planes, (0, 0, half, half), mode="reflect"),
                      wts.view(b * c, 1, k, 1), groups=b * c)
    return planes.view(b, c, hh, ww)


def normalise(x: torch.Tensor) -> torch.Tensor:
    """(x - MEAN) / STD per channel, x in [0, 1]."""
    mean = torch.tensor(MEAN, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    std = torch.tensor(STD, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    return (x - mean) / std


def _to_float(canvas_uint8: torch.Tensor, sizes: torch.Tensor) -> torch.Tensor:
    x = replicate_edges(canvas_uint8, sizes)
    return x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()


@torch.no_grad()
def simclr_views(canvas_uint8: torch.Tensor, sizes: torch.Tensor, out_size: int,
                 generator: torch.Generator | None = None, *,
                 scale: tuple[float, float] = (0.2, 1.0),
                 ratio: tuple[float, float] = (3 / 4, 4 / 3), strength: float = 1.0,
                 blur_p: float = 0.5, sigma: tuple[float, float] = (0.1, 2.0)) -> torch.Tensor:
    """One SimCLR view per canvas row: float32 (B, 3, out_size, out_size), normalised.

    Random resized crop, random horizontal flip and a random multiple of 90 degrees (seafloor
    imagery has no up), colour jitter (p 0.8) and grayscale (p 0.2), Gaussian blur.
    """
    dev = canvas_uint8.device
    b = canvas_uint8.shape[0]
    sizes = sizes.to(dev)
    x = _to_float(canvas_uint8, sizes)
    boxes = random_boxes(sizes, scale, ratio, generator)
    v = crop_resize(x, boxes, out_size)
    hflip = _rand((b,), generator, dev) < 0.5
    v = flip_rotate(v, hflip, _randk(b, generator, dev))
    v = colour_jitter(v, strength, generator)
    v = gaussian_blur(v, blur_p, sigma, generator)
    return normalise(v)


@torch.no_grad()
def transformed_sizes(sizes_hw: torch.Tensor, rot_k: torch.Tensor) -> torch.Tensor:
    """(h, w) of each image after :func:`flip_rotate`'s transform (swapped for odd k)."""
    odd = (rot_k.remainder(2) == 1)[:, None]
    return torch.where(odd, sizes_hw.flip(1), sizes_hw)


@torch.no_grad()
def transform_boxes(boxes_xyxy: torch.Tensor, sizes_hw: torch.Tensor, hflip: torch.Tensor,
                    rot_k: torch.Tensor) -> torch.Tensor:
    """Boxes (x1, y1, x2, y2) of the original frame expressed in the transformed frame.

    Horizontal flip first (x -> w - x), then k counter-clockwise quarter turns, each mapping
    (x, y) in a W x H image to (y, W - x) (the convention of torch.rot90 on dims (-2, -1)).
    """
    x1, y1, x2, y2 = boxes_xyxy.to(torch.float32).unbind(1)
    h = sizes_hw[:, 0].to(torch.float32)
    w = sizes_hw[:, 1].to(torch.float32)
    f = hflip.to(torch.bool)
    x1, x2 = torch.where(f, w - x2, x1), torch.where(f, w - x1, x2)
    k = rot_k.remainder(4)
    for step in range(3):
        m = k > step
        x1, y1, x2, y2, w, h = (torch.where(m, y1, x1), torch.where(m, w - x2, y1),
                                torch.where(m, y2, x2), torch.where(m, w - x1, y2),
                                torch.where(m, h, w), torch.where(m, w, h))
    return torch.stack([x1, y1, x2, y2], dim=1)


def xyxy_to_cxcywh(boxes: torch.Tensor) -> torch.Tensor:
    x1, y1, x2, y2 = boxes.unbind(-1)
    return torch.stack([(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1], dim=-1)


@torch.no_grad()
def sp_crops(canvas_uint8: torch.Tensor, sizes: torch.Tensor, out_size: int,
             generator: torch.Generator | None = None, *,
             scale: tuple[float, float] = (0.05, 0.3),
             ratio: tuple[float, float] = (3 / 4, 4 / 3), colour: float = 0.0,
             return_transform: bool = False):
    """Two local crops per image for the SP objective, in a randomly flipped/rotated frame.

    Per image a whole-image horizontal flip (p 0.5) and a rotation k in {0..3} are drawn (see
    the module docstring for the convention); two boxes of 5-30 % of the image area (aspect
    3/4-4/3) are drawn independently. Returns ``(crop1, crop2, box1_t, box2_t)``: the crops
    (B, 3, out, out), normalised, show the boxes' content as seen in the transformed image,
    and ``box*_t`` are float32 (B, 4) (cx, cy, w, h) in pixels of the transformed image (whose
    size is :func:`transformed_sizes`). ``colour`` > 0 adds independent colour jitter of that
    strength to each crop. With ``return_transform`` a fifth item ``(hflip, rot_k)`` follows.
    """
    dev = canvas_uint8.device
    b = canvas_uint8.shape[0]
    sizes = sizes.to(dev)
    x = _to_float(canvas_uint8, sizes)
    hflip = _rand((b,), generator, dev) < 0.5
    rot_k = _randk(b, generator, dev)
    crops, boxes = [], []
    for _ in range(2):
        box = random_boxes(sizes, scale, ratio, generator)
        crop = flip_rotate(crop_resize(x, box, out_size), hflip, rot_k)
        if colour > 0:
            crop = colour_jitter(crop, colour, generator)
        crops.append(normalise(crop))
        boxes.append(xyxy_to_cxcywh(transform_boxes(box, sizes, hflip, rot_k)))
    out = (crops[0], crops[1], boxes[0], boxes[1])
    return (*out, (hflip, rot_k)) if return_transform else out
