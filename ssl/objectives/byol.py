"""BYOL (Grill et al. 2020, "Bootstrap Your Own Latent"): loss and the momentum (EMA) target.

An online network (encoder + projector + `Predictor`) predicts the projection t of the other view
made by a target network, an exponential moving average of the online encoder + projector:

    loss = mean over the batch of 0.5 * ((2 - 2 cos(p1, t2)) + (2 - 2 cos(p2, t1)))

with no gradient into the targets t1, t2 (each term is ``||p/|p| - t/|t| ||^2``, in [0, 4]).
After each optimiser step the target moves toward the online weights, ``t = m t + (1 - m) o``
(`ema_update`), with m rising from ``base`` to 1 along a cosine schedule (`momentum_at`).
`momentum_copy` and `ema_update` are shared with MoCo and DINO.
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .simsiam import Predictor

__all__ = ["Predictor", "byol_loss", "ema_update", "momentum_at", "momentum_copy"]


def byol_loss(p1: Tensor, p2: Tensor, t1: Tensor, t2: Tensor) -> Tensor:
    """Symmetrised BYOL loss on (B, D) predictions p1, p2 and targets t1, t2 (targets detached)."""
    for name, t in (("p2", p2), ("t1", t1), ("t2", t2)):
        if t.shape != p1.shape:
            raise ValueError(f"{name} has shape {tuple(t.shape)}, p1 has {tuple(p1.shape)}")
    if p1.ndim != 2:
        raise ValueError(f"inputs must be (B, D), got {tuple(p1.shape)}")

    def cos(p: Tensor, t: Tensor) -> Tensor:
        return (F.normalize(p, dim=1) * F.normalize(t.detach(), dim=1)).sum(dim=1)

    return (0.5 * ((2 - 2 * cos(p1, t2)) + (2 - 2 * cos(p2, t1)))).mean()


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
