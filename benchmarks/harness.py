"""The benchmark harness: interleaved rounds, medians, and ratios against a baseline.

A case module is ``benchmarks/bench_<name>.py`` exposing ``run(quick: bool) -> list[Table]``.
Timings are never asserted; they are printed and written to BENCHMARKS.md.
"""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

__all__ = ["Table", "interleaved", "ratio_table"]


@dataclass
class Table:
    """One result table: a title, column names, rows of cells, and notes under it."""

    title: str
    columns: list[str]
    rows: list[list[str]]
    notes: list[str] = field(default_factory=list)

    def markdown(self) -> str:
        out = [f"### {self.title}", "", "| " + " | ".join(self.columns) + " |",
               "|" + "---|" * len(self.columns)]
        out += ["| " + " | ".join(row) + " |" for row in self.rows]
        if self.notes:
            out += [""] + [f"- {note}" for note in self.notes]
        return "\n".join(out) + "\n"

    def text(self) -> str:
        widths = [max(len(c), *(len(r[i]) for r in self.rows)) if self.rows else len(c)
                  for i, c in enumerate(self.columns)]
        line = "  ".join(c.ljust(w) for c, w in zip(self.columns, widths))
        body = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)) for row in self.rows]
        return "\n".join([f"== {self.title}", line, *body, *(f"  * {n}" for n in self.notes)])


def interleaved(
    cases: dict[str, Callable[[int], None]], n: int, rounds: int = 5
) -> dict[str, float]:
    """Run every case ``fn(n)`` once per round, in rotation; median microseconds per op."""
    samples: dict[str, list[float]] = {name: [] for name in cases}
    names = list(cases)
    for r in range(rounds):
        order = names[r % len(names):] + names[: r % len(names)]
        for name in order:
            gc.collect()
            start = time.perf_counter()
            cases[name](n)
            samples[name].append((time.perf_counter() - start) / n * 1e6)
    return {name: statistics.median(values) for name, values in samples.items()}


def ratio_table(
    title: str,
    results: dict[str, float],
    baseline: str,
    *,
    unit: str = "us/op",
    notes: Sequence[str] = (),
    extra_baselines: Sequence[str] = (),
) -> Table:
    """A table of medians with the ratio of each to ``baseline`` (and to extra baselines)."""
    base = results[baseline]
    columns = ["case", unit, f"x {baseline}"] + [f"x {b}" for b in extra_baselines]
    rows = []
    for name, value in results.items():
        row = [name, f"{value:.2f}", f"{value / base:.2f}"]
        row += [f"{value / results[b]:.2f}" for b in extra_baselines]
        rows.append(row)
    return Table(title, columns, rows, list(notes))
