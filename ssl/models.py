"""Image encoders: a torchvision backbone (no downloaded weights) with a 2-layer projection head.

`Encoder.features(x)` gives the pooled backbone features that evaluation uses; `forward` gives
(features, projection). "tiny" is a small CNN for CPU tests and smoke runs.
"""

from __future__ import annotations

import torch
import torchvision
from torch import nn

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


def load_encoder(path: str, map_location: str | torch.device = "cpu") -> tuple[Encoder, dict]:
    """The image encoder of a training checkpoint (weights_only load) and the run's args."""
    ckpt = torch.load(path, map_location=map_location, weights_only=True)
    if "encoder" not in ckpt or "args" not in ckpt:
        raise ValueError(f"{path}: not a seafloor-ssl training checkpoint (no encoder/args); "
                         "pass a last.pt written by python -m ssl.train")
    args = ckpt["args"]
    enc = Encoder(args["backbone"])
    enc.load_state_dict(ckpt["encoder"])
    return enc, ckpt
