"""Run bookkeeping for the trainer: atomic checkpoints, clean stops on signals, metrics files
and the collapse monitor."""

from __future__ import annotations

import json
import math
import signal
import sys
from pathlib import Path

import torch
from torch import nn

from ..files import write_atomic
from ..flags import not_a_file

# The files and folder the trainer writes into a run folder (runfolder.py decides, from these
# names, whether a folder holds a run and what --overwrite may remove).
ARGS_JSON = "args.json"
CHECKPOINT = "last.pt"
METRICS_JSONL = "metrics.jsonl"
METRICS_CSV = "metrics.csv"
TENSORBOARD_DIR = "tensorboard"
TENSORBOARD_PREFIX = "events.out.tfevents."  # SummaryWriter's file names


# --- checkpoints ----------------------------------------------------------------------------

def _tensor_bytes(obj) -> int:
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(_tensor_bytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(_tensor_bytes(v) for v in obj)
    return 0


def save_checkpoint(path: Path, state: dict) -> None:
    """Atomic (`files.write_atomic`): readers never see half a checkpoint; a full disk is one
    message naming the file and about how much it needs (its tensors' bytes)."""
    write_atomic(path, lambda tmp: torch.save(state, tmp), "a checkpoint",
                 needed=_tensor_bytes(state))


class CheckpointError(ValueError):
    """A file given as a checkpoint is missing, unreadable, or not the kind expected."""


def read_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """The one checkpoint reader (--resume, --init, --image-encoder, ssl.evaluate): a dict
    loaded with ``weights_only=True`` (no code in the file runs), or CheckpointError saying
    what the file is instead."""
    path = Path(path)
    why = not_a_file(path, "a checkpoint file (last.pt of a run folder)", ("last.pt",))
    if why:
        raise CheckpointError(why)
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # truncated, another format, a pickle with code in it, ...
        if "weights_only" in str(exc):  # torch's advice to unpickle arbitrary code: never
            why = "it holds Python objects besides tensors, which are never unpickled here"
        else:
            why = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
        raise CheckpointError(f"{path}: cannot be read as a PyTorch checkpoint ({why}); "
                              "expected a last.pt written by python -m ssl.train, or a "
                              "torchvision state dict") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: holds a {type(state).__name__}, not a checkpoint "
                              "(expected a dict of weights)")
    return state


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

def tensorboard_writer(folder: Path, purge_step: int | None):
    """A TensorBoard SummaryWriter for ``folder``, or None, said once on stderr, when the
    ``tensorboard`` package is missing or the writer cannot start: TensorBoard is optional
    (a stock PyTorch box lacks it; ``pip install tensorboard``, or the project's ``trainer``
    extra, adds it), and metrics.jsonl / metrics.csv hold the same numbers either way.
    ``purge_step``: on resume, events from that step on (written after the checkpoint by the
    interrupted run) are hidden, as the metrics rows past the checkpoint are dropped."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except Exception as exc:  # ImportError when missing; a broken install raises others
        why = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
        print(f"[train] note: no TensorBoard scalars for this run: the tensorboard package "
              f"cannot be imported ({why}); pip install tensorboard to get them, or pass "
              "--no-tensorboard; metrics.jsonl and metrics.csv hold the same numbers",
              file=sys.stderr, flush=True)
        return None
    try:
        return SummaryWriter(str(folder), purge_step=purge_step)
    except Exception as exc:  # e.g. the folder cannot be written
        print(f"[train] note: no TensorBoard scalars for this run: the writer did not start "
              f"({type(exc).__name__}: {str(exc)[:160]}); metrics.jsonl and metrics.csv hold "
              "the same numbers", file=sys.stderr, flush=True)
        return None


class Metrics:
    """metrics.jsonl (+ metrics.csv at the end; TensorBoard scalars under tensorboard/ when
    the package is installed, unless ``tensorboard`` is False); rank 0 only.

    With `resume_step` the rows up to that step are kept and new ones appended; otherwise the
    file starts empty (the trainer only gets here for a new folder or after --overwrite has
    removed the previous run's files)."""

    def __init__(self, out: Path, enabled: bool, resume_step: int | None,
                 tensorboard: bool = True):
        self.enabled = enabled
        self.path = out / METRICS_JSONL
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
        if tensorboard:
            self.tb = tensorboard_writer(out / TENSORBOARD_DIR,
                                         None if resume_step is None else resume_step + 1)

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
        (self.path.parent / METRICS_CSV).write_text("\n".join(lines) + "\n")
        if self.tb is not None:
            self.tb.close()


def feature_std(z: torch.Tensor) -> float:
    """Collapse monitor: std over the batch of L2-normalised embeddings, times sqrt(dim)
    (about 1 for well-spread features, towards 0 when they collapse)."""
    zn = nn.functional.normalize(z.detach().float(), dim=1)
    return float(zn.std(dim=0).mean() * math.sqrt(zn.shape[1]))


