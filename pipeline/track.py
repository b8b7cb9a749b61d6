"""Checks of a dive's track: position jumps, time faults and degenerate navigation.

A pose is judged against its own neighbours in time, never against a dive-wide statistic: a
towed camera that drifts at 0.1 m/s and then speeds up to 1 m/s is one smooth track. Two
bounds describe what the vehicle can do (:class:`MotionLimits`): its top speed, and its
acceleration from the speed it was moving at around the pose; a third is the noise of the
position fixes (GPS, USBL), which no step shorter than it ever exceeds.

* :func:`pose_jumps` flags poses that most of their neighbours could not have reached (a spike
  or a short burst off the track), and longer bursts that leave the track and come back. A step
  after which the track simply continues from the new place (a USBL re-lock, a GPS correction)
  is not a jump: both sides are kept, and :func:`position_steps` counts such steps for the
  report; but a lone first or last pose beyond such a step is a jump, as nothing after it
  confirms the new place. Poses logged at the same time (the cameras of a stereo rig) are
  judged together.
* :func:`time_faults` finds poses whose *time* is wrong rather than their position: items
  whose time breaks the order of the file while the file's order is the smooth track, and
  poses that share one time but lie apart.
* :func:`degenerate` says what makes a dive's navigation unfit for location positives: a track
  that does not move while the images span minutes, a position repeated for a long stretch (a
  fix that stopped updating), depths above the surface, altitudes or depths out of range.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

import numpy as np

NEIGHBOURS = 5  # poses each side that a pose is judged against
STATIONARY_S = 120.0  # images spanning this long without moving: a track that does not move
STATIONARY_M = 1.0
REPEATED_S = 60.0  # one position repeated for this long: the fix stopped updating
ABOVE_SURFACE_M = 1.0  # depths more than this above the surface (negative depth)
MAX_DEPTH_M = 11_000.0  # the deepest ocean
MAX_ALTITUDE_M = 1_000.0  # far beyond any camera's reach of the seabed
_BLOCK = 1 << 20  # poses judged at once (bounds memory on 10M-row vehicle logs)


@dataclass(frozen=True)
class MotionLimits:
    """What the vehicle can do, and how noisy its position fixes are (catalog ``nav_checks``)."""

    max_speed_m_s: float = 3.0  # an AUV surveys at 0.5-2 m/s, a towed camera and an ROV slower
    max_accel_m_s2: float = 1.0  # change of speed per second around a pose
    position_noise_m: float = 2.0  # fix-to-fix noise that is never a jump (GPS, USBL)

    def reach(self, dt: np.ndarray, speed: np.ndarray) -> np.ndarray:
        """How far the vehicle can be after ``dt`` seconds when moving at ``speed`` around it."""
        dt = np.abs(dt)
        local = speed * dt + 0.5 * self.max_accel_m_s2 * dt * dt
        return np.minimum(self.max_speed_m_s * dt, local) + self.position_noise_m


def _windows(n: int, k: int, rows: np.ndarray) -> np.ndarray:
    """Indices of the up to 2k neighbours of each of ``rows`` (shifted inward at the ends)."""
    w = min(2 * k, n - 1)
    start = np.clip(rows - k, 0, n - 1 - w)
    idx = start[:, None] + np.arange(w + 1)[None, :]
    own = idx == rows[:, None]  # w + 1 candidates, one of them the pose itself
    return idx[~own].reshape(len(rows), w)


def _local_speed(t: np.ndarray, x: np.ndarray, y: np.ndarray, k: int) -> np.ndarray:
    """Median speed over the steps around each pose: robust to the pose being a jump."""
    n = len(t)
    if n < 2:
        return np.zeros(n)
    dt = np.diff(t)
    step = np.hypot(np.diff(x), np.diff(y))
    speed = np.where(dt > 0, step / np.where(dt > 0, dt, 1.0), np.nan)
    m = len(speed)
    w = min(2 * k, m)
    start = np.clip(np.arange(n) - k, 0, m - w)
    out = np.zeros(n)
    with np.errstate(all="ignore"):
        for a in range(0, n, _BLOCK):
            win = speed[start[a:a + _BLOCK, None] + np.arange(w)[None, :]]
            out[a:a + _BLOCK] = np.nanmedian(win, axis=1)
    return np.nan_to_num(out)


def _unique_times(t: np.ndarray, x: np.ndarray, y: np.ndarray):
    """Poses logged at the same time (``t`` sorted), as one representative each: the mean of
    the members (the cameras of one rig; members further apart are time faults)."""
    times, start, inverse = np.unique(t, return_index=True, return_inverse=True)
    if len(times) == len(t):
        return times, x.copy(), y.copy(), inverse
    count = np.diff(np.append(start, len(t)))
    return (times, np.add.reduceat(x, start) / count, np.add.reduceat(y, start) / count,
            inverse)


def pose_jumps(t: np.ndarray, x: np.ndarray, y: np.ndarray,
               limits: MotionLimits = MotionLimits()) -> np.ndarray:
    """Mask of poses off the track: times in seconds, positions in metres (any order).

    1. poses sharing one time are judged as one (their median position);
    2. a pose is a jump when more than half of its up to ``2 * NEIGHBOURS`` neighbours in time
       could not have reached it (:meth:`MotionLimits.reach`, at the local speed);
    3. of the rest, a run of poses between two impossible steps is a burst when the track
       before it and after it join up without it and it is shorter than both sides;
    4. the first or last pose is a jump when the step to it is impossible and the track goes on
       smoothly without it (:func:`_lone_ends`): judged by the step between consecutive fixes
       (distance over the time between them against what the vehicle reaches), not by a fixed
       distance.
    """
    t, x, y = (np.asarray(a, dtype=np.float64) for a in (t, x, y))
    n_all = len(t)
    out = np.zeros(n_all, dtype=bool)
    if n_all < 3:
        return out
    order = np.argsort(t, kind="stable")
    times, rx, ry, inverse = _unique_times(t[order], x[order], y[order])
    n = len(times)
    if n < 3:
        return out
    speed = _local_speed(times, rx, ry, NEIGHBOURS)
    bad = np.zeros(n, dtype=bool)
    for a in range(0, n, _BLOCK):
        i = np.arange(a, min(a + _BLOCK, n))
        w = _windows(n, NEIGHBOURS, i)
        dist = np.hypot(rx[w] - rx[i, None], ry[w] - ry[i, None])
        far = dist > limits.reach(times[w] - times[i, None], speed[i, None])
        bad[i] = far.sum(axis=1) * 2 > w.shape[1]
    bad |= _bursts(times, rx, ry, speed, ~bad, limits)
    bad |= _lone_ends(times, rx, ry, speed, ~bad, limits)
    out[order] = bad[inverse]
    return out


def _lone_ends(t, x, y, speed, keep, limits: MotionLimits) -> np.ndarray:
    """The first or last kept pose when the step between it and the rest of the track is one
    the vehicle could not have made (speed and acceleration bounds plus fix noise) while the
    track goes on smoothly from its neighbour: nothing after it confirms the new place, so it
    is no re-lock but a jump (a last line cut mid-number moves the last fix a few metres, too
    few for most of its neighbours in time to rule it out)."""
    drop = np.zeros(len(t), dtype=bool)
    k = np.flatnonzero(keep)
    if len(k) < 4:
        return drop
    for edge, near, next_ in ((k[0], k[1], k[2]), (k[-1], k[-2], k[-3])):
        step = np.hypot(x[edge] - x[near], y[edge] - y[near])
        onward = np.hypot(x[next_] - x[near], y[next_] - y[near])
        if (step > limits.reach(np.array(t[edge] - t[near]), speed[near])
                and onward <= limits.reach(np.array(t[next_] - t[near]), speed[near])):
            drop[edge] = True
    return drop


def _bursts(t, x, y, speed, keep, limits: MotionLimits) -> np.ndarray:
    """Interior runs of kept poses that leave the track and come back (see pose_jumps)."""
    drop = np.zeros(len(t), dtype=bool)
    for _ in range(8):  # a burst inside a burst needs another pass; a few are plenty
        k = np.flatnonzero(keep & ~drop)
        if len(k) < 3:
            break
        step = np.hypot(np.diff(x[k]), np.diff(y[k]))
        broken = np.flatnonzero(step > limits.reach(np.diff(t[k]), speed[k[:-1]]))
        if len(broken) < 2:
            break
        starts = np.concatenate([[0], broken + 1])
        ends = np.concatenate([broken, [len(k) - 1]])
        size = ends - starts + 1
        i, j = k[ends[:-2]], k[starts[2:]]  # the end of the run before, the start of the one after
        joins = np.hypot(x[j] - x[i], y[j] - y[i]) <= limits.reach(t[j] - t[i], speed[i])
        burst = joins & (size[1:-1] < size[:-2]) & (size[1:-1] < size[2:])
        if not burst.any():
            break
        for s, e in zip(starts[1:-1][burst], ends[1:-1][burst], strict=True):
            drop[k[s:e + 1]] = True
    return drop


def position_steps(t: np.ndarray, x: np.ndarray, y: np.ndarray,
                   limits: MotionLimits = MotionLimits()) -> list[tuple[float, float]]:
    """(time, metres) of every step the vehicle could not have made that the track keeps:
    the track goes on from the new place (reported, never dropped). ``t`` increasing."""
    if len(t) < 2:
        return []
    speed = _local_speed(t, x, y, NEIGHBOURS)
    step = np.hypot(np.diff(x), np.diff(y))
    broken = np.flatnonzero(step > limits.reach(np.diff(t), speed[:-1]))
    return [(float(t[i + 1]), float(step[i])) for i in broken]


def _longest_ordered(values: np.ndarray) -> np.ndarray:
    """Mask of one longest non-decreasing subsequence (patience sorting, O(n log n))."""
    n = len(values)
    tails_val: list[float] = []
    tails_idx: list[int] = []
    prev = np.full(n, -1, dtype=np.int64)
    for i, v in enumerate(values.tolist()):
        pos = bisect.bisect_right(tails_val, v)
        prev[i] = tails_idx[pos - 1] if pos else -1
        if pos == len(tails_val):
            tails_val.append(v)
            tails_idx.append(i)
        else:
            tails_val[pos], tails_idx[pos] = v, i
    keep = np.zeros(n, dtype=bool)
    i = tails_idx[-1] if tails_idx else -1
    while i >= 0:
        keep[i] = True
        i = prev[i]
    return keep


@dataclass
class TimeFaults:
    """Poses whose time, not position, is wrong (masks over the input, in file order)."""

    out_of_order: np.ndarray  # the item's time breaks the file's order, which is the smooth track
    shared_time: np.ndarray  # several poses at one time that lie further apart than the noise

    @property
    def any(self) -> np.ndarray:
        return self.out_of_order | self.shared_time


def time_faults(t: np.ndarray, x: np.ndarray, y: np.ndarray,
                limits: MotionLimits = MotionLimits()) -> TimeFaults:
    """Time faults of per-image poses given in FILE order (see :class:`TimeFaults`).

    Out of order: when the poses taken in time order make more impossible steps than taken in
    the order of the file, the file's order is the track; an item outside its longest run of
    non-decreasing times carries a wrong time when its position is off that track at the time
    it claims (beyond the track's span: further from its end than one step). When the time order is the smoother one (a file
    listed by name, say), nothing is out of order.
    """
    t, x, y = (np.asarray(a, dtype=np.float64) for a in (t, x, y))
    n = len(t)
    shared = np.zeros(n, dtype=bool)
    if n:
        order = np.argsort(t, kind="stable")
        ts, xs, ys = t[order], x[order], y[order]
        start = np.flatnonzero(np.concatenate([[True], np.diff(ts) != 0]))
        # the extent of each group of poses at one time (its diagonal: the distance for two)
        wide = np.hypot(np.maximum.reduceat(xs, start) - np.minimum.reduceat(xs, start),
                        np.maximum.reduceat(ys, start) - np.minimum.reduceat(ys, start))
        ends = np.append(start[1:], n)
        flagged = np.zeros(n, dtype=bool)
        for g in np.flatnonzero(wide > limits.position_noise_m):  # rare: a loop is fine
            a, b = start[g], ends[g]
            near = np.hypot(xs[a:b] - np.median(xs[a:b]), ys[a:b] - np.median(ys[a:b]))
            close = near <= limits.position_noise_m
            # most of the group agree (a rig's cameras): only the others carry a wrong time
            flagged[a:b] = ~close if close.sum() * 2 > b - a else True
        shared[order] = flagged
    late = np.zeros(n, dtype=bool)
    rest = np.flatnonzero(~shared)
    if len(rest) >= 3:
        ordered = _longest_ordered(t[rest])
        if not ordered.all():
            tr, xr, yr = t[rest], x[rest], y[rest]
            by_time = np.argsort(tr, kind="stable")
            in_time = _broken(tr[by_time], xr[by_time], yr[by_time], limits).sum()
            dt = np.diff(tr[by_time])
            step_s = float(np.median(dt[dt > 0])) if (dt > 0).any() else 1.0
            as_listed = _broken(np.arange(len(rest)) * step_s, xr, yr, limits).sum()
            if as_listed <= in_time:  # the file is at least as smooth: its order is the track
                late[rest[~ordered & _off_track(tr, xr, yr, ordered, limits)]] = True
    return TimeFaults(late, shared)


def _broken(t: np.ndarray, x: np.ndarray, y: np.ndarray, limits: MotionLimits) -> np.ndarray:
    """Steps between consecutive poses (``t`` increasing) that the vehicle could not make."""
    if len(t) < 2:
        return np.zeros(0, dtype=bool)
    speed = _local_speed(t, x, y, NEIGHBOURS)
    return np.hypot(np.diff(x), np.diff(y)) > limits.reach(np.diff(t), speed[:-1])


def _off_track(t, x, y, member: np.ndarray, limits: MotionLimits) -> np.ndarray:
    """For poses outside ``member``: whether the track of the members, at the time the pose
    claims, could not have been where the pose is: a step to the member before or after it in
    time is impossible; for a time beyond the members' span, the pose lies further from the
    track's end than one of its steps, or the track moves enough that the time matters."""
    m = np.flatnonzero(member)
    order = m[np.argsort(t[m], kind="stable")]
    tm, xm, ym = t[order], x[order], y[order]
    speed = _local_speed(tm, xm, ym, NEIGHBOURS)
    out = np.zeros(len(t), dtype=bool)
    dt = np.diff(tm)
    step_s = float(np.median(dt[dt > 0])) if (dt > 0).any() else 1.0
    for i in np.flatnonzero(~member):
        k = int(np.searchsorted(tm, t[i]))
        if k == 0 or k == len(tm):
            # beyond the track's span the vehicle could have gone anywhere: the time is wrong
            # when the pose lies further from the track's end than one step of it reaches, or
            # when the track moves enough that the claimed time would put it elsewhere (a
            # still vehicle, listed in any order, vouches for every time)
            j = 0 if k == 0 else len(tm) - 1
            step = limits.reach(np.array(step_s), speed[j])
            far = np.hypot(x[i] - xm[j], y[i] - ym[j])
            out[i] = bool(far > step or speed[j] * abs(t[i] - tm[j]) > step)
            continue
        for j in (k - 1, k):
            if np.hypot(x[i] - xm[j], y[i] - ym[j]) > limits.reach(t[i] - tm[j], speed[j]):
                out[i] = True
    return out


