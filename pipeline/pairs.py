"""Positive pairs: every two images within a radius of each other, found exactly.

`find_pairs` runs an exact radius search with scipy's cKDTree over projected positions and
returns one row per unordered pair (schema `pipeline.schema.PAIRS`).

Semantics
- distance: Euclidean in the projected plane, sqrt(dx*dx + dy*dy), or in 3-D with depth,
  sqrt(dx*dx + dy*dy + dz*dz), evaluated in float64 with dx = x[anchor] - x[positive];
  the stored distance_m is that value rounded to float32.
- both radii are inclusive: a pair is a candidate when r_min_m <= distance <= r_loc_m, so
  coincident images (distance 0) pair unless r_min_m > 0.
- cross_dive=False keeps only pairs from the same dive; min_time_gap_s keeps only pairs with
  |t[positive] - t[anchor]| >= min_time_gap_s (inclusive).
- dt_s = |t[positive] - t[anchor]| (absolute time gap, seconds), NaN when no timestamps are given;
  same_dive is True for every pair when no dives are given.
- max_neighbours=k: every candidate pair gets a pseudo-random 64-bit key, a splitmix64 hash of
  (seed, smaller id, larger id) of its two images (ids: `key_ids`, the row index by default).
  Each image ranks its candidate pairs by (key, id of the other image); a pair is kept iff its
  rank is < k for both of its images. Every image then has at most k pairs; the result depends
  only on the set of candidate pairs and the ids, never on the order in which they are found.
  Pass stable ids (e.g. a hash of image_id) to make it independent of row order as well.

Memory and speed: the search runs over strips of points sorted along the longer axis, each with
a margin of r_loc_m behind it, and the max_neighbours ranking streams along with the strips, so
besides the output only a few strips' candidate pairs are held at a time. The ranking counts
each image's pair keys into buckets of their top bits and sorts only the few entries that share
the bucket holding rank k. `workers` > 1 searches strips in threads (cKDTree and numpy release
the GIL); the result does not depend on it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pyarrow as pa
from scipy.spatial import cKDTree

from pipeline.schema import PAIRS

__all__ = ["find_pairs", "neighbour_counts"]

# points per strip; a module attribute so that tests can force many small strips
_CHUNK = 1 << 15
# the tree is queried slightly beyond r_loc_m and the result filtered with our own distances,
# so that the boundary is decided by one formula, exactly as documented
_R_SLACK = 1e-9

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


def _mix64(z: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser, in place on a uint64 array (wrapping arithmetic)."""
    z ^= z >> np.uint64(30)
    z *= _M1
    z ^= z >> np.uint64(27)
    z *= _M2
    z ^= z >> np.uint64(31)
    return z


def _pair_keys(seed: int, id_a: np.ndarray, id_b: np.ndarray) -> np.ndarray:
    """Pseudo-random uint64 key of each pair, symmetric in its two ids."""
    a = np.asarray(id_a).astype(np.uint64)
    b = np.asarray(id_b).astype(np.uint64)
    lo, hi = np.minimum(a, b), np.maximum(a, b)
    s = np.uint64(int(seed) & 0xFFFFFFFFFFFFFFFF)
    with np.errstate(over="ignore"):
        z = _mix64(lo * _GOLDEN + s)
        z += hi
        z ^= s * _M2
        return _mix64(z)


def _column(name: str, values, n: int, dtype) -> np.ndarray:
    arr = np.asarray(values)
    if arr.shape != (n,):
        raise ValueError(f"{name} must have shape ({n},), got {arr.shape}")
    return arr.astype(dtype, copy=False)


