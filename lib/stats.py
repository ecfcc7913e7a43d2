"""Statistics for claims run over a prompt family: a single prompt is an anecdote."""
from __future__ import annotations

from dataclasses import dataclass

from scipy.stats import binomtest


@dataclass(frozen=True)
class Fraction:
    """k of n prompts on which the claim held, with a 95% Wilson score interval."""

    k: int
    n: int
    low: float
    high: float

    @property
    def value(self) -> float:
        return self.k / self.n if self.n else float("nan")

    def as_json(self) -> dict:
        return {"holds_on": self.k, "prompts": self.n, "fraction": self.value, "ci95": [self.low, self.high]}

    def __str__(self) -> str:
        return f"{self.k}/{self.n} = {self.value:.0%} (95% CI {self.low:.0%}-{self.high:.0%})"


def fraction(outcomes, confidence: float = 0.95) -> Fraction:
    """The fraction of true outcomes with its Wilson score interval."""
    outcomes = [bool(o) for o in outcomes]
    k, n = sum(outcomes), len(outcomes)
    if n == 0:
        return Fraction(0, 0, float("nan"), float("nan"))
    ci = binomtest(k, n).proportion_ci(confidence_level=confidence, method="wilson")
    return Fraction(k, n, float(ci.low), float(ci.high))
