"""The state some frameworks keep between steps, updated by the loop: the momentum target
(BYOL, MoCo, DINO: a copy of the online network and its EMA update with a cosine schedule),
MoCo's queue of past keys with their positions, and DINO's centre and teacher temperature."""

from __future__ import annotations

import copy
import math

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from ..objectives.distributed import is_distributed


def momentum_at(step: int, total: int, base: float = 0.996) -> float:
    """Cosine momentum ``1 - (1 - base) * (cos(pi * step / total) + 1) / 2``.

    ``base`` at step 0, 1.0 at step ``total``; ``step`` is clamped to [0, total]; ``total <= 0``
    gives ``base``.
    """
    if total <= 0:
        return float(base)
    s = min(max(step, 0), total)
    return 1.0 - (1.0 - base) * (math.cos(math.pi * s / total) + 1.0) / 2.0


def momentum_copy(module: nn.Module) -> nn.Module:
    """A deep copy of ``module`` (same train/eval modes) whose parameters do not require grad."""
    target = copy.deepcopy(module)
    for p in target.parameters():
        p.requires_grad_(False)
    return target


@torch.no_grad()
def ema_update(target: nn.Module, online: nn.Module, m: float) -> None:
    """In place: every target parameter ``t = m * t + (1 - m) * o``; buffers copied from online.

    Parameters and buffers are matched by name; raises ValueError when the names or shapes differ.
    """
    t_params = dict(target.named_parameters())
    o_params = dict(online.named_parameters())
    if list(t_params) != list(o_params):
        raise ValueError(
            f"parameter names differ: target {sorted(t_params)} vs online {sorted(o_params)}"
        )
    t_bufs = dict(target.named_buffers())
    o_bufs = dict(online.named_buffers())
    if list(t_bufs) != list(o_bufs):
        raise ValueError(f"buffer names differ: target {sorted(t_bufs)} vs online {sorted(o_bufs)}")
    for name, t in t_params.items():
        o = o_params[name]
        if t.shape != o.shape:
            raise ValueError(f"parameter {name}: shape {tuple(t.shape)} vs {tuple(o.shape)}")
        t.mul_(m).add_(o.detach().to(t.dtype), alpha=1.0 - m)
    for name, t in t_bufs.items():
        o = o_bufs[name]
        if t.shape != o.shape:
            raise ValueError(f"buffer {name}: shape {tuple(t.shape)} vs {tuple(o.shape)}")
        t.copy_(o)


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
        if is_distributed():
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


def teacher_temperature(
    step: int, warmup_steps: int, start: float = 0.04, end: float = 0.07
) -> float:
    """Linear from ``start`` (step 0) to ``end`` (step ``warmup_steps``), then ``end``.

    Steps below 0 give ``start``; ``warmup_steps <= 0`` gives ``end``.
    """
    if warmup_steps <= 0 or step >= warmup_steps:
        return float(end)
    if step <= 0:
        return float(start)
    return start + (end - start) * step / warmup_steps


@torch.no_grad()
def update_centre(centre: Tensor, teacher_out: Tensor, momentum: float = 0.9) -> Tensor:
    """New centre ``momentum * centre + (1 - momentum) * mean``, a fresh (1, out_dim) tensor.

    ``mean`` is the row mean of ``teacher_out`` (N, out_dim), averaged over ranks under DDP
    (equal N on every rank).
    """
    if teacher_out.ndim != 2:
        raise ValueError(f"teacher_out must be (N, out_dim), got {tuple(teacher_out.shape)}")
    mean = teacher_out.detach().mean(dim=0, keepdim=True).to(centre.dtype)
    if is_distributed():
        mean = mean.contiguous()
        dist.all_reduce(mean, op=dist.ReduceOp.SUM)
        mean = mean / dist.get_world_size()
    return (momentum * centre + (1.0 - momentum) * mean).reshape(centre.shape)