def _rank_ok(k: int, off: np.ndarray, keys: np.ndarray, span: int,
             other: Callable[[], np.ndarray]) -> np.ndarray:
    """For entries (image offset in [0, span), pair key): is the entry's rank < k among its
    image's entries, ordered by (key, id of the other image)? `other()` gives those ids; it is
    only needed where two entries of an image share the histogram bucket of rank k."""
    m = off.size
    g = np.bincount(off, minlength=span)
    big = g > k
    nbig = int(np.count_nonzero(big))
    if nbig == 0:
        return np.ones(m, bool)
    # Histogram each image's keys over 2**bits equal buckets of their top bits (about half as
    # many buckets as an image has entries). The entry of rank k lies in bucket t of its image:
    # entries in lower buckets are kept, those in higher ones are not, and only when bucket t
    # holds several entries are they ranked exactly, by sorting (image, key, other id).
    bits = int(np.clip(np.ceil(np.log2(g[big].mean())) - 1, 1, 12))
    nb = 1 << bits
    sel = None
    if span * nb > 4 * off.size + (1 << 16):  # sparse: histogram only images with > k entries
        sel = np.flatnonzero(big[off])
        off = (np.cumsum(big) - 1)[off[sel]]
        keys, span = keys[sel], nbig
    b = (keys >> np.uint64(64 - bits)).astype(np.int16)
    cell = off.astype(np.intp)
    cell *= nb
    cell += b
    cum = np.bincount(cell, minlength=span * nb).reshape(span, nb)
    del cell
    np.cumsum(cum, axis=1, out=cum)
    t = (cum <= k).sum(axis=1)  # bucket holding rank k; nb where the image has <= k entries
    rows = np.arange(span)
    below = np.where(t > 0, cum[rows, np.maximum(t - 1, 0)], 0)  # entries in lower buckets
    tied = (t < nb) & (cum[rows, np.minimum(t, nb - 1)] - below > 1)
    del cum
    # kept: buckets below thr; a lone entry in bucket t has rank below <= k, kept iff below < k
    thr = (t + (~tied & (below < k))).astype(np.int16)
    tb = thr[off]
    ok = b < tb
    cand = np.flatnonzero(b == tb)  # bucket t of tied images (and some not kept elsewhere)
    del b, tb
    edge = cand[tied[off[cand]]]
    if edge.size:
        e_off = off[edge]
        # sort by (image, key): the image in the high bits, then the key's bits below the
        # bucket's (equal within the bucket) as far as they fit; by (image, key, other id) when
        # two packed values tie
        ob = max(int(span - 1).bit_length(), 1)
        packed = e_off.astype(np.uint64) << np.uint64(64 - ob)
        packed |= (keys[edge] << np.uint64(bits)) >> np.uint64(ob)
        order = np.argsort(packed)
        packed = packed[order]
        if np.any(packed[1:] == packed[:-1]):
            o = other()
            o = o[edge] if sel is None else o[sel[edge]]
            order = np.lexsort((o, keys[edge], e_off))
        del packed
        e = e_off[order]
        first = np.r_[True, e[1:] != e[:-1]]
        starts = np.maximum.accumulate(np.where(first, np.arange(e.size), 0))
        ok[edge[order]] = (np.arange(e.size) - starts) < (k - below[e])
    if sel is None:
        return ok
    out = np.ones(m, bool)
    out[sel] = ok
    return out


class _Ranker:
    """Streams the max_neighbours rule along the strips.

    Pending pairs wait until both images are complete (no later strip can add a pair to them);
    an image's ranks are computed once, over all its pairs, when it becomes complete."""

    def __init__(self, k: int, ids: np.ndarray | None, pos: np.ndarray):
        self.k, self.ids, self.pos = k, ids, pos  # ids None: the row index is the id
        self.a = np.empty(0, np.int32)
        self.p = np.empty(0, np.int32)
        self.key = np.empty(0, np.uint64)
        self.ok_a = np.empty(0, np.int8)  # 0 not yet ranked, 1 rank >= k, 2 rank < k
        self.ok_p = np.empty(0, np.int8)
        self.done = 0  # images at sorted positions < done are complete

    def add(self, a: np.ndarray, p: np.ndarray, key: np.ndarray,
            complete_to: int) -> tuple[np.ndarray, ...]:
        """Add candidates (rows a, p and their pair keys); images at sorted positions
        < complete_to are now complete. Returns the decided pairs that are kept."""
        old = self.a.size
        if old:
            a = np.concatenate([self.a, a])
            p = np.concatenate([self.p, p])
            key = np.concatenate([self.key, key])
        ok_a = np.zeros(a.size, np.int8)
        ok_p = np.zeros(a.size, np.int8)
        ok_a[:old], ok_p[:old] = self.ok_a, self.ok_p
        lo, hi = self.done, complete_to
        pos_a, pos_p = self.pos[a], self.pos[p]
        sel_a = np.flatnonzero((pos_a >= lo) & (pos_a < hi))
        sel_p = np.flatnonzero((pos_p >= lo) & (pos_p < hi))
        if sel_a.size + sel_p.size:
            off = np.concatenate([pos_a[sel_a], pos_p[sel_p]])
            off -= lo
            del pos_a, pos_p

            def other() -> np.ndarray:
                rows = np.concatenate([p[sel_a], a[sel_p]])
                return rows if self.ids is None else self.ids[rows]

            ok = _rank_ok(self.k, off, np.concatenate([key[sel_a], key[sel_p]]), hi - lo, other)
            del off
            ok_a[sel_a] = ok[:sel_a.size].view(np.int8) + 1
            ok_p[sel_p] = ok[sel_a.size:].view(np.int8) + 1
        self.done = hi
        both = ok_a * ok_p  # 0: undecided, 4: kept (ranks < k for both images)
        keep = both == 4
        out = a[keep], p[keep]
        rest = both == 0
        self.a, self.p, self.key = a[rest], p[rest], key[rest]
        self.ok_a, self.ok_p = ok_a[rest], ok_p[rest]
        return out


