"""Train/test splits for the habitat probes, and few-label subsets of the training side.

Images closer than ``r_loc`` were positives of each other during training (and overlap on the
seafloor), so a split that puts one on each side leaks: the probe is tested on a view of an image
it was trained on. :func:`blocked_split` therefore assigns whole square blocks of the survey to
the test side, then drops from the training side every image within ``r_loc`` of a test image
(a neighbour pair can still straddle a block border). The guarantee is exact: after the split no
training image lies within ``r_loc`` of a test image.

:func:`random_split` ignores positions; it is only for comparison and warns when used.

:func:`dive_split` is the real use, "label some dives, map the others": the test side is whole
dives (another day, other water), the training side the rest. Images of a revisit overlap
images of the dive it revisits, on the other side; that is the point of the split (the same
seafloor under other conditions), so no buffer is applied.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from sklearn.neighbors import KDTree

DEFAULT_MIN_BLOCK_M = 20.0


def default_block_m(r_loc: float) -> float:
    """Block side: at least twice ``r_loc`` and at least 20 m."""
    return max(2.0 * float(r_loc), DEFAULT_MIN_BLOCK_M)


@dataclass
class Split:
    """Indices into the arrays that were split (sorted), and what the split cost."""

    train: np.ndarray  # int64
    test: np.ndarray  # int64
    n_buffer: int = 0  # training-side images dropped for being within r_loc of a test image
    blocks: np.ndarray | None = None  # int64 (n,) block id of every image (blocked splits)

    def __iter__(self):  # train_idx, test_idx = split
        return iter((self.train, self.test))


def block_ids(xy: np.ndarray, block_m: float, seed: int = 0) -> np.ndarray:
    """The id (0..B-1) of the square block of side ``block_m`` holding each of the (n, 2)
    positions, on a grid shifted by a random offset in [0, block_m)^2 drawn from ``seed``."""
    xy = np.asarray(xy, dtype=np.float64)
    if xy.ndim != 2 or xy.shape[1] != 2:
        raise ValueError(f"xy must be (n, 2) metres, got {xy.shape}")
    if not block_m > 0:
        raise ValueError(f"block_m must be positive, got {block_m}")
    if not len(xy):
        return np.zeros(0, dtype=np.int64)
    offset = np.random.default_rng((seed, 101)).uniform(0.0, block_m, size=2)
    cell = np.floor((xy - xy.min(0) + offset) / block_m).astype(np.int64)
    _, ids = np.unique(cell, axis=0, return_inverse=True)
    return ids.reshape(-1).astype(np.int64)


def buffer_mask(xy_train: np.ndarray, xy_test: np.ndarray, r_loc: float) -> np.ndarray:
    """True for each training position within ``r_loc`` (inclusive) of some test position."""
    xy_train = np.asarray(xy_train, dtype=np.float64).reshape(-1, 2)
    xy_test = np.asarray(xy_test, dtype=np.float64).reshape(-1, 2)
    if not len(xy_train) or not len(xy_test) or r_loc < 0:
        return np.zeros(len(xy_train), dtype=bool)
    dist, _ = KDTree(xy_test).query(xy_train, k=1)
    # a hair of slack so that a pair at exactly r_loc (float rounding) counts as a neighbour
    return dist[:, 0] <= r_loc * (1 + 1e-9) + 1e-9


def _greedy_blocks(order: np.ndarray, counts: np.ndarray, target: float) -> np.ndarray:
    """Test blocks: visit blocks in ``order``, take each unless it would overshoot the target
    by more than it closes the gap, stop once the target is reached."""
    chosen = np.zeros(len(counts), dtype=bool)
    total = 0
    for b in order:
        if total >= target:
            break
        if total + counts[b] - target < target - total:
            chosen[b] = True
            total += counts[b]
    if chosen.all():  # one block holds (nearly) everything: keep something to train on
        chosen[order[-1]] = False
    return chosen


def blocked_split(xy: np.ndarray, block_m: float, test_fraction: float = 0.3, seed: int = 0,
                  r_loc: float | None = None, labels: np.ndarray | None = None,
                  tries: int = 64) -> Split:
    """Spatially blocked split of the (n, 2) positions ``xy`` (metres).

    Blocks of side ``block_m`` (grid offset drawn from ``seed``) are visited in a seeded random
    order and assigned to the test side until it holds ``test_fraction`` of the images (a block
    that would overshoot the target by more than it closes the gap is passed over). With
    ``labels`` (n,), ``tries`` seeded orders are drawn and the one whose test side comes closest
    to ``test_fraction`` of every class (against the training side after the buffer) is kept
    (mean absolute deviation over classes plus the overall deviation), so that a rare habitat
    that lives in a few blocks is not left wholly on one side. Every other image is on the
    training side, except those within ``r_loc`` (default ``block_m / 2``) of a test image,
    which are dropped (``Split.n_buffer``).
    Returns a :class:`Split` (unpacks as ``train_idx, test_idx``).
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    xy = np.asarray(xy, dtype=np.float64)
    n = len(xy)
    if r_loc is None:
        r_loc = block_m / 2.0
    if block_m < 2.0 * r_loc:
        warnings.warn(f"block side {block_m:g} m is under 2 * r_loc = {2 * r_loc:g} m; the "
                      "buffer will drop many training images", stacklevel=2)
    ids = block_ids(xy, block_m, seed)
    if n == 0:
        empty = np.zeros(0, dtype=np.int64)
        return Split(empty, empty, 0, ids)
    n_blocks = int(ids.max()) + 1
    counts = np.bincount(ids, minlength=n_blocks)
    rng = np.random.default_rng((seed, 202))
    target = test_fraction * n
    is_test_block = _greedy_blocks(rng.permutation(n_blocks), counts, target)
    if labels is not None and tries > 1:
        labels = np.asarray(labels, dtype=object)
        if len(labels) != n:
            raise ValueError(f"labels must have one entry per position ({n}), got {len(labels)}")
        _, cls = np.unique(labels.astype(str), return_inverse=True)
        cls = cls.reshape(-1)
        n_cls = int(cls.max()) + 1

        def cost(chosen: np.ndarray) -> float:
            # share of each class on the test side, counting the training side after the buffer
            t_mask = chosen[ids]
            tr = np.flatnonzero(~t_mask)
            kept = tr[~buffer_mask(xy[tr], xy[t_mask], r_loc)]
            n_te = np.bincount(cls[t_mask], minlength=n_cls)
            n_tr = np.bincount(cls[kept], minlength=n_cls)
            share = n_te / np.maximum(n_te + n_tr, 1)
            return float(np.abs(share - test_fraction).mean()
                         + abs(t_mask.sum() / n - test_fraction))

        best = cost(is_test_block)
        seen = {is_test_block.tobytes()}
        for _ in range(tries - 1):
            cand = _greedy_blocks(rng.permutation(n_blocks), counts, target)
            if cand.tobytes() in seen:
                continue
            seen.add(cand.tobytes())
            c = cost(cand)
            if c < best:
                best, is_test_block = c, cand
    test = np.flatnonzero(is_test_block[ids])
    train = np.flatnonzero(~is_test_block[ids])
    drop = buffer_mask(xy[train], xy[test], r_loc)
    return Split(train[~drop], test, int(drop.sum()), ids)


