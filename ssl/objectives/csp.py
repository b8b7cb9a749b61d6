"""CSP (Mai et al., ICML 2023): the losses between a location encoder's and a locked image
encoder's embeddings (the location encoders and the negative-location footprint are in
`training/location.py`).

Losses (pure functions; every embedding is L2-normalised inside, tau = temperature, l_i the
location embedding of sample i, v_i its image embedding, n_k / n_ik the random negative
locations' embeddings). Pass the locked image encoder's embeddings (no gradient needed).
- `csp_mc_loss` (contrastive multi-classification), `csp_nce_loss` (sigmoid noise-contrastive),
  `csp_l2_loss` (regression); formulas in each docstring.
With ``gather`` the in-batch terms score each rank's rows against the global batch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .simclr import Gather


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


