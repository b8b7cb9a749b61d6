"""torchvision's ImageNet weights from the local torch cache, never downloaded: the
``--baseline imagenet`` encoder of ``ssl.evaluate`` and the reproduction table's optional row.

torchvision keeps a downloaded weights file as ``torch.hub.get_dir()/checkpoints/<file>``
(``$TORCH_HOME/hub/checkpoints``, by default ``~/.cache/torch/hub/checkpoints``), the file named
by its weights enum's URL; this module looks there and nowhere else. The classic weights
(``IMAGENET1K_V1``, what the SSL literature's "supervised ImageNet" rows use) are the ones read.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path
from urllib.parse import urlparse

import torch
import torchvision

from .export import to_backbone_state
from .models import Encoder
from .runlog import CheckpointError

WEIGHTS = {"resnet18": "ResNet18_Weights", "resnet50": "ResNet50_Weights"}
VERSION = "IMAGENET1K_V1"


def imagenet_weights(backbone: str) -> tuple[str, Path]:
    """(torchvision's name of the weights, the file where torchvision would have cached them);
    CheckpointError for a backbone torchvision has no ImageNet weights of here."""
    if backbone not in WEIGHTS:
        raise CheckpointError(f"--backbone {backbone}: the ImageNet baseline uses torchvision's "
                              f"weights of {' or '.join(WEIGHTS)}; pass one of those")
    enum = getattr(torchvision.models, WEIGHTS[backbone])[VERSION]
    name = Path(urlparse(enum.url).path).name
    return f"{WEIGHTS[backbone]}.{VERSION}", Path(torch.hub.get_dir()) / "checkpoints" / name


def fetch_hint(backbone: str) -> str:
    """How to put the weights file in place (for messages)."""
    label, path = imagenet_weights(backbone)
    return (f"on a machine with internet, `python -c \"import torchvision; "
            f"torchvision.models.{backbone}(weights='{VERSION}')\"` saves {path.name} in its "
            f"torch cache (hub/checkpoints under $TORCH_HOME, by default ~/.cache/torch); copy "
            f"that file to {path}")


def imagenet_encoder(backbone: str) -> tuple[Encoder, str, Path]:
    """An encoder whose backbone holds torchvision's ImageNet weights from the local cache,
    the weights' name and the file; CheckpointError (one message) when the file is missing or
    is not such weights. Nothing is downloaded."""
    label, path = imagenet_weights(backbone)
    if not path.is_file():
        raise CheckpointError(f"--baseline imagenet: torchvision's {label} weights are not in "
                              f"the local torch cache (expected {path}); nothing is downloaded "
                              f"here: {fetch_hint(backbone)}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated, another format, a pickle with code in it
        why = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
        raise CheckpointError(f"{path}: cannot be read as torchvision's {label} weights "
                              f"({why}); replace it: {fetch_hint(backbone)}") from None
    encoder = Encoder(backbone)
    try:
        if not isinstance(state, dict):
            raise RuntimeError(f"it holds a {type(state).__name__}, not a state dict")
        encoder.backbone.load_state_dict(to_backbone_state(backbone, state))
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: not torchvision's {backbone} weights "
                              f"({' '.join(str(exc).split())[:240]}); replace it: "
                              f"{fetch_hint(backbone)}") from None
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    prefix = path.stem.rsplit("-", 1)[-1]
    if not digest.startswith(prefix):  # torchvision names its files by their sha256
        print(f"[evaluate] note: {path.name} does not have the sha256 its name promises "
              f"({digest[:8]}, not {prefix}): these are not torchvision's published {label} "
              "weights", file=sys.stderr, flush=True)
    return encoder, label, path
