"""Paired differences and verdicts for the reproduction table.

Two configurations are compared on the same footing: the same training seed and the same
evaluation split give one pair, and the claim is judged on the differences of those pairs, not
on two pooled means. A training seed's pairs are averaged over its splits (they share one
encoder), and the interval is taken over training seeds. A claimed effect counts as

    reproduced     the 95 % interval of the mean paired difference excludes zero in the claimed
                   direction;
    contradicted   it excludes zero in the other direction;
    not shown      it includes zero (or there are fewer than two pairs).

A claim with several parts (both bases, both tasks) is reproduced only when every part is; it is
contradicted when any part is; otherwise not shown. The Student t quantiles come from scipy.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

from scipy.stats import t as student_t

REPRODUCED, NOT_SHOWN, CONTRADICTED, NOT_MEASURED = (
    "reproduced", "not shown", "contradicted", "not measured")


def t975(df: int) -> float:
    """t_{0.975} for `df` degrees of freedom: the two-sided 95 % quantile of Student's t."""
    if df < 1:
        raise ValueError("at least one degree of freedom")
    return float(student_t.ppf(0.975, df))


@dataclass(frozen=True)
class Paired:
    """Mean paired difference (a - b) with its standard deviation and 95 % interval."""

    n: int
    mean: float
    std: float
    lo: float
    hi: float
    base: float  # mean of b over the same pairs, for a relative figure

    @property
    def relative_pct(self) -> float:
        return 100.0 * self.mean / self.base if self.base else float("nan")

    def text(self, pct: bool = True, digits: int = 3) -> str:
        rel = f" ({self.relative_pct:+.1f} %)" if pct and self.base else ""
        if self.n < 2:
            return f"{self.mean:+.{digits}f}{rel} (one training seed: no interval)"
        return (f"{self.mean:+.{digits}f}{rel}, 95 % CI [{self.lo:+.{digits}f}, "
                f"{self.hi:+.{digits}f}], {self.n} training seeds")


def summarize(diffs: list[float], base: float = 0.0) -> Paired | None:
    """Paired from a list of differences; None when there is none."""
    if not diffs:
        return None
    n, mean = len(diffs), statistics.fmean(diffs)
    if n < 2:
        return Paired(1, mean, float("nan"), -math.inf, math.inf, base)
    sd = statistics.stdev(diffs)
    half = t975(n - 1) * sd / math.sqrt(n)
    return Paired(n, mean, sd, mean - half, mean + half, base)


def diff_rows(a: list[list[float | None]],
              b: list[list[float | None]]) -> list[list[float | None]]:
    """a - b position by position (None where either is missing); rows are training seeds,
    columns splits. Extra rows or columns of one side have no partner and are left out."""
    return [[None if va is None or vb is None else va - vb
             for va, vb in zip(row_a, row_b, strict=False)]
            for row_a, row_b in zip(a, b, strict=False)]


def paired(a: list[list[float | None]], b: list[list[float | None]]) -> Paired | None:
    """Paired differences of two configurations: a[i][j] and b[i][j] are the values of training
    seed i on split j (None where not measured); only positions measured in both count.

    The splits of one training seed share its encoder, so they are not independent evidence:
    each training seed's differences are averaged over its splits, and the interval is taken
    over training seeds (n = seeds). One training seed gives no interval, hence no verdict."""
    diffs = [statistics.fmean(ds) for row in diff_rows(a, b)
             if (ds := [d for d in row if d is not None])]
    bases = [vb for row_a, row_b in zip(a, b, strict=False)
             for va, vb in zip(row_a, row_b, strict=False) if va is not None and vb is not None]
    return summarize(diffs, statistics.fmean(bases) if bases else 0.0)


def judge(p: Paired | None, direction: int = 1) -> str:
    """The verdict on a claimed effect of sign `direction` (+1: a above b)."""
    if p is None:
        return NOT_MEASURED
    lo, hi = (p.lo, p.hi) if direction > 0 else (-p.hi, -p.lo)
    if lo > 0:
        return REPRODUCED
    if hi < 0:
        return CONTRADICTED
    return NOT_SHOWN


def combine(verdicts: list[str]) -> str:
    """One verdict for a claim of several parts: all reproduced, any contradicted, else not
    shown (not measured when no part was)."""
    if not verdicts or all(v == NOT_MEASURED for v in verdicts):
        return NOT_MEASURED
    if all(v == REPRODUCED for v in verdicts):
        return REPRODUCED
    if CONTRADICTED in verdicts:
        return CONTRADICTED
    return NOT_SHOWN
