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
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from . import reasons

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


def check_image(root: Path, rel: str, train_hw: tuple[int, int], decode: bool) -> ImageCheck:
    path = root / rel
    try:
        size = path.stat().st_size
    except OSError as exc:
        return ImageCheck(rel, reasons.DECODE_ERROR, f"cannot stat: {exc}", None, None, None)
    if size == 0:
        return ImageCheck(rel, reasons.EMPTY_FILE, "file has 0 bytes", None, None, None)
    try:
        with Image.open(path) as im:
            width, height = im.size
            if not decode:
                return ImageCheck(rel, None, None, width, height, None)
            out_w, out_h = _fit(width, height, train_hw)
            if im.format == "JPEG":
                im.draft("RGB", (out_w, out_h))  # DCT scaling: decode at >= the target size
            im.load()  # full decode of the entropy-coded data: truncation raises here
            rgb = im.convert("RGB")
            if rgb.size != (out_w, out_h):
                rgb = rgb.resize((out_w, out_h), Image.BILINEAR, reducing_gap=2.0)
            buf = io.BytesIO()
            rgb.save(buf, format="JPEG", quality=SHARD_JPEG_QUALITY)
            return ImageCheck(rel, None, None, width, height, buf.getvalue())
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
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
    with ProcessPoolExecutor(workers) as pool:
        for res in pool.map(_check_chunk, jobs):
            out.extend(res)
            if progress:
                progress(len(res))
    return out
