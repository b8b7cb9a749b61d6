"""Train image (and location) encoders from a pairs manifest.

    python -m ssl.train --manifest pairs.parquet --objective geoclr --sp 0.5 --steps 50

The manifest alone locates the location table and the image shards. The loop is one screen:
schedule lookup -> batch -> GPU augmentation -> forward -> loss -> backward -> step -> log ->
checkpoint. The learning rate, the data order (seed, epoch) and the augmentation randomness
(seed, step) are functions of the global step, so `--resume` continues exactly.
Multi-GPU / multi-node: `torchrun --nproc_per_node G -m ssl.train ...` (DDP; negatives are
gathered across ranks).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from . import augment
from .data import BatchSource, load_jpegs
from .features import extract_features
from .manifest import ManifestError, load_manifest
from .models import BACKBONES, Encoder, load_encoder
from .objectives.csp import (
    csp_l2_loss,
    csp_mc_loss,
    csp_nce_loss,
    make_location_encoder,
    sample_footprint_locations,
)
from .objectives.distributed import gather_from_all_ranks
from .objectives.geoclr import geoclr_loss, neighbour_lists, sample_positives
from .objectives.simclr import nt_xent
from .objectives.sp import SPHead, sp_loss, sp_targets

OBJECTIVES = ("simclr", "geoclr", "sp", "csp")
CKPT = "last.pt"


class TrainingError(RuntimeError):
    """A run cannot go on (non-finite loss, incompatible resume); the message says why."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m ssl.train", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--manifest", required=True,
                   help="pairs.parquet written by the pipeline; its metadata locates "
                        "locations.parquet and the image shards")
    p.add_argument("--objective", choices=OBJECTIVES, default="geoclr",
                   help="simclr: two views of each image; geoclr: an r_loc neighbour is the "
                        "positive; sp: spatial prediction alone; csp: location encoder against "
                        "a locked image encoder (needs --image-encoder)")
    p.add_argument("--sp", type=float, nargs="?", const=0.5, default=0.0, metavar="W",
                   help="add the SP loss with weight W to simclr/geoclr (0.5 when given bare)")
    p.add_argument("--backbone", choices=BACKBONES, default="resnet18",
                   help="torchvision backbone without downloaded weights ('tiny': small CNN for "
                        "CPU smoke runs)")
    p.add_argument("--init", default=None, metavar="CKPT",
                   help="initialise the encoder from a local checkpoint (last.pt of a run)")
    p.add_argument("--image-size", type=int, default=224, help="side of the training views (px)")
    p.add_argument("--sp-size", type=int, default=None,
                   help="side of the SP crops (px); default image-size // 2")
    p.add_argument("--batch-size", type=int, default=256, help="images per step per process")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--epochs", type=int, default=None, help="passes over the images")
    g.add_argument("--steps", type=int, default=None,
                   help="optimiser steps (default: 100 epochs' worth)")
    p.add_argument("--lr", type=float, default=1e-3, help="peak learning rate (AdamW)")
    p.add_argument("--weight-decay", type=float, default=1e-4, help="AdamW weight decay")
    p.add_argument("--warmup-steps", type=int, default=None,
                   help="linear warm-up steps before the cosine decay (default 5%% of the run)")
    p.add_argument("--temperature", type=float, default=0.1, help="softmax temperature")
    p.add_argument("--no-mask-neighbours", dest="mask_neighbours", action="store_false",
                   help="geoclr: keep batch items within r_loc of each other as negatives")
    p.add_argument("--out", default=None,
                   help="run folder (args.json, metrics, checkpoints); default runs/<objective>")
    p.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")
    p.add_argument("--device", choices=["cuda", "cpu"], default=None,
                   help="default: cuda when available")
    p.add_argument("--precision", choices=["bf16", "fp32"], default=None,
                   help="autocast dtype; default bf16 on cuda, fp32 on cpu")
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    p.add_argument("--workers", type=int, default=None,
                   help="CPU decode processes when there is no GPU (default: cores - 1; 0: "
                        "decode in the training process)")
    p.add_argument("--seed", type=int, default=0, help="data order, augmentation, init")
    p.add_argument("--image-encoder", default=None, metavar="CKPT",
                   help="csp: the locked image encoder (last.pt of a simclr/geoclr run)")
    p.add_argument("--csp-loss", choices=["mc", "nce", "l2"], default="mc",
                   help="csp loss: mc (InfoNCE + random negative locations + SimCSE), nce, l2")
    p.add_argument("--location-encoder", choices=["theory", "grid", "rbf"], default="theory",
                   help="csp location encoder")
    p.add_argument("--csp-negatives", type=int, default=64,
                   help="csp: random negative locations per step, inside the site footprint")
    p.add_argument("--checkpoint-every", type=int, default=500,
                   help="steps between checkpoints (and one at the end)")
    p.add_argument("--log-every", type=int, default=10, help="steps between log lines")
    p.add_argument("--stop-at-step", type=int, default=None,
                   help="save and stop after this global step, as if interrupted (time-sliced "
                        "clusters; --resume continues)")
    return p


