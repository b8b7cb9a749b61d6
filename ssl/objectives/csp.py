"""CSP (Mai et al., ICML 2023): a location encoder contrasted with a locked image encoder.

Location encoders map site-centred metres (B, 2) to (B, d):
- `TheoryEncoder`: Space2Vec "theory" features along three unit directions at 0, 120 and 240
  degrees, `GridEncoder`: Space2Vec "grid" features along the x and y axes. For S wavelengths
  lambda_s geometric between lambda_min and lambda_max and directions a_j, the raw features are
  sin and cos of 2*pi*<x, a_j>/lambda_s, laid out (S, J, 2) -> flattened index
  (s * J + j) * 2 + {0: sin, 1: cos}; an MLP (Linear, LayerNorm, ReLU, Dropout, Linear) maps the
  2*J*S features to d.
- `RBFEncoder`: Gaussian kernels exp(-|x - c_k|^2 / (2 sigma^2)) to K centres, then the same MLP.

Losses (pure functions; every embedding is L2-normalised inside, tau = temperature, l_i the
location embedding of sample i, v_i its image embedding, n_k / n_ik the random negative
locations' embeddings). Pass the locked image encoder's embeddings (no gradient needed).
- `csp_mc_loss` (contrastive multi-classification), `csp_nce_loss` (sigmoid noise-contrastive),
  `csp_l2_loss` (regression); formulas in each docstring.
`Footprint` (built once per run) draws the random negative locations inside the site's footprint.
With ``gather`` the in-batch terms score each rank's rows against the global batch.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .simclr import Gather

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


def _neg_logits(v: Tensor, neg: Tensor, temperature: float) -> Tensor:
    """(B, K) logits of each normalised image v_i against the normalised negative locations."""
    neg = F.normalize(neg, dim=-1)
    if neg.ndim == 2:  # (K, d) shared by the batch
        return v @ neg.T / temperature
    if neg.ndim == 3 and neg.shape[0] == v.shape[0]:  # (B, K, d) per sample
        return torch.einsum("bd,bkd->bk", v, neg) / temperature
    raise ValueError(f"neg_loc_emb must be (K, d) or (B, K, d), got {tuple(neg.shape)}")


def _check_pair(loc_emb: Tensor, img_emb: Tensor, temperature: float | None = None) -> None:
    if loc_emb.ndim != 2 or loc_emb.shape != img_emb.shape:
        raise ValueError(
            f"loc_emb and img_emb must both be (B, d), got {tuple(loc_emb.shape)}, "
            f"{tuple(img_emb.shape)}"
        )
    if temperature is not None and not temperature > 0:
        raise ValueError(f"temperature must be positive, got {temperature}")


def _gathered(t: Tensor, gather: Gather | None) -> tuple[Tensor, int]:
    return (t, 0) if gather is None else gather(t)


def csp_mc_loss(
    loc_emb: Tensor,
    img_emb: Tensor,
    neg_loc_emb: Tensor,
    loc_emb_2: Tensor | None = None,
    temperature: float = 0.1,
    w_batch: float = 1.0,
    w_neg: float = 1.0,
    w_simcse: float = 1.0,
    gather: Gather | None = None,
) -> Tensor:
    """CSP contrastive multi-classification loss.

    With l, l', v, n the L2-normalised ``loc_emb``, ``loc_emb_2``, ``img_emb``, ``neg_loc_emb``
    and CE(a, b) = mean_i -log( exp(<a_i, b_i>/tau) / sum_j exp(<a_i, b_j>/tau) ):

        L_batch  = (CE(l, v) + CE(v, l)) / 2          in-batch negatives, both directions
        L_neg    = mean_i -log( exp(<v_i, l_i>/tau)
                              / (exp(<v_i, l_i>/tau) + sum_k exp(<v_i, n_k>/tau)) )
                   (n_k shared (K, d), or n_ik per sample (B, K, d))
        L_simcse = CE(l, l')                          l, l': two dropout passes, same locations
        loss     = w_batch * L_batch + w_neg * L_neg + w_simcse * L_simcse

    L_simcse is left out when ``loc_emb_2`` is None. With ``gather`` (see
    `distributed.gather_from_all_ranks`) the in-batch candidates b_j are the global batch's:
    each rank scores its own rows against every rank's, and the step equals the one-process
    step on the concatenated batch.
    """
    _check_pair(loc_emb, img_emb, temperature)
    lo = F.normalize(loc_emb, dim=1)
    im = F.normalize(img_emb, dim=1)
    lo_all, offset = _gathered(lo, gather)
    im_all, _ = _gathered(im, gather)
    labels = offset + torch.arange(lo.shape[0], device=lo.device)
    loss_batch = 0.5 * (F.cross_entropy(lo @ im_all.T / temperature, labels)
                        + F.cross_entropy(im @ lo_all.T / temperature, labels))

    pos = (im * lo).sum(1, keepdim=True) / temperature
    neg_logits = torch.cat([pos, _neg_logits(im, neg_loc_emb, temperature)], dim=1)
    loss_neg = F.cross_entropy(neg_logits, torch.zeros_like(labels))

    loss = w_batch * loss_batch + w_neg * loss_neg
    if loc_emb_2 is not None:
        if loc_emb_2.shape != loc_emb.shape:
            raise ValueError(
                f"loc_emb_2 must be {tuple(loc_emb.shape)}, got {tuple(loc_emb_2.shape)}"
            )
        l2_all, _ = _gathered(F.normalize(loc_emb_2, dim=1), gather)
        loss = loss + w_simcse * F.cross_entropy(lo @ l2_all.T / temperature, labels)
    return loss


def csp_nce_loss(
    loc_emb: Tensor, img_emb: Tensor, neg_loc_emb: Tensor, temperature: float = 0.1,
    gather: Gather | None = None,
) -> Tensor:
    """CSP noise-contrastive (sigmoid) loss on cosine logits s = <l, v> / tau (normalised inside).

        loss = mean_i [ -log sig(s(l_i, v_i))
                        - mean_{j != i} log(1 - sig(s(l_j, v_i)))     in-batch mismatched pairs
                        - mean_k log(1 - sig(s(n_k, v_i))) ]          random negative locations

    (the in-batch term is absent when the batch has one item). ``neg_loc_emb``: (K, d) or
    (B, K, d). With ``gather`` the in-batch locations l_j are the global batch's.
    """
    _check_pair(loc_emb, img_emb, temperature)
    lo = F.normalize(loc_emb, dim=1)
    im = F.normalize(img_emb, dim=1)
    lo_all, offset = _gathered(lo, gather)
    b, n = lo.shape[0], lo_all.shape[0]
    sim = im @ lo_all.T / temperature  # (B, N): row i = image i against every location
    own = offset + torch.arange(b, device=sim.device)
    pos = sim[torch.arange(b, device=sim.device), own]
    loss = F.softplus(-pos)  # -log sig(s)
    if n > 1:
        off = torch.ones_like(sim, dtype=torch.bool)
        off[torch.arange(b, device=sim.device), own] = False
        loss = loss + (F.softplus(sim) * off).sum(1) / (n - 1)  # -log(1 - sig(s)) = softplus(s)
    neg = _neg_logits(im, neg_loc_emb, temperature)
    loss = loss + F.softplus(neg).mean(1)
    return loss.mean()


def csp_l2_loss(loc_emb: Tensor, img_emb: Tensor) -> Tensor:
    """Regression: mean_i |normalise(loc_emb_i) - normalise(img_emb_i)|^2 (= mean 2 - 2 cos)."""
    _check_pair(loc_emb, img_emb)
    diff = F.normalize(loc_emb, dim=1) - F.normalize(img_emb, dim=1)
    return diff.square().sum(1).mean()


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
