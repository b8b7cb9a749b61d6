"""pipeline.pairs: exact radius pairs against an O(n^2) brute force, and the max_neighbours rule."""

from __future__ import annotations

import contextlib
from collections import defaultdict

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline import pairs as pairs_mod
from pipeline.pairs import _pair_keys, _rank_ok, find_pairs, neighbour_counts
from pipeline.schema import PAIRS

HSET = settings(max_examples=150, deadline=None)
CHUNKS = st.sampled_from([1, 3, 16, 1 << 18])  # 1 << 18: one strip; small: many strips
WORKERS = st.sampled_from([1, 3])


@contextlib.contextmanager
def chunk(size: int):
    old = pairs_mod._CHUNK
    pairs_mod._CHUNK = size
    try:
        yield
    finally:
        pairs_mod._CHUNK = old


# ---- reference implementations ----------------------------------------------------------------

def brute_force_pairs(xy, *, r_loc_m, r_min_m=0.0, dive=None, timestamp_s=None, depth_m=None,
                      cross_dive=True, use_depth=False, min_time_gap_s=0.0):
    """All pairs i < j by checking every one of them; returns (anchor, positive, distance)."""
    n = len(xy)
    i, j = np.triu_indices(n, 1)
    pts = np.column_stack([xy, depth_m]) if use_depth else np.asarray(xy, dtype=np.float64)
    d = np.sqrt(np.sum((pts[i] - pts[j]) ** 2, axis=1))
    keep = (d >= r_min_m) & (d <= r_loc_m)
    if not cross_dive and dive is not None:
        keep &= dive[i] == dive[j]
    if min_time_gap_s > 0:
        keep &= np.abs(timestamp_s[j] - timestamp_s[i]) >= min_time_gap_s
    return i[keep], j[keep], d[keep]


def reference_subsample(a, p, k, seed, ids):
    """max_neighbours rule written plainly: rank each image's pairs by (key, other id)."""
    keys = _pair_keys(seed, ids[a], ids[p])
    lists = defaultdict(list)
    for m, (u, v) in enumerate(zip(a.tolist(), p.tolist(), strict=True)):
        lists[u].append((int(keys[m]), int(ids[v]), m))
        lists[v].append((int(keys[m]), int(ids[u]), m))
    rank_ok = defaultdict(int)
    for entries in lists.values():
        for r, (_, _, m) in enumerate(sorted(entries)):
            rank_ok[m] += r < k
    keep = np.array([rank_ok[m] == 2 for m in range(len(a))], dtype=bool)
    return a[keep], p[keep]


def as_set(table: pa.Table) -> set[tuple[int, int]]:
    return set(zip(table["anchor"].to_pylist(), table["positive"].to_pylist(), strict=True))


def check_table(table: pa.Table) -> None:
    assert table.schema.equals(PAIRS)
    a = table["anchor"].to_numpy()
    p = table["positive"].to_numpy()
    assert np.all(a < p)
    key = a.astype(np.int64) * (1 << 32) + p
    assert np.all(np.diff(key) > 0)  # sorted by (anchor, positive), no duplicates


# ---- layouts ----------------------------------------------------------------------------------

