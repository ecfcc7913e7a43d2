"""The family statistics against hand-computed Wilson intervals."""
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lib.stats import fraction, mean_interval, percentile_of, relative_margin


def wilson(k: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def test_known_case():
    f = fraction([True] * 8 + [False] * 2)
    assert (f.k, f.n, f.value) == (8, 10, 0.8)
    low, high = wilson(8, 10)
    assert math.isclose(f.low, low, abs_tol=1e-9) and math.isclose(f.high, high, abs_tol=1e-9)
    assert str(f) == "8/10 = 80% (95% CI 49%-94%)"


@given(st.lists(st.booleans(), min_size=1, max_size=200))
def test_interval_contains_the_estimate(outcomes):
    f = fraction(outcomes)
    assert 0.0 <= f.low <= f.value <= f.high <= 1.0
    low, high = wilson(f.k, f.n)
    assert math.isclose(f.low, low, abs_tol=1e-9) and math.isclose(f.high, high, abs_tol=1e-9)


def test_empty_family_is_nan():
    assert math.isnan(fraction([]).value)


def t_interval(values: list[float]) -> tuple[float, float]:
    """The 95% t interval of the mean, by hand: mean +- t(0.975, n-1) * s / sqrt(n)."""
    from scipy.stats import t

    n = len(values)
    mean = sum(values) / n
    s = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = t.ppf(0.975, n - 1) * s / math.sqrt(n)
    return mean - half, mean + half


def test_mean_interval_known_case():
    values = [1.0, 2.0, 4.0, 7.0]
    got = mean_interval(values)
    assert (got.mean, got.n) == (3.5, 4)
    low, high = t_interval(values)
    assert math.isclose(got.low, low, rel_tol=1e-9) and math.isclose(got.high, high, rel_tol=1e-9)
    assert math.isclose(low, -0.7094, abs_tol=1e-3)  # 3.5 - 3.182 * sqrt(7) / 2


@given(st.lists(st.floats(-100, 100), min_size=2, max_size=40))
def test_mean_interval_holds_the_mean(values):
    got = mean_interval(values)
    assert got.low <= got.mean + 1e-9 and got.mean <= got.high + 1e-9


def test_mean_interval_edge_cases():
    assert mean_interval([3.0, 3.0, 3.0]).as_json() == {"mean": 3.0, "ci95": [3.0, 3.0], "prompts": 3}
    assert math.isnan(mean_interval([1.0]).low) and math.isnan(mean_interval([]).mean)


def test_percentile_and_margin():
    assert percentile_of(5.0, [1, 2, 3]) == 1.0
    assert percentile_of(2.0, [1, 2, 3, 5]) == 0.25
    assert percentile_of(0.0, [1, 2]) == 0.0
    assert percentile_of(0.0, [0.0, 0.0, 0.0]) == 0.0  # a tie among equals is no standing
    assert relative_margin(1.0, 0.6) == pytest.approx(0.4)
    assert relative_margin(1.0, 1.0) == 0.0
    assert math.isnan(relative_margin(0.0, 0.0))
