"""The reproduction's statistics on known answers: Student t quantiles, paired intervals, and
verdicts on constructed differences (a clear gain, a gain inside the noise, a loss)."""

from __future__ import annotations

import math

import pytest
from seafloor_ssl.evaluation.stats import (
    CONTRADICTED,
    NOT_MEASURED,
    NOT_SHOWN,
    REPRODUCED,
    combine,
    judge,
    paired,
    summarize,
    t975,
)


def test_t_quantiles_match_the_table_and_the_normal_limit():
    # published tables round to three decimals; these are the quantiles to nine
    assert t975(1) == pytest.approx(12.706204736)
    assert t975(2) == pytest.approx(4.302652730)
    assert t975(30) == pytest.approx(2.042272456)
    assert t975(40) == pytest.approx(2.021, abs=1e-3)
    assert t975(120) == pytest.approx(1.980, abs=1e-3)
    assert t975(10_000) == pytest.approx(1.960, abs=1e-3)
    with pytest.raises(ValueError):
        t975(0)


def test_interval_of_a_known_sample():
    # differences 1, 2, 3: mean 2, sd 1, half width t975(2) * 1 / sqrt(3)
    p = summarize([1.0, 2.0, 3.0])
    half = 4.302652730 / math.sqrt(3)
    assert (p.n, p.mean, p.std) == (3, 2.0, 1.0)
    assert p.lo == pytest.approx(2 - half) and p.hi == pytest.approx(2 + half)
    one = summarize([0.5])
    assert one.n == 1 and math.isinf(one.lo) and judge(one) == NOT_SHOWN
    assert summarize([]) is None and judge(None) == NOT_MEASURED


def test_pairs_follow_seed_and_split_and_skip_missing_values():
    a = [[0.8, None, 0.9], [0.7, 0.75]]
    b = [[0.7, 0.6, 0.8], [0.6, 0.65, 0.99]]  # the extra split of seed 1 has no partner
    p = paired(a, b)
    assert p.n == 2 and p.mean == pytest.approx(0.1)  # one difference per training seed
    assert p.base == pytest.approx((0.7 + 0.8 + 0.6 + 0.65) / 4)


def test_verdicts_on_constructed_differences():
    clear = summarize([0.05, 0.06, 0.04, 0.055, 0.045, 0.05])
    inside = summarize([0.013, -0.010, 0.030, 0.001, 0.026, 0.018])  # +0.013 ± 0.013
    loss = summarize([-0.05, -0.04, -0.06, -0.05])
    assert judge(clear) == REPRODUCED
    assert judge(inside) == NOT_SHOWN
    assert judge(loss) == CONTRADICTED
    assert judge(loss, direction=-1) == REPRODUCED  # a claimed decrease
    assert combine([REPRODUCED, REPRODUCED]) == REPRODUCED
    assert combine([REPRODUCED, NOT_SHOWN]) == NOT_SHOWN
    assert combine([REPRODUCED, CONTRADICTED, NOT_SHOWN]) == CONTRADICTED
    assert combine([NOT_MEASURED]) == NOT_MEASURED


def test_cross_dive_split_tests_on_whole_dives():
    import numpy as np
    from seafloor_ssl.evaluation.splits import dive_split

    dives = np.array(["d1"] * 40 + ["d2"] * 30 + ["d3"] * 30, dtype=object)
    seen = set()
    for seed in range(6):
        sp = dive_split(dives, test_fraction=0.3, seed=seed)
        test_dives, train_dives = set(dives[sp.test]), set(dives[sp.train])
        assert test_dives and train_dives and not test_dives & train_dives
        assert len(sp.test) + len(sp.train) == len(dives)
        assert len(sp.test) >= 0.3 * len(dives)
        seen.add(frozenset(test_dives))
    assert len(seen) > 1  # the seed draws which dives are tested
    with pytest.raises(ValueError, match="at least two dives"):
        dive_split(np.array(["d1"] * 5, dtype=object))


def test_splits_of_one_training_seed_are_not_independent_evidence():
    # three splits of one seed agree closely, but one seed can not show an effect
    one_seed = paired([[0.80, 0.81, 0.82]], [[0.70, 0.71, 0.72]])
    assert one_seed.n == 1 and judge(one_seed) == NOT_SHOWN
    three = paired([[0.80, 0.81], [0.79, 0.80], [0.81, 0.82]],
                   [[0.70, 0.71], [0.70, 0.70], [0.71, 0.72]])
    assert three.n == 3 and judge(three) == REPRODUCED
