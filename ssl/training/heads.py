"""The small networks the frameworks put on top of an encoder: SP's head on two crops' features,
SimSiam's and BYOL's predictor, DINO's projection head. Their losses live in `objectives/`."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import weight_norm


class SPHead(nn.Module):
    """MLP on the concatenated pooled features of two crops: 2C -> 512 -> 512 -> 4."""

    def __init__(self, in_features: int, hidden: int = 512) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(2 * in_features, hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, 4),
        )

    def forward(self, f1: Tensor, f2: Tensor) -> Tensor:
        """(B, C) features of crop 1 and crop 2 -> (B, 4) predicted `sp_targets`."""
        return self.net(torch.cat([f1, f2], dim=1))


class Predictor(nn.Module):
    """Bottleneck MLP predictor: Linear(dim, hidden, no bias) - BN - ReLU - Linear(hidden, dim)."""

    def __init__(self, dim: int, hidden: int = 512) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(dim, hidden, bias=False),
            nn.BatchNorm1d(hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, dim),
        )

    def forward(self, z: Tensor) -> Tensor:
        """(B, dim) projections -> (B, dim) predictions."""
        return self.net(z)


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
