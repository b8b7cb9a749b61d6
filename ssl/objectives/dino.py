"""DINO (Caron et al. 2021, "Emerging Properties in Self-Supervised Vision Transformers"):
the cross-entropy loss between teacher and student crops.

A student sees all crops (global first, then local); a teacher, the momentum copy of the student
(`training/state.py`; the head is `training/heads.py`'s), sees only the global crops. With teacher outputs t_i
and student outputs s_j (each (B, out_dim)),

    P_t_i = softmax((t_i - centre) / teacher_temp)          (no gradient)
    loss  = mean over pairs (i, j), j != i, of  mean over the batch of
            sum_k -P_t_i[k] * log_softmax(s_j / student_temp)[k]

where student[i] and teacher[i] are the same crop for i < len(teacher), so a crop is never
compared with itself. The centre is an EMA of the teacher's batch-mean output (`training/state.py`),
which with the sharpening by a low teacher temperature avoids collapse.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


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


