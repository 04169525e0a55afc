"""The statistics of the pre-registered experiment (docs/experiment_plan_alfworld.md): the primary test, its
interval and its power. Pure Python (``math``, ``random``, ``itertools``); no numpy, no verl.

* :func:`sign_flip_test`: the exact paired sign-flip permutation test of a mean difference: under
  the null that the arm labels within each pair are exchangeable, each paired difference is
  equally likely to carry either sign, so the p value is the share of the ``2**n`` sign
  assignments whose mean is at least as far from 0 as the observed one (two-sided).
* :func:`t_interval`: the mean difference with its Student-t confidence interval over pairs.
* :func:`sign_flip_power`: the test's power against normal paired differences with a given mean
  and standard deviation (Monte Carlo), and :func:`minimum_detectable_effect`: the smallest mean
  difference it detects with the given power.
"""

from __future__ import annotations

import itertools
import math
import random
import statistics
from collections.abc import Sequence


def sign_flip_test(diffs: Sequence[float]) -> float:
    """Two-sided exact p value of ``mean(diffs) == 0`` by enumerating every sign assignment.

    The observed assignment is one of them, so the p value is at least ``2 / 2**n`` when every
    difference is non-zero (``n`` pairs).
    """
    n = len(diffs)
    if n == 0:
        raise ValueError("sign_flip_test: no paired differences")
    if n > 20:
        raise ValueError(f"sign_flip_test: {n} pairs; exact enumeration is limited to 20")
    observed = abs(sum(diffs))
    hits = 0
    for signs in itertools.product((1.0, -1.0), repeat=n):
        if abs(sum(s * d for s, d in zip(signs, diffs, strict=True))) >= observed - 1e-12:
            hits += 1
    return hits / 2**n


def _t_quantile(p: float, df: int) -> float:
    """Quantile of Student's t with ``df`` degrees of freedom (bisection on the CDF)."""
    if df < 1:
        raise ValueError("df must be >= 1")

    def cdf(t: float) -> float:  # regularised incomplete beta via the continued fraction
        x = df / (df + t * t)
        tail = 0.5 * _betainc(df / 2.0, 0.5, x)
        return 1.0 - tail if t > 0 else tail

    lo, hi = -1e3, 1e3
    for _ in range(200):
        mid = (lo + hi) / 2
        if cdf(mid) < p:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def _betainc(a: float, b: float, x: float) -> float:
    """Regularised incomplete beta I_x(a, b) (Numerical Recipes' continued fraction)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x > (a + 1.0) / (a + b + 2.0):
        return 1.0 - _betainc(b, a, 1.0 - x)
    f, c, d = 1.0, 1.0, 0.0
    for i in range(400):
        m = i // 2
        if i == 0:
            num = 1.0
        elif i % 2 == 0:
            num = m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m))
        else:
            num = -((a + m) * (a + b + m) * x) / ((a + 2 * m) * (a + 2 * m + 1))
        d = 1.0 + num * d
        d = 1.0 / (d if abs(d) > 1e-300 else 1e-300)
        c = 1.0 + num / (c if abs(c) > 1e-300 else 1e-300)
        f *= c * d
        if abs(1.0 - c * d) < 1e-14:
            break
    return front * (f - 1.0) / a


def t_interval(diffs: Sequence[float], level: float = 0.95) -> tuple[float, float, float]:
    """``(mean, low, high)``: the mean paired difference and its ``level`` Student-t interval."""
    n = len(diffs)
    if n < 2:
        raise ValueError("t_interval: at least two pairs")
    mean = statistics.fmean(diffs)
    half = _t_quantile(0.5 + level / 2, n - 1) * statistics.stdev(diffs) / math.sqrt(n)
    return mean, mean - half, mean + half


def sign_flip_power(effect: float, sd: float, n: int, alpha: float = 0.05, sims: int = 2000, seed: int = 0) -> float:
    """Share of ``sims`` simulated experiments (``n`` paired differences drawn from
    ``Normal(effect, sd)``) in which :func:`sign_flip_test` gives ``p <= alpha``."""
    rng = random.Random(seed)
    rejected = sum(sign_flip_test([rng.gauss(effect, sd) for _ in range(n)]) <= alpha for _ in range(sims))
    return rejected / sims


def minimum_detectable_effect(sd: float, n: int, power: float = 0.8, alpha: float = 0.05, sims: int = 1000,
                              step: float = 0.005) -> float:
    """The smallest mean difference (on a ``step`` grid) that :func:`sign_flip_power` detects with
    at least ``power``; ``inf`` when the test cannot reach ``alpha`` with ``n`` pairs."""
    if 2 / 2**n > alpha:
        return math.inf
    effect = step
    while effect < 10 * sd + 1:
        if sign_flip_power(effect, sd, n, alpha, sims) >= power:
            return round(effect, 6)
        effect += step
    return math.inf
