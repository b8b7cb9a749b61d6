"""Gathering embeddings from every rank with gradients, for losses scored against the global batch.

`gather_from_all_ranks(t)` is the ``gather`` callable the contrastive losses accept
(`simclr.nt_xent`, `geoclr.geoclr_loss`): it returns ``(all_t, offset)`` where ``all_t`` is the
concatenation over ranks ``[t_rank0; t_rank1; ...]`` and ``offset = rank * t.shape[0]`` is where
this rank's rows sit in it. Every rank must pass a tensor of the same shape (equal local batch).

Gradient convention: the backward pass sums, into each rank's local tensor, the gradients that
every rank's loss sends to that rank's rows (a reduce-scatter of the gathered gradient). With each
rank's loss normalised by its local rows and DDP averaging parameter gradients over ranks, the
step taken equals the single-process step on the concatenated global batch.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


class _AllGatherCat(torch.autograd.Function):
    """all_gather + concatenation along dim 0; backward: all_reduce(SUM), keep the local slice."""

    @staticmethod
    def forward(ctx, t: Tensor) -> Tensor:  # type: ignore[override]
        t = t.contiguous()
        world, rank = dist.get_world_size(), dist.get_rank()
        ctx.rank, ctx.rows = rank, t.shape[0]
        parts = [torch.empty_like(t) for _ in range(world)]
        dist.all_gather(parts, t)
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:  # type: ignore[override]
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad[ctx.rank * ctx.rows : (ctx.rank + 1) * ctx.rows]


def gather_from_all_ranks(t: Tensor) -> tuple[Tensor, int]:
    """Concatenate ``t`` (shape (B, ...), equal on every rank) from all ranks, differentiably.

    Returns ``(all_t, rank * B)``; ``all_t`` has shape (world_size * B, ...) and rows
    ``[rank * B, (rank + 1) * B)`` are this rank's ``t`` (gradient flows back to it, including the
    gradients other ranks' losses send to these rows). When torch.distributed is unavailable, not
    initialised, or the world has one rank, returns ``(t, 0)`` unchanged. (Our own autograd
    Function: torch.distributed.nn.functional.all_gather is deprecated.)
    """
    if not is_distributed():
        return t, 0
    return _AllGatherCat.apply(t), dist.get_rank() * t.shape[0]
