"""The trainer's objectives, each implementing `loop.Objective`: image encoders (simclr, geoclr,
sp alone, and either contrastive one + sp) and CSP's location encoder against a locked image
encoder. The losses themselves are pure functions in `objectives/`.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import numpy as np
import torch
from torch import nn

from ..data import augment
from ..data.manifest import Manifest
from ..data.positives import neighbour_lists, sample_positives
from ..data.store import BatchSource, ImageStore, epoch_order, rank_slices
from ..objectives.csp import csp_l2_loss, csp_mc_loss, csp_nce_loss
from ..objectives.distributed import gather_from_all_ranks
from ..objectives.sp import sp_loss, sp_targets
from .export import to_backbone_state
from .features import extract_features
from .frameworks import Targets, framework_of, make_framework
from .heads import SPHead
from .location import CSP_DIM, Footprint, make_location_encoder
from .loop import StepOutput, StepRandom, TrainingError, total_steps
from .models import PROJ_DIM, Encoder, ImageSSL, LocationCSP, encoder_from_checkpoint
from .runlog import CheckpointError, read_checkpoint


def _steps_per_epoch(n: int, batch: int, world: int) -> int:
    per = n // (batch * world)
    if per < 1:
        ranks = f" x {world} ranks = {batch * world}" if world > 1 else ""
        raise TrainingError(
            f"--batch-size {batch}{ranks} is larger than the manifest's {n} images: a step "
            f"needs a full batch on every rank; use --batch-size {max(1, n // world)} or less"
            + (" (or fewer ranks)" if world > 1 else ""))
    return per


def init_encoder(encoder: Encoder, path: str) -> None:
    """--init: a run's last.pt (of the same backbone), or a plain torchvision or timm state
    dict of the backbone (torchvision's ImageNet weights, a file of ``ssl.export``; its
    classifier layer is ignored; `export.to_backbone_state`)."""
    try:
        state = read_checkpoint(path)
        if "encoder" in state:
            got = state.get("args", {}).get("backbone") if isinstance(state.get("args"),
                                                                      dict) else None
            if got != encoder.backbone_name:
                raise CheckpointError(f"{path}: a {got} checkpoint, but this run trains a "
                                      f"{encoder.backbone_name}; pass --backbone {got} or a "
                                      f"{encoder.backbone_name} checkpoint")
            encoder.load_state_dict(encoder_from_checkpoint(state, path).state_dict())
            return
        weights = to_backbone_state(encoder.backbone_name, state)
        pos, grid = weights.get("vit.encoder.pos_embedding"), getattr(encoder.backbone, "grid", 0)
        if torch.is_tensor(pos) and pos.dim() == 3 and pos.shape[1] != 1 + grid * grid:
            side = round((pos.shape[1] - 1) ** 0.5)
            raise CheckpointError(f"{path}: its position embeddings are for a {side} x {side} "
                                  f"patch grid; --init needs {grid} x {grid} ({grid * 16} px, "
                                  "what python -m ssl.export writes without --image-size)")
        try:
            missing, unexpected = encoder.backbone.load_state_dict(weights, strict=False)
        except RuntimeError as exc:  # same names, other shapes
            raise CheckpointError(f"{path}: not a {encoder.backbone_name} state dict "
                                  f"({str(exc).splitlines()[0]})") from None
        if unexpected or missing:
            raise CheckpointError(f"{path}: not a {encoder.backbone_name} state dict "
                                  f"(missing {len(missing)} keys, e.g. {missing[:2]}; "
                                  f"unexpected {len(unexpected)}, e.g. {unexpected[:2]})")
    except CheckpointError as exc:
        raise TrainingError(f"--init {exc}") from None


def fit_to_manifest(args, manifest: Manifest) -> None:
    """Defaults and checks that depend on the survey's size (idempotent)."""
    if args.objective == "moco":
        if args.queue is None:
            args.queue = max(1, min(4096, manifest.n // 2))
        elif args.queue > manifest.n:
            raise TrainingError(f"--queue {args.queue} is longer than the survey "
                                f"({manifest.n} images): the queue would hold the same images "
                                f"several times; use --queue {max(1, manifest.n // 2)} or less")


# --- image objectives -----------------------------------------------------------------------

@dataclass
class ImageInputs:
    """One step's inputs, on the device. ``views`` rows: B first views then B second views
    (location positives: anchors then their positives); ``local`` rows: DINO's local crops, N
    blocks of B; ``crops`` rows: B first SP crops then B second."""

    b: int
    views: torch.Tensor | None = None
    local: torch.Tensor | None = None
    crops: torch.Tensor | None = None
    target: torch.Tensor | None = None  # (B, 4) SP targets
    xy_a: torch.Tensor | None = None  # (B, 2) positions of the anchors and their positives
    xy_p: torch.Tensor | None = None
    targets: Targets | None = None  # the momentum network's outputs
    step: int = 0

    def share(self, rank: int, world: int) -> ImageInputs:
        """This rank's share of a global batch's inputs (checks DDP against one process)."""
        b = self.b // world
        mine = slice(rank * b, (rank + 1) * b)

        def cut(t, blocks):
            if t is None:
                return None
            if blocks == 1:
                return t[mine]
            return torch.cat([blk[mine] for blk in t.split(self.b)])

        def cut_rows(t):
            return cut(t, 1 if t is None else t.shape[0] // self.b)

        out = {f.name: cut_rows(getattr(self, f.name)) for f in fields(self)
               if f.name not in ("b", "step", "targets")}
        if self.targets is not None:
            out["targets"] = Targets(t=cut_rows(self.targets.t), xy=cut_rows(self.targets.xy))
        return replace(self, b=b, **out)


class ImageObjective:
    """An image framework (simclr, simsiam, moco, byol, dino; `frameworks.py`) with two views
    or location positives, optionally + sp, or sp alone; images read on demand from the image
    store."""

    def __init__(self, args, manifest: Manifest, device: torch.device, rank: int, world: int):
        self.args, self.m, self.device, self.rank, self.world = args, manifest, device, rank, world
        self.per_epoch = _steps_per_epoch(manifest.n, args.batch_size, world)
        encoder = Encoder(args.backbone)
        if args.init:
            init_encoder(encoder, args.init)
        fit_to_manifest(args, manifest)
        self.kind = framework_of(args.objective) or args.objective
        self.location = self.kind != "sp" and args.positives == "location"
        self.sp_weight = 1.0 if self.kind == "sp" else float(args.sp)
        self.gather = gather_from_all_ranks if world > 1 else None
        self.fw = None if self.kind == "sp" else make_framework(
            self.kind, args, encoder.feat_dim, PROJ_DIM, device, manifest.n, world,
            manifest.r_loc_m, self.gather)
        sp_head = SPHead(encoder.feat_dim) if self.sp_weight > 0 else None
        self.model = ImageSSL(encoder, sp_head, contrastive=self.kind != "sp",
                              predictor=self.fw.predictor if self.fw else None,
                              head=self.fw.head if self.fw else None)
        if self.fw is not None:
            self.model.to(device)
            self.fw.attach(self.model.embedder, total_steps(args, self.per_epoch))
        self.source = BatchSource(ImageStore.open(manifest), args.batch_size, device=device,
                                  workers=args.workers, seed=args.seed, rank=rank,
                                  world_size=world)
        self.xy = torch.as_tensor(manifest.xy_centred(), device=device)
        self.positive_of: torch.Tensor | None = None  # location positives: this epoch's
        if self.location:
            self.indptr, self.indices = neighbour_lists(manifest.anchor, manifest.positive,
                                                        manifest.n)
        self._last: tuple | None = None  # (inputs, outputs) of the step, for after_step

    def describe(self) -> str:
        if self.fw is None:
            return f"sp on {self.m.n} images ({self.m.pairs_path})"
        sp = f" + sp {self.sp_weight:g}" if self.sp_weight else ""
        pos = "location positives" if self.location else "two views"
        return f"{self.fw.describe()}, {pos}{sp} on {self.m.n} images ({self.m.pairs_path})"

    def steps_per_epoch(self) -> int:
        return self.per_epoch

    def epoch(self, epoch: int, skip: int):
        extra = None
        if self.location:
            rng = np.random.default_rng((self.args.seed, epoch, 1))
            extra, has = sample_positives(self.indptr, self.indices, rng)
            self.positive_of = torch.as_tensor(extra, device=self.device)  # once per epoch
            if self.rank == 0 and skip == 0:
                print(f"[train] epoch {epoch}: {int((~has).sum())} of {self.m.n} anchors have "
                      "no neighbour within r_loc and use two views of themselves", flush=True)
        return iter(self.source.batches(epoch, extra=extra, skip=skip))

    def _views(self, canvas, sizes, gen, size=None, scale=(0.2, 1.0)) -> torch.Tensor:
        v = augment.simclr_views(canvas, sizes, size or self.args.image_size, gen, scale=scale)
        if self.device.type == "cuda":
            v = v.contiguous(memory_format=torch.channels_last)
        return v

    def inputs(self, batch, rng: StepRandom) -> ImageInputs:
        b, gen = batch.idx.shape[0], rng.rank
        inp = ImageInputs(b, step=rng.step)
        idx = batch.idx.to(self.device)
        if self.fw is not None:
            glob = (0.4, 1.0) if self.kind == "dino" else (0.2, 1.0)  # DINO's global crops
            if self.location:  # the canvas holds the anchors, then their positives
                inp.views = self._views(batch.canvas, batch.sizes, gen, scale=glob)
                inp.xy_a, inp.xy_p = self.xy[idx], self.xy[self.positive_of[idx]]
            else:
                inp.views = torch.cat([self._views(batch.canvas, batch.sizes, gen, scale=glob),
                                       self._views(batch.canvas, batch.sizes, gen, scale=glob)])
                inp.xy_a = inp.xy_p = self.xy[idx]
            if self.kind == "dino" and self.args.local_crops:
                inp.local = torch.cat([
                    self._views(batch.canvas[:b], batch.sizes[:b], gen, self.args.local_size,
                                (0.05, 0.4)) for _ in range(self.args.local_crops)])
        if self.sp_weight > 0:
            c1, c2, b1, b2 = augment.sp_crops(batch.canvas[:b], batch.sizes[:b],
                                              self.args.sp_size, gen)
            inp.crops, inp.target = torch.cat([c1, c2]), sp_targets(b1, b2)
        if self.fw is not None:
            inp.targets = self.fw.targets(inp.views, b, inp.xy_p)
        return inp

    def forward(self, model: nn.Module, inp: ImageInputs):
        return model(inp.views, inp.crops, inp.local)

    def loss(self, inp: ImageInputs, out: dict) -> StepOutput:
        b = inp.b
        res = StepOutput(torch.zeros((), device=self.device),
                         images=(2 if inp.views is not None else 0) * b
                         + (0 if inp.local is None else inp.local.shape[0])
                         + (0 if inp.crops is None else 2 * b))
        if self.fw is not None:
            main = self.fw.loss(out, inp.targets, b, inp.step, inp.xy_a, inp.xy_p)
            res.parts[f"loss_{self.kind}"] = main.detach()
            res.loss = res.loss + main
            # collapse monitor: the embeddings, or for DINO (whose head output is a distribution
            # over prototypes) the backbone features
            res.embedding = (out["f"] if self.kind == "dino" else out["z"])[:b]
        if out["sp"] is not None:
            spl = sp_loss(out["sp"].float(), inp.target)
            res.parts["loss_sp"] = spl.detach()
            res.loss = res.loss + self.sp_weight * spl
        self._last = (inp, out)
        return res

    def after_step(self, step: int) -> None:
        if self.fw is not None and self._last is not None:
            inp, out = self._last
            self.fw.after_step(step, inp.targets, out)
        self._last = None

    def state(self) -> dict:
        enc = self.model.encoder
        s = {"encoder": enc.state_dict(), "feat_dim": enc.feat_dim}
        if self.model.sp_head is not None:
            s["sp_head"] = self.model.sp_head.state_dict()
        if self.fw is not None:
            if self.model.predictor is not None:
                s["predictor"] = self.model.predictor.state_dict()
            if self.model.head is not None:
                s["head"] = self.model.head.state_dict()
            s["framework"] = self.fw.state()
        return s

    def load_state(self, state: dict) -> None:
        self.model.encoder.load_state_dict(state["encoder"])
        if self.model.sp_head is not None:
            self.model.sp_head.load_state_dict(state["sp_head"])
        if self.fw is not None:
            if self.model.predictor is not None:
                self.model.predictor.load_state_dict(state["predictor"])
            if self.model.head is not None:
                self.model.head.load_state_dict(state["head"])
            self.fw.load_state(state.get("framework", {}))


@dataclass
class CSPInputs:
    loc: torch.Tensor  # (B, 2) site-centred metres
    feats: torch.Tensor  # (B, C) the locked image encoder's features
    neg: torch.Tensor  # (K, 2) random locations in the footprint, the same on every rank

    def share(self, rank: int, world: int) -> CSPInputs:
        b = self.loc.shape[0] // world
        mine = slice(rank * b, (rank + 1) * b)
        return CSPInputs(self.loc[mine], self.feats[mine], self.neg)


class CSPObjective:
    """A location encoder contrasted with a locked image encoder's features."""

    def __init__(self, args, manifest: Manifest, device: torch.device, rank: int, world: int):
        self.args, self.m, self.device, self.rank, self.world = args, manifest, device, rank, world
        self.per_epoch = _steps_per_epoch(manifest.n, args.batch_size, world)
        try:
            img_state = read_checkpoint(args.image_encoder)
            image_encoder = encoder_from_checkpoint(img_state, args.image_encoder)
        except CheckpointError as exc:
            raise TrainingError(f"--image-encoder {exc}") from None
        trained_on = img_state.get("dataset", {})
        if rank == 0 and isinstance(trained_on, dict) and trained_on.get("digest") not in (
                None, manifest.digest):
            print("[train] note: the image encoder was trained on another dataset than this "
                  "manifest's", flush=True)
        self.image_encoder = image_encoder.to(device).eval().requires_grad_(False)
        # pooled features of every full frame, no augmentation: the encoder is locked, so
        # they are computed once
        self.feats = extract_features(self.image_encoder, ImageStore.open(manifest),
                                      args.image_size, device, bf16=args.precision == "bf16")
        self.xy = torch.as_tensor(manifest.xy_centred(), device=device)
        self.footprint = Footprint(self.xy, max(manifest.r_loc_m, 1.0))
        loc = make_location_encoder(args.location_encoder, CSP_DIM, manifest.extent_m,
                                    centres=self._rbf_centres())
        self.model = LocationCSP(loc, self.image_encoder.feat_dim, CSP_DIM)
        self.gather = gather_from_all_ranks if world > 1 else None

    def _rbf_centres(self) -> torch.Tensor:
        rng = np.random.default_rng(self.args.seed)
        xy = self.m.xy_centred()
        pick = rng.choice(len(xy), min(256, len(xy)), replace=False)
        return torch.as_tensor(xy[pick], dtype=torch.float32)

    def describe(self) -> str:
        return (f"csp ({self.args.location_encoder}, {self.args.csp_loss}) on {self.m.n} "
                f"images ({self.m.pairs_path})")

    def steps_per_epoch(self) -> int:
        return self.per_epoch

    def epoch(self, epoch: int, skip: int):
        order = epoch_order(self.args.seed, epoch, self.m.n)
        for idx in rank_slices(order, self.args.batch_size, self.rank, self.world,
                               self.per_epoch, skip):
            yield torch.as_tensor(idx, device=self.device)

    def inputs(self, idx: torch.Tensor, rng: StepRandom) -> CSPInputs:
        return CSPInputs(self.xy[idx], self.feats[idx],
                         self.footprint.sample(self.args.csp_negatives, rng.shared))

    def forward(self, model: nn.Module, inp: CSPInputs):
        # one pass: the batch's locations twice (two dropout draws, for SimCSE) and the
        # negatives, so that DDP sees one forward per step
        return model(torch.cat([inp.loc, inp.loc, inp.neg]), inp.feats)

    def loss(self, inp: CSPInputs, outputs) -> StepOutput:
        emb, img = (t.float() for t in outputs)
        b, args = inp.loc.shape[0], self.args
        loc, loc2, neg = emb[:b], emb[b:2 * b], emb[2 * b:]
        if args.csp_loss == "mc":
            loss = csp_mc_loss(loc, img, neg, loc2, temperature=args.temperature,
                               gather=self.gather)
        elif args.csp_loss == "nce":
            loss = csp_nce_loss(loc, img, neg, temperature=args.temperature, gather=self.gather)
        else:
            loss = csp_l2_loss(loc, img)
        return StepOutput(loss, images=b, embedding=loc)

    def after_step(self, step: int) -> None:
        """Nothing to update: CSP has no momentum state."""

    def state(self) -> dict:
        return {"encoder": self.image_encoder.state_dict(),
                "feat_dim": self.image_encoder.feat_dim,
                "loc_encoder": self.model.loc_encoder.state_dict(),
                "img_proj": self.model.img_proj.state_dict(),
                "site_centre": torch.as_tensor(self.m.centre),
                "extent_m": float(self.m.extent_m)}

    def load_state(self, state: dict) -> None:
        self.model.loc_encoder.load_state_dict(state["loc_encoder"])
        self.model.img_proj.load_state_dict(state["img_proj"])
