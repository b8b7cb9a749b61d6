"""GeoCLR (Yamada et al. 2022): SimCLR whose positive pairs are two images taken within r_loc.

Positives. The pipeline's pairs table lists every unordered pair of images within r_loc
(``anchor < positive``); `data/positives.py` draws, for every image, one neighbour uniformly at
random each epoch (an image with no neighbour is paired with itself: two augmented views of it,
i.e. plain SimCLR for that image).

Negatives. Images within r_loc of each other likely show the same seafloor, so by default they
are not used as negatives of each other: `geoclr_loss` builds `within_radius_mask` over the
positions of the 2B views (or the gathered 2N) and passes it to `simclr.nt_xent` as ``neg_mask``.
The positive column is always kept.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .simclr import Gather, nt_xent


def within_radius_mask(xy_rows: Tensor, xy_cols: Tensor, r_loc_m: float) -> Tensor:
    """Bool (R, C): True where ``|xy_rows[r] - xy_cols[c]| <= r_loc_m`` (Euclidean, inclusive).

    Positions are (R, D) and (C, D) metres (D = 2 for x, y; 3 with depth also works); the distance
    is evaluated in float64 as sqrt(sum of squared differences), like the pairs search.
    """
    if xy_rows.ndim != 2 or xy_cols.ndim != 2 or xy_rows.shape[1] != xy_cols.shape[1]:
        raise ValueError(
            "positions must be (R, D) and (C, D), "
            f"got {tuple(xy_rows.shape)}, {tuple(xy_cols.shape)}"
        )
    rows = xy_rows.detach().to(torch.float64)
    cols = xy_cols.detach().to(device=rows.device, dtype=torch.float64)
    d2 = torch.zeros((rows.shape[0], cols.shape[0]), dtype=torch.float64, device=rows.device)
    for k in range(rows.shape[1]):  # one coordinate at a time: no (R, C, D) temporary
        d2 += (rows[:, k, None] - cols[None, :, k]).square()
    return d2.sqrt() <= float(r_loc_m)


def geoclr_loss(
    z_anchor: Tensor,
    z_positive: Tensor,
    xy_anchor: Tensor,
    xy_positive: Tensor,
    r_loc_m: float,
    temperature: float = 0.1,
    *,
    mask_neighbours: bool = True,
    gather: Gather | None = None,
) -> Tensor:
    """NT-Xent between anchors and their sampled neighbours, neighbours within r_loc not negatives.

    ``z_*``: (B, D) embeddings; ``xy_*``: (B, 2) positions (metres) of the images behind them.
    With ``mask_neighbours`` the mask is ``within_radius_mask([xy_anchor; xy_positive],
    [xy_anchor_all; xy_positive_all], r_loc_m)`` where the ``_all`` positions come from the same
    ``gather`` as the embeddings (without gradient); see `simclr.nt_xent` for the layout.
    """
    neg_mask = None
    if mask_neighbours:
        rows = torch.cat([xy_anchor, xy_positive], dim=0)
        if gather is None:
            cols = rows
        else:
            with torch.no_grad():
                xa_all, _ = gather(xy_anchor.detach().contiguous())
                xp_all, _ = gather(xy_positive.detach().contiguous())
            cols = torch.cat([xa_all, xp_all], dim=0)
        neg_mask = within_radius_mask(rows, cols, r_loc_m)
    return nt_xent(z_anchor, z_positive, temperature, neg_mask=neg_mask, gather=gather)
