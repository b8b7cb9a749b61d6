"""MoCo v2 (Chen et al. 2020, "Improved Baselines with Momentum Contrastive Learning",
arXiv 2003.04297): a FIFO queue of momentum-encoder keys and the InfoNCE loss against it.

Queries q come from the online encoder, keys k of the other view from its momentum copy
(`byol.momentum_copy` / `byol.ema_update`). With unit vectors and temperature T, for each row

    loss = -log( exp(q.k / T) / (exp(q.k / T) + sum_{n not masked} exp(q.queue_n / T)) )

averaged over the batch. After the step the batch's keys are pushed into the `Queue` (under DDP
the keys of every rank, in rank order). Each queue entry also stores the (x, y) position of its
image (NaN when unknown), so `queue_mask` can drop entries within ``r_loc`` of the anchor: these
are likely views of the same seafloor and are not used as negatives.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from .distributed import _is_distributed


def _all_gather_no_grad(t: Tensor) -> Tensor:
    """Concatenate ``t`` (equal shape on every rank) over ranks in rank order; no gradient."""
    t = t.detach().contiguous()
    parts = [torch.empty_like(t) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, t)
    return torch.cat(parts, dim=0)


class Queue(nn.Module):
    """FIFO memory of ``size`` L2-normalised keys of width ``dim`` and their (x, y) positions.

    Buffers (saved in ``state_dict``, so a resumed run continues exactly): ``keys`` (size, dim)
    float32, initialised to random unit vectors from ``seed``; ``xy`` (size, 2) float32, NaN
    (unknown position, never masked) until written; ``ptr`` long scalar, the next row to write.
    """

    def __init__(self, size: int, dim: int, seed: int = 0) -> None:
        super().__init__()
        if size <= 0 or dim <= 0:
            raise ValueError(f"size and dim must be positive, got {size}, {dim}")
        g = torch.Generator().manual_seed(seed)
        keys = F.normalize(torch.randn(size, dim, generator=g, dtype=torch.float32), dim=1)
        self.register_buffer("keys", keys)
        self.register_buffer("xy", torch.full((size, 2), float("nan"), dtype=torch.float32))
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long))

    @property
    def size(self) -> int:
        return self.keys.shape[0]

    @torch.no_grad()
    def enqueue(self, keys: Tensor, xy: Tensor | None = None) -> None:
        """Write (B, dim) ``keys`` and their (B, 2) ``xy`` (NaN when None) at ``ptr``, wrapping.

        Same result as writing the rows one by one, so a batch larger than the queue keeps only
        its last ``size`` rows. Under DDP the batches of all ranks (equal B on every rank) are
        gathered first and written in rank order, so every rank holds the same queue.
        """
        if keys.ndim != 2 or keys.shape[1] != self.keys.shape[1]:
            raise ValueError(f"keys must be (B, {self.keys.shape[1]}), got {tuple(keys.shape)}")
        b = keys.shape[0]
        keys = F.normalize(keys.detach().float(), dim=1)
        if xy is None:
            xy = torch.full((b, 2), float("nan"), dtype=torch.float32, device=keys.device)
        else:
            if tuple(xy.shape) != (b, 2):
                raise ValueError(f"xy must be ({b}, 2), got {tuple(xy.shape)}")
            xy = xy.detach().to(device=keys.device, dtype=torch.float32)
        if _is_distributed():
            keys = _all_gather_no_grad(keys)
            xy = _all_gather_no_grad(xy)
        n = keys.shape[0]
        if n == 0:
            return
        size, ptr = self.size, int(self.ptr)
        keep = min(n, size)
        rows = torch.arange(n - keep, n, device=self.keys.device)
        idx = (ptr + rows) % size
        self.keys[idx] = keys[n - keep :].to(self.keys.device)
        self.xy[idx] = xy[n - keep :].to(self.xy.device)
        self.ptr.fill_((ptr + n) % size)


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
