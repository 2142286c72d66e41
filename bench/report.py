"""What every benchmark returns and how `make bench` prints it: figures with their targets."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field


def percentile(values: Sequence[float], q: float) -> float:
    """The nearest-rank `q` quantile (0 < q <= 1) of `values`; NaN when there are none."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


@dataclass(frozen=True)
class Figure:
    """One measured number; `at_most` / `at_least` is its target, when it has one."""

    name: str
    value: float
    unit: str
    at_most: float | None = None
    at_least: float | None = None

    def target(self) -> str:
        if self.at_most is not None:
            return f"<= {_number(self.at_most)} {self.unit}"
        if self.at_least is not None:
            return f">= {_number(self.at_least)} {self.unit}"
        return ""

    def verdict(self) -> str:
        if self.at_most is None and self.at_least is None:
            return ""
        met = not math.isnan(self.value) and (
            (self.at_most is None or self.value <= self.at_most)
            and (self.at_least is None or self.value >= self.at_least)
        )
        return "met" if met else "MISSED"


@dataclass
class Section:
    """One benchmark's result: its figures and free-text notes (set-up, caveats)."""

    title: str
    figures: list[Figure] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    table: list[list[str]] = field(default_factory=list)

    def render(self) -> str:
        lines = [f"== {self.title} =="]
        if self.table:
            lines += _grid(self.table)
        if self.figures:
            rows = [["figure", "value", "target", ""]]
            rows += [
                [f.name, f"{_number(f.value)} {f.unit}", f.target(), f.verdict()]
                for f in self.figures
            ]
            lines += _grid(rows)
        lines += [f"  {note}" for note in self.notes]
        return "\n".join(lines)


def _number(value: float) -> str:
    if math.isnan(value):
        return "n/a"
    if math.isinf(value):
        return "inf"
    return (
        f"{value:.2f}"
        if abs(value) < 10
        else f"{value:.1f}"
        if abs(value) < 100
        else f"{value:.0f}"
    )


def _grid(rows: list[list[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        "  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]