def _ordered(fn: Callable[[int], object], count: int, workers: int) -> Iterator:
    """fn(0), fn(1), ... in order, up to `workers` of them computed ahead in threads."""
    if workers <= 1:
        yield from (fn(i) for i in range(count))
        return
    with ThreadPoolExecutor(workers) as ex:
        futures: deque = deque()
        for i in range(count):
            futures.append(ex.submit(fn, i))
            if len(futures) > workers:
                yield futures.popleft().result()
        while futures:
            yield futures.popleft().result()


def _dist(cols: list[np.ndarray], i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """sqrt(sum over coordinates of (c[i] - c[j])**2), float64, in that order of operations."""
    d2 = np.zeros(i.size)
    for c in cols:
        dc = c.take(i)
        dc -= c.take(j)
        dc *= dc
        d2 += dc
    return np.sqrt(d2, out=d2)


def find_pairs(
    xy: np.ndarray,
    *,
    r_loc_m: float,
    r_min_m: float = 0.0,
    dive: np.ndarray | None = None,
    timestamp_s: np.ndarray | None = None,
    depth_m: np.ndarray | None = None,
    cross_dive: bool = True,
    use_depth: bool = False,
    min_time_gap_s: float = 0.0,
    max_neighbours: int | None = None,
    seed: int = 0,
    key_ids: np.ndarray | None = None,
    workers: int = 1,
) -> pa.Table:
    """All pairs of images with r_min_m <= distance <= r_loc_m (see the module docstring).

    xy: (n, 2) projected positions in metres (easting, northing), row i is image i.
    dive: (n,) integer dive codes; timestamp_s: (n,) float unix seconds; depth_m: (n,) metres,
    needed when use_depth. key_ids: (n,) distinct integers identifying the images for the
    max_neighbours keys (default: the row index). workers: threads for the search.
    Returns a table with schema PAIRS, anchor < positive, sorted by (anchor, positive).
    """
    pts = np.asarray(xy, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] != 2:
        raise ValueError(f"xy must have shape (n, 2), got {pts.shape}")
    n = pts.shape[0]
    if n >= 2**31 - 1:
        raise ValueError(f"too many images for int32 indices: {n}")
    if not np.isfinite(pts).all():
        raise ValueError("xy has non-finite values")
    r_loc_m, r_min_m, min_time_gap_s = float(r_loc_m), float(r_min_m), float(min_time_gap_s)
    if not (np.isfinite(r_loc_m) and r_loc_m > 0):
        raise ValueError(f"r_loc_m must be a positive number, got {r_loc_m}")
    if not 0.0 <= r_min_m <= r_loc_m:
        raise ValueError(f"r_min_m must be in [0, r_loc_m={r_loc_m}], got {r_min_m}")
    if not min_time_gap_s >= 0.0:
        raise ValueError(f"min_time_gap_s must be >= 0, got {min_time_gap_s}")
    if max_neighbours is not None and int(max_neighbours) < 1:
        raise ValueError(f"max_neighbours must be >= 1 or None, got {max_neighbours}")

    dive_c = None if dive is None else _column("dive", dive, n, np.int64)
    t = None
    if timestamp_s is not None:
        t = _column("timestamp_s", timestamp_s, n, np.float64)
        if not np.isfinite(t).all():
            raise ValueError("timestamp_s has non-finite values")
    elif min_time_gap_s > 0:
        raise ValueError("min_time_gap_s > 0 needs timestamp_s")
    cols = [np.ascontiguousarray(pts[:, 0]), np.ascontiguousarray(pts[:, 1])]
    if use_depth:
        if depth_m is None:
            raise ValueError("use_depth=True needs depth_m")
        cols.append(_column("depth_m", depth_m, n, np.float64))
        if not np.isfinite(cols[2]).all():
            raise ValueError("depth_m has non-finite values; 3-D distances need every depth")
    ids = None
    if max_neighbours is not None:
        ids = np.arange(n, dtype=np.int64) if key_ids is None else _column(
            "key_ids", key_ids, n, np.int64)
        if key_ids is not None and np.unique(ids).size != n:
            raise ValueError("key_ids must be distinct")
    del pts

    # strips along the longer axis: each pair is found once, in the strip of its endpoint that
    # comes later in that order, among the strip's points and those up to r_loc_m behind it
    axis = int(np.argmax([np.ptp(c) for c in cols[:2]])) if n else 0
    order = np.argsort(cols[axis], kind="stable").astype(np.int32)
    xs = cols[axis][order]
    r_q = r_loc_m * (1.0 + _R_SLACK)
    chunk = max(int(_CHUNK), 1)
    starts = list(range(0, n, chunk))
    lows = [int(np.searchsorted(xs, xs[s] - r_q, side="left")) for s in starts]
    del xs

    def strip(i: int) -> tuple[np.ndarray, np.ndarray]:
        s0, lo = starts[i], lows[i]
        rows = order[lo:min(s0 + chunk, n)]
        local = [c[rows] for c in cols]
        tree = cKDTree(np.column_stack(local), balanced_tree=False, compact_nodes=True)
        ij = tree.query_pairs(r_q, output_type="ndarray")
        del tree
        ij = ij[ij[:, 1] >= s0 - lo]  # query_pairs gives i < j: j is the later endpoint
        u, v = np.ascontiguousarray(ij[:, 0]), np.ascontiguousarray(ij[:, 1])
        del ij
        d = _dist(local, u, v)
        keep = (d <= r_loc_m) & (d >= r_min_m)
        del d, local
        u, v = rows[u[keep]], rows[v[keep]]
        a, p = np.minimum(u, v), np.maximum(u, v)
        del u, v
        if not cross_dive and dive_c is not None:
            keep = dive_c[a] == dive_c[p]
            a, p = a[keep], p[keep]
        if min_time_gap_s > 0:
            keep = np.abs(t[p] - t[a]) >= min_time_gap_s
            a, p = a[keep], p[keep]
        return a, p

    def packed(a: np.ndarray, p: np.ndarray) -> np.ndarray:  # sorted anchor * n + positive
        comp = a.astype(np.int64)
        comp *= n
        comp += p
        comp.sort()
        return comp

    ranker = None
    if ids is not None:
        pos = np.empty(n, np.int32)
        pos[order] = np.arange(n, dtype=np.int32)
        ranker = _Ranker(int(max_neighbours), None if key_ids is None else ids, pos)

        def found(i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
            a, p = strip(i)  # and the pair keys, in the worker thread
            return a, p, _pair_keys(seed, a if key_ids is None else ids[a],
                                    p if key_ids is None else ids[p])
    else:
        def found(i: int) -> np.ndarray:
            return packed(*strip(i))  # in the worker thread

    runs: list[np.ndarray] = []
    for i, res in enumerate(_ordered(found, len(starts), max(int(workers), 1))):
        if ranker is not None:
            res = packed(*ranker.add(*res, lows[i + 1] if i + 1 < len(starts) else n))
        runs.append(res)

    m = sum(r.size for r in runs)
    comp = np.empty(m, np.int64)
    at = 0
    for j in range(len(runs)):  # copy run by run, freeing each as it goes
        comp[at:at + runs[j].size] = runs[j]
        at += runs[j].size
        runs[j] = None
    if len(runs) > 1:
        comp.sort(kind="stable")  # timsort: merges the sorted runs
    a = np.empty(m, np.int32)
    p = np.empty(m, np.int32)
    dist = np.empty(m, np.float32)
    for b in range(0, m, 1 << 20):  # blocks keep the float64 temporaries small
        blk = slice(b, b + (1 << 20))
        a[blk], p[blk] = np.divmod(comp[blk], n)
        dist[blk] = _dist(cols, a[blk], p[blk])
    del comp
    same = np.ones(m, bool) if dive_c is None else dive_c[a] == dive_c[p]
    dt = np.full(m, np.nan, np.float32) if t is None else np.abs(t[p] - t[a]).astype(np.float32)
    return pa.Table.from_arrays(
        [pa.array(a, pa.int32()), pa.array(p, pa.int32()), pa.array(dist, pa.float32()),
         pa.array(same, pa.bool_()), pa.array(dt, pa.float32())],
        schema=PAIRS,
    )


def neighbour_counts(pairs: pa.Table, n: int) -> np.ndarray:
    """Number of pairs of each of the n images (as anchor or positive), int64 of shape (n,)."""
    a = pairs.column("anchor").to_numpy()
    p = pairs.column("positive").to_numpy()
    return np.bincount(a, minlength=n) + np.bincount(p, minlength=n)
