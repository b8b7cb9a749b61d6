"""Run folders: the trainer never overwrites a run by accident.

A run folder holds a run when it has any of args.json, last.pt or metrics.jsonl. A new run
goes only into a folder that is new or empty; without --out it gets a new one,
runs/<objective>-<UTC time> (-2, -3, ... when that name is taken). A folder that holds a run is
continued with --resume or replaced with --overwrite, which removes only the files the trainer
writes (args.json, last.pt, metrics.jsonl, metrics.csv, TensorBoard event files) and leaves
everything else, for example an evaluation in eval/, untouched. A folder that is not empty but
holds no run is never written to.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from ..files import temp_path
from .loop import TrainingError
from .runlog import (
    ARGS_JSON,
    CHECKPOINT,
    METRICS_CSV,
    METRICS_JSONL,
    TENSORBOARD_DIR,
    TENSORBOARD_PREFIX,
    read_checkpoint,
)

MARKERS = (ARGS_JSON, CHECKPOINT, METRICS_JSONL)  # any of these: the folder holds a run
RUN_FILES = (*MARKERS, METRICS_CSV, temp_path(CHECKPOINT).name)
DEFAULT_ROOT = Path("runs")


@dataclass
class Contents:
    """What a folder holds: the trainer's own entries and everything else."""

    path: Path
    exists: bool = False
    run: list[str] = field(default_factory=list)      # trainer files present (names)
    events: list[Path] = field(default_factory=list)  # TensorBoard event files
    foreign: list[str] = field(default_factory=list)  # entries the trainer did not write

    @property
    def holds_run(self) -> bool:
        return any(name in MARKERS for name in self.run)

    @property
    def empty(self) -> bool:
        return not (self.run or self.events or self.foreign)


def inspect(path: Path) -> Contents:
    c = Contents(Path(path))
    if not c.path.exists():
        return c
    if not c.path.is_dir():
        raise TrainingError(f"--out {c.path} is a file, not a folder")
    c.exists = True
    for entry in sorted(c.path.iterdir(), key=lambda e: e.name):
        name = entry.name
        if name in RUN_FILES and entry.is_file():
            c.run.append(name)
        elif name == TENSORBOARD_DIR and entry.is_dir() and not entry.is_symlink():
            for inner in sorted(entry.iterdir(), key=lambda e: e.name):
                if inner.name.startswith(TENSORBOARD_PREFIX) and inner.is_file():
                    c.events.append(inner)
                else:
                    c.foreign.append(f"{name}/{inner.name}")
        else:
            c.foreign.append(name + ("/" if entry.is_dir() else ""))
    return c


def _checkpoint_summary(path: Path) -> tuple[str, str | None]:
    """('last.pt at step 6 of 16', objective) without trusting the file to be readable."""
    try:
        state = read_checkpoint(path)
        step, old = int(state["step"]), state.get("args", {})
    except Exception as exc:  # a truncated or foreign file: say so, never fail on it
        return f"{path.name} (unreadable: {type(exc).__name__})", None
    steps = old.get("steps")
    of = f" of {steps}" if steps else (f" ({old['epochs']} epochs)" if old.get("epochs") else "")
    return f"{path.name} at step {step}{of}", old.get("objective")


def describe(c: Contents) -> str:
    """'a geoclr run: last.pt at step 50 of 50, metrics.jsonl with 50 rows, args.json, ...'"""
    parts, objective = [], None
    if CHECKPOINT in c.run:
        text, objective = _checkpoint_summary(c.path / CHECKPOINT)
        parts.append(text)
    if METRICS_JSONL in c.run:
        try:
            rows = sum(1 for ln in (c.path / METRICS_JSONL).read_text().splitlines()
                       if ln.strip())
            parts.append(f"{METRICS_JSONL} with {rows} row{'s' if rows != 1 else ''}")
        except (OSError, UnicodeDecodeError):
            parts.append(METRICS_JSONL)
    if ARGS_JSON in c.run and objective is None:
        try:
            objective = json.loads((c.path / ARGS_JSON).read_text()).get("objective")
        except (OSError, ValueError, AttributeError):
            pass
    parts += [n for n in c.run if n not in (CHECKPOINT, METRICS_JSONL)]
    if c.events:
        parts.append(f"{len(c.events)} TensorBoard event file{'s' if len(c.events) > 1 else ''}")
    what = f"a {objective} run" if isinstance(objective, str) else "a run"
    return f"{what}: {', '.join(parts)}"


def _listing(names: list[str], limit: int = 6) -> str:
    more = len(names) - limit
    return ", ".join(names[:limit]) + (f" and {more} more" if more > 0 else "")


def check(out: Path, *, resume: bool, overwrite: bool) -> str:
    """Refuse (TrainingError) or return one line saying what the run will do with `out`."""
    c = inspect(out)
    untouched = (f"; left untouched (not the trainer's): {_listing(c.foreign)}"
                 if c.foreign else "")
    if resume:
        if CHECKPOINT not in c.run:
            raise TrainingError(f"--resume: no checkpoint at {out / CHECKPOINT}")
        return f"continuing {describe(c)}"
    if c.empty:
        return "new" if not overwrite else "new (nothing there to overwrite)"
    if not c.holds_run:
        raise TrainingError(
            f"{out} is not empty and holds no training run (it holds {_listing(c.foreign + c.run)})"
            "; the trainer writes only into a new or empty folder, or continues or replaces a "
            "run. Choose another --out.")
    if overwrite:
        return f"--overwrite: replacing {describe(c)}{untouched}"
    also = f" (and, not the trainer's: {_listing(c.foreign)})" if c.foreign else ""
    raise TrainingError(
        f"{out} already holds {describe(c)}{also}. Nothing was changed. Use --resume to "
        "continue that run, --overwrite to replace it (only the trainer's own files are "
        "removed), or another --out.")


def fresh_folder(objective: str, root: Path = DEFAULT_ROOT) -> Path:
    """Create and return runs/<objective>-<UTC YYYYmmdd-HHMMSS>[-N]. os.mkdir without
    exist_ok, so two trainers starting in the same second never share a folder."""
    root.mkdir(parents=True, exist_ok=True)
    base = f"{objective}-{datetime.now(UTC).strftime('%Y%m%d-%H%M%S')}"
    for n in range(1, 10_000):
        path = root / (base if n == 1 else f"{base}-{n}")
        try:
            os.mkdir(path)
        except FileExistsError:
            continue
        return path
    raise TrainingError(f"no free run folder name {root / base}-N")


def remove_run_files(out: Path) -> None:
    """--overwrite: remove the previous run's files (only the trainer's; nothing else)."""
    c = inspect(out)
    for name in c.run:
        (out / name).unlink(missing_ok=True)
    for event in c.events:
        event.unlink(missing_ok=True)
    tb = out / TENSORBOARD_DIR
    if c.events and tb.is_dir() and not any(tb.iterdir()):
        tb.rmdir()


def claim(out: Path, args_json: str, *, fresh: bool) -> None:
    """Write args.json, the first file of a run. For a new run it is created exclusively: of
    two trainers that found the same folder empty, the second stops here."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / ARGS_JSON
    if not fresh:
        path.write_text(args_json)
        return
    try:
        with open(path, "x") as f:
            f.write(args_json)
    except FileExistsError:
        raise TrainingError(f"{out}: another run started writing to this folder meanwhile "
                            "(args.json appeared); nothing was changed. Use another --out."
                            ) from None
