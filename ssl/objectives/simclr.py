"""SimCLR's NT-Xent loss (Chen et al. 2020) with optional negative masking and rank gathering.

Layout. The local batch has B pairs (z1[i], z2[i]). Rows are the 2B local views
``[z1; z2]``; columns are the 2N views of the global batch ``[z1_all; z2_all]`` with
``(z1_all, offset) = gather(z1)`` and ``(z2_all, offset) = gather(z2)`` (N = world_size * B);
without ``gather``, N = B and offset = 0. For local row i < B (view z1[i]) the self column is
``offset + i`` and the positive column is ``N + offset + i``; for row B + i (view z2[i]) the self
column is ``N + offset + i`` and the positive column is ``offset + i``.

Loss. With u the L2-normalised embeddings and s(a, c) = <u_a, u_c> / temperature,

    loss = mean over the 2B local rows a of
           -log( exp(s(a, pos(a))) / sum_{c in C(a)} exp(s(a, c)) )

where C(a) holds every column except a's self column and the columns with ``neg_mask[a, c]``
True; a's positive column is always in C(a), whatever ``neg_mask`` says.

Distributed averaging: each rank's loss is the mean over its own 2B rows, so with equal local
batches the mean of the ranks' losses equals the single-process loss on the global batch, and
DDP's gradient averaging reproduces the single-process gradient (see `distributed`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

Gather = Callable[[Tensor], tuple[Tensor, int]]


def nt_xent(
    z1: Tensor,
    z2: Tensor,
    temperature: float = 0.1,
    *,
    neg_mask: Tensor | None = None,
    gather: Gather | None = None,
) -> Tensor:
    """NT-Xent over the 2B views of ``z1`` and ``z2`` (each (B, D), z1[i] and z2[i] positives).

    ``neg_mask``: optional bool tensor of shape (2B, 2N) (2N = number of columns, see the module
    docstring); True removes that column from the denominator of that row. The self column is
    always removed and the positive column always kept, regardless of the mask.
    ``gather``: optional callable ``gather(t) -> (all_t, offset)`` such as
    `distributed.gather_from_all_ranks`; local rows are then scored against all gathered columns.
    Returns the scalar mean over the 2B local rows.
    """
    if z1.ndim != 2 or z1.shape != z2.shape:
        raise ValueError(f"z1 and z2 must both be (B, D), got {tuple(z1.shape)}, {tuple(z2.shape)}")
    if not temperature > 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    b = z1.shape[0]
    z1 = F.normalize(z1, dim=1)
    z2 = F.normalize(z2, dim=1)
    if gather is None:
        z1_all, z2_all, offset = z1, z2, 0
    else:
        z1_all, offset = gather(z1)
        z2_all, offset2 = gather(z2)
        if int(offset) != int(offset2) or z1_all.shape != z2_all.shape:
            raise ValueError("gather returned inconsistent results for z1 and z2")
        offset = int(offset)
    n = z1_all.shape[0]
    if not 0 <= offset <= n - b:
        raise ValueError(f"gather offset {offset} does not fit {b} local rows in {n} gathered rows")

    rows = torch.cat([z1, z2], dim=0)
    cols = torch.cat([z1_all, z2_all], dim=0)
    logits = rows @ cols.T / temperature  # (2B, 2N)

    i = torch.arange(b, device=logits.device)
    r = torch.arange(2 * b, device=logits.device)
    self_col = torch.cat([offset + i, n + offset + i])
    pos_col = torch.cat([n + offset + i, offset + i])

    exclude = torch.zeros(logits.shape, dtype=torch.bool, device=logits.device)
    if neg_mask is not None:
        if tuple(neg_mask.shape) != tuple(logits.shape):
            raise ValueError(
                f"neg_mask must have shape {tuple(logits.shape)}, got {tuple(neg_mask.shape)}"
            )
        exclude |= neg_mask.to(device=logits.device, dtype=torch.bool)
    exclude[r, self_col] = True
    exclude[r, pos_col] = False
    logits = logits.masked_fill(exclude, float("-inf"))
    return F.cross_entropy(logits, pos_col)
