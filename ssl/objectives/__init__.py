"""Training objectives, one module each; every loss is a pure function of tensors.

- `simclr`: NT-Xent (SimCLR) with optional negative mask and cross-rank gathering.
- `geoclr`: GeoCLR positives from the r_loc pairs table (neighbour lists, per-epoch sampling)
  and the within-r_loc negative mask over NT-Xent.
- `sp`: Spatial Prediction: box transforms under flips / quarter turns, targets, head, loss.
- `csp`: CSP location encoders (theory, grid, RBF), MC / NCE / L2 losses, footprint negatives.
- `simsiam`, `byol`, `moco`, `dino`: the other frameworks' losses and the small state they need
  (predictor, momentum copy and EMA update, queue with key positions, DINO head, centre);
  `frameworks.py` holds that state and the loop updates it.
- `distributed`: `gather_from_all_ranks`, the differentiable all-gather the losses accept.
"""

from .csp import (
    GridEncoder,
    RBFEncoder,
    TheoryEncoder,
    csp_l2_loss,
    csp_mc_loss,
    csp_nce_loss,
    make_location_encoder,
    sample_footprint_locations,
)
from .distributed import gather_from_all_ranks
from .geoclr import geoclr_loss, neighbour_lists, sample_positives, within_radius_mask
from .simclr import nt_xent
from .sp import SPHead, sp_loss, sp_targets, transform_boxes

__all__ = [
    "GridEncoder",
    "RBFEncoder",
    "SPHead",
    "TheoryEncoder",
    "csp_l2_loss",
    "csp_mc_loss",
    "csp_nce_loss",
    "gather_from_all_ranks",
    "geoclr_loss",
    "make_location_encoder",
    "neighbour_lists",
    "nt_xent",
    "sample_footprint_locations",
    "sample_positives",
    "sp_loss",
    "sp_targets",
    "transform_boxes",
    "within_radius_mask",
]
