"""DINO (Caron et al. 2021, "Emerging Properties in Self-Supervised Vision Transformers"):
projection head, teacher temperature schedule, cross-entropy loss and the teacher centre.

A student sees all crops (global first, then local); a teacher, the momentum copy of the student
(`byol.momentum_copy` / `byol.ema_update`), sees only the global crops. With teacher outputs t_i
and student outputs s_j (each (B, out_dim)),

    P_t_i = softmax((t_i - centre) / teacher_temp)          (no gradient)
    loss  = mean over pairs (i, j), j != i, of  mean over the batch of
            sum_k -P_t_i[k] * log_softmax(s_j / student_temp)[k]

where student[i] and teacher[i] are the same crop for i < len(teacher), so a crop is never
compared with itself. The centre is an EMA of the teacher's batch-mean output (`update_centre`),
which with the sharpening by a low teacher temperature avoids collapse.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import weight_norm

from .distributed import _is_distributed


class DINOHead(nn.Module):
    """MLP in_dim -> hidden -> hidden -> bottleneck (GELU), L2-normalise, weight-normed last layer.

    The last layer is ``weight_norm(Linear(bottleneck, out_dim, bias=False))`` whose magnitude
    (``last.parametrizations.weight.original0``) is fixed at 1 and does not require grad, so each
    output is a cosine between the normalised bottleneck and a learnt unit prototype.
    """

    def __init__(
        self, in_dim: int, out_dim: int = 4096, hidden: int = 2048, bottleneck: int = 256
    ) -> None:
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(in_dim, hidden),
            nn.GELU(),
            nn.Linear(hidden, hidden),
            nn.GELU(),
            nn.Linear(hidden, bottleneck),
        )
        for m in self.mlp:
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
        self.last = weight_norm(nn.Linear(bottleneck, out_dim, bias=False))
        g = self.last.parametrizations.weight.original0
        with torch.no_grad():
            g.fill_(1.0)
        g.requires_grad_(False)

    def forward(self, x: Tensor) -> Tensor:
        """(B, in_dim) features -> (B, out_dim) logits."""
        return self.last(F.normalize(self.mlp(x), dim=-1))


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


def dino_loss(
    student: list[Tensor],
    teacher: list[Tensor],
    centre: Tensor,
    student_temp: float = 0.1,
    teacher_temp: float = 0.04,
) -> Tensor:
    """DINO cross-entropy between teacher (global crops) and student (all crops, global first).

    Each output is (B, out_dim); ``centre`` broadcasts against it ((1, out_dim)). The teacher
    probabilities are detached. Returns the mean over pairs (i, j != i) of the batch-mean
    cross-entropy (see the module docstring).
    """
    if not teacher or len(student) < len(teacher):
        raise ValueError(
            f"need >= 1 teacher output and at least as many student outputs, "
            f"got {len(teacher)} teacher, {len(student)} student"
        )
    if len(student) == 1:
        raise ValueError("one student and one teacher output give no pair (j != i)")
    if not student_temp > 0 or not teacher_temp > 0:
        raise ValueError(f"temperatures must be positive, got {student_temp}, {teacher_temp}")
    shape = teacher[0].shape
    for t in [*teacher, *student]:
        if t.ndim != 2 or t.shape != shape:
            raise ValueError(
                f"all outputs must be (B, out_dim) = {tuple(shape)}, got {tuple(t.shape)}"
            )
    probs = [F.softmax((t.detach() - centre.detach()) / teacher_temp, dim=-1) for t in teacher]
    logps = [F.log_softmax(s / student_temp, dim=-1) for s in student]
    total, pairs = 0.0, 0
    for i, p in enumerate(probs):
        for j, lp in enumerate(logps):
            if j == i:
                continue
            total = total + (-p * lp).sum(dim=-1).mean()
            pairs += 1
    return total / pairs


@torch.no_grad()
def update_centre(centre: Tensor, teacher_out: Tensor, momentum: float = 0.9) -> Tensor:
    """New centre ``momentum * centre + (1 - momentum) * mean``, a fresh (1, out_dim) tensor.

    ``mean`` is the row mean of ``teacher_out`` (N, out_dim), averaged over ranks under DDP
    (equal N on every rank).
    """
    if teacher_out.ndim != 2:
        raise ValueError(f"teacher_out must be (N, out_dim), got {tuple(teacher_out.shape)}")
    mean = teacher_out.detach().mean(dim=0, keepdim=True).to(centre.dtype)
    if _is_distributed():
        mean = mean.contiguous()
        dist.all_reduce(mean, op=dist.ReduceOp.SUM)
        mean = mean / dist.get_world_size()
    return (momentum * centre + (1.0 - momentum) * mean).reshape(centre.shape)
