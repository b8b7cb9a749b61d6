"""The encoder's backbone as a plain state dict for the tools people use: torchvision and timm.

The conversion is key renaming (no timm import here): what `ssl.export` writes loads with
``strict=True`` into

- torchvision: ``torchvision.models.resnet18()`` / ``resnet50()`` with ``fc`` replaced by
  ``nn.Identity()`` (the file holds no classifier: the encoder has none); for vit-tiny and
  vit-small (torchvision has no builder of these widths) a ``VisionTransformer(image_size=S,
  patch_size=16, num_layers=12, num_heads=H, hidden_dim=W, mlp_dim=4 W)`` with ``heads``
  replaced by ``nn.Identity()``;
- timm: ``timm.create_model(NAME, num_classes=0, checkpoint_path=F)`` with NAME resnet18,
  resnet50, vit_tiny_patch16_224 or vit_small_patch16_224 (``img_size=S`` for a ViT exported at
  another size than 224 px).

The loaded model's output is `Encoder.features` (the pooled features evaluation uses) for the
same input, normalised with ImageNet's mean and std (`data.augment.MEAN`, `STD`).

ViT position embeddings are trained for a 14 x 14 grid (224 px) and interpolated on the fly to
other input sizes; an export at ``image_size`` S != 224 holds them interpolated to S / 16 the
same way, so a fixed-size model at S px gives the project's features at S px.

`to_backbone_state` is the way back (``ssl.train --init``): a torchvision or timm state dict of
the backbone, such as a file written here or torchvision's ImageNet weights, as the backbone's
own keys.
"""

from __future__ import annotations

import re
from collections import OrderedDict

import torch

from .models import VIT_PATCH, VITS, Encoder

FORMATS = ("torchvision", "timm")
# the timm model of each backbone (timm's resnets use torchvision's parameter names)
TIMM_MODELS = {"resnet18": "resnet18", "resnet50": "resnet50",
               "vit-tiny": "vit_tiny_patch16_224", "vit-small": "vit_small_patch16_224"}
NATIVE_SIZE = 224  # the grid the ViT position embeddings are trained for: 14 x 14 patches
# the record of an export, kept in the state dict's `_metadata` (which load_state_dict reads
# per module name only, so strict loading is unaffected): how ssl.export tells its own files
MARKER = "seafloor_ssl.export"

# torchvision VisionTransformer -> timm VisionTransformer, prefix by prefix ({i}: block index)
_VIT_TIMM = [
    ("class_token", "cls_token"),
    ("encoder.pos_embedding", "pos_embed"),
    ("conv_proj.", "patch_embed.proj."),
    ("encoder.ln.", "norm."),
    ("encoder.layers.encoder_layer_{i}.ln_1.", "blocks.{i}.norm1."),
    ("encoder.layers.encoder_layer_{i}.self_attention.in_proj_", "blocks.{i}.attn.qkv."),
    ("encoder.layers.encoder_layer_{i}.self_attention.out_proj.", "blocks.{i}.attn.proj."),
    ("encoder.layers.encoder_layer_{i}.ln_2.", "blocks.{i}.norm2."),
    ("encoder.layers.encoder_layer_{i}.mlp.0.", "blocks.{i}.mlp.fc1."),
    ("encoder.layers.encoder_layer_{i}.mlp.3.", "blocks.{i}.mlp.fc2."),
]


class ExportError(ValueError):
    """A backbone or state dict that cannot be converted (one message, exit status 2)."""


def _pattern(template: str) -> re.Pattern:
    return re.compile("^" + re.escape(template).replace(r"\{i\}", r"(\d+)"))


_TO_TIMM = [(_pattern(a), b) for a, b in _VIT_TIMM]
_FROM_TIMM = [(_pattern(b), a) for a, b in _VIT_TIMM]


def _rename(key: str, table) -> str | None:
    for pattern, target in table:
        m = pattern.match(key)
        if m:
            return target.format(i=m.group(1) if m.groups() else "") + key[m.end():]
    return None


def why_not(backbone: str, fmt: str) -> str | None:
    """None when ``backbone`` exports to ``fmt``; otherwise why not (for a message)."""
    if fmt not in FORMATS:
        return f"--format {fmt!r}: expected one of {', '.join(FORMATS)}"
    if backbone not in TIMM_MODELS:
        return (f"the backbone {backbone!r} is the project's small test CNN, which neither "
                f"torchvision nor timm has; export a run of --backbone "
                f"{', '.join(TIMM_MODELS)}")
    return None


def vit_config(backbone: str, image_size: int = NATIVE_SIZE) -> dict:
    """torchvision VisionTransformer's arguments for a ViT backbone exported at
    ``image_size``."""
    width, heads = VITS[backbone]
    return {"image_size": image_size, "patch_size": VIT_PATCH, "num_layers": 12,
            "num_heads": heads, "hidden_dim": width, "mlp_dim": 4 * width}


def backbone_state(encoder: Encoder, fmt: str, image_size: int | None = None
                   ) -> OrderedDict[str, torch.Tensor]:
    """The encoder's backbone as a ``fmt`` state dict (CPU tensors, no classifier);
    ``image_size`` (ViTs only; a multiple of 16) bakes the position embeddings' interpolation
    to that input size in."""
    name = encoder.backbone_name
    why = why_not(name, fmt)
    if why:
        raise ExportError(why)
    with torch.no_grad():
        state = {k: v.detach() for k, v in encoder.backbone.state_dict().items()}
        if name in VITS:
            state = {k.removeprefix("vit."): v for k, v in state.items()}
            size = image_size or NATIVE_SIZE
            if size % VIT_PATCH:
                raise ExportError(f"--image-size {size}: a {name} takes whole {VIT_PATCH} px "
                                  f"patches; use a multiple of {VIT_PATCH}")
            grid = size // VIT_PATCH
            state["encoder.pos_embedding"] = encoder.backbone._positions(grid, grid).detach()
            if fmt == "timm":
                renamed = {_rename(k, _TO_TIMM): v for k, v in state.items()}
                if None in renamed:  # a parameter the table does not know: never drop one
                    raise ExportError(f"{name}: no timm name for "
                                      f"{[k for k in state if _rename(k, _TO_TIMM) is None]}")
                state = renamed
        elif image_size is not None:
            raise ExportError(f"--image-size is for the ViT backbones (their position "
                              f"embeddings); a {name} takes any input size: leave it out")
    return OrderedDict((k, v.cpu().clone().contiguous()) for k, v in state.items())


def to_backbone_state(backbone: str, state: dict) -> dict[str, torch.Tensor]:
    """A torchvision or timm state dict of ``backbone`` (a file of ssl.export, torchvision's
    ImageNet weights) as `Encoder.backbone`'s keys: classifier layers (``fc.``, ``heads.``,
    ``head.``) are dropped; ViT keys are renamed from either library's names."""
    out = {}
    for key, value in state.items():
        key = str(key)
        if key.startswith(("fc.", "heads.", "head.")):
            continue
        if backbone in VITS and not key.startswith("vit."):
            key = "vit." + (_rename(key, _FROM_TIMM) or key)
        out[key] = value
    return out

