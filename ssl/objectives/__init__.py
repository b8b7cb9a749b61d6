"""The losses, one module each: pure functions of tensors (a scalar out), with the small tensor
helpers that build their targets and masks. Nothing here holds parameters or state and nothing
imports the rest of the trainer; the heads, momentum targets, queues and location encoders the
losses are applied to live in `training/`.

- `simclr`: NT-Xent (SimCLR) with optional negative mask and cross-rank gathering.
- `geoclr`: GeoCLR: the within-r_loc negative mask over NT-Xent (positives: `data/positives.py`).
- `sp`: Spatial Prediction: box transforms under flips / quarter turns, targets, loss.
- `csp`: CSP's MC / NCE / L2 losses (location encoders: `training/location.py`).
- `simsiam`, `byol`, `moco`, `dino`: the other frameworks' losses.
- `distributed`: `gather_from_all_ranks`, the differentiable all-gather the losses accept.
"""

from .csp import csp_l2_loss, csp_mc_loss, csp_nce_loss
from .distributed import gather_from_all_ranks
from .geoclr import geoclr_loss, within_radius_mask
from .simclr import nt_xent
from .sp import sp_loss, sp_targets, transform_boxes

__all__ = [
    "csp_l2_loss",
    "csp_mc_loss",
    "csp_nce_loss",
    "gather_from_all_ranks",
    "geoclr_loss",
    "nt_xent",
    "sp_loss",
    "sp_targets",
    "transform_boxes",
    "within_radius_mask",
]
