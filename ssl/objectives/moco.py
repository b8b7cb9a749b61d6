"""MoCo v2 (Chen et al. 2020, "Improved Baselines with Momentum Contrastive Learning",
arXiv 2003.04297): the InfoNCE loss against a queue of momentum-encoder keys.

Queries q come from the online encoder, keys k of the other view from its momentum copy
(`training/state.py`, which also holds the `Queue`). With unit vectors and temperature T,
for each row

    loss = -log( exp(q.k / T) / (exp(q.k / T) + sum_{n not masked} exp(q.queue_n / T)) )

averaged over the batch. After the step the batch's keys are pushed into the `Queue` (under DDP
the keys of every rank, in rank order). Each queue entry also stores the (x, y) position of its
image (NaN when unknown), so `queue_mask` can drop entries within ``r_loc`` of the anchor: these
are likely views of the same seafloor and are not used as negatives.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def queue_mask(anchor_xy: Tensor, queue_xy: Tensor, r_loc: float) -> Tensor:
    """(B, K) bool: True where the Euclidean distance between anchor i and entry n is <= r_loc.

    ``anchor_xy`` (B, 2), ``queue_xy`` (K, 2); a NaN position on either side gives False.
    """
    if anchor_xy.ndim != 2 or anchor_xy.shape[1] != 2:
        raise ValueError(f"anchor_xy must be (B, 2), got {tuple(anchor_xy.shape)}")
    if queue_xy.ndim != 2 or queue_xy.shape[1] != 2:
        raise ValueError(f"queue_xy must be (K, 2), got {tuple(queue_xy.shape)}")
    queue_xy = queue_xy.to(device=anchor_xy.device, dtype=anchor_xy.dtype)
    dx = anchor_xy[:, None, 0] - queue_xy[None, :, 0]
    dy = anchor_xy[:, None, 1] - queue_xy[None, :, 1]
    return torch.hypot(dx, dy) <= r_loc  # NaN compares False


def moco_loss(
    q: Tensor,
    k: Tensor,
    queue: Tensor,
    temperature: float,
    mask: Tensor | None = None,
) -> Tensor:
    """InfoNCE of (B, D) queries ``q`` against their keys ``k`` and the (K, D) ``queue``.

    ``q`` and ``k`` are L2-normalised here and ``k`` is detached; ``queue`` rows are used as given
    (`Queue` stores unit vectors) and get no gradient. Logits are
    ``cat([sum(q * k, 1, keepdim), q @ queue.T]) / temperature``; queue entries with ``mask``
    (bool (B, K)) True are set to -inf, the positive (column 0) never. Cross-entropy with target 0,
    mean over the batch.
    """
    if q.ndim != 2 or q.shape != k.shape:
        raise ValueError(f"q and k must both be (B, D), got {tuple(q.shape)}, {tuple(k.shape)}")
    if queue.ndim != 2 or queue.shape[1] != q.shape[1]:
        raise ValueError(f"queue must be (K, {q.shape[1]}), got {tuple(queue.shape)}")
    if not temperature > 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    q = F.normalize(q, dim=1)
    k = F.normalize(k.detach(), dim=1)
    queue = queue.detach().to(device=q.device, dtype=q.dtype)
    pos = (q * k).sum(dim=1, keepdim=True)
    neg = q @ queue.T
    if mask is not None:
        if tuple(mask.shape) != tuple(neg.shape):
            raise ValueError(f"mask must have shape {tuple(neg.shape)}, got {tuple(mask.shape)}")
        neg = neg.masked_fill(mask.to(device=neg.device, dtype=torch.bool), float("-inf"))
    logits = torch.cat([pos, neg], dim=1) / temperature
    target = torch.zeros(q.shape[0], dtype=torch.long, device=q.device)
    return F.cross_entropy(logits, target)
