"""CSP's location encoders (Mai et al., ICML 2023) and the footprint its negative locations are
drawn from. Location encoders map site-centred metres (B, 2) to (B, d):
- `TheoryEncoder`: Space2Vec "theory" features along three unit directions at 0, 120 and 240
  degrees, `GridEncoder`: Space2Vec "grid" features along the x and y axes. For S wavelengths
  lambda_s geometric between lambda_min and lambda_max and directions a_j, the raw features are
  sin and cos of 2*pi*<x, a_j>/lambda_s, laid out (S, J, 2) -> flattened index
  (s * J + j) * 2 + {0: sin, 1: cos}; an MLP (Linear, LayerNorm, ReLU, Dropout, Linear) maps the
  2*J*S features to d.
- `RBFEncoder`: Gaussian kernels exp(-|x - c_k|^2 / (2 sigma^2)) to K centres, then the same MLP.
`Footprint` (built once per run) draws the random negative locations inside the site's footprint.
CSP's losses are in `objectives/csp.py`.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

CSP_DIM = 128  # width of CSP's location and image embeddings (the paper's d)


def _mlp(in_dim: int, hidden: int, d: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(in_dim, hidden),
        nn.LayerNorm(hidden),
        nn.ReLU(inplace=True),
        nn.Dropout(dropout),
        nn.Linear(hidden, d),
    )


def _check_xy(xy: Tensor) -> None:
    if xy.ndim != 2 or xy.shape[1] != 2:
        raise ValueError(f"locations must be (B, 2) metres, got {tuple(xy.shape)}")


class _SinusoidalEncoder(nn.Module):
    """Multi-scale sinusoids along fixed unit directions, then an MLP (see the module docstring)."""

    def __init__(
        self,
        directions: Tensor,
        d: int,
        lambda_min: float,
        lambda_max: float,
        scales: int,
        hidden: int,
        dropout: float,
    ) -> None:
        super().__init__()
        if not 0 < lambda_min <= lambda_max:
            raise ValueError(f"need 0 < lambda_min <= lambda_max, got {lambda_min}, {lambda_max}")
        if scales < 1:
            raise ValueError(f"scales must be >= 1, got {scales}")
        if scales == 1:
            wavelengths = torch.tensor([float(lambda_min)], dtype=torch.float64)
        else:
            g = (lambda_max / lambda_min) ** (1.0 / (scales - 1))
            wavelengths = lambda_min * g ** torch.arange(scales, dtype=torch.float64)
        self.register_buffer("directions", directions.to(torch.float32))  # (J, 2)
        self.register_buffer("wavelengths", wavelengths.to(torch.float32))  # (S,)
        self.feature_dim = 2 * directions.shape[0] * scales
        self.mlp = _mlp(self.feature_dim, hidden, d, dropout)

    def features(self, xy: Tensor) -> Tensor:
        """Raw (B, 2*J*S) sinusoidal features of (B, 2) locations, layout (S, J, 2) flattened."""
        _check_xy(xy)
        dtype = torch.promote_types(xy.dtype, torch.float32)
        proj = xy.to(dtype) @ self.directions.to(dtype).T  # (B, J)
        phase = (2 * math.pi) * proj[:, None, :] / self.wavelengths.to(dtype)[None, :, None]
        return torch.stack([phase.sin(), phase.cos()], dim=-1).flatten(1)  # (B, S, J, 2)

    def forward(self, xy: Tensor) -> Tensor:
        f = self.features(xy)
        return self.mlp(f.to(self.mlp[0].weight.dtype))


class TheoryEncoder(_SinusoidalEncoder):
    """Space2Vec "theory": directions at 0, 120, 240 degrees; 6*S features -> MLP -> d."""

    def __init__(
        self,
        d: int = CSP_DIM,
        lambda_min: float = 1.0,
        lambda_max: float = 1000.0,
        scales: int = 16,
        hidden: int = 256,
        dropout: float = 0.1,
    ) -> None:
        ang = torch.tensor([0.0, 2 * math.pi / 3, 4 * math.pi / 3], dtype=torch.float64)
        dirs = torch.stack([ang.cos(), ang.sin()], dim=1)
        super().__init__(dirs, d, lambda_min, lambda_max, scales, hidden, dropout)


class GridEncoder(_SinusoidalEncoder):
    """Space2Vec "grid": directions along x and y; 4*S features -> MLP -> d."""

    def __init__(
        self,
        d: int = CSP_DIM,
        lambda_min: float = 1.0,
        lambda_max: float = 1000.0,
        scales: int = 16,
        hidden: int = 256,
        dropout: float = 0.1,
    ) -> None:
        dirs = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
        super().__init__(dirs, d, lambda_min, lambda_max, scales, hidden, dropout)


class RBFEncoder(nn.Module):
    """Gaussian RBF features exp(-|x - c_k|^2 / (2 sigma^2)) to K centres (K, 2) -> MLP -> d."""

    def __init__(
        self, d: int, centres: Tensor, sigma: float, hidden: int = 256, dropout: float = 0.1
    ) -> None:
        super().__init__()
        centres = torch.as_tensor(centres, dtype=torch.float32)
        if centres.ndim != 2 or centres.shape[1] != 2 or centres.shape[0] < 1:
            raise ValueError(f"centres must be (K, 2) with K >= 1, got {tuple(centres.shape)}")
        if not sigma > 0:
            raise ValueError(f"sigma must be positive, got {sigma}")
        self.register_buffer("centres", centres)
        self.sigma = float(sigma)
        self.feature_dim = centres.shape[0]
        self.mlp = _mlp(self.feature_dim, hidden, d, dropout)

    def features(self, xy: Tensor) -> Tensor:
        """Raw (B, K) kernel values; 1 at a centre, falling off with distance."""
        _check_xy(xy)
        dtype = torch.promote_types(xy.dtype, torch.float32)
        c = self.centres.to(dtype)
        x = xy.to(dtype)
        d2 = (x[:, None, 0] - c[None, :, 0]).square() + (x[:, None, 1] - c[None, :, 1]).square()
        return torch.exp(-d2 / (2 * self.sigma**2))

    def forward(self, xy: Tensor) -> Tensor:
        f = self.features(xy)
        return self.mlp(f.to(self.mlp[0].weight.dtype))


def make_location_encoder(
    kind: str, d: int, extent_m: float, centres: Tensor | None = None, **kwargs
) -> nn.Module:
    """Location encoder by name: "theory", "grid" (lambda_max = extent_m) or "rbf" (centres).

    ``kwargs`` go to the encoder (lambda_min, scales, hidden, dropout; for "rbf" sigma, which
    defaults to the median distance from each centre to its nearest other centre, or extent_m
    when there is a single centre).
    """
    if kind in ("theory", "grid"):
        cls = TheoryEncoder if kind == "theory" else GridEncoder
        return cls(d=d, lambda_max=float(extent_m), **kwargs)
    if kind == "rbf":
        if centres is None:
            raise ValueError('kind="rbf" needs centres (K, 2)')
        centres = torch.as_tensor(centres, dtype=torch.float32)
        sigma = kwargs.pop("sigma", None)
        if sigma is None:
            if centres.shape[0] > 1:
                dist = torch.cdist(centres.double(), centres.double())
                dist.fill_diagonal_(float("inf"))
                sigma = float(dist.min(dim=1).values.median())
            else:
                sigma = float(extent_m)
        return RBFEncoder(d, centres, sigma, **kwargs)
    raise ValueError(f'kind must be "theory", "grid" or "rbf", got {kind!r}')


class Footprint:
    """The site footprint for CSP's negative locations: the grid cells (size ``cell_m``,
    aligned to the origin) that hold at least one of the (n, 2) image positions ``xy``.
    Built once; `sample` draws k locations, each in a uniformly chosen cell, uniform inside it,
    in ``xy``'s dtype (at least float32) and on its device."""

    def __init__(self, xy: Tensor, cell_m: float):
        _check_xy(xy)
        if xy.shape[0] == 0:
            raise ValueError("need at least one image position")
        if not cell_m > 0:
            raise ValueError(f"cell_m must be positive, got {cell_m}")
        self.cell_m = float(cell_m)
        self.dtype = torch.promote_types(xy.dtype, torch.float32)
        self.cells = torch.unique(
            torch.floor(xy.detach().to(torch.float64) / cell_m).to(torch.int64), dim=0)

    def sample(self, k: int, generator: torch.Generator | None = None) -> Tensor:
        dev = self.cells.device
        pick = torch.randint(self.cells.shape[0], (int(k),), generator=generator, device=dev)
        u = torch.rand((int(k), 2), generator=generator, device=dev, dtype=torch.float64)
        return ((self.cells[pick].to(torch.float64) + u) * self.cell_m).to(self.dtype)


def sample_footprint_locations(
    xy: Tensor, k: int, cell_m: float, generator: torch.Generator | None = None
) -> Tensor:
    """k random locations (k, 2) inside the site footprint of ``xy`` (see `Footprint`);
    ``generator`` (on xy's device) makes it reproducible."""
    return Footprint(xy, cell_m).sample(k, generator)
