"""The family statistics against hand-computed Wilson intervals."""
import math

from hypothesis import given
from hypothesis import strategies as st

from lib.stats import fraction


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
