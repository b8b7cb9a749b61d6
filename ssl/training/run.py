"""The training run behind ``python -m ssl.train`` (the command, documented in ``ssl/train.py``):
its flags, their checks against the manifest and each other, the run folder, resuming, and the
loop on one process or under torchrun."""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path

import torch
import torch.distributed as dist

from ..contract import identity_changes
from ..data.manifest import ManifestError, load_manifest
from ..flags import (
    non_negative_float,
    non_negative_int,
    positive_float,
    positive_int,
    run_reporting,
)
from ..oserrors import os_error_message
from . import runfolder
from .frameworks import FRAMEWORKS, MOMENTUM_FRAMEWORKS, framework_of, objectives
from .loop import Context, TrainingError, fit
from .models import BACKBONES, VIT_PATCH, VITS, choose_device
from .objective import CSPObjective, ImageObjective, fit_to_manifest
from .runlog import CHECKPOINT, CheckpointError, read_checkpoint

OBJECTIVES = objectives()
CKPT = CHECKPOINT


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m ssl.train", description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n")[-1].strip().strip('"'),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--manifest", required=True,
                   help="pairs.parquet written by the pipeline; its metadata locates "
                        "locations.parquet and the image shards")
    p.add_argument("--objective", choices=OBJECTIVES, default="geoclr",
                   help=f"an image framework ({', '.join(FRAMEWORKS)}; see "
                        "--positives); geoclr: simclr --positives location; sp: spatial "
                        "prediction alone; csp: location encoder against a locked image "
                        "encoder (needs --image-encoder)")
    p.add_argument("--positives", choices=["views", "location"], default=None,
                   help="a framework's positive pair: two augmented views of one image, or an "
                        "image and a neighbour within r_loc drawn each epoch (negatives within "
                        "r_loc masked); default views (location for geoclr)")
    p.add_argument("--sp", type=non_negative_float, nargs="?", const=0.5, default=0.0,
                   metavar="W",
                   help="add the SP loss with weight W to any framework (0.5 when given bare)")
    p.add_argument("--queue", type=positive_int, default=None, metavar="K",
                   help="moco: keys in the queue of negatives (default min(4096, images / 2))")
    p.add_argument("--momentum", type=positive_float, default=None,
                   help="moco/byol/dino: momentum of the target network (default 0.99 for moco, "
                        "constant; 0.996 rising to 1 on a cosine for byol and dino)")
    p.add_argument("--local-crops", type=non_negative_int, default=0, metavar="N",
                   help="dino: N local crops (5-40 %% of the image) besides the two global ones")
    p.add_argument("--local-size", type=positive_int, default=None,
                   help="dino: side of the local crops (px); default image-size * 96 / 224")
    p.add_argument("--dino-out", type=positive_int, default=4096,
                   help="dino: output dimension of the DINO head")
    p.add_argument("--backbone", choices=BACKBONES, default="resnet18",
                   help="torchvision backbone without downloaded weights ('tiny': small CNN for "
                        "CPU smoke runs)")
    p.add_argument("--init", default=None, metavar="CKPT",
                   help="initialise the encoder from a local file: last.pt of a run of the "
                        "same backbone, or a plain torchvision (or timm) state dict of it, "
                        "such as torchvision's ImageNet weights (hub/checkpoints under "
                        "$TORCH_HOME, e.g. resnet18-f37072fd.pth) or a file of python -m "
                        "ssl.export; a classifier layer in it is ignored")
    p.add_argument("--image-size", type=positive_int, default=224,
                   help="side of the training views (px)")
    p.add_argument("--sp-size", type=positive_int, default=None,
                   help="side of the SP crops (px); default image-size // 2")
    p.add_argument("--batch-size", type=positive_int, default=256,
                   help="images per step per process")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--epochs", type=positive_int, default=None, help="passes over the images")
    g.add_argument("--steps", type=positive_int, default=None,
                   help="optimiser steps (default: 100 epochs' worth)")
    p.add_argument("--lr", type=positive_float, default=1e-3, help="peak learning rate (AdamW)")
    p.add_argument("--weight-decay", type=non_negative_float, default=1e-4,
                   help="AdamW weight decay")
    p.add_argument("--warmup-steps", type=non_negative_int, default=None,
                   help="linear warm-up steps before the cosine decay (default 5%% of the run)")
    p.add_argument("--temperature", type=positive_float, default=0.1, help="softmax temperature")
    p.add_argument("--no-mask-neighbours", dest="mask_neighbours", action="store_false",
                   help="location positives: keep images within r_loc of the anchor as "
                        "negatives (in-batch for simclr/geoclr, in the queue for moco)")
    p.add_argument("--out", default=None,
                   help="run folder (args.json, last.pt, metrics.jsonl/.csv, tensorboard/): new "
                        "or empty, or a run to --resume or --overwrite; default: a new folder "
                        "runs/<objective>-<UTC YYYYmmdd-HHMMSS> for every run")
    p.add_argument("--tensorboard", action=argparse.BooleanOptionalAction, default=True,
                   help="write the logged scalars as TensorBoard events in the run folder's "
                        "tensorboard/ too (needs the tensorboard package; without it a note "
                        "says so and training goes on)")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its last.pt (metrics are appended)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the run in --out: its args.json, last.pt, metrics and "
                        "TensorBoard events are removed first; files the trainer did not write "
                        "are left untouched")
    p.add_argument("--device", choices=["cuda", "cpu"], default=None,
                   help="default: cuda when available")
    p.add_argument("--precision", choices=["bf16", "fp32"], default=None,
                   help="autocast dtype; default bf16 on cuda, fp32 on cpu")
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    p.add_argument("--workers", type=non_negative_int, default=None,
                   help="CPU decode processes when there is no GPU (default: cores - 1; 0: "
                        "decode in the training process)")
    p.add_argument("--seed", type=int, default=0, help="data order, augmentation, init")
    p.add_argument("--image-encoder", default=None, metavar="CKPT",
                   help="csp: the locked image encoder (last.pt of a simclr/geoclr run)")
    p.add_argument("--csp-loss", choices=["mc", "nce", "l2"], default="mc",
                   help="csp loss: mc (InfoNCE + random negative locations + SimCSE), nce, l2")
    p.add_argument("--location-encoder", choices=["theory", "grid", "rbf"], default="theory",
                   help="csp location encoder")
    p.add_argument("--csp-negatives", type=positive_int, default=64,
                   help="csp: random negative locations per step, inside the site footprint")
    p.add_argument("--checkpoint-every", type=positive_int, default=500,
                   help="steps between checkpoints (and one at the end)")
    p.add_argument("--log-every", type=positive_int, default=10, help="steps between log lines")
    p.add_argument("--stop-at-step", type=positive_int, default=None,
                   help="save and stop after this global step, as if interrupted (time-sliced "
                        "clusters; --resume continues)")
    return p


