"""Frozen features: the pooled backbone features of every image, batched on the device.

The full frame is resized to the encoder's training size (no augmentation), normalised like the
training views, and decoded on the GPU when there is one.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..data import augment
from ..data.store import decode_cpu, decode_gpu, pad_batch


@torch.no_grad()
def full_frames(jpegs: Sequence[bytes], size: int, device: torch.device) -> torch.Tensor:
    """Decode and resize whole images to (B,3,size,size) floats in [0, 1] on `device`."""
    imgs = decode_gpu(jpegs, device) if device.type == "cuda" else decode_cpu(jpegs)
    canvas, sizes = pad_batch(imgs)
    canvas, sizes = canvas.to(device), sizes.to(device)
    zero = torch.zeros_like(sizes[:, 0])
    boxes = torch.stack([zero, zero, sizes[:, 1], sizes[:, 0]], 1).float()
    return augment.crop_resize(canvas.float() / 255.0, boxes, size)


@torch.no_grad()
def extract_features(encoder, jpegs: Sequence[bytes], size: int, device: torch.device,
                     batch_size: int = 256, bf16: bool | None = None) -> torch.Tensor:
    """encoder.features of every image, float32 (n, C) on `device`."""
    encoder = encoder.to(device).eval()
    if bf16 is None:
        bf16 = device.type == "cuda"
    mean = torch.tensor(augment.MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(augment.STD, device=device).view(1, 3, 1, 1)
    out = []
    for i in range(0, len(jpegs), batch_size):
        x = (full_frames(jpegs[i:i + batch_size], size, device) - mean) / std
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            out.append(encoder.features(x).float())
    if not out:
        return torch.zeros(0, encoder.feat_dim, device=device)
    return torch.cat(out)
