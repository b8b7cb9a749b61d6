"""Spatial Prediction (SP, Shen et al. 2026): regress the relative placement of two crops.

Two crops are taken from one image, which may also be flipped / rotated as a whole. A head on the
concatenated pooled features of the two crops predicts where crop 2 lies relative to crop 1, in
the frame of the image as the network sees it (after the whole-image flip and rotation):

    target = ((cx2 - cx1) / w1, (cy2 - cy1) / h1, log(w2 / w1), log(h2 / h1))

Box convention. Boxes are (cx, cy, w, h) in continuous pixel coordinates of an image of height H
and width W: x runs along columns (the last tensor dim) from 0 at the left edge to W at the right
edge, y along rows (dim -2) from 0 at the top edge to H at the bottom edge; pixel (row r, col c)
covers [c, c + 1) x [r, r + 1). A crop of rows r0..r1-1 and columns c0..c1-1 has
cx = (c0 + c1) / 2, cy = (r0 + r1) / 2, w = c1 - c0, h = r1 - r0. Normalised coordinates work
the same way with sizes (1, 1).

Whole-image transforms (`transform_boxes`), applied in this order:
  1. horizontal flip, ``torch.flip(img, dims=(-1,))``:  x -> W - x, y -> y;
  2. rotation by k quarter turns, ``torch.rot90(img, k, dims=(-2, -1))`` (counter-clockwise as
     displayed with row 0 at the top). One quarter turn maps an H x W image to a W x H one with
     x' = y, y' = W - x (so w' = h, h' = w); k is taken modulo 4 (k = -1 is k = 3):
       k = 0: (x, y);   k = 1: (y, W - x);   k = 2: (W - x, H - y);   k = 3: (H - y, x).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def sp_targets(box1: Tensor, box2: Tensor) -> Tensor:
    """(B, 4) targets ((cx2 - cx1)/w1, (cy2 - cy1)/h1, log(w2/w1), log(h2/h1)) of (B, 4) boxes.

    Both boxes are (cx, cy, w, h) in the same frame: the one after whole-image transforms (see
    `transform_boxes`). Widths and heights must be positive.
    """
    if box1.shape != box2.shape or box1.ndim != 2 or box1.shape[1] != 4:
        raise ValueError(f"boxes must both be (B, 4), got {tuple(box1.shape)}, {tuple(box2.shape)}")
    cx1, cy1, w1, h1 = box1.unbind(1)
    cx2, cy2, w2, h2 = box2.unbind(1)
    return torch.stack(
        [(cx2 - cx1) / w1, (cy2 - cy1) / h1, torch.log(w2 / w1), torch.log(h2 / h1)], dim=1
    )


def transform_boxes(
    boxes_cxcywh: Tensor, sizes_hw: Tensor, hflip: Tensor, rot90_k: Tensor
) -> Tensor:
    """Map (B, 4) boxes from the original frame to the frame after hflip, then rot90 by k.

    ``sizes_hw``: (B, 2) original (H, W) of each image; ``hflip``: (B,) bool;
    ``rot90_k``: (B,) int, quarter turns as ``torch.rot90(img, k, dims=(-2, -1))``. The result
    is the box of the same pixels in the transformed image (see the module docstring).
    """
    if boxes_cxcywh.ndim != 2 or boxes_cxcywh.shape[1] != 4:
        raise ValueError(f"boxes must be (B, 4), got {tuple(boxes_cxcywh.shape)}")
    b = boxes_cxcywh.shape[0]
    dtype, device = boxes_cxcywh.dtype, boxes_cxcywh.device
    sizes = torch.as_tensor(sizes_hw, device=device).to(dtype).reshape(b, 2)
    flip = torch.as_tensor(hflip, device=device).to(torch.bool).reshape(b)
    k = torch.as_tensor(rot90_k, device=device).to(torch.int64).reshape(b).remainder(4)

    cx, cy, w, h = boxes_cxcywh.unbind(1)
    img_h, img_w = sizes.unbind(1)
    cx = torch.where(flip, img_w - cx, cx)
    # quarter-turn images of the four k; pick per row
    cands_cx = torch.stack([cx, cy, img_w - cx, img_h - cy], dim=1)
    cands_cy = torch.stack([cy, img_w - cx, img_h - cy, cx], dim=1)
    odd = (k % 2) == 1
    kk = k[:, None]
    return torch.stack(
        [
            cands_cx.gather(1, kk).squeeze(1),
            cands_cy.gather(1, kk).squeeze(1),
            torch.where(odd, h, w),
            torch.where(odd, w, h),
        ],
        dim=1,
    )


def sp_loss(pred: Tensor, target: Tensor, beta: float = 1.0) -> Tensor:
    """Smooth-L1 (Huber with transition ``beta``) between (B, 4) predictions and targets, mean."""
    return F.smooth_l1_loss(pred, target, beta=beta, reduction="mean")