# --- schedule -------------------------------------------------------------------------------

def learning_rate(step: int, total: int, peak: float, warmup: int) -> float:
    """Linear warm-up to `peak`, then cosine decay to 0 at `total` (a function of the step)."""
    if step < warmup:
        return peak * (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return peak * 0.5 * (1.0 + math.cos(math.pi * min(t, 1.0)))


def step_seed(seed: int, step: int) -> int:
    return (seed * 1_000_003 + step * 7_919 + 17) % (2**63 - 1)


# --- distributed ----------------------------------------------------------------------------

def setup_distributed(device_arg: str | None) -> tuple[int, int, torch.device]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    cuda = torch.cuda.is_available() and device_arg != "cpu"
    if device_arg == "cuda" and not torch.cuda.is_available():
        raise TrainingError("--device cuda given but CUDA is not available")
    rank = 0
    device = torch.device("cuda" if cuda else "cpu")
    if world > 1:
        rank = int(os.environ["RANK"])
        dist.init_process_group("nccl" if cuda else "gloo")
        if cuda:
            local = int(os.environ.get("LOCAL_RANK", "0"))
            torch.cuda.set_device(local)
            device = torch.device("cuda", local)
    return rank, world, device


# --- checkpoints ----------------------------------------------------------------------------

def save_checkpoint(path: Path, state: dict) -> None:
    """Atomic: a temporary file in the same folder, then os.replace."""
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: Path, device: torch.device) -> dict:
    return torch.load(path, map_location=device, weights_only=True)


class StopFlag:
    """SIGTERM/SIGINT: finish the current step, save, exit cleanly."""

    def __init__(self):
        self.signal: int | None = None
        self.previous = {sig: signal.signal(sig, self._set)
                         for sig in (signal.SIGTERM, signal.SIGINT)}

    def restore(self) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)

    def _set(self, signum, frame) -> None:
        if self.signal is not None:  # a second Ctrl-C: stop now
            raise KeyboardInterrupt
        self.signal = signum


# --- logging --------------------------------------------------------------------------------

class Metrics:
    """metrics.jsonl (+ metrics.csv at the end, TensorBoard when installed); rank 0 only."""

    def __init__(self, out: Path, enabled: bool, resume_step: int | None):
        self.enabled = enabled
        self.path = out / "metrics.jsonl"
        self.rows: list[dict] = []
        self.tb = None
        if not enabled:
            return
        if resume_step is not None and self.path.exists():  # drop rows past the checkpoint
            keep = [ln for ln in self.path.read_text().splitlines()
                    if ln.strip() and json.loads(ln).get("step", 0) <= resume_step]
            self.path.write_text("".join(ln + "\n" for ln in keep))
            self.rows = [json.loads(ln) for ln in keep]
        elif self.path.exists():
            self.path.unlink()
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(out / "tensorboard"))
        except Exception:  # tensorboard is optional
            self.tb = None

    def log(self, row: dict) -> None:
        if not self.enabled:
            return
        self.rows.append(row)
        with self.path.open("a") as f:
            f.write(json.dumps(row) + "\n")
        if self.tb is not None:
            for k, v in row.items():
                if isinstance(v, (int, float)) and k != "step":
                    self.tb.add_scalar(k, v, row["step"])

    def close(self) -> None:
        if not self.enabled or not self.rows:
            return
        keys = list(dict.fromkeys(k for r in self.rows for k in r))
        lines = [",".join(keys)] + [",".join("" if r.get(k) is None else str(r.get(k))
                                             for k in keys) for r in self.rows]
        (self.path.parent / "metrics.csv").write_text("\n".join(lines) + "\n")
        if self.tb is not None:
            self.tb.close()


