"""The benchmark harness: interleaved rounds, medians, and ratios against a baseline.

A case module is ``benchmarks/bench_<name>.py`` exposing ``run(quick: bool) -> list[Table]``.
Every case times its baseline and ours in the same process, in rotating order, for several
rounds, so drift (CPU frequency, other processes on a shared machine) hits both alike; the
median of the rounds is reported. Timings are never asserted; they are printed and written
to BENCHMARKS.md.
"""

from __future__ import annotations

import gc
import statistics
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from agent_budget import BudgetScope

__all__ = [
    "BIG",
    "CPU",
    "Table",
    "bench_scope",
    "fmt_bytes",
    "interleaved",
    "interleaved_samples",
    "ratio_table",
    "run_threads",
    "verdict",
]


BIG = 10**15  # limits no benchmark reaches: every call is admitted


def bench_scope(name: str = "bench") -> BudgetScope:
    """The scope every timed case uses: four caps (session and day, tokens and USD), all so
    high that every call is admitted, so each call pays for checking all four."""
    return BudgetScope(
        name,
        max_tokens_per_session=BIG,
        max_cost_per_session_usd=10**6,
        max_tokens_per_day=BIG,
        max_cost_per_day_usd=10**6,
    )


@dataclass
class Table:
    """One result table: a title, column names, rows of cells, and notes under it."""

    title: str
    columns: list[str]
    rows: list[list[str]]
    notes: list[str] = field(default_factory=list)

    def markdown(self) -> str:
        """The table as a GitHub-flavoured markdown section (### title, table, notes)."""
        out = [
            f"### {self.title}",
            "",
            "| " + " | ".join(self.columns) + " |",
            "|" + "---|" * len(self.columns),
        ]
        out += ["| " + " | ".join(row) + " |" for row in self.rows]
        if self.notes:
            out += [""] + [f"- {note}" for note in self.notes]
        return "\n".join(out) + "\n"

    def text(self) -> str:
        """The table as aligned plain text, for the terminal."""
        widths = [
            max(len(c), *(len(r[i]) for r in self.rows)) if self.rows else len(c)
            for i, c in enumerate(self.columns)
        ]
        line = "  ".join(c.ljust(w) for c, w in zip(self.columns, widths, strict=True))
        body = [
            "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True))
            for row in self.rows
        ]
        return "\n".join([f"== {self.title}", line, *body, *(f"  * {n}" for n in self.notes)])


def interleaved_samples(
    cases: dict[str, Callable[[int], None]],
    n: int,
    rounds: int = 5,
    *,
    clock: Callable[[], float] = time.perf_counter,
) -> dict[str, list[float]]:
    """Run every case ``fn(n)`` once per round, in rotation; microseconds per op per round.

    The order rotates each round so no case always runs first (cold) or last. A full
    garbage collection runs before every timed call so one case's garbage is not collected
    on another's clock. ``clock`` is wall time by default; ``CPU`` (this process's CPU time,
    every thread) leaves out the time other processes on a shared machine take.
    """
    if n <= 0 or rounds <= 0:
        raise ValueError("n and rounds must be positive")
    samples: dict[str, list[float]] = {name: [] for name in cases}
    names = list(cases)
    for r in range(rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            gc.collect()
            start = clock()
            cases[name](n)
            samples[name].append((clock() - start) / n * 1e6)
    return samples


def interleaved(
    cases: dict[str, Callable[[int], None]],
    n: int,
    rounds: int = 5,
    *,
    clock: Callable[[], float] = time.perf_counter,
) -> dict[str, float]:
    """Run every case ``fn(n)`` once per round, in rotation; median microseconds per op."""
    samples = interleaved_samples(cases, n, rounds, clock=clock)
    return {name: statistics.median(values) for name, values in samples.items()}


CPU = time.process_time
"""The clock of this process's CPU time (all its threads): what a case costs, without the
time other processes on a shared machine take from it."""


def verdict(name: str, value: float, target: float, *, unit: str = "x") -> str:
    """A note saying whether ``value`` meets ``target`` (lower is better)."""
    met = "met" if value <= target else "NOT met"
    return f"Target: {name} at most {target:g}{unit}; measured {value:.2f}{unit} ({met})."


def run_threads(op: Callable[[int], None], n: int, threads: int) -> None:
    """Run ``op(k)`` in ``threads`` threads that start together, ``n`` ops in all.

    ``op(k)`` must perform ``k`` operations; thread start-up happens before the barrier, so
    timing the call measures mostly the operations themselves.
    """
    if threads <= 1:
        op(n)
        return
    share, extra = divmod(n, threads)
    barrier = threading.Barrier(threads)
    errors: list[BaseException] = []

    def work(k: int) -> None:
        barrier.wait()
        try:
            op(k)
        except BaseException as exc:  # surfaced below, in the caller's thread
            errors.append(exc)

    workers = [
        threading.Thread(target=work, args=(share + (1 if i < extra else 0),))
        for i in range(threads)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    if errors:
        raise errors[0]


def ratio_table(
    title: str,
    results: dict[str, float],
    baseline: str,
    *,
    unit: str = "us/op",
    notes: Sequence[str] = (),
    extra_baselines: Sequence[str] = (),
) -> Table:
    """A table of medians with the ratio of each to ``baseline`` (and to extra baselines).

    A ratio above 1 means slower (or bigger) than the baseline it is divided by.
    """
    base = results[baseline]
    columns = ["case", unit, f"x {baseline}"] + [f"x {b}" for b in extra_baselines]
    rows = []
    for name, value in results.items():
        row = [name, _num(value), _ratio(value, base)]
        row += [_ratio(value, results[b]) for b in extra_baselines]
        rows.append(row)
    return Table(title, columns, rows, list(notes))


def fmt_bytes(n: float) -> str:
    """Bytes in a short human form: ``512 B``, ``3.2 KiB``, ``41.0 MiB``."""
    value = float(n)
    for unit in ("B", "KiB", "MiB"):
        if abs(value) < 1024 or unit == "MiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def _num(value: float) -> str:
    return f"{value:.2f}" if abs(value) < 1000 else f"{value:,.0f}"


def _ratio(value: float, base: float) -> str:
    return f"{value / base:.2f}" if base else "n/a"
