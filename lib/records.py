"""The claim record: what one claim test measured on one subject, beside what was published."""
from __future__ import annotations

import io
import math
import operator
from dataclasses import dataclass, field
from typing import Any

# regression: a refutation registered for the subject did not come out as registered;
# error: the claim's measurement did not complete (a bad input, a broken checkpoint, a bug).
VERDICTS = ("holds", "refuted", "expected-refuted", "regression", "error", "not-run")

OPS = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
    "==": operator.eq,
    "!=": operator.ne,
    "in": lambda a, b: a in b,
    "not in": lambda a, b: a not in b,
}


class CheckFailed(AssertionError):
    """A claim's check that failed: its name, the measured value, and the threshold it missed."""

    def __init__(self, claim: str, subject: str, check: str, value: Any, op: str, threshold: Any):
        self.claim, self.subject = claim, subject
        self.check, self.value, self.op, self.threshold = check, value, op, threshold
        super().__init__(f"{claim} on {subject}: {check} = {_fmt(value)}, the claim needs {op} {_fmt(threshold)}")

    def __reduce__(self):  # pickled with its fields, not with the message alone
        return CheckFailed, (self.claim, self.subject, self.check, self.value, self.op, self.threshold)

    @property
    def measured(self) -> str:
        """`check = value, needs op threshold`: the failing figure as this run measured it."""
        return f"{self.check} = {_fmt(self.value)}, needs {self.op} {_fmt(self.threshold)}"


@dataclass
class Figure:
    title: str
    png: bytes


@dataclass
class Table:
    title: str
    columns: list[str]
    rows: list[list[Any]]


@dataclass
class ClaimRecord:
    claim: str
    subject: str
    statement: str = ""
    source: str = ""
    measured: dict[str, Any] = field(default_factory=dict)
    published: dict[str, Any] = field(default_factory=dict)
    threshold: dict[str, str] = field(default_factory=dict)
    verdict: str = "not-run"
    reason: str = ""
    figures: list[Figure] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    checkpoints: dict[str, str] = field(default_factory=dict)

    def measure(self, **values: Any) -> None:
        """Record measured values that are shown but not compared with a threshold."""
        self.measured.update({k: _plain(v) for k, v in values.items()})

    def expect(self, name: str, value: Any, op: str, threshold: Any) -> None:
        """Record `value` and its threshold; raise CheckFailed naming both if `value op threshold` fails."""
        value, threshold = _plain(value), _plain(threshold)
        self.measured[name] = value
        self.threshold[name] = f"{op} {_fmt(threshold)}"
        ok = OPS[op](value, threshold)
        if not ok or (isinstance(value, float) and math.isnan(value)):
            raise CheckFailed(self.claim, self.subject, name, value, op, threshold)

    def check_figures(self, names) -> str:
        """`name = value, needs op threshold` for those of `names` this record measured."""
        return "; ".join(f"{n} = {_fmt(self.measured[n])}, needs {self.threshold[n]}"
                         for n in names if n in self.threshold)

    def figure(self, title: str, fig) -> None:
        """Keep a matplotlib figure as PNG for the report (and close it)."""
        import matplotlib.pyplot as plt

        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
        plt.close(fig)
        self.figures.append(Figure(title, buf.getvalue()))

    def table(self, title: str, columns: list[str], rows: list[list[Any]]) -> None:
        """Keep a table for the report (a paper's table beside ours); every row has one cell per column."""
        rows = [_plain(list(row)) for row in rows]
        bad = [i for i, row in enumerate(rows) if len(row) != len(columns)]
        if bad:
            raise ValueError(f"table {title!r}: row {bad[0]} has {len(rows[bad[0]])} cells for {len(columns)} columns")
        self.tables.append(Table(title, list(columns), rows))

    def as_json(self) -> dict:
        return {
            "claim": self.claim,
            "subject": self.subject,
            "verdict": self.verdict,
            "measured": self.measured,
            "published": self.published,
            "threshold": self.threshold,
            "reason": self.reason,
            "statement": self.statement,
            "source": self.source,
            "checkpoints": self.checkpoints,
            "figures": [f.title for f in self.figures],
            "tables": [{"title": t.title, "columns": t.columns, "rows": t.rows} for t in self.tables],
        }


def _plain(v: Any) -> Any:
    """Tensors and numpy scalars -> Python numbers and lists, so records serialise as JSON."""
    if hasattr(v, "tolist"):
        return v.tolist()
    if isinstance(v, tuple):
        return [_plain(x) for x in v]
    if isinstance(v, list):
        return [_plain(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _plain(x) for k, x in v.items()}
    return v


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, list) and len(v) > 8:
        return f"[{', '.join(_fmt(x) for x in v[:8])}, ...]"
    return repr(v) if isinstance(v, str) else str(v)