class ProgressBar:
    """One self-rewriting terminal line: step, loss, images/s (only on a terminal)."""

    def __init__(self, enabled: bool, width: int = 30):
        self.enabled, self.width, self.shown = enabled, width, False

    def __bool__(self) -> bool:
        return self.enabled

    def update(self, done: int, total: int, loss: float, window: dict) -> None:
        filled = int(self.width * done / max(total, 1))
        rate = window["images"] / max(window["t"], 1e-9)
        sys.stdout.write(f"\r[{'#' * filled}{'.' * (self.width - filled)}] {done}/{total} "
                         f"loss {loss:.4f} {rate:.0f} img/s ")
        sys.stdout.flush()
        self.shown = True

    def clear(self) -> None:
        if self.shown:
            sys.stdout.write("\r" + " " * (self.width + 60) + "\r")
            self.shown = False


def feature_std(z: torch.Tensor) -> float:
    """Collapse monitor: std over the batch of L2-normalised embeddings, times sqrt(dim)
    (about 1 for well-spread features, towards 0 when they collapse)."""
    zn = nn.functional.normalize(z.detach().float(), dim=1)
    return float(zn.std(dim=0).mean() * math.sqrt(zn.shape[1]))


# --- models ---------------------------------------------------------------------------------

class ImageSSL(nn.Module):
    """Encoder + optional SP head; one module so that DDP synchronises both."""

    def __init__(self, encoder: Encoder, sp_head: SPHead | None):
        super().__init__()
        self.encoder = encoder
        self.sp_head = sp_head

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
    def __init__(self, loc_encoder: nn.Module, feat_dim: int, dim: int):
        super().__init__()
        self.loc_encoder = loc_encoder
        self.img_proj = nn.Linear(feat_dim, dim)

    def forward(self, loc: torch.Tensor, feats: torch.Tensor):
        return self.loc_encoder(loc), self.img_proj(feats)


# --- the run --------------------------------------------------------------------------------