@st.composite
def layouts(draw, max_n=300):
    """Positions on a 0.5 m grid (so distances at the radius are exact) in a few tens of metres,
    with coincident points, lines and clusters; dives, whole-second timestamps, depths."""
    n = draw(st.integers(0, max_n))
    extent = draw(st.integers(1, 80))  # grid cells per side
    kind = draw(st.sampled_from(["uniform", "line", "clusters"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    if kind == "uniform":
        g = rng.integers(0, extent + 1, (n, 2))
    elif kind == "line":  # a survey line: every point on the same x
        g = np.column_stack([np.full(n, 7), rng.integers(0, 4 * extent + 1, n)])
    else:
        centres = rng.integers(0, extent + 1, (4, 2))
        g = centres[rng.integers(0, 4, n)] + rng.integers(-3, 4, (n, 2))
    xy = g * 0.5 + np.array([500_000.0, 5_200_000.0])  # UTM-sized coordinates
    dive = rng.integers(0, 3, n)
    t = 1.7e9 + rng.integers(0, 120, n).astype(np.float64)
    depth = rng.integers(0, 8, n) * 0.5 + 100.0
    return xy, dive, t, depth


PARAMS = st.fixed_dictionaries({
    "r_loc_m": st.sampled_from([0.5, 1.0, 2.5, 5.0, 7.5]),
    "r_min_m": st.sampled_from([0.0, 0.5, 1.0, 2.5]),
    "cross_dive": st.booleans(),
    "use_depth": st.booleans(),
    "min_time_gap_s": st.sampled_from([0.0, 5.0, 30.0]),
})


# ---- exactness --------------------------------------------------------------------------------

@HSET
@given(layout=layouts(), params=PARAMS, chunk_size=CHUNKS, workers=WORKERS)
def test_matches_brute_force(layout, params, chunk_size, workers):
    xy, dive, t, depth = layout
    params["r_min_m"] = min(params["r_min_m"], params["r_loc_m"])
    with chunk(chunk_size):
        table = find_pairs(xy, dive=dive, timestamp_s=t, depth_m=depth, workers=workers,
                           **params)
    check_table(table)
    a, p, d = brute_force_pairs(xy, dive=dive, timestamp_s=t, depth_m=depth, **params)
    np.testing.assert_array_equal(table["anchor"].to_numpy(), a)
    np.testing.assert_array_equal(table["positive"].to_numpy(), p)
    np.testing.assert_array_equal(table["distance_m"].to_numpy(), d.astype(np.float32))
    np.testing.assert_array_equal(table["same_dive"].to_numpy(), dive[a] == dive[p])
    np.testing.assert_array_equal(table["dt_s"].to_numpy(), np.abs(t[p] - t[a]).astype(np.float32))


@HSET
@given(n=st.integers(0, 300), side=st.floats(1.0, 60.0), seed=st.integers(0, 2**32 - 1),
       r_loc=st.floats(0.1, 10.0), r_min_frac=st.sampled_from([0.0, 0.3]), chunk_size=CHUNKS)
def test_matches_brute_force_off_grid(n, side, seed, r_loc, r_min_frac, chunk_size):
    """Arbitrary float coordinates: equal away from the radii (a 1e-9 m band is not compared)."""
    rng = np.random.default_rng(seed)
    xy = rng.random((n, 2)) * side + np.array([3.1e5, 6.2e6])
    r_min = r_min_frac * r_loc
    with chunk(chunk_size):
        table = find_pairs(xy, r_loc_m=r_loc, r_min_m=r_min)
    check_table(table)
    a, p, d = brute_force_pairs(xy, r_loc_m=r_loc + 1e-9, r_min_m=max(r_min - 1e-9, 0.0))
    near = (np.abs(d - r_loc) < 1e-9) | (np.abs(d - r_min) < 1e-9)
    assert {(u, v) for u, v, x in zip(a, p, near, strict=True) if not x} <= as_set(table)
    assert as_set(table) <= set(zip(a.tolist(), p.tolist(), strict=True))


def test_boundaries_are_inclusive_and_coincident_points_pair():
    xy = np.array([[0.0, 0.0], [3.0, 4.0], [0.0, 0.0], [0.0, 0.0]])
    assert as_set(find_pairs(xy, r_loc_m=5.0)) == {(0, 1), (0, 2), (0, 3), (1, 2), (1, 3),
                                                   (2, 3)}
    assert as_set(find_pairs(xy, r_loc_m=5.0, r_min_m=5.0)) == {(0, 1), (1, 2), (1, 3)}
    assert as_set(find_pairs(xy, r_loc_m=4.999)) == {(0, 2), (0, 3), (2, 3)}
    assert as_set(find_pairs(xy, r_loc_m=5.0, r_min_m=1e-12)) == {(0, 1), (1, 2), (1, 3)}
    t = np.array([0.0, 10.0, 20.0, 9.0])
    assert as_set(find_pairs(xy, r_loc_m=5.0, timestamp_s=t, min_time_gap_s=10.0)) == {
        (0, 1), (0, 2), (1, 2), (2, 3)}


def test_columns_and_defaults():
    xy = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0]])
    table = find_pairs(xy, r_loc_m=1.5)
    check_table(table)
    assert table.to_pydict()["distance_m"] == [1.0]
    assert table["same_dive"].to_pylist() == [True]
    assert np.isnan(table["dt_s"].to_numpy()).all()
    table = find_pairs(xy, r_loc_m=3.0, dive=np.array([1, 1, 2]),
                       timestamp_s=np.array([100.0, 90.5, 300.0]), cross_dive=True)
    assert table.to_pydict() == {
        "anchor": [0, 0, 1], "positive": [1, 2, 2],
        "distance_m": pytest.approx([1.0, 2.0, np.sqrt(5.0)]),
        "same_dive": [True, False, False], "dt_s": [9.5, 200.0, 209.5]}
    assert find_pairs(xy, r_loc_m=3.0, dive=np.array([1, 1, 2]), cross_dive=False
                      ).to_pydict()["positive"] == [1]
    depth = np.array([0.0, 2.0, 0.0])
    assert as_set(find_pairs(xy, r_loc_m=2.0, depth_m=depth, use_depth=True)) == {(0, 2)}
    assert as_set(find_pairs(xy, r_loc_m=2.0, depth_m=depth)) == {(0, 1), (0, 2)}


