"""The experiment's statistics (verl_sdar.reports.stats) against hand-computed values and tables."""

import math

import pytest

from verl_sdar.reports.stats import (
    _t_quantile,
    minimum_detectable_effect,
    sign_flip_power,
    sign_flip_test,
    t_interval,
)


def test_sign_flip_test_by_hand():
    # (3, 1): sums over the 4 sign assignments are 4, 2, -2, -4; |4| is reached by 2 of them
    assert sign_flip_test([3.0, 1.0]) == 0.5
    # every difference positive: only the observed assignment and its mirror are as extreme
    assert sign_flip_test([1, 2, 3, 4, 5, 6]) == 2 / 64
    # a mean of exactly 0: every assignment is at least as extreme
    assert sign_flip_test([1.0, -1.0, 2.0, -2.0]) == 1.0
    # (0.1, 0.2, -0.05): sums 0.25 (obs), 0.35, -0.15, 0.05 and their mirrors: |s| >= 0.25 for 4 of 8
    assert sign_flip_test([0.1, 0.2, -0.05]) == 0.5
    with pytest.raises(ValueError):
        sign_flip_test([])


@pytest.mark.parametrize("df, p, table", [(5, 0.975, 2.5706), (1, 0.975, 12.706), (10, 0.95, 1.8125),
                                          (3, 0.025, -3.1824), (30, 0.5, 0.0)])
def test_t_quantiles_match_the_table(df, p, table):
    assert _t_quantile(p, df) == pytest.approx(table, abs=1e-3)


def test_t_interval_by_hand():
    diffs = [0.1, 0.05, 0.12, -0.02, 0.08, 0.03]
    mean = sum(diffs) / 6  # 0.06
    sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / 5)  # 0.050990...
    half = 2.5706 * sd / math.sqrt(6)
    got = t_interval(diffs)
    assert got[0] == pytest.approx(0.06)
    assert got[1] == pytest.approx(mean - half, abs=1e-4) and got[2] == pytest.approx(mean + half, abs=1e-4)


def test_power_and_minimum_detectable_effect():
    assert sign_flip_power(0.0, 0.05, 6, sims=400) <= 0.08  # the test's size (discrete: at most 2/64 + noise)
    assert sign_flip_power(1.0, 0.05, 6, sims=50) == 1.0  # every difference positive: p = 2/64
    assert minimum_detectable_effect(0.05, 4) == math.inf  # 2 / 2**4 > 0.05: never significant
    mde = minimum_detectable_effect(0.05, 6, sims=300)
    assert 0.05 < mde < 0.15
    assert minimum_detectable_effect(0.05, 8, sims=300) < mde  # more seeds, smaller effect