def resolve(args: argparse.Namespace, device: torch.device) -> argparse.Namespace:
    if args.precision is None:
        args.precision = "bf16" if device.type == "cuda" else "fp32"
    if args.workers is None:
        args.workers = max(0, min(8, (os.cpu_count() or 1) - 1))
    if args.sp_size is None:
        args.sp_size = max(16, args.image_size // 2)
    if args.out is None:
        args.out = str(Path("runs") / args.objective)
    if args.objective == "csp" and not args.image_encoder:
        raise TrainingError("--objective csp needs --image-encoder CKPT (last.pt of a simclr or "
                            "geoclr run): CSP trains a location encoder against a locked one")
    if args.objective in ("simclr", "geoclr") and args.sp < 0:
        raise TrainingError(f"--sp must be >= 0, got {args.sp}")
    return args


def total_steps(args, n_images: int, world: int) -> tuple[int, int]:
    per_epoch = max(1, n_images // (args.batch_size * world))
    if args.steps is not None:
        return args.steps, per_epoch
    return (args.epochs if args.epochs is not None else 100) * per_epoch, per_epoch


def train(args: argparse.Namespace) -> dict:
    rank, world, device = setup_distributed(args.device)
    args = resolve(args, device)
    main_rank = rank == 0
    out = Path(args.out)
    if main_rank:
        out.mkdir(parents=True, exist_ok=True)
    try:
        manifest = load_manifest(args.manifest)
    except ManifestError as exc:
        raise TrainingError(str(exc)) from None
    torch.manual_seed(args.seed)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True

    ckpt_path = out / CKPT
    resume_state = None
    if args.resume:
        if not ckpt_path.exists():
            raise TrainingError(f"--resume: no checkpoint at {ckpt_path}")
        resume_state = load_checkpoint(ckpt_path, device)
        check_resume(resume_state, args, manifest.locations_sha256)
    if main_rank:
        (out / "args.json").write_text(json.dumps(vars(args), indent=1))
    run = CSPRun if args.objective == "csp" else ImageRun
    runner = run(args, manifest, device, rank, world)
    try:
        return runner.fit(resume_state, ckpt_path)
    finally:
        if world > 1:
            dist.barrier()  # no rank tears the process group down while another still uses it
            dist.destroy_process_group()


def check_resume(state: dict, args, sha: str) -> None:
    old = state["args"]
    for key in ("objective", "backbone", "image_size", "batch_size", "seed"):
        if old.get(key) != getattr(args, key):
            raise TrainingError(f"--resume: checkpoint has {key}={old.get(key)!r}, this run "
                                f"{getattr(args, key)!r}; use a new --out or the same settings")
    if state["manifest_sha256"] != sha:
        raise TrainingError("--resume: the checkpoint was trained on a different locations "
                            f"table (sha256 {state['manifest_sha256'][:12]}…, now {sha[:12]}…)")


class _Run:
    """Shared loop machinery: optimiser, schedule, autocast, logging, checkpoints, stop."""

    def __init__(self, args, manifest, device, rank, world):
        self.args, self.m, self.device, self.rank, self.world = args, manifest, device, rank, world
        self.main = rank == 0
        self.autocast = torch.autocast(device.type, dtype=torch.bfloat16,
                                       enabled=args.precision == "bf16")
        self.gather = gather_from_all_ranks if world > 1 else None

    def wrap(self, module: nn.Module) -> nn.Module:
        module = module.to(self.device)
        if self.device.type == "cuda":
            module = module.to(memory_format=torch.channels_last)
        if self.world > 1:
            module = nn.parallel.DistributedDataParallel(
                module, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        return module

    def optimiser(self, params) -> torch.optim.Optimizer:
        return torch.optim.AdamW(params, lr=self.args.lr, weight_decay=self.args.weight_decay)

    def fit(self, state, ckpt_path: Path) -> dict:
        args = self.args
        total, per_epoch = self.plan()
        warmup = args.warmup_steps if args.warmup_steps is not None else max(1, total // 20)
        start = 0
        if state is not None:
            self.load_state(state)
            self.opt.load_state_dict(state["optimizer"])
            torch.set_rng_state(state["rng_torch"].cpu())
            start = int(state["step"])
        metrics = Metrics(Path(args.out), self.main, start if state is not None else None)
        stop = StopFlag()
        end = total if args.stop_at_step is None else min(total, args.stop_at_step)
        if self.main:
            print(f"[train] {args.objective}{f' + sp {args.sp:g}' if args.sp else ''} on "
                  f"{self.m.n} images ({self.m.pairs_path}); {total} steps ({per_epoch}/epoch), "
                  f"batch {args.batch_size}x{self.world}, {self.device}, {args.precision}"
                  + (f"; resuming at step {start}" if start else ""), flush=True)
        window = {"t": 0.0, "wait": 0.0, "images": 0, "n": 0}
        bar = ProgressBar(enabled=self.main and sys.stdout.isatty())
        loss_val, step, last = float("nan"), start, {}
        it, epoch = None, -1
        t_prev = time.perf_counter()
        try:
            for step in range(start, end):
                e, within = divmod(step, per_epoch)
                if e != epoch or it is None:
                    epoch, it = e, self.epoch_batches(e, skip=within)
                lr = learning_rate(step, total, args.lr, warmup)
                for g in self.opt.param_groups:
                    g["lr"] = lr
                torch.manual_seed(step_seed(args.seed, step))  # dropout etc.: exact on resume
                gen = torch.Generator(device=self.device).manual_seed(step_seed(args.seed, step))
                batch = next(it)
                loss, parts, images, z = self.step_loss(batch, gen)
                if not torch.isfinite(loss):
                    raise TrainingError(
                        f"non-finite loss ({float(loss.detach())}) at step {step}: stopping; the last good "
                        f"checkpoint is {ckpt_path if ckpt_path.exists() else 'not written yet'}. "
                        "Lower --lr or use --precision fp32.")
                self.opt.zero_grad(set_to_none=True)
                loss.backward()
                self.opt.step()
                now = time.perf_counter()
                window["t"] += now - t_prev
                window["wait"] += getattr(batch, "wait_s", 0.0)
                window["images"] += images * self.world
                window["n"] += 1
                t_prev = now
                done = step + 1
                if self.main and bar:
                    bar.update(done, total, float(loss.detach()), window)
                if done % args.log_every == 0 or done == end:
                    loss_val = float(loss.detach())
                    last = {"step": done, "epoch": epoch, "loss": loss_val,
                            **{k: float(v) for k, v in parts.items()}, "lr": lr,
                            "images_per_s": window["images"] / max(window["t"], 1e-9),
                            "data_wait_share": window["wait"] / max(window["t"], 1e-9),
                            "feature_std": feature_std(z) if z is not None else None}
                    metrics.log(last)
                    if self.main:
                        bar.clear()
                        print(f"[train] step {done}/{total} loss {loss_val:.4f} lr {lr:.2e} "
                              f"{last['images_per_s']:.0f} img/s, waiting for data "
                              f"{100 * last['data_wait_share']:.0f} %", flush=True)
                    window = {"t": 0.0, "wait": 0.0, "images": 0, "n": 0}
                if self.main and (done % args.checkpoint_every == 0 or done == end
                                  or stop.signal is not None):
                    save_checkpoint(ckpt_path, self.state(done))
                if stop.signal is not None:
                    if self.main:
                        print(f"[train] {signal.Signals(stop.signal).name} received: saved step "
                              f"{done} to {ckpt_path}; continue with --resume", flush=True)
                    break
        finally:
            stop.restore()
        metrics.close()
        return {"steps": step + 1 if end > start else start, "total": total, "last": last,
                "checkpoint": str(ckpt_path)}

    def base_state(self, step: int) -> dict:
        return {"step": step, "args": vars(self.args), "optimizer": self.opt.state_dict(),
                "manifest_sha256": self.m.locations_sha256, "rng_torch": torch.get_rng_state()}


def init_encoder(encoder: Encoder, path: str) -> None:
    """--init: a run's last.pt, or a plain torchvision state dict of the same backbone (for
    example locally stored ImageNet weights); the classifier layer of the latter is ignored."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    if "encoder" in state:
        encoder.load_state_dict(state["encoder"])
        return
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    missing, unexpected = encoder.backbone.load_state_dict(state, strict=False)
    if unexpected or missing:
        raise TrainingError(f"--init {path}: not a {encoder.backbone_name} state dict "
                            f"(missing {len(missing)} keys, e.g. {missing[:2]}; unexpected "
                            f"{len(unexpected)}, e.g. {unexpected[:2]})")


class ImageRun(_Run):
    """simclr / geoclr (+ sp) / sp alone."""

    def __init__(self, args, manifest, device, rank, world):
        super().__init__(args, manifest, device, rank, world)
        self.encoder = Encoder(args.backbone)
        if args.init:
            init_encoder(self.encoder, args.init)
        use_sp = args.objective == "sp" or args.sp > 0
        self.sp_weight = 1.0 if args.objective == "sp" else args.sp
        head = SPHead(self.encoder.feat_dim) if use_sp else None
        self.core = ImageSSL(self.encoder, head)
        self.model = self.wrap(self.core)
        if args.compile:
            self.model = torch.compile(self.model)
        self.opt = self.optimiser(self.model.parameters())
        jpegs = load_jpegs(manifest)
        self.source = BatchSource(jpegs, args.batch_size, device=device, workers=args.workers,
                                  seed=args.seed, rank=rank, world_size=world)
        self.xy = torch.as_tensor(manifest.xy_centred(), device=device)
        if args.objective == "geoclr":
            self.indptr, self.indices = neighbour_lists(manifest.anchor, manifest.positive,
                                                        manifest.n)

    def plan(self) -> tuple[int, int]:
        return total_steps(self.args, self.m.n, self.world)

    def epoch_batches(self, epoch: int, skip: int):
        extra = None
        if self.args.objective == "geoclr":
            rng = np.random.default_rng((self.args.seed, epoch, 1))
            extra, has = sample_positives(self.indptr, self.indices, rng)
            if self.main and skip == 0:
                print(f"[train] epoch {epoch}: {int((~has).sum())} of {self.m.n} anchors have "
                      "no neighbour within r_loc and use two views of themselves", flush=True)
            self.positive_of = extra
        return iter(self.source.batches(epoch, extra=extra, skip=skip))

    def views(self, canvas, sizes, gen):
        v = augment.simclr_views(canvas, sizes, self.args.image_size, gen)
        if self.device.type == "cuda":
            v = v.contiguous(memory_format=torch.channels_last)
        return v

    def step_loss(self, batch, gen):
        args = self.args
        b = batch.idx.shape[0]
        objective = args.objective
        crops = target = None
        with torch.no_grad():
            if objective == "geoclr":
                views = self.views(batch.canvas, batch.sizes, gen)  # anchors then positives
            elif objective == "simclr":
                views = torch.cat([self.views(batch.canvas, batch.sizes, gen),
                                   self.views(batch.canvas, batch.sizes, gen)])
            else:
                views = None
            if self.sp_weight > 0:
                c1, c2, b1, b2 = augment.sp_crops(batch.canvas[:b], batch.sizes[:b],
                                                  args.sp_size, gen)
                crops = torch.cat([c1, c2])
                target = sp_targets(b1, b2)
        with self.autocast:
            z, pred = self.model(views, crops)
        parts = {}
        loss = torch.zeros((), device=self.device)
        if z is not None:
            z = z.float()
            z1, z2 = z[:b], z[b:]
            if objective == "geoclr":
                idx = batch.idx.to(self.device)
                pos = torch.as_tensor(self.positive_of, device=self.device)[idx]
                con = geoclr_loss(z1, z2, self.xy[idx], self.xy[pos], self.m.r_loc_m,
                                  args.temperature, mask_neighbours=args.mask_neighbours,
                                  gather=self.gather)
            else:
                con = nt_xent(z1, z2, args.temperature, gather=self.gather)
            parts["loss_contrastive"] = con.detach()
            loss = loss + con
        if pred is not None:
            spl = sp_loss(pred.float(), target)
            parts["loss_sp"] = spl.detach()
            loss = loss + self.sp_weight * spl
        images = 2 * b
        return loss, parts, images, z

    def state(self, step: int) -> dict:
        s = self.base_state(step)
        s["encoder"] = self.encoder.state_dict()
        if self.core.sp_head is not None:
            s["sp_head"] = self.core.sp_head.state_dict()
        s["feat_dim"] = self.encoder.feat_dim
        return s

    def load_state(self, state: dict) -> None:
        self.encoder.load_state_dict(state["encoder"])
        if self.core.sp_head is not None:
            self.core.sp_head.load_state_dict(state["sp_head"])


class CSPRun(_Run):
    """A location encoder contrasted with a locked image encoder's features."""

    def __init__(self, args, manifest, device, rank, world):
        super().__init__(args, manifest, device, rank, world)
        self.image_encoder, img_ckpt = load_encoder(args.image_encoder, map_location="cpu")
        if img_ckpt.get("manifest_sha256") not in (None, manifest.locations_sha256) and \
                self.main:
            print("[train] note: the image encoder was trained on another locations table",
                  flush=True)
        self.image_encoder = self.image_encoder.to(device).eval().requires_grad_(False)
        self.feats = self.image_features(manifest)
        self.xy = torch.as_tensor(manifest.xy_centred(), device=device)
        loc = make_location_encoder(args.location_encoder, 128, manifest.extent_m,
                                    centres=self.rbf_centres())
        self.core = LocationCSP(loc, self.image_encoder.feat_dim, 128)
        self.model = self.wrap(self.core)
        self.opt = self.optimiser(self.model.parameters())

    def rbf_centres(self) -> torch.Tensor:
        rng = np.random.default_rng(self.args.seed)
        xy = self.m.xy_centred()
        pick = rng.choice(len(xy), min(256, len(xy)), replace=False)
        return torch.as_tensor(xy[pick], dtype=torch.float32)

    def image_features(self, manifest) -> torch.Tensor:
        """Pooled features of every image (full frame resized to image-size, no augmentation);
        the encoder is locked, so they are computed once."""
        return extract_features(self.image_encoder, load_jpegs(manifest), self.args.image_size,
                                self.device, bf16=self.args.precision == "bf16")

    def plan(self) -> tuple[int, int]:
        return total_steps(self.args, self.m.n, self.world)

    def epoch_batches(self, epoch: int, skip: int):
        rng = np.random.default_rng((self.args.seed, epoch, 2))
        order = rng.permutation(self.m.n)
        b, w = self.args.batch_size, self.world
        per = max(1, self.m.n // (b * w))
        for k in range(skip, per):
            glob = order[k * b * w:(k + 1) * b * w]
            yield torch.as_tensor(glob[self.rank * b:(self.rank + 1) * b], device=self.device)

    def step_loss(self, idx, gen):
        args = self.args
        loc = self.xy[idx]
        neg = sample_footprint_locations(self.xy, args.csp_negatives, max(self.m.r_loc_m, 1.0),
                                         gen)
        with self.autocast:
            loc_emb, img_emb = self.model(loc, self.feats[idx])
            enc = self.core.loc_encoder
            neg_emb = enc(neg)
            loc_emb2 = enc(loc) if args.csp_loss == "mc" else None
        loc_emb, img_emb, neg_emb = loc_emb.float(), img_emb.float(), neg_emb.float()
        if args.csp_loss == "mc":
            loss = csp_mc_loss(loc_emb, img_emb, neg_emb, loc_emb2.float(),
                               temperature=args.temperature)
        elif args.csp_loss == "nce":
            loss = csp_nce_loss(loc_emb, img_emb, neg_emb, temperature=args.temperature)
        else:
            loss = csp_l2_loss(loc_emb, img_emb)
        return loss, {}, idx.shape[0], loc_emb

    def state(self, step: int) -> dict:
        s = self.base_state(step)
        s["encoder"] = self.image_encoder.state_dict()
        s["loc_encoder"] = self.core.loc_encoder.state_dict()
        s["img_proj"] = self.core.img_proj.state_dict()
        s["feat_dim"] = self.image_encoder.feat_dim
        s["site_centre"] = torch.as_tensor(self.m.centre)
        s["extent_m"] = float(self.m.extent_m)
        return s

    def load_state(self, state: dict) -> None:
        self.core.loc_encoder.load_state_dict(state["loc_encoder"])
        self.core.img_proj.load_state_dict(state["img_proj"])


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        summary = train(args)
    except TrainingError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if int(os.environ.get("RANK", "0")) == 0:
        last = summary["last"]
        print(f"[train] done: step {summary['steps']}/{summary['total']}"
              + (f", loss {last['loss']:.4f}" if last else "")
              + f"; checkpoint {summary['checkpoint']}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
