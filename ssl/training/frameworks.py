"""The image SSL frameworks the trainer offers, each one loss (`objectives/`) plus the small state
it needs, kept here where the loop updates it explicitly (`after_step`) and checkpoints save it.

| framework | positives from | negatives | extra state |
|---|---|---|---|
| simclr  | two views, or a neighbour (`--positives location`) | in-batch (gathered) | - |
| simsiam | the same | none (predictor + stop-gradient) | - |
| byol    | the same | none (predictor + momentum target) | target network |
| moco    | the same | a queue of momentum keys | key encoder, queue |
| dino    | the same (two global crops) + `--local-crops N` | none (centring, sharpening) | teacher, centre |

With location positives the second view of every anchor is a view of a neighbour within r_loc
(sampled each epoch; anchors without one use a second view of themselves), and negatives within
r_loc of the anchor are masked out: in-batch for SimCLR, the queue for MoCo (which keeps the
position of every key). Every schedule (momentum, DINO's teacher temperature) is a function of
the global step, so a resumed run continues exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..objectives.byol import byol_loss
from ..objectives.dino import dino_loss
from ..objectives.geoclr import geoclr_loss
from ..objectives.moco import moco_loss, queue_mask
from ..objectives.simclr import nt_xent
from ..objectives.simsiam import simsiam_loss
from .heads import DINOHead, Predictor
from .state import Queue, ema_update, momentum_at, momentum_copy, teacher_temperature, update_centre


@dataclass
class Targets:
    """What a momentum framework's target network made of this step's views (no gradient)."""

    t: torch.Tensor | None = None  # BYOL: target projections (2B); MoCo: keys (B); DINO: (2B)
    xy: torch.Tensor | None = None  # MoCo: positions of the keys' images


class Framework:
    """A framework's heads, target network and state; the defaults are SimCLR's."""

    name = "simclr"
    momentum: float | None = None  # base momentum of the target network; None: no target
    # the flags the reproduction trains it with (python -m ssl.reproduce)
    reproduce_flags: tuple[str, ...] = ()

    def __init__(self, args, feat_dim: int, proj_dim: int, device: torch.device, n: int,
                 world: int, r_loc: float, gather):
        self.args, self.device = args, device  # n, world: part of the signature, unused here
        self.feat_dim, self.proj_dim = feat_dim, proj_dim
        self.r_loc, self.gather = r_loc, gather
        self.location = args.positives == "location"
        self.mask = self.location and args.mask_neighbours
        self.predictor: nn.Module | None = None
        self.head: nn.Module | None = None
        self.target: nn.Module | None = None
        self.total = 1

    def attach(self, embedder: nn.Module, total: int) -> None:
        """Called once the trainable module exists: build the target network from it."""
        self.total = total
        if self.momentum is not None:
            self.target = momentum_copy(embedder).to(self.device)
            self.embedder = embedder

    def targets(self, views: torch.Tensor, b: int, xy_p: torch.Tensor | None) -> Targets:
        """The target network's outputs for this step's views (under no_grad)."""
        return Targets()

    def loss(self, out: dict, targets: Targets, b: int, step: int, xy_a, xy_p) -> torch.Tensor:
        z = out["z"].float()
        if self.location:
            return geoclr_loss(z[:b], z[b:], xy_a, xy_p, self.r_loc, self.args.temperature,
                               mask_neighbours=self.mask, gather=self.gather)
        return nt_xent(z[:b], z[b:], self.args.temperature, gather=self.gather)

    def after_step(self, step: int, targets: Targets, out: dict) -> None:
        """After the optimiser step: move the target network, queue, centre."""
        if self.target is not None:
            ema_update(self.target, self.embedder, momentum_at(step, self.total,
                                                               self.momentum_base()))

    def momentum_base(self) -> float:
        return self.args.momentum if self.args.momentum is not None else self.momentum

    def state(self) -> dict:
        return {"target": self.target.state_dict()} if self.target is not None else {}

    def load_state(self, state: dict) -> None:
        if self.target is not None:
            self.target.load_state_dict(state["target"])

    def describe(self) -> str:
        return self.name


class SimSiam(Framework):
    name = "simsiam"

    def __init__(self, *a, **k):
        super().__init__(*a, **k)
        self.predictor = Predictor(self.proj_dim)

    def loss(self, out, targets, b, step, xy_a, xy_p):
        z, p = out["z"].float(), out["p"].float()
        return simsiam_loss(p[:b], p[b:], z[:b], z[b:])


class BYOL(Framework):
    name = "byol"
    momentum = 0.996

    def __init__(self, *a, **k):
        super().__init__(*a, **k)
        self.predictor = Predictor(self.proj_dim)

    def targets(self, views, b, xy_p):
        return Targets(t=self.target(views).float())

    def loss(self, out, targets, b, step, xy_a, xy_p):
        p, t = out["p"].float(), targets.t
        return byol_loss(p[:b], p[b:], t[:b], t[b:])


class MoCo(Framework):
    """MoCo v2: queries from the first view (the anchor), keys from the second (a second view or
    the neighbour) through the momentum encoder; the queue holds earlier keys and their
    positions. The momentum is constant (``--momentum``, 0.99 by default, as v2)."""

    name = "moco"
    momentum = 0.99

    def __init__(self, *a, **k):
        super().__init__(*a, **k)
        self.queue = Queue(self.args.queue, self.proj_dim, seed=self.args.seed).to(self.device)

    def targets(self, views, b, xy_p):
        return Targets(t=self.target(views[b:]).float(), xy=xy_p)

    def loss(self, out, targets, b, step, xy_a, xy_p):
        q = out["z"][:b].float()
        mask = queue_mask(xy_a, self.queue.xy, self.r_loc) if self.mask else None
        return moco_loss(q, targets.t, self.queue.keys.clone(), self.args.temperature, mask)

    def after_step(self, step, targets, out):
        ema_update(self.target, self.embedder, self.momentum_base())  # constant, as in v2
        self.queue.enqueue(targets.t, targets.xy)

    def state(self):
        return {**super().state(), "queue": self.queue.state_dict()}

    def load_state(self, state):
        super().load_state(state)
        self.queue.load_state_dict(state["queue"])

    def describe(self):
        return f"moco (queue {self.args.queue})"


class DINO(Framework):
    """DINO: a student and a momentum teacher with DINO heads; the teacher sees the two global
    crops, the student those and ``--local-crops`` smaller ones; the teacher's outputs are
    centred (a running mean) and sharpened (a temperature warmed up from 0.04 to 0.07)."""

    name = "dino"
    reproduce_flags = ("--local-crops", "2")
    momentum = 0.996

    def __init__(self, *a, **k):
        super().__init__(*a, **k)
        self.head = DINOHead(self.feat_dim, out_dim=self.args.dino_out)
        self.centre = torch.zeros(1, self.args.dino_out, device=self.device)

    def targets(self, views, b, xy_p):
        return Targets(t=self.target(views).float())

    def teacher_temp(self, step: int) -> float:
        return teacher_temperature(step, max(1, self.total // 10))

    def loss(self, out, targets, b, step, xy_a, xy_p):
        s = out["z"].float()
        student = [s[:b], s[b:]]
        if out["z_local"] is not None:
            student += list(out["z_local"].float().split(b))
        teacher = [targets.t[:b], targets.t[b:]]
        return dino_loss(student, teacher, self.centre, teacher_temp=self.teacher_temp(step))

    def after_step(self, step, targets, out):
        super().after_step(step, targets, out)
        self.centre = update_centre(self.centre, targets.t)

    def state(self):
        return {**super().state(), "centre": self.centre}

    def load_state(self, state):
        super().load_state(state)
        self.centre = state["centre"].to(self.device)

    def describe(self):
        return f"dino ({self.args.local_crops} local crops)"


# The one registry of frameworks: the trainer's --objective choices, its checks of framework
# flags, the reproduction's framework table and the README's table all derive from it. A new
# framework is a class here (its heads and state) plus its loss in objectives/.
REGISTRY: dict[str, type[Framework]] = {
    cls.name: cls for cls in (Framework, SimSiam, MoCo, BYOL, DINO)}
FRAMEWORKS = tuple(REGISTRY)
BASELINE = Framework.name  # the contrastive baseline the others are compared with
MOMENTUM_FRAMEWORKS = tuple(n for n, cls in REGISTRY.items() if cls.momentum is not None)
# --objective names that are a framework with a fixed positive pair
ALIASES = {"geoclr": (BASELINE, "location")}


def objectives() -> tuple[str, ...]:
    """Every --objective: each framework followed by its aliases, then SP alone and CSP."""
    out: list[str] = []
    for name in FRAMEWORKS:
        out += [name, *(a for a, (fw, _) in ALIASES.items() if fw == name)]
    return (*out, "sp", "csp")


def framework_of(objective: str) -> str | None:
    """The framework an --objective trains (None for sp and csp)."""
    if objective in ALIASES:
        return ALIASES[objective][0]
    return objective if objective in REGISTRY else None


def make_framework(name: str, *args, **kwargs) -> Framework:
    return REGISTRY[name](*args, **kwargs)
