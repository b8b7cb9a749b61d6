"""The training loop: one `fit`, and the interface it asks of an objective.

One step: schedule lookup -> batch -> augmentation on the device (no grad) -> forward
(autocast) -> loss (float32) -> backward -> step -> log -> checkpoint. The learning rate is a function of the global step,
the data order of (seed, epoch) and every random draw of (seed, step, rank), so a resumed run
continues exactly where the interrupted one would have gone. An objective (`objective.py`) says
what its batches are, how a batch becomes inputs and a loss, and what it saves; the loop owns
the optimiser, schedule, distributed wrapping, logging, checkpoints and stopping.
"""

from __future__ import annotations

import math
import signal
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
import torch.distributed as dist
from torch import nn

from ..flags import progress_bar
from .runlog import Metrics, StopFlag, feature_std, save_checkpoint


class TrainingError(RuntimeError):
    """A run cannot start or go on (bad input, non-finite loss, incompatible resume); the
    message says why and what to do."""


# --- schedule and randomness: functions of the global step ----------------------------------

def learning_rate(step: int, total: int, peak: float, warmup: int) -> float:
    """Linear warm-up to `peak`, then cosine decay to 0 at `total` (a function of the step)."""
    if step < warmup:
        return peak * (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return peak * 0.5 * (1.0 + math.cos(math.pi * min(t, 1.0)))


def step_seed(seed: int, step: int, rank: int = 0) -> int:
    return (seed * 1_000_003 + step * 7_919 + rank * 104_729 + 17) % (2**63 - 1)


def total_steps(args, steps_per_epoch: int) -> int:
    if args.steps is not None:
        return int(args.steps)
    return (args.epochs if args.epochs is not None else 100) * steps_per_epoch


@dataclass
class StepRandom:
    """The random generators of one step, on the device: ``rank`` differs between ranks (views,
    crops: every rank augments its own images differently), ``shared`` is the same on every
    rank (draws that all ranks must agree on, such as CSP's negative locations)."""

    rank: torch.Generator
    shared: torch.Generator
    step: int = 0  # the global step these draws belong to (for step-dependent schedules)

    @classmethod
    def for_step(cls, seed: int, step: int, rank: int, device: torch.device) -> StepRandom:
        return cls(torch.Generator(device=device).manual_seed(step_seed(seed, step, rank + 1)),
                   torch.Generator(device=device).manual_seed(step_seed(seed, step)), step)


@dataclass
class StepOutput:
    loss: torch.Tensor  # the scalar to minimise (this rank's share; DDP averages gradients)
    images: int  # encoder inputs this rank processed (for images/s)
    parts: dict[str, torch.Tensor] = field(default_factory=dict)  # logged loss terms
    embedding: torch.Tensor | None = None  # for the collapse monitor


class Objective(Protocol):
    """What `fit` needs from an objective (see `tasks.ImageObjective`, `tasks.CSPObjective`)."""

    model: nn.Module  # the trainable module; fit moves it to the device and wraps it for DDP

    def describe(self) -> str:
        """One line for the run's header: objective, images, batch."""

    def steps_per_epoch(self) -> int:
        """Optimiser steps per pass over the data (equal on every rank)."""

    def epoch(self, epoch: int, skip: int) -> Iterator[Any]:
        """This rank's batches of ``epoch`` after the first ``skip``; per-epoch tables (such
        as the sampled positives) are built here, once, on the device."""

    def inputs(self, batch: Any, rng: StepRandom) -> Any:
        """Everything the forward pass needs, built on the device without gradients."""

    def forward(self, model: nn.Module, inputs: Any) -> Any:
        """The forward pass through ``model`` (``self.model``, possibly DDP-wrapped); runs
        under the run's autocast."""

    def loss(self, inputs: Any, outputs: Any) -> StepOutput:
        """The loss of the forward pass's outputs, in float32 (outside autocast)."""

    def after_step(self, step: int) -> None:
        """After the optimiser step ``step``: update what is not trained by gradients (momentum
        networks, queues, centres) from this step's inputs and outputs."""

    def state(self) -> dict:
        """The weights and objective state a checkpoint keeps (besides the optimiser)."""

    def load_state(self, state: dict) -> None:
        """Restore what `state` returned (for --resume)."""


@dataclass
class Context:
    """Where and how a run trains."""

    args: Any  # the parsed flags (see train.build_parser)
    device: torch.device
    rank: int = 0
    world: int = 1
    checkpoint_extra: dict = field(default_factory=dict)  # saved with every checkpoint

    @property
    def main(self) -> bool:
        return self.rank == 0


def wrap(module: nn.Module, ctx: Context) -> nn.Module:
    """To the device (channels-last on CUDA) and, under a process group, into DDP; BatchNorm
    layers become SyncBatchNorm on CUDA, so that batch statistics are the global batch's."""
    module = module.to(ctx.device)
    if ctx.device.type == "cuda":
        module = module.to(memory_format=torch.channels_last)
    if ctx.world > 1 or (dist.is_available() and dist.is_initialized()):  # torchrun, even 1
        if ctx.device.type == "cuda":
            module = nn.SyncBatchNorm.convert_sync_batchnorm(module)
        module = nn.parallel.DistributedDataParallel(
            module, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None)
    return module


def fit(objective: Objective, ctx: Context, ckpt_path: Path, state: dict | None) -> dict:
    args = ctx.args
    per_epoch = objective.steps_per_epoch()
    total = total_steps(args, per_epoch)
    warmup = args.warmup_steps if args.warmup_steps is not None else max(1, total // 20)
    model = wrap(objective.model, ctx)
    if args.compile:
        model = torch.compile(model)
    opt = torch.optim.AdamW([p for p in objective.model.parameters() if p.requires_grad],
                            lr=args.lr, weight_decay=args.weight_decay)
    start = 0
    if state is not None:
        objective.load_state(state)
        opt.load_state_dict(state["optimizer"])
        start = int(state["step"])
    autocast = torch.autocast(ctx.device.type, dtype=torch.bfloat16,
                              enabled=args.precision == "bf16")
    end = total if args.stop_at_step is None else min(total, args.stop_at_step)
    metrics = Metrics(Path(args.out), ctx.main, start if state is not None else None,
                      tensorboard=getattr(args, "tensorboard", True))
    if ctx.main:
        print(f"[train] {objective.describe()}; {total} steps ({per_epoch}/epoch), batch "
              f"{args.batch_size}x{ctx.world}, {ctx.device}, {args.precision}"
              + (f"; resuming at step {start}" if start else ""), flush=True)

    def save(step: int) -> None:
        save_checkpoint(ckpt_path, {"step": step, "args": vars(args),
                                    "optimizer": opt.state_dict(), **ctx.checkpoint_extra,
                                    **objective.state()})

    stop = StopFlag()
    # a terminal line that rewrites itself (step, loss, images/s); logs get the [train] lines
    bar = progress_bar(total=total, initial=start, desc="[train] step", unit="step",
                       file=sys.stdout, leave=False, disable=not (ctx.main and sys.stdout.isatty()))
    window = {"t": 0.0, "wait": 0.0, "images": 0}
    step, last, batches, epoch = start, {}, None, -1
    t_prev = time.perf_counter()
    try:
        for step in range(start, end):
            e, within = divmod(step, per_epoch)
            if e != epoch:
                epoch, batches = e, objective.epoch(e, skip=within)
            lr = learning_rate(step, total, args.lr, warmup)
            for g in opt.param_groups:
                g["lr"] = lr
            torch.manual_seed(step_seed(args.seed, step, ctx.rank + 1))  # dropout: exact on resume
            batch = next(batches)
            with torch.no_grad():
                inputs = objective.inputs(batch, StepRandom.for_step(args.seed, step, ctx.rank,
                                                                     ctx.device))
            with autocast:
                outputs = objective.forward(model, inputs)
            out = objective.loss(inputs, outputs)
            if not torch.isfinite(out.loss):
                raise TrainingError(
                    f"non-finite loss ({float(out.loss.detach())}) at step {step}: stopping; the "
                    f"last good checkpoint is "
                    f"{ckpt_path if ckpt_path.exists() else 'not written yet'}. Lower --lr or "
                    "use --precision fp32.")
            opt.zero_grad(set_to_none=True)
            out.loss.backward()
            opt.step()
            objective.after_step(step)

            now = time.perf_counter()
            window["t"] += now - t_prev
            window["wait"] += getattr(batch, "wait_s", 0.0)
            window["images"] += out.images * ctx.world
            t_prev, done = now, step + 1
            if not bar.disable:  # reading the loss waits for the device: only for the bar
                bar.set_postfix_str(f"loss {float(out.loss.detach()):.4f} "
                                    f"{window['images'] / max(window['t'], 1e-9):.0f} img/s",
                                    refresh=False)
                bar.update(1)
            if done % args.log_every == 0 or done == end:
                last = {"step": done, "epoch": epoch, "loss": float(out.loss.detach()),
                        **{k: float(v) for k, v in out.parts.items()}, "lr": lr,
                        "images_per_s": window["images"] / max(window["t"], 1e-9),
                        "data_wait_share": window["wait"] / max(window["t"], 1e-9),
                        "feature_std": (feature_std(out.embedding)
                                        if out.embedding is not None else None)}
                metrics.log(last)
                if ctx.main:
                    bar.clear()
                    print(f"[train] step {done}/{total} loss {last['loss']:.4f} lr {lr:.2e} "
                          f"{last['images_per_s']:.0f} img/s, waiting for data "
                          f"{100 * last['data_wait_share']:.0f} %, feature std "
                          + (f"{last['feature_std']:.2f}" if last["feature_std"] is not None
                             else "-"), flush=True)
                    bar.refresh()
                window = {"t": 0.0, "wait": 0.0, "images": 0}
            if ctx.main and (done % args.checkpoint_every == 0 or done == end
                             or stop.signal is not None):
                save(done)
            if stop.signal is not None:
                if ctx.main:
                    bar.clear()
                    print(f"[train] {signal.Signals(stop.signal).name} received: saved step "
                          f"{done} to {ckpt_path}; continue with --resume", flush=True)
                break
    finally:
        bar.close()
        stop.restore()
    metrics.close()
    return {"steps": step + 1 if end > start else start, "total": total, "last": last,
            "checkpoint": str(ckpt_path)}
