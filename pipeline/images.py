"""Image validation and training shards, in one pass over the files.

Each image is opened once: the header gives its size; with ``decode`` the whole file is
decoded (truncated or corrupt files are caught) and, in the same decode, re-encoded at the
training size with its aspect kept. Large JPEGs are decoded with PIL's draft mode (DCT
scaling), which is several times cheaper than a full-size decode followed by a resize.
"""

from __future__ import annotations

import io
import multiprocessing
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from . import children, reasons

SHARD_JPEG_QUALITY = 90


@dataclass
class ImageCheck:
    path: str  # relative to the catalog root
    reason: str | None  # a quarantine code, or None when the image is good
    detail: str | None
    width: int | None
    height: int | None
    jpeg: bytes | None  # re-encoded at the training size (decode mode only)


def _fit(width: int, height: int, train_hw: tuple[int, int]) -> tuple[int, int]:
    """Largest size with the source aspect that fits inside (H, W) of train_size."""
    th, tw = train_hw
    scale = min(tw / width, th / height)
    return max(1, round(width * scale)), max(1, round(height * scale))


# EXIF orientations that swap width and height (5-8: transposed or rotated by 90 degrees)
_SWAPS_AXES = {5, 6, 7, 8}
_WIDE_MODES = {"I;16", "I;16B", "I;16L", "I;16N", "I"}


def to_rgb(im: Image.Image) -> Image.Image:
    """8-bit RGB from any mode Pillow decodes: 16-bit and 32-bit integer greyscale are scaled
    from their full range (a plain convert would clip them to white), float images from
    [0, 1], palette and alpha modes through Pillow's own conversion."""
    if im.mode in _WIDE_MODES:
        a = np.asarray(im, dtype=np.float64)
        top = 65535.0 if im.mode.startswith("I;16") else float(max(a.max(), 1.0))
        grey = np.clip(np.rint(a / top * 255.0), 0, 255).astype(np.uint8)
        return Image.fromarray(grey, "L").convert("RGB")
    if im.mode == "F":
        a = np.asarray(im, dtype=np.float64)
        grey = np.clip(np.rint(np.nan_to_num(a) * 255.0), 0, 255).astype(np.uint8)
        return Image.fromarray(grey, "L").convert("RGB")
    if im.mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")
    return im.convert("RGB")


def _orientation(im: Image.Image) -> int:
    try:
        return int(im.getexif().get(0x0112, 1) or 1)
    except Exception:  # noqa: BLE001 - a damaged EXIF block is no reason to lose the image
        return 1


def outside_root(root: Path, rel: str) -> str | None:
    """Why the file at ``rel`` (from the root) is outside the root once every symlink on its
    way is followed (the file itself, or a folder above it), or None when it is inside."""
    path = root / rel
    real = Path(os.path.realpath(path))
    if real.is_relative_to(Path(os.path.realpath(root))):
        return None
    if path.is_symlink():
        return f"a symlink to {real}, outside the catalog root; the pipeline never reads it"
    return (f"resolves to {real} (through a symlinked folder on its way), outside the catalog "
            "root; the pipeline never reads it")


def check_image(root: Path, rel: str, train_hw: tuple[int, int], decode: bool) -> ImageCheck:
    path = root / rel
    # resolved before anything is opened: a symlink to a file, or a symlinked folder on the
    # way, that leads out of the root is quarantined, never read
    why = outside_root(root, rel)
    if why is not None:
        return ImageCheck(rel, reasons.UNSAFE_PATH, why, None, None, None)
    try:
        size = path.stat().st_size
    except OSError as exc:
        return ImageCheck(rel, reasons.UNREADABLE, f"cannot open: {exc}", None, None, None)
    if size == 0:
        return ImageCheck(rel, reasons.EMPTY_FILE, "file has 0 bytes", None, None, None)
    try:
        with Image.open(path) as im:
            width, height = im.size
            orientation = _orientation(im)
            if orientation in _SWAPS_AXES:
                width, height = height, width  # the size as the image is meant to be seen
            if not decode:
                return ImageCheck(rel, None, None, width, height, None)
            out_w, out_h = _fit(width, height, train_hw)
            if im.format == "JPEG":
                draft = (out_h, out_w) if orientation in _SWAPS_AXES else (out_w, out_h)
                im.draft("RGB", draft)  # DCT scaling: decode at >= the target size
            im.load()  # full decode of the entropy-coded data: truncation raises here
            upright = ImageOps.exif_transpose(im) if orientation != 1 else im
            rgb = to_rgb(upright)
            if rgb.size != (out_w, out_h):
                rgb = rgb.resize((out_w, out_h), Image.BILINEAR, reducing_gap=2.0)
            buf = io.BytesIO()
            rgb.save(buf, format="JPEG", quality=SHARD_JPEG_QUALITY)
            return ImageCheck(rel, None, None, width, height, buf.getvalue())
    except Image.DecompressionBombError as exc:
        return ImageCheck(rel, reasons.IMAGE_REFUSED, f"Pillow refuses it: {exc}", None, None, None)
    except PermissionError as exc:
        return ImageCheck(rel, reasons.UNREADABLE, f"cannot open: {exc}", None, None, None)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, TypeError,
            NotImplementedError) as exc:
        return ImageCheck(rel, reasons.DECODE_ERROR, f"{type(exc).__name__}: {exc}", None, None, None)


def _check_chunk(args: tuple) -> list[ImageCheck]:
    root, rels, train_hw, decode = args
    return [check_image(Path(root), r, train_hw, decode) for r in rels]


def check_images(
    root: Path, rels: list[str], train_hw: tuple[int, int], decode: bool,
    workers: int | None = None, progress=None,
) -> list[ImageCheck]:
    """Check images in parallel processes; results in input order."""
    workers = workers or os.cpu_count() or 1
    if multiprocessing.current_process().daemon:
        workers = 1  # daemonic processes (e.g. Dask workers) may not start process pools
    chunk = 64
    jobs = [(str(root), rels[i : i + chunk], train_hw, decode) for i in range(0, len(rels), chunk)]
    out: list[ImageCheck] = []
    if workers == 1 or len(jobs) <= 1:
        for j in jobs:
            out.extend(_check_chunk(j))
            if progress:
                progress(len(j[1]))
        return out
    with children.pool(workers) as pool:
        for res in pool.map(_check_chunk, jobs):
            out.extend(res)
            if progress:
                progress(len(res))
    return out