# --- distributed ----------------------------------------------------------------------------

def launched_distributed() -> bool:
    """Started by torchrun (or another launcher that sets the env:// rendezvous): then the
    process group starts even with one process, so a one-GPU torchrun exercises NCCL."""
    return {"RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"} <= os.environ.keys()


def setup_distributed(device_arg: str | None) -> tuple[int, int, torch.device]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    device = choose_device(device_arg, TrainingError)
    cuda = device.type == "cuda"
    rank = 0
    if world > 1 or launched_distributed():
        rank = int(os.environ["RANK"])
        dist.init_process_group("nccl" if cuda else "gloo")
        if cuda:
            local = int(os.environ.get("LOCAL_RANK", "0"))
            torch.cuda.set_device(local)
            device = torch.device("cuda", local)
        if rank == 0:
            print(f"[train] process group: {dist.get_backend()}, {world} rank(s)", flush=True)
    return rank, world, device


# --- the run --------------------------------------------------------------------------------

def resolve(args: argparse.Namespace, device: torch.device) -> argparse.Namespace:
    if args.precision is None:
        args.precision = "bf16" if device.type == "cuda" else "fp32"
    if args.workers is None:
        args.workers = max(0, min(8, (os.cpu_count() or 1) - 1))
    if args.sp_size is None:
        args.sp_size = max(16, args.image_size // 2)
        if args.backbone in VITS:  # whole patches
            args.sp_size = max(VIT_PATCH, args.sp_size // VIT_PATCH * VIT_PATCH)
    overwrite = getattr(args, "overwrite", False)
    if args.resume and overwrite:
        raise TrainingError("--resume and --overwrite contradict each other: --resume continues "
                            "the run in --out, --overwrite replaces it; give one")
    if args.out is None and (args.resume or overwrite):
        flag = "--resume" if args.resume else "--overwrite"
        raise TrainingError(f"{flag} needs --out, the run folder to "
                            f"{'continue' if args.resume else 'replace'} (without --out every "
                            "run gets a new folder)")
    check_combination(args)
    if args.objective == "csp" and not args.image_encoder:
        raise TrainingError("--objective csp needs --image-encoder CKPT (last.pt of a simclr or "
                            "geoclr run): CSP trains a location encoder against a locked one")
    return args


def check_combination(args: argparse.Namespace) -> None:
    """Flags that do not go together, refused before any work; fills in the defaults that
    depend on the framework (positives, local crop size)."""
    obj = args.objective
    framework = framework_of(obj) is not None
    if args.positives is not None and not framework:
        raise TrainingError(f"--positives is for the image frameworks; --objective {obj} has no "
                            "positive pairs")
    if obj == "geoclr" and args.positives == "views":
        raise TrainingError("--objective geoclr is simclr with location positives; for two "
                            "views use --objective simclr")
    if framework:
        args.positives = args.positives or ("location" if obj == "geoclr" else "views")
    if args.local_crops and obj != "dino":
        raise TrainingError(f"--local-crops is DINO's multi-crop; {obj} has no local crops "
                            "(use --objective dino, or leave --local-crops out)")
    if args.local_size is not None and obj != "dino":
        raise TrainingError(f"--local-size is for DINO's local crops, not {obj}")
    if args.queue is not None and obj != "moco":
        raise TrainingError(f"--queue is MoCo's queue of negatives; {obj} has none")
    if args.momentum is not None and obj not in MOMENTUM_FRAMEWORKS:
        raise TrainingError(f"--momentum is for the frameworks with a momentum target "
                            f"({', '.join(MOMENTUM_FRAMEWORKS)}), not {obj}")
    if args.momentum is not None and not args.momentum < 1:
        raise TrainingError(f"--momentum must be below 1 (the target would never move), got "
                            f"{args.momentum}")
    if obj == "dino" and args.local_size is None:
        side = args.image_size * 96 / 224
        args.local_size = max(16, int(round(side / 16)) * 16) if args.backbone in VITS \
            else max(8, int(round(side)))
    if args.backbone in VITS:
        sizes = {"--image-size": args.image_size, "--sp-size": args.sp_size}
        if obj == "dino" and args.local_crops:
            sizes["--local-size"] = args.local_size
        bad = {k: v for k, v in sizes.items() if v % VIT_PATCH}
        if bad:
            raise TrainingError(f"--backbone {args.backbone} cuts images into {VIT_PATCH} px "
                                f"patches: {', '.join(f'{k} {v}' for k, v in bad.items())} is "
                                f"not a multiple of {VIT_PATCH}")


def on_rank0(rank: int, world: int, fn):
    """Run `fn` on rank 0 only and hand its result, or its refusal, to every rank, so that all
    of them go on with the same run folder or all stop with the same message (no rank waits
    in a collective for one that has given up)."""
    result = error = None
    if rank == 0:
        try:
            result = fn()
        except TrainingError as exc:
            error = str(exc)
        except OSError as exc:  # permissions, a read-only folder, a full disk, ...
            error = f"run folder: {os_error_message(exc)}"
    if world > 1:
        box = [result, error]
        dist.broadcast_object_list(box, src=0)
        result, error = box
    if error is not None:
        raise TrainingError(error)
    return result


def choose_run_folder(args: argparse.Namespace) -> tuple[str, bool]:
    """Rank 0: the run folder and whether this call created it; refuses a folder that holds a
    run (or anything else) unless --resume / --overwrite say what to do with it."""
    overwrite = getattr(args, "overwrite", False)
    if args.out is None:
        out, plan, created = runfolder.fresh_folder(args.objective), "new", True
    else:
        out, created = Path(args.out), False
        plan = runfolder.check(out, resume=args.resume, overwrite=overwrite)
    print(f"[train] run folder {out}: {plan}", flush=True)
    return str(out), created


def train(args: argparse.Namespace) -> dict:
    rank, world, device = setup_distributed(args.device)
    args = resolve(args, device)
    main_rank = rank == 0
    args.out, created = on_rank0(rank, world, lambda: choose_run_folder(args))
    out = Path(args.out)
    ckpt_path = out / CKPT
    try:
        try:
            manifest = load_manifest(args.manifest)
            fit_to_manifest(args, manifest)
            torch.manual_seed(args.seed)
            if device.type == "cuda":
                torch.backends.cuda.matmul.allow_tf32 = True
                torch.backends.cudnn.allow_tf32 = True
                torch.backends.cudnn.benchmark = True
            resume_state = None
            if args.resume:
                try:
                    resume_state = read_checkpoint(ckpt_path, device)
                except CheckpointError as exc:
                    raise TrainingError(f"--resume: {exc}; start a new run (another --out) or "
                                        "--overwrite this one") from None
                check_resume(resume_state, args, manifest)
            kind = CSPObjective if args.objective == "csp" else ImageObjective
            objective = kind(args, manifest, device, rank, world)  # opens the image files
        except ManifestError as exc:
            raise TrainingError(str(exc)) from None
    except BaseException:
        if main_rank and created:  # a new folder that nothing was written to: leave no trace
            try:
                out.rmdir()
            except OSError:
                pass
        raise

    def start_writing() -> None:  # everything is checked; only now is anything replaced
        if getattr(args, "overwrite", False):
            runfolder.remove_run_files(out)
        runfolder.claim(out, json.dumps(vars(args), indent=1),
                        fresh=not (args.resume or getattr(args, "overwrite", False)))

    on_rank0(rank, world, start_writing)
    ctx = Context(args, device, rank, world,
                  checkpoint_extra={"dataset": manifest.identity,
                                    "manifest_sha256": manifest.locations_sha256})
    try:
        return fit(objective, ctx, ckpt_path, resume_state)
    except ManifestError as exc:  # an image file damaged while training
        # from a decode worker, the message carries the worker's traceback: keep its last line
        last = str(exc).strip().splitlines()[-1]
        raise TrainingError(re.sub(r"^[\w.]+Error: ", "", last)) from None
    finally:
        if dist.is_initialized():
            dist.barrier()  # no rank tears the process group down while another still uses it
            dist.destroy_process_group()


COLLAPSED = 0.05  # feature std (about 1 when spread) below which the embeddings have collapsed
RESUME_KEYS = ("objective", "positives", "backbone", "image_size", "batch_size", "seed", "sp",
               "queue", "momentum", "local_crops", "local_size", "dino_out")


def check_resume(state: dict, args, manifest) -> None:
    """Refuse to continue a checkpoint with other settings or on another dataset, saying what
    differs; a manifest rebuilt without changing what training reads is the same dataset."""
    old = state.get("args")
    if not isinstance(old, dict) or "step" not in state or "optimizer" not in state:
        raise TrainingError(f"--resume: {args.out}/{CKPT} is not a training checkpoint of "
                            "python -m ssl.train; start a new run (another --out)")
    for key in RESUME_KEYS:
        if key in old and old.get(key) != getattr(args, key):
            raise TrainingError(f"--resume: checkpoint has {key}={old.get(key)!r}, this run "
                                f"{getattr(args, key)!r}; use a new --out or the same settings")
    recorded = state.get("dataset")
    if not isinstance(recorded, dict):
        raise TrainingError(f"--resume: {args.out}/{CKPT} was written by an earlier version "
                            "that did not record its dataset identity; it cannot be checked "
                            "against this manifest, so start a new run (another --out)")
    changes = identity_changes(recorded, manifest.identity)
    if changes:
        raise TrainingError(f"--resume: the manifest {args.manifest} is not the dataset the "
                            f"checkpoint was trained on: {'; '.join(changes)}. Resume with the "
                            "manifest it was trained on, or start a new run (another --out)")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    summary, code = run_reporting(lambda: train(args), (TrainingError,))
    if code:
        return code
    if int(os.environ.get("RANK", "0")) == 0:
        last = summary["last"]
        std = (last or {}).get("feature_std")
        print(f"[train] done: step {summary['steps']}/{summary['total']}"
              + (f", loss {last['loss']:.4f}" if last else "")
              + (f", feature std {std:.2f}" if std is not None else "")
              + f"; checkpoint {summary['checkpoint']}", flush=True)
        if std is not None and std < COLLAPSED:
            print(f"[train] warning: the embeddings have collapsed (feature std {std:.3f} < "
                  f"{COLLAPSED}: every image maps to nearly the same point); this encoder will "
                  "not separate habitats. Lower --lr, train longer with a warm-up, or use "
                  "another framework", file=sys.stderr, flush=True)
    return 0