@pytest.mark.parametrize("n", [0, 1])
def test_tiny_inputs(n):
    table = find_pairs(np.zeros((n, 2)), r_loc_m=5.0, max_neighbours=2)
    check_table(table)
    assert table.num_rows == 0
    assert neighbour_counts(table, n).tolist() == [0] * n


@pytest.mark.parametrize(("kwargs", "words"), [
    ({"xy": np.zeros((3, 3))}, "shape"),
    ({"xy": np.array([[0.0, np.nan], [1.0, 1.0]])}, "non-finite"),
    ({"r_loc_m": 0.0}, "r_loc_m"),
    ({"r_loc_m": 2.0, "r_min_m": 3.0}, "r_min_m"),
    ({"min_time_gap_s": 1.0}, "timestamp_s"),
    ({"use_depth": True}, "depth_m"),
    ({"use_depth": True, "depth_m": np.array([1.0, np.nan])}, "depth_m"),
    ({"dive": np.array([1, 2, 3])}, "dive"),
    ({"timestamp_s": np.array([0.0, np.inf])}, "timestamp_s"),
    ({"max_neighbours": 0}, "max_neighbours"),
    ({"max_neighbours": 2, "key_ids": np.array([4, 4])}, "distinct"),
])
def test_rejects_bad_input(kwargs, words):
    args = {"xy": np.zeros((2, 2)), "r_loc_m": 5.0, **kwargs}
    with pytest.raises(ValueError, match=words):
        find_pairs(args.pop("xy"), **args)


# ---- max_neighbours ---------------------------------------------------------------------------

@HSET
@given(layout=layouts(), params=PARAMS, k=st.integers(1, 40), seed=st.integers(-5, 2**40),
       chunk_size=CHUNKS, workers=WORKERS)
def test_max_neighbours_matches_reference(layout, params, k, seed, chunk_size, workers):
    xy, dive, t, depth = layout
    params["r_min_m"] = min(params["r_min_m"], params["r_loc_m"])
    kw = {"dive": dive, "timestamp_s": t, "depth_m": depth, **params}
    with chunk(chunk_size):
        full = find_pairs(xy, **kw)
        table = find_pairs(xy, max_neighbours=k, seed=seed, workers=workers, **kw)
    check_table(table)
    n = len(xy)
    assert neighbour_counts(table, n).max(initial=0) <= k
    assert as_set(table) <= as_set(full)
    a, p = reference_subsample(full["anchor"].to_numpy(), full["positive"].to_numpy(), k, seed,
                               np.arange(n))
    assert as_set(table) == set(zip(a.tolist(), p.tolist(), strict=True))
    # the columns of a kept pair are those of the same pair without the limit
    rows = {(u, v): i for i, (u, v) in enumerate(zip(full["anchor"].to_pylist(),
                                                     full["positive"].to_pylist(), strict=True))}
    idx = [rows[pair] for pair in zip(table["anchor"].to_pylist(), table["positive"].to_pylist(),
                                      strict=True)]
    for col in ("distance_m", "same_dive", "dt_s"):
        assert table[col].to_pylist() == full[col].take(pa.array(idx, pa.int64())).to_pylist()


def _dense(n=400, side=10.0, seed=1):
    return np.random.default_rng(seed).random((n, 2)) * side


