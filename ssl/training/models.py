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

from .heads import SPHead
from .runlog import CheckpointError, read_checkpoint

BACKBONES = ("resnet18", "resnet50", "tiny", "vit-tiny", "vit-small")
PROJ_DIM = 128
# ViT-Ti/16 and ViT-S/16 (the widths DINO trained, Caron et al. 2021): width, heads; 12 blocks
VITS = {"vit-tiny": (192, 3), "vit-small": (384, 6)}
VIT_PATCH = 16


def choose_device(requested: str | None, error: type[Exception] = ValueError) -> torch.device:
    """The device of a command's ``--device`` flag ("cuda", "cpu" or None: cuda when available);
    ``error`` (the command's own error, one message) when cuda is asked for but missing."""
    if requested == "cuda" and not torch.cuda.is_available():
        raise error("--device cuda: no CUDA device is available")
    return torch.device(requested or ("cuda" if torch.cuda.is_available() else "cpu"))


def _tiny() -> tuple[nn.Module, int]:
    def block(cin: int, cout: int) -> nn.Sequential:
        return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=2, padding=1, bias=False),
                             nn.BatchNorm2d(cout), nn.ReLU(inplace=True))

    net = nn.Sequential(block(3, 32), block(32, 64), block(64, 128), block(128, 128),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten())
    return net, 128


class ViTBackbone(nn.Module):
    """A torchvision VisionTransformer (patch 16, 12 blocks) that takes any input whose sides
    are multiples of 16: the position embeddings (made for a 14 x 14 grid, 224 px) are
    interpolated to the input's grid, as DINO does for its local crops. Output: the class
    token after the final LayerNorm (B, width)."""

    def __init__(self, width: int, heads: int, grid: int = 14):
        super().__init__()
        self.vit = torchvision.models.VisionTransformer(
            image_size=VIT_PATCH * grid, patch_size=VIT_PATCH, num_layers=12, num_heads=heads,
            hidden_dim=width, mlp_dim=4 * width)
        self.vit.heads = nn.Identity()
        self.grid = grid

    def _positions(self, gh: int, gw: int) -> torch.Tensor:
        pos = self.vit.encoder.pos_embedding  # (1, 1 + grid * grid, width)
        if (gh, gw) == (self.grid, self.grid):
            return pos
        cls, patches = pos[:, :1], pos[:, 1:]
        d = patches.shape[-1]
        patches = patches.reshape(1, self.grid, self.grid, d).permute(0, 3, 1, 2)
        patches = nn.functional.interpolate(patches, size=(gh, gw), mode="bicubic",
                                            align_corners=False)
        return torch.cat([cls, patches.permute(0, 2, 3, 1).reshape(1, gh * gw, d)], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        if h % VIT_PATCH or w % VIT_PATCH:
            raise ValueError(f"a ViT input must have sides divisible by {VIT_PATCH}, got {h}x{w}")
        v = self.vit
        tokens = v.conv_proj(x).flatten(2).transpose(1, 2)  # (n, gh * gw, width)
        tokens = torch.cat([v.class_token.expand(n, -1, -1), tokens], dim=1)
        tokens = tokens + self._positions(h // VIT_PATCH, w // VIT_PATCH)
        return v.encoder.ln(v.encoder.layers(v.encoder.dropout(tokens)))[:, 0]


def make_backbone(name: str) -> tuple[nn.Module, int]:
    """A backbone that maps (B,3,H,W) to pooled features (B,C), and C."""
    if name == "tiny":
        return _tiny()
    if name in VITS:
        width, heads = VITS[name]
        return ViTBackbone(width, heads), width
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


class Embedder(nn.Module):
    """A backbone and the head on its pooled features: the network a framework's loss sees
    (and that momentum frameworks copy as their target / teacher)."""

    def __init__(self, backbone: nn.Module, head: nn.Module):
        super().__init__()
        self.backbone, self.head = backbone, head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))


class ImageSSL(nn.Module):
    """The trainable image module: encoder, the framework's head (the encoder's projector, or
    DINO's head in its place), an optional predictor (SimSiam, BYOL) and an optional SP head;
    one module, so that DDP synchronises all of them.

    ``forward(views, crops, local)`` returns a dict: ``f`` the pooled features of ``views``
    and ``z`` their embeddings (None without views), ``p`` the predictor's output on them, ``z_local`` the embeddings of DINO's local
    crops, ``sp`` SP's predictions for the crop pairs (the first half of ``crops`` are the first
    crops, the second half their partners). Parts a run does not train (the projector for SP
    alone or under DINO's head) are frozen, so DDP expects no gradient for them.
    """

    def __init__(self, encoder: Encoder, sp_head: SPHead | None, contrastive: bool = True,
                 predictor: nn.Module | None = None, head: nn.Module | None = None):
        super().__init__()
        self.encoder = encoder
        self.sp_head = sp_head
        self.predictor = predictor
        self.head = head
        if not contrastive or head is not None:
            encoder.projector.requires_grad_(False)
        self.embedder = Embedder(encoder.backbone, head if head is not None
                                 else encoder.projector)

    def forward(self, views: torch.Tensor | None, crops: torch.Tensor | None = None,
                local: torch.Tensor | None = None) -> dict:
        out: dict = {"f": None, "z": None, "p": None, "z_local": None, "sp": None}
        if views is not None:
            out["f"] = self.encoder.features(views)
            out["z"] = self.embedder.head(out["f"])
            if self.predictor is not None:
                out["p"] = self.predictor(out["z"])
        if local is not None:
            out["z_local"] = self.embedder(local)
        if crops is not None:
            f = self.encoder.features(crops)
            b = f.shape[0] // 2
            out["sp"] = self.sp_head(f[:b], f[b:])
        return out


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