def _longest_repeat(t: np.ndarray, x: np.ndarray, y: np.ndarray) -> tuple[float, int, int]:
    """Seconds, first and last index of the longest run of one repeated position."""
    same = (np.diff(x) == 0) & (np.diff(y) == 0)
    best = (0.0, 0, 0)
    start = 0
    for i in range(1, len(t) + 1):
        if i == len(t) or not same[i - 1]:
            if t[i - 1] - t[start] > best[0]:
                best = (float(t[i - 1] - t[start]), start, i - 1)
            start = i
    return best


def degenerate(t: np.ndarray, x: np.ndarray, y: np.ndarray, depth_m: np.ndarray,
               altitude_m: np.ndarray) -> list[str]:
    """What makes a dive's located poses unfit for location positives, one line each.

    ``t`` in seconds (any order), ``x``/``y`` in metres; empty when nothing is wrong."""
    t, x, y = (np.asarray(a, dtype=np.float64) for a in (t, x, y))
    out: list[str] = []
    n = len(t)
    if n == 0:
        return out
    order = np.argsort(t, kind="stable")
    t, x, y = t[order], x[order], y[order]
    span = float(t[-1] - t[0])
    extent = float(np.hypot(x - np.median(x), y - np.median(y)).max())
    if n >= 10 and span >= STATIONARY_S and extent < STATIONARY_M:
        out.append(f"the track does not move: {n} images over {span / 60:.1f} min lie within "
                   f"{extent:.2f} m of one point (every image a positive of every other)")
    else:
        secs, a, b = _longest_repeat(t, x, y)
        if secs >= REPEATED_S:
            out.append(f"one position repeated for {secs:.0f} s ({b - a + 1} images from "
                       f"{_utc(t[a])} to {_utc(t[b])}): the position fix stopped updating?")
    depth = np.asarray(depth_m, dtype=np.float64)
    above = np.isfinite(depth) & (depth < -ABOVE_SURFACE_M)
    if above.any():
        out.append(f"{int(above.sum())} of {n} depths lie above the sea surface (down to "
                   f"{float(depth[above].min()):.1f} m; depth is positive down): check the "
                   "depth column's sign (depth_positive) or the depth source")
    deep = np.isfinite(depth) & (depth > MAX_DEPTH_M)
    if deep.any():
        out.append(f"{int(deep.sum())} depths exceed {MAX_DEPTH_M:,.0f} m (largest "
                   f"{float(depth[deep].max()):,.0f} m): not metres?")
    alt = np.asarray(altitude_m, dtype=np.float64)
    odd = np.isfinite(alt) & ((alt < 0) | (alt > MAX_ALTITUDE_M))
    if odd.any():
        out.append(f"{int(odd.sum())} altitudes lie outside 0..{MAX_ALTITUDE_M:,.0f} m above "
                   f"the seabed (e.g. {float(alt[odd][0]):.1f} m): not an altitude above the "
                   "seabed?")
    return out


def _utc(t: float) -> str:
    import datetime as dt

    return dt.datetime.fromtimestamp(float(t), dt.UTC).strftime("%Y-%m-%d %H:%M:%S")
