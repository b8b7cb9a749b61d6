"""Command-line helpers. Numeric flags: a nonsensical value is an argparse error (one message,
exit status 2), never a silent no-op or a traceback later. run_reporting: a mistake found later
(a file, a folder) is one ``error:`` line and exit status 2 as well."""

from __future__ import annotations

import argparse
import math
import sys

from .oserrors import os_error_message


def _number(kind, text: str, ok, rule: str):
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {rule}, got {text!r}") from None
    if not ok(value):
        raise argparse.ArgumentTypeError(f"must be {rule}, got {text}")
    return value


def positive_int(text: str) -> int:
    return _number(int, text, lambda v: v > 0, "a whole number > 0")


def non_negative_int(text: str) -> int:
    return _number(int, text, lambda v: v >= 0, "a whole number >= 0")


def positive_float(text: str) -> float:
    return _number(float, text, lambda v: math.isfinite(v) and v > 0, "a finite number > 0")


def non_negative_float(text: str) -> float:
    return _number(float, text, lambda v: math.isfinite(v) and v >= 0, "a finite number >= 0")


def run_reporting(fn, expected: tuple[type[Exception], ...]):
    """(fn(), 0), or (None, 2) after printing one ``error:`` line to stderr when fn raises one
    of ``expected`` (a user's mistake the tool explains) or an OSError (see os_error_message):
    the command-line tools' one way of turning mistakes into a message and exit status 2."""
    try:
        return fn(), 0
    except expected as exc:
        print(f"error: {exc}", file=sys.stderr)
    except OSError as exc:
        print(f"error: {os_error_message(exc)}", file=sys.stderr)
    return None, 2


def not_a_file(path, expected: str, look_for: tuple[str, ...] = ()) -> str | None:
    """None when `path` is a file; else why not, for an error message: no such file, or a
    folder given for a file (naming the file of `look_for` it holds, the likely meaning)."""
    from pathlib import Path

    path = Path(path)
    if path.is_file():
        return None
    if path.is_dir():
        hits = [path / name for name in look_for if (path / name).is_file()]
        hint = f"; it holds {hits[0]}: pass that" if hits else ""
        return f"{path} is a folder; expected {expected}{hint}"
    if path.exists():
        return f"{path}: not a regular file; expected {expected}"
    return f"{path}: no such file; expected {expected}"


class _NoBar:
    """What the loop and embed ask of a progress bar, doing nothing."""

    disable = True

    def update(self, n: int = 1) -> None:
        pass

    def set_postfix_str(self, text: str) -> None:
        pass

    def clear(self) -> None:
        pass

    def refresh(self) -> None:
        pass

    def close(self) -> None:
        pass


def progress_bar(**kwargs):
    """A tqdm bar (``kwargs`` are tqdm's), or a silent stand-in where tqdm is not installed:
    the trainer and embed run on a stock PyTorch box (torch, torchvision, numpy, pyarrow,
    pillow), which may lack it; their log lines say the same either way."""
    try:
        from tqdm import tqdm
    except ImportError:
        return _NoBar()
    return tqdm(**kwargs)


def k_flag(text: str) -> int | None:
    """--k: 'auto' (None) or a whole number of clusters, at least 2."""
    if text.strip().lower() == "auto":
        return None
    try:
        k = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer or 'auto', got {text!r}") from None
    if k < 2:
        raise argparse.ArgumentTypeError(f"expected at least 2 clusters, got {k}")
    return k
