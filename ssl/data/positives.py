"""GeoCLR's positives from the r_loc pairs table: each image's neighbour list and, per epoch, one
sampled neighbour (or the image itself when it has none). The loss is `objectives/geoclr.py`."""

from __future__ import annotations

import numpy as np


def neighbour_lists(
    anchor: np.ndarray, positive: np.ndarray, n: int
) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric CSR adjacency of ``n`` images from unordered pairs ``(anchor[k], positive[k])``.

    Returns ``(indptr, indices)``: ``indptr`` int64 of length n + 1, ``indices`` int32; the
    neighbours of image i are ``indices[indptr[i]:indptr[i + 1]]``, sorted ascending, each once
    (a pair listed in both orders, or twice, counts once). Self pairs are rejected.
    """
    a = np.asarray(anchor).astype(np.int64, copy=False).ravel()
    p = np.asarray(positive).astype(np.int64, copy=False).ravel()
    n = int(n)
    if a.shape != p.shape:
        raise ValueError(f"anchor and positive differ in length: {a.size} vs {p.size}")
    if n < 0 or n >= 2**31:
        raise ValueError(f"n must be in [0, 2**31), got {n}")
    if a.size:
        lo, hi = min(a.min(), p.min()), max(a.max(), p.max())
        if lo < 0 or hi >= n:
            raise ValueError(f"image indices must lie in [0, {n}), got range [{lo}, {hi}]")
        if np.any(a == p):
            raise ValueError("pairs must join two different images (anchor == positive found)")
    src = np.concatenate([a, p])
    dst = np.concatenate([p, a])
    key = np.unique(src * n + dst)  # sorted by (src, dst), duplicates dropped
    src, dst = np.divmod(key, max(n, 1))
    indptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount(src, minlength=n), out=indptr[1:])
    return indptr, dst.astype(np.int32)


def sample_positives(
    indptr: np.ndarray, indices: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """One neighbour per image, uniform over its list: ``indices[indptr[i] + floor(u * degree)]``.

    Returns ``(positive_idx, has_neighbour)``: int64 and bool arrays of shape (n,), n =
    len(indptr) - 1. Images without neighbours get themselves and ``has_neighbour`` False.
    """
    indptr = np.asarray(indptr, dtype=np.int64)
    indices = np.asarray(indices)
    n = indptr.size - 1
    deg = np.diff(indptr)
    has = deg > 0
    u = rng.random(n)
    off = np.minimum(np.floor(u * deg).astype(np.int64), np.maximum(deg - 1, 0))
    pos = np.arange(n, dtype=np.int64)
    if indices.size:
        pos[has] = indices[indptr[:-1][has] + off[has]]
    return pos, has
