"""Statistics for claims run over a prompt family: a single prompt is an anecdote."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import binomtest, ttest_1samp


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


@dataclass(frozen=True)
class Interval:
    """The mean of per-prompt values (paired differences) over n prompts, with its 95% t interval."""

    mean: float
    low: float
    high: float
    n: int

    def as_json(self) -> dict:
        return {"mean": self.mean, "ci95": [self.low, self.high], "prompts": self.n}

    def __str__(self) -> str:
        return f"{self.mean:.3g} (95% CI {self.low:.3g} to {self.high:.3g}, {self.n} prompts)"


def mean_interval(values, confidence: float = 0.95) -> Interval:
    """The mean of `values` with its confidence interval (one-sample t: each prompt one paired difference).
    Values that do not vary have an interval of width zero; fewer than two have none (NaN)."""
    x = np.asarray(list(values), dtype=float)
    if len(x) < 2:
        return Interval(float(x.mean()) if len(x) else float("nan"), float("nan"), float("nan"), len(x))
    if np.all(x == x[0]):
        return Interval(float(x[0]), float(x[0]), float(x[0]), len(x))
    ci = ttest_1samp(x, 0.0).confidence_interval(confidence)
    return Interval(float(x.mean()), float(ci.low), float(ci.high), len(x))


def percentile_of(value: float, baseline) -> float:
    """Share of the `baseline` values that `value` exceeds: 1.0 is strictly above all of them. A tie does
    not count, so a value among equals (every head set changing nothing, say) stands at 0, not at the top.
    The baseline leaves out the value's own entry."""
    b = np.asarray(list(baseline), dtype=float)
    return float((b < value).mean()) if len(b) else float("nan")


def relative_margin(first: float, second: float) -> float:
    """How far ahead of the runner-up the first is, as a share of the first: 0 is a tie, 1 a runner-up at 0."""
    return (first - second) / abs(first) if first else float("nan")


@dataclass(frozen=True)
class Choice:
    """The `k` options with the highest mean score over prompts, and how far the last of them leads the next.

    `lead` is the 95% interval of the per-prompt difference between the last chosen option and the
    runner-up: where it reaches 0 the choice is a tie, inside the noise of the prompts it was made on.
    On a single prompt there is no interval, and the choice is neither confirmed nor a tie."""

    chosen: tuple
    runner_up: object
    means: dict
    lead: Interval

    @property
    def margin(self) -> float:
        """The last chosen option's mean over the runner-up's, as a share of its own."""
        return relative_margin(self.means[self.chosen[-1]], self.means[self.runner_up]) \
            if self.runner_up is not None else float("nan")

    @property
    def tie(self) -> bool:
        return self.lead.n >= 2 and not self.lead.low > 0


def choose(per_prompt, k: int = 1) -> Choice:
    """The `k` best options by their mean over prompts; `per_prompt` holds one {option: score} per prompt,
    every prompt with the same options. Ties in the means keep the options' order."""
    per_prompt = list(per_prompt)
    options = list(per_prompt[0])
    means = {o: float(np.mean([p[o] for p in per_prompt])) for o in options}
    ranked = sorted(options, key=lambda o: -means[o])
    chosen, runner_up = tuple(ranked[:k]), (ranked[k] if len(ranked) > k else None)
    lead = mean_interval(p[chosen[-1]] - p[runner_up] for p in per_prompt) if runner_up is not None \
        else Interval(float("nan"), float("nan"), float("nan"), 0)
    return Choice(chosen, runner_up, means, lead)