def random_split(n: int, test_fraction: float = 0.3, seed: int = 0) -> Split:
    """A random split of ``n`` images, ignoring where they are. It leaks: overlapping neighbours
    end up on both sides, so scores are optimistic; a warning says so."""
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    warnings.warn("random train/test split: images within r_loc of each other (overlapping "
                  "views) fall on both sides, so the scores are optimistic; use the spatially "
                  "blocked split for reported numbers", stacklevel=2)
    perm = np.random.default_rng((seed, 303)).permutation(n)
    n_test = min(n - 1, max(1, int(round(test_fraction * n)))) if n > 1 else n
    return Split(np.sort(perm[n_test:]), np.sort(perm[:n_test]), 0, None)


def few_label_subset(train_idx: np.ndarray, labels: np.ndarray, per_class: int | None,
                     seed: int = 0) -> np.ndarray:
    """At most ``per_class`` indices of each class drawn (seeded) from ``train_idx``; all of a
    class when it has fewer, all of ``train_idx`` when ``per_class`` is None. ``labels`` is
    indexed by the values of ``train_idx``. Returns sorted indices."""
    train_idx = np.asarray(train_idx, dtype=np.int64)
    if per_class is None:
        return np.sort(train_idx)
    if per_class < 1:
        raise ValueError(f"per_class must be >= 1 or None, got {per_class}")
    labels = np.asarray(labels, dtype=object)
    rng = np.random.default_rng((seed, 404, per_class))
    lab = labels[train_idx]
    picked = []
    for cls in sorted(set(lab.tolist()), key=str):
        members = train_idx[lab == cls]
        if len(members) > per_class:
            members = rng.choice(members, per_class, replace=False)
        picked.append(members)
    if not picked:
        return np.zeros(0, dtype=np.int64)
    return np.sort(np.concatenate(picked))


def dive_split(dives: np.ndarray, test_fraction: float = 0.3, seed: int = 0) -> Split:
    """Whole dives on the test side: in an order drawn from ``seed``, dives are added to it
    until it holds at least ``test_fraction`` of the images (always at least one dive, and at
    least one dive stays for training)."""
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    dives = np.asarray(dives, dtype=object)
    names = sorted({str(d) for d in dives})
    if len(names) < 2:
        raise ValueError(f"a cross-dive split needs at least two dives; the images come from "
                         f"{len(names)} ({', '.join(names) or 'none'})")
    order = np.random.default_rng((seed, 404)).permutation(len(names))
    key = np.array([str(d) for d in dives], dtype=object)
    test_dives: list[str] = []
    for k in order[:-1]:
        test_dives.append(names[k])
        if np.isin(key, test_dives).mean() >= test_fraction:
            break
    on_test = np.isin(key, test_dives)
    return Split(np.flatnonzero(~on_test), np.flatnonzero(on_test), 0, None)
