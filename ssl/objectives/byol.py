"""BYOL (Grill et al. 2020, "Bootstrap Your Own Latent"): the loss.

An online network (encoder + projector + `Predictor`) predicts the projection t of the other view
made by a target network, an exponential moving average of the online encoder + projector:

    loss = mean over the batch of 0.5 * ((2 - 2 cos(p1, t2)) + (2 - 2 cos(p2, t1)))

with no gradient into the targets t1, t2 (each term is ``||p/|p| - t/|t| ||^2``, in [0, 4]).
The predictor is `training/heads.py`'s; the momentum target, its EMA update and schedule are
in `training/state.py` (shared with MoCo and DINO).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


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


