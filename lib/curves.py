"""Curves through training: where a measured value rises or falls most between checkpoints."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from lib.errors import SuiteError


class CurveError(SuiteError):
    """Checkpoint series or token windows that cannot give a curve (too few steps, positions out of range)."""


@dataclass(frozen=True)
class Jump:
    """The largest change of a curve between two consecutive checkpoints (in the given direction)."""

    before: int  # the step before the jump
    step: int  # the first step after it
    size: float  # the change, signed as asked for: positive for a rise or a fall as requested
    share: float  # size / the curve's total change in that direction over the series

    def as_json(self) -> dict:
        return {"from_step": self.before, "to_step": self.step, "size": self.size, "share_of_total": self.share}


def jump(steps: Sequence[int], values: Sequence[float], direction: Literal["rise", "fall"]) -> Jump:
    """Where `values` rises (or falls) most between consecutive checkpoints."""
    if len(steps) != len(values) or len(steps) < 2:
        raise CurveError(f"a jump needs at least two (step, value) points; got {len(steps)} steps, {len(values)} values")
    if list(steps) != sorted(set(steps)):
        raise CurveError(f"steps must increase strictly; got {list(steps)}")
    if direction not in ("rise", "fall"):
        raise CurveError(f"direction must be 'rise' or 'fall', not {direction!r}")
    sign = 1.0 if direction == "rise" else -1.0
    deltas = [sign * (values[i] - values[i - 1]) for i in range(1, len(values))]
    i = max(range(len(deltas)), key=deltas.__getitem__)
    total = sum(d for d in deltas if d > 0)
    return Jump(int(steps[i]), int(steps[i + 1]), float(deltas[i]), float(deltas[i] / total) if total > 0 else 0.0)