def test_max_neighbours_deterministic_and_seeded():
    xy = _dense()
    t = np.arange(len(xy), dtype=np.float64)  # dt_s not NaN, so that Table.equals can hold
    full = find_pairs(xy, r_loc_m=5.0, timestamp_s=t)
    t0 = find_pairs(xy, r_loc_m=5.0, timestamp_s=t, max_neighbours=8, seed=0)
    assert t0.equals(find_pairs(xy, r_loc_m=5.0, timestamp_s=t, max_neighbours=8, seed=0))
    t1 = find_pairs(xy, r_loc_m=5.0, timestamp_s=t, max_neighbours=8, seed=1)
    assert as_set(t0) != as_set(t1)
    for tab in (t0, t1):
        check_table(tab)
        assert neighbour_counts(tab, len(xy)).max() <= 8
        assert as_set(tab) <= as_set(full)
        assert tab.num_rows > 0.5 * 8 * len(xy) / 2  # most images keep most of their k
    assert find_pairs(xy, r_loc_m=5.0, timestamp_s=t, max_neighbours=10**6).equals(full)


@HSET
@given(layout=layouts(max_n=200), k=st.integers(1, 5), seed=st.integers(0, 2**63),
       perm_seed=st.integers(0, 2**32 - 1), chunk_size=CHUNKS)
def test_max_neighbours_independent_of_row_order(layout, k, seed, perm_seed, chunk_size):
    xy = layout[0]
    n = len(xy)
    ids = np.random.default_rng(perm_seed).permutation(10 * n + 1)[:n] * 7 - 3  # any distinct
    perm = np.random.default_rng(perm_seed + 1).permutation(n)
    base = find_pairs(xy, r_loc_m=2.5, max_neighbours=k, seed=seed, key_ids=ids)
    with chunk(chunk_size):
        moved = find_pairs(xy[perm], r_loc_m=2.5, max_neighbours=k, seed=seed, key_ids=ids[perm])
    back = {tuple(sorted((int(perm[u]), int(perm[v])))) for u, v in as_set(moved)}
    assert back == as_set(base)


@settings(max_examples=100, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), span=st.integers(1, 300), m=st.integers(0, 3000),
       k=st.integers(1, 50), ties=st.sampled_from(["none", "top-bits", "full"]))
def test_rank_ok_matches_plain_ranking(seed, span, m, k, ties):
    """The fast path (packed top key bits, quantile prefilter) and the exact fallback for keys
    that tie agree with ranking by (image, key, other id) directly."""
    rng = np.random.default_rng(seed)
    off = rng.integers(0, span, m)
    if ties == "none":
        keys = rng.integers(0, 2**63, m, dtype=np.int64).astype(np.uint64) * np.uint64(2)
    else:
        keys = rng.integers(0, 4, m).astype(np.uint64) << np.uint64(60)
        if ties == "top-bits":  # equal in the bits the fast path keeps, distinct below
            keys |= rng.permutation(m).astype(np.uint64)
    other = rng.permutation(m).astype(np.int64)
    ok = _rank_ok(k, off, keys, span, lambda: other)
    ranks = np.empty(m, np.int64)
    groups = defaultdict(list)
    for e in range(m):
        groups[int(off[e])].append((int(keys[e]), int(other[e]), e))
    for entries in groups.values():
        for r, (_, _, e) in enumerate(sorted(entries)):
            ranks[e] = r
    np.testing.assert_array_equal(ok, ranks < k)


def test_pair_keys_symmetric_and_seeded():
    a = np.arange(1000)
    b = a[::-1]
    k0 = _pair_keys(0, a, b)
    assert k0.dtype == np.uint64
    np.testing.assert_array_equal(k0, _pair_keys(0, b, a))
    assert np.unique(k0).size == 500  # (a, b) and (b, a) collide, nothing else does
    assert not np.array_equal(k0, _pair_keys(1, a, b))
    np.testing.assert_array_equal(_pair_keys(-1, a, b), _pair_keys(2**64 - 1, a, b))


def test_neighbour_counts():
    table = find_pairs(np.array([[0.0, 0.0], [1.0, 0.0], [2.0, 0.0], [9.0, 9.0]]), r_loc_m=1.0)
    assert neighbour_counts(table, 4).tolist() == [1, 2, 1, 0]
