"""The track checks on real-like tracks: smooth tracks lose nothing, jumps are found, time
faults are told from position faults, degenerate navigation is named."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.track import MotionLimits, degenerate, pose_jumps, position_steps, time_faults


def smooth_track(seed: int, n: int = 300, dt: float = 1.0, stereo: bool = False):
    """A vehicle that changes speed (0.05..1.5 m/s) and turns, sampled every ``dt`` seconds
    with GPS-like noise; with ``stereo`` two cameras 0.2 m apart logged at the same times."""
    rng = np.random.default_rng(seed)
    t = 1.7e9 + np.arange(n) * dt * rng.uniform(0.8, 1.2)
    speed = np.clip(np.cumsum(rng.normal(0, 0.05, n)) + rng.uniform(0.05, 1.5), 0.05, 1.5)
    heading = np.cumsum(rng.normal(0, 0.1, n)) + rng.uniform(0, 2 * np.pi)
    step = speed * np.gradient(t)
    x = np.cumsum(step * np.sin(heading)) + rng.normal(0, 0.3, n)
    y = np.cumsum(step * np.cos(heading)) + rng.normal(0, 0.3, n)
    if stereo:
        t = np.repeat(t, 2)
        x = np.repeat(x, 2) + np.tile([0.0, 0.2], n)
        y = np.repeat(y, 2)
    return t, x, y


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), stereo=st.booleans(), dt=st.sampled_from([0.1, 1.0, 3.0]))
def test_a_smooth_track_loses_nothing(seed, stereo, dt):
    t, x, y = smooth_track(seed, dt=dt, stereo=stereo)
    assert not pose_jumps(t, x, y).any()
    assert not time_faults(t, x, y).any.any()


def test_a_slow_towed_camera_that_speeds_up_loses_nothing():
    # 0.09 m/s for 10 minutes, then 1.2 m/s: the dive's median speed says nothing of the end
    t = 1.7e9 + np.arange(900, dtype=float)
    v = np.where(np.arange(900) < 600, 0.09, 1.2)
    y = np.cumsum(v)
    x = np.zeros(900)
    assert not pose_jumps(t, x, y).any()


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), burst=st.integers(1, 4), metres=st.floats(15, 500),
       stereo=st.booleans())
def test_injected_jumps_are_found(seed, burst, metres, stereo):
    t, x, y = smooth_track(seed, stereo=stereo)
    rng = np.random.default_rng(seed + 1)
    per = 2 if stereo else 1
    first = int(rng.integers(1, len(t) // per - burst - 1)) * per
    hit = np.arange(first, first + burst * per)
    angle = rng.uniform(0, 2 * np.pi)
    x[hit] += metres * np.cos(angle)
    y[hit] += metres * np.sin(angle)
    got = pose_jumps(t, x, y)
    assert set(np.flatnonzero(got)) == set(hit.tolist())


def test_a_long_burst_that_comes_back_is_found_and_a_step_is_kept():
    t = 1.7e9 + np.arange(400) * 0.1
    y = 0.5 * (t - t[0])
    x = np.zeros(400)
    x[200:240] += 35.0  # 4 s off the track, then back
    assert set(np.flatnonzero(pose_jumps(t, x, y))) == set(range(200, 240))
    x2 = np.zeros(400)
    x2[25:] += 3.6  # the fix re-locks 3.6 m away and stays there
    t1 = 1.7e9 + np.arange(400, dtype=float)  # 1 Hz
    assert not pose_jumps(t1, x2, 0.3 * np.arange(400)).any()
    x3 = np.zeros(400)
    x3[25:] += 30.0
    assert not pose_jumps(t1, x3, 0.3 * np.arange(400)).any()
    steps = position_steps(t1, x3, 0.3 * np.arange(400))
    assert len(steps) == 1 and steps[0][0] == t1[25] and steps[0][1] == pytest.approx(30, abs=0.1)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000))
def test_out_of_order_times_are_a_time_fault_not_jumps(seed):
    # an AUV iFDO: smooth positions in the file's order, 28 of 100 item times wrong by 10-40 s
    rng = np.random.default_rng(seed)
    t = 1.7e9 + np.arange(100, dtype=float)
    heading = np.cumsum(rng.normal(0, 0.05, 100))
    x, y = np.cumsum(np.sin(heading)), np.cumsum(np.cos(heading))
    wrong = np.sort(rng.choice(np.arange(100), 28, replace=False))
    t_bad = t.copy()
    shift = rng.uniform(10, 40, 28) * rng.choice([-1, 1], 28)
    t_bad[wrong] = t[wrong] + np.where(t[wrong] + shift < t[0], -shift, shift)
    t_bad[wrong] = np.where(t_bad[wrong] > t[-1], t[wrong] - np.abs(shift), t_bad[wrong])
    faults = time_faults(t_bad, x, y)
    blamed = set(np.flatnonzero(faults.out_of_order))
    assert blamed <= set(wrong.tolist()) and len(blamed) >= 24
    ok = ~faults.any
    assert not pose_jumps(t_bad[ok], x[ok], y[ok]).any()
    # the same times on a file whose order is not the track: jumps, not a time fault
    listed = rng.permutation(100)
    assert not time_faults(t_bad[listed], x[listed], y[listed]).any.any()


def test_a_file_listed_by_name_is_not_a_time_fault():
    t, x, y = smooth_track(5, n=60)
    listed = np.concatenate([np.arange(30, 60), np.arange(30)])  # two cameras, listed by name
    faults = time_faults(t[listed], x[listed], y[listed])
    assert not faults.any.any()


def test_a_still_vehicle_listed_by_name_is_not_a_time_fault():
    # img_1, img_10, img_100, img_11 ...: a lexicographic listing of a hovering ROV's photos
    t = 1.7e9 + np.arange(1, 101, dtype=float)
    rng = np.random.default_rng(2)
    x, y = rng.normal(0, 0.2, 100), rng.normal(0, 0.2, 100)
    listed = np.array(sorted(range(100), key=lambda k: f"img_{k + 1}.jpg"))
    assert not time_faults(t[listed], x[listed], y[listed]).any.any()


def test_poses_sharing_a_time_far_apart_are_a_time_fault():
    t = 1.7e9 + np.arange(50, dtype=float)
    x, y = np.zeros(50), np.arange(50, dtype=float)  # 1 m/s
    t[20] = t[30]  # item 20 carries item 30's time; it lies 10 m away
    faults = time_faults(t, x, y)
    assert set(np.flatnonzero(faults.shared_time)) == {20, 30}  # two: either may be wrong
    # a stereo rig: the pair at one time agrees, a third pose at that time is the wrong one
    t0 = 1.7e9 + np.arange(50, dtype=float)
    ts, xs, ys = np.repeat(t0, 2), np.tile([0, 0.2], 50), np.repeat(np.arange(50.0), 2)
    ts[10] = ts[60]  # the left image of pair 5 claims pair 30's time
    faults = time_faults(ts, xs, ys)
    assert set(np.flatnonzero(faults.shared_time)) == {10}


def test_degenerate_navigation_is_named():
    t = 1.7e9 + np.arange(300, dtype=float)
    still = degenerate(t, np.zeros(300), np.zeros(300), np.full(300, -3.0), np.full(300, 2.0))
    assert any("does not move" in w for w in still)
    assert any("above the sea surface" in w for w in still)
    y = np.arange(300, dtype=float) * 0.5
    y[100:190] = y[100]  # the fix froze for 89 s
    frozen = degenerate(t, np.zeros(300), y, np.full(300, 30.0), np.full(300, 2.0))
    assert len(frozen) == 1 and "repeated for 89 s" in frozen[0]
    assert degenerate(t, np.zeros(300), np.arange(300.0), np.full(300, 30.0),
                      np.full(300, 2.0)) == []
    odd = degenerate(t, np.zeros(300), np.arange(300.0), np.full(300, 30.0), np.full(300, -4.0))
    assert len(odd) == 1 and "altitudes" in odd[0]


def test_limits_are_the_users_to_set():
    t = 1.7e9 + np.arange(100, dtype=float)
    y = np.arange(100, dtype=float)
    y[50] += 6.0
    assert pose_jumps(t, np.zeros(100), y).tolist().count(True) == 1
    loose = MotionLimits(position_noise_m=10.0)
    assert not pose_jumps(t, np.zeros(100), y, loose).any()
