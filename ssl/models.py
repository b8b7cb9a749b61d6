"""The trainer's models: image encoders (a torchvision backbone without downloaded weights and a
2-layer projection head), the image-SSL module (encoder + optional SP head) and CSP's location
module; and reading an encoder back from a checkpoint.

`Encoder.features(x)` gives the pooled backbone features that evaluation uses; `forward` gives
(features, projection). "tiny" is a small CNN for CPU tests and smoke runs.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torchvision
from torch import nn

from .objectives.sp import SPHead
from .runlog import CheckpointError, read_checkpoint

BACKBONES = ("resnet18", "resnet50", "tiny")
PROJ_DIM = 128


def _tiny() -> tuple[nn.Module, int]:
    def block(cin: int, cout: int) -> nn.Sequential:
        return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=2, padding=1, bias=False),
                             nn.BatchNorm2d(cout), nn.ReLU(inplace=True))

    net = nn.Sequential(block(3, 32), block(32, 64), block(64, 128), block(128, 128),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten())
    return net, 128


def make_backbone(name: str) -> tuple[nn.Module, int]:
    """A backbone that maps (B,3,H,W) to pooled features (B,C), and C."""
    if name == "tiny":
        return _tiny()
    if name not in ("resnet18", "resnet50"):
        raise ValueError(f"unknown backbone {name!r}; expected one of {', '.join(BACKBONES)}")
    net = getattr(torchvision.models, name)(weights=None)
    dim = net.fc.in_features
    net.fc = nn.Identity()
    return net, dim


class Encoder(nn.Module):
    def __init__(self, backbone: str = "resnet18", proj_dim: int = PROJ_DIM,
                 hidden: int = 2048):
        super().__init__()
        self.backbone_name = backbone
        self.backbone, self.feat_dim = make_backbone(backbone)
        hidden = min(hidden, 4 * self.feat_dim)
        self.projector = nn.Sequential(nn.Linear(self.feat_dim, hidden), nn.BatchNorm1d(hidden),
                                       nn.ReLU(inplace=True), nn.Linear(hidden, proj_dim))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = self.backbone(x)
        return f, self.projector(f)


class ImageSSL(nn.Module):
    """Encoder + optional SP head: one module, so that DDP synchronises both.

    ``forward(views, crops)``: projections of the contrastive views (None without views) and SP's
    predictions for the crop pairs (None without crops; the first half of ``crops`` are the
    first crops, the second half their partners). With ``contrastive=False`` (SP alone) the
    projection head takes no part in training: it is frozen, so DDP expects no gradient for it.
    """

    def __init__(self, encoder: Encoder, sp_head: SPHead | None, contrastive: bool = True):
        super().__init__()
        self.encoder = encoder
        self.sp_head = sp_head
        if not contrastive:
            encoder.projector.requires_grad_(False)

    def forward(self, views: torch.Tensor | None, crops: torch.Tensor | None = None):
        z = None
        if views is not None:
            _, z = self.encoder(views)
        pred = None
        if crops is not None:
            f = self.encoder.features(crops)
            b = f.shape[0] // 2
            pred = self.sp_head(f[:b], f[b:])
        return z, pred


class LocationCSP(nn.Module):
    """CSP's trainable part: the location encoder and a linear projection of the locked image
    encoder's features. ``forward(locations)`` embeds locations only (negatives, the second
    dropout pass); ``forward(locations, feats)`` also projects the image features."""

    def __init__(self, loc_encoder: nn.Module, feat_dim: int, dim: int):
        super().__init__()
        self.loc_encoder = loc_encoder
        self.img_proj = nn.Linear(feat_dim, dim)

    def forward(self, loc: torch.Tensor, feats: torch.Tensor | None = None):
        emb = self.loc_encoder(loc)
        return emb if feats is None else (emb, self.img_proj(feats))


def encoder_from_checkpoint(state: dict, path: object) -> Encoder:
    """The image encoder a checkpoint's ``encoder`` and ``args`` describe (CheckpointError
    when they are missing or do not fit the named backbone)."""
    if "encoder" not in state or not isinstance(state.get("args"), dict):
        raise CheckpointError(f"{path}: not a seafloor-ssl training checkpoint (no encoder/args "
                              "entries); pass a last.pt written by python -m ssl.train")
    name = state["args"].get("backbone")
    if name not in BACKBONES:
        raise CheckpointError(f"{path}: backbone {name!r} is not one of {', '.join(BACKBONES)}")
    enc = Encoder(name)
    try:
        enc.load_state_dict(state["encoder"])
    except (RuntimeError, TypeError, AttributeError) as exc:
        raise CheckpointError(f"{path}: its encoder weights do not fit a {name} encoder "
                              f"({str(exc).splitlines()[0]})") from None
    return enc


def load_encoder(path: str | Path, map_location: str | torch.device = "cpu"
                 ) -> tuple[Encoder, dict]:
    """The image encoder of a training checkpoint and the checkpoint itself."""
    state = read_checkpoint(path, map_location)
    return encoder_from_checkpoint(state, path), state
