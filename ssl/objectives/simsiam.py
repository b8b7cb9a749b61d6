"""SimSiam (Chen & He 2021, "Exploring Simple Siamese Representation Learning"): the loss.

Two views x1, x2 of one image go through the same encoder + projector (z1, z2) and a predictor
(p1, p2). The loss is the symmetrised negative cosine similarity between each view's prediction
and the other view's projection, with a stop-gradient on the projection:

    loss = 0.5 * D(p1, stopgrad(z2)) + 0.5 * D(p2, stopgrad(z1)),   D(p, z) = -cos(p, z)

averaged over the batch; it lies in [-1, 1] (-1: predictions aligned with the targets).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def negative_cosine(p: Tensor, z: Tensor) -> Tensor:
    """Mean over the batch of ``-cos(p[i], z[i])`` for (B, D) tensors; no gradient reaches ``z``."""
    if p.ndim != 2 or p.shape != z.shape:
        raise ValueError(f"p and z must both be (B, D), got {tuple(p.shape)}, {tuple(z.shape)}")
    p = F.normalize(p, dim=1)
    z = F.normalize(z.detach(), dim=1)
    return -(p * z).sum(dim=1).mean()


def simsiam_loss(p1: Tensor, p2: Tensor, z1: Tensor, z2: Tensor) -> Tensor:
    """Symmetrised SimSiam loss ``0.5 * D(p1, z2) + 0.5 * D(p2, z1)``; z1, z2 get no gradient."""
    return 0.5 * negative_cosine(p1, z2) + 0.5 * negative_cosine(p2, z1)
