"""Export a trained encoder's backbone as a plain state dict for torchvision or timm.

    python -m ssl.export --checkpoint runs/geoclr/last.pt --format torchvision \\
        --out geoclr-resnet18.pth

The file holds the backbone's weights under the library's own parameter names and nothing else
(no classifier, no projection head), so it loads with ``strict=True``:

    model = torchvision.models.resnet18(); model.fc = torch.nn.Identity()
    model.load_state_dict(torch.load("geoclr-resnet18.pth", weights_only=True))

or, with ``--format timm``, ``timm.create_model("resnet18", num_classes=0,
checkpoint_path="geoclr-resnet18.pth")`` (vit-tiny: ``vit_tiny_patch16_224``, vit-small:
``vit_small_patch16_224``; torchvision builds those widths as a ``VisionTransformer``, which the
command prints). The loaded model gives the encoder's pooled features (what ``ssl.evaluate``
and ``ssl.embed`` use) for inputs normalised with ImageNet's mean and std. ViT position
embeddings are the trained 14 x 14 grid (224 px) unless ``--image-size S`` bakes their
interpolation to S px in (then the model takes S px inputs: ``image_size=S``, timm's
``img_size=S``). The conversion is ``training/export.py``; a file written here is also accepted
by ``ssl.train --init``.

An existing --out is replaced only with --overwrite and only when this command wrote it (each
export records itself in the state dict's metadata); any other file is never replaced.
"""

from __future__ import annotations

import argparse
import sys
from collections import OrderedDict
from pathlib import Path

import torch

from .data.augment import MEAN, STD
from .files import write_atomic
from .flags import positive_int, run_reporting
from .training.export import (
    FORMATS,
    MARKER,
    NATIVE_SIZE,
    TIMM_MODELS,
    ExportError,
    backbone_state,
    vit_config,
    why_not,
)
from .training.models import VITS, load_encoder
from .training.runlog import CheckpointError


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m ssl.export", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--checkpoint", required=True, metavar="CKPT",
                   help="last.pt of a training run (python -m ssl.train); a CSP run's exports "
                        "the locked image encoder it was trained against")
    p.add_argument("--format", choices=FORMATS, default="torchvision",
                   help="whose parameter names the file uses: torchvision (resnet18/resnet50 "
                        "with fc = Identity, VisionTransformer with heads = Identity) or timm "
                        "(create_model(..., num_classes=0, checkpoint_path=FILE))")
    p.add_argument("--out", required=True, metavar="FILE",
                   help="the state dict file to write (e.g. encoder.pth)")
    p.add_argument("--image-size", type=positive_int, default=None, metavar="S",
                   help="ViT backbones: the input size (a multiple of 16) the position "
                        f"embeddings are interpolated to; default: the trained grid "
                        f"({NATIVE_SIZE} px)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace a file that an earlier export wrote at --out (any other file "
                        "is never replaced)")
    return p


def export_record(path: Path) -> dict | None:
    """The record an export keeps in its file, or None when ``path`` is not one."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # not a PyTorch file, or one holding code: not ours either way
        return None
    record = getattr(state, "_metadata", {}).get(MARKER) if isinstance(state, dict) else None
    return record if isinstance(record, dict) else None


def check_out(out: Path, overwrite: bool) -> None:
    if out.is_dir():
        raise ExportError(f"--out {out} is a folder; expected a file name such as "
                          f"{out / 'encoder.pth'}")
    if out.is_symlink():
        raise ExportError(f"--out {out} is a link; it is never replaced: choose another --out")
    if out.exists():
        record = export_record(out)
        if record is None:
            raise ExportError(f"--out {out} exists and is not a file written by ssl.export; it "
                              "is never replaced: choose another --out")
        if not overwrite:
            raise ExportError(f"--out {out} holds an earlier export (of "
                              f"{record.get('checkpoint', '?')}, {record.get('format', '?')}); "
                              "pass --overwrite to replace it, or choose another --out")


def how_to_load(backbone: str, fmt: str, size: int, out: Path) -> list[str]:
    """Python lines that load ``out`` (printed for the user)."""
    if fmt == "timm":
        extra = f", img_size={size}" if backbone in VITS and size != NATIVE_SIZE else ""
        return ["import timm",
                f"model = timm.create_model({TIMM_MODELS[backbone]!r}, num_classes=0, "
                f"checkpoint_path={str(out)!r}{extra})"]
    if backbone in VITS:
        kwargs = ", ".join(f"{k}={v}" for k, v in vit_config(backbone, size).items())
        build = (f"model = torchvision.models.VisionTransformer({kwargs}); "
                 "model.heads = torch.nn.Identity()")
    else:
        build = f"model = torchvision.models.{backbone}(); model.fc = torch.nn.Identity()"
    return ["import torch, torchvision", build,
            f"model.load_state_dict(torch.load({str(out)!r}, weights_only=True))"]


def export(args: argparse.Namespace) -> dict:
    try:
        encoder, ckpt = load_encoder(args.checkpoint, map_location="cpu")
    except CheckpointError as exc:
        raise ExportError(f"--checkpoint {exc}") from None
    cargs = ckpt["args"]
    name = encoder.backbone_name
    why = why_not(name, args.format)
    if why:
        raise ExportError(f"--format {args.format}: {why}")
    out = Path(args.out)
    check_out(out, args.overwrite)
    state = backbone_state(encoder.eval(), args.format, args.image_size)
    size = args.image_size or NATIVE_SIZE
    record = {"format": args.format, "backbone": name, "checkpoint": str(args.checkpoint),
              "objective": str(cargs.get("objective")), "step": int(ckpt.get("step") or 0),
              "trained_image_size": int(cargs.get("image_size") or 0)}
    if name in VITS:
        record["image_size"] = size
    state._metadata = OrderedDict({MARKER: record})
    write_atomic(out, lambda tmp: torch.save(state, tmp))
    return {"out": out, "backbone": name, "format": args.format, "size": size,
            "objective": cargs.get("objective"), "trained": cargs.get("image_size"),
            "dim": encoder.feat_dim, "params": sum(v.numel() for v in state.values())}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    res, rc = run_reporting(lambda: export(args), (ExportError, CheckpointError))
    if rc:
        return rc
    name, size = res["backbone"], res["size"]
    if res["objective"] == "csp":
        print("[export] note: a CSP checkpoint; its image encoder is the locked one of the run "
              "it was trained against (--image-encoder), exported unchanged", flush=True)
    print(f"[export] wrote {res['out']}: the {name} backbone ({res['params']:,} values; "
          f"{res['dim']}-d pooled features) in {res['format']}'s names, no classifier. Load it "
          "with:", flush=True)
    for line in how_to_load(name, res["format"], size, res["out"]):
        print(f"    {line}")
    print(f"[export] inputs: RGB in [0, 1], normalised with mean {MEAN} and std {STD}"
          + (f"; {size} x {size} px" if name in VITS else ""), flush=True)
    if name in VITS and res["trained"] and int(res["trained"]) != size:
        print(f"[export] note: the encoder was trained and is evaluated at {res['trained']} px "
              f"(position embeddings interpolated on the fly); --image-size {res['trained']} "
              "exports them interpolated to that size, so that a fixed-size model gives the "
              "same features there", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
