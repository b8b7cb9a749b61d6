"""The training loop (`_Run.fit`) and its two kinds of run: image encoders (simclr, geoclr,
sp) and CSP's location encoder against a locked image encoder.

One step: schedule lookup -> batch -> GPU augmentation -> forward -> loss -> backward -> step
-> log -> checkpoint. The learning rate, the data order (seed, epoch) and the augmentation
randomness (seed, step) are functions of the global step, so a resumed run continues exactly.
"""

from __future__ import annotations

import math
import signal
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from . import augment
from .data import BatchSource, load_jpegs
from .features import extract_features
from .models import Encoder, load_encoder
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
from .runlog import Metrics, ProgressBar, StopFlag, feature_std, save_checkpoint


class TrainingError(RuntimeError):
    """A run cannot go on (non-finite loss, incompatible resume); the message says why."""


# --- schedule -------------------------------------------------------------------------------

def learning_rate(step: int, total: int, peak: float, warmup: int) -> float:
    """Linear warm-up to `peak`, then cosine decay to 0 at `total` (a function of the step)."""
    if step < warmup:
        return peak * (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return peak * 0.5 * (1.0 + math.cos(math.pi * min(t, 1.0)))


def step_seed(seed: int, step: int) -> int:
    return (seed * 1_000_003 + step * 7_919 + 17) % (2**63 - 1)


def total_steps(args, n_images: int, world: int) -> tuple[int, int]:
    per_epoch = max(1, n_images // (args.batch_size * world))
    if args.steps is not None:
        return args.steps, per_epoch
    return (args.epochs if args.epochs is not None else 100) * per_epoch, per_epoch


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
