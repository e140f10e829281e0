"""Core overhead: reserve+commit and check+record on the in-memory store, 1 and 8 threads.

The floor the target is stated against ("lock+dict floor") is a bare lock and dicts doing
the same logical updates as a four-cap Budget (check four limits, hold four amounts, add six
counters, a bucket for each day counter): no validation, no records, no alerts, no pricing
objects. A second, leaner floor ("lean floor": check one cap and hold, then release and add,
each under a lock) is the least a budget of one cap could cost, next to a one-cap Budget.
"store only" calls MemoryStore directly with prebuilt lines. Times are CPU time. Target:
Budget within 5x of the lock+dict floor, with 1 thread and with 8. Run ``python -m
benchmarks.bench_core --profile`` for a cProfile of the Budget rows.
"""

from __future__ import annotations

import argparse
import cProfile
import itertools
import pstats
import threading
from collections.abc import Callable
from typing import Any

from agent_budget import Budget, BudgetScope, MemoryStore, RateTable, Usage
from agent_budget.scope import Metric
from agent_budget.stores import Line

from .harness import BIG, CPU, Table, bench_scope, interleaved, ratio_table, run_threads

__all__ = ["MODEL", "LeanFloor", "LockDictFloor", "make_budget", "run"]

MODEL = "gpt-4o-mini"
TARGET = 5.0
IN_TOKENS, MAX_OUT, OUT_TOKENS = 1200, 400, 350


class _Clock:
    """A settable clock without a lock (the benchmark's own; time stands still)."""

    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def make_budget(
    store: MemoryStore | None = None, clock: Callable[[], float] | None = None
) -> Budget:
    """A Budget with the four common caps (session and day, tokens and USD), never reached."""
    return Budget(bench_scope(), store=store or MemoryStore(), clock=clock or _Clock())


class LockDictFloor:
    """The physical floor: one lock over dicts, the same counter updates as Budget+MemoryStore.

    Reserve checks and holds the four capped counters; commit frees the hold and adds six
    counters (session and day, tokens and cost, plus the model's two), day counters into a
    15-minute bucket too. Costs are integer nano-USD per token, precomputed.
    """

    CAPPED = (
        (Metric.SESSION_TOKENS, 0),
        (Metric.SESSION_COST, 1),
        (Metric.DAY_TOKENS, 0),
        (Metric.DAY_COST, 1),
    )

    def __init__(self, in_nanos: int, out_nanos: int, clock: Callable[[], float]) -> None:
        self.lock = threading.Lock()
        self.in_nanos = in_nanos
        self.out_nanos = out_nanos
        self.clock = clock
        self.limits = {
            Metric.SESSION_TOKENS: BIG,
            Metric.SESSION_COST: BIG,
            Metric.DAY_TOKENS: BIG,
            Metric.DAY_COST: BIG,
        }
        self.committed: dict[str, int] = dict.fromkeys(self.limits, 0)
        self.committed[Metric.model_tokens(MODEL)] = 0
        self.committed[Metric.model_cost(MODEL)] = 0
        self.reserved: dict[str, int] = dict.fromkeys(self.limits, 0)
        self.buckets: dict[str, dict[int, int]] = {Metric.DAY_TOKENS: {}, Metric.DAY_COST: {}}
        self.holds: dict[int, tuple[int, int]] = {}
        self.ids = itertools.count()

    def reserve(self, input_tokens: int, max_output_tokens: int) -> int:
        amounts = (
            input_tokens + max_output_tokens,
            input_tokens * self.in_nanos + max_output_tokens * self.out_nanos,
        )
        committed, reserved, limits = self.committed, self.reserved, self.limits
        with self.lock:
            for metric, which in self.CAPPED:
                if committed[metric] + reserved[metric] + amounts[which] > limits[metric]:
                    raise RuntimeError("refused")
            for metric, which in self.CAPPED:
                reserved[metric] += amounts[which]
            hold = next(self.ids)
            self.holds[hold] = amounts
        return hold

    def commit(self, hold: int, input_tokens: int, output_tokens: int) -> None:
        tokens = input_tokens + output_tokens
        cost = input_tokens * self.in_nanos + output_tokens * self.out_nanos
        bucket = int(self.clock() // 900) * 900
        with self.lock:
            held = self.holds.pop(hold)
            for metric, which in self.CAPPED:
                self.reserved[metric] -= held[which]
            self._add(tokens, cost, bucket)

    def check(self, input_tokens: int, output_tokens: int) -> None:
        amounts = (
            input_tokens + output_tokens,
            input_tokens * self.in_nanos + output_tokens * self.out_nanos,
        )
        with self.lock:
            for metric, which in self.CAPPED:
                level = self.committed[metric] + self.reserved[metric]
                if level + amounts[which] > self.limits[metric]:
                    raise RuntimeError("refused")

    def record(self, input_tokens: int, output_tokens: int) -> None:
        tokens = input_tokens + output_tokens
        cost = input_tokens * self.in_nanos + output_tokens * self.out_nanos
        bucket = int(self.clock() // 900) * 900
        with self.lock:
            self._add(tokens, cost, bucket)
        with self.lock:
            for metric, _which in self.CAPPED:
                if self.committed[metric] > self.limits[metric]:
                    raise RuntimeError("exceeded")

    def _add(self, tokens: int, cost: int, bucket: int) -> None:
        committed = self.committed
        for metric, amount in (
            (Metric.SESSION_TOKENS, tokens),
            (Metric.SESSION_COST, cost),
            (Metric.DAY_TOKENS, tokens),
            (Metric.DAY_COST, cost),
            (Metric.model_tokens(MODEL), tokens),
            (Metric.model_cost(MODEL), cost),
        ):
            committed[metric] += amount
        for metric, amount in ((Metric.DAY_TOKENS, tokens), (Metric.DAY_COST, cost)):
            buckets = self.buckets[metric]
            buckets[bucket] = buckets.get(bucket, 0) + amount


class LeanFloor:
    """The leanest budget: one counter, one cap; check and hold under a lock, then release
    and add under a lock. What the issue calls the lean floor."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.committed = 0
        self.reserved = 0
        self.limit = BIG
        self.holds: dict[int, int] = {}
        self.ids = itertools.count()

    def reserve(self, amount: int) -> int:
        with self.lock:
            if self.committed + self.reserved + amount > self.limit:
                raise RuntimeError("refused")
            self.reserved += amount
            hold = next(self.ids)
            self.holds[hold] = amount
        return hold

    def commit(self, hold: int, amount: int) -> None:
        with self.lock:
            self.reserved -= self.holds.pop(hold)
            self.committed += amount


def _cases(threads: int) -> dict[str, dict[str, Callable[[int], None]]]:
    """Per operation: the floor, the store alone, and Budget over MemoryStore."""
    clock = _Clock()
    rates = RateTable().resolve(MODEL).rates
    million = 1_000_000
    in_nanos = rates.cost_nanos(Usage(million, 0)) // million
    out_nanos = rates.cost_nanos(Usage(0, million)) // million
    floor = LockDictFloor(in_nanos, out_nanos, clock)
    lean = LeanFloor()
    budget = make_budget(clock=clock)
    one_cap = Budget(
        BudgetScope("bench-one", max_tokens_per_session=BIG), store=MemoryStore(), clock=clock
    )
    store = MemoryStore()
    ids = itertools.count()
    reserve_lines = [Line("bench", m, 1, BIG) for m, _ in LockDictFloor.CAPPED]
    commit_lines = [Line("bench", m, 1) for m, _ in LockDictFloor.CAPPED] + [
        Line("bench", Metric.model_tokens(MODEL), 1),
        Line("bench", Metric.model_cost(MODEL), 1),
    ]
    usage = Usage(IN_TOKENS, OUT_TOKENS)

    def floor_rc(k: int) -> None:
        for _ in range(k):
            floor.commit(floor.reserve(IN_TOKENS, MAX_OUT), IN_TOKENS, OUT_TOKENS)

    def lean_rc(k: int) -> None:
        for _ in range(k):
            lean.commit(lean.reserve(IN_TOKENS + MAX_OUT), IN_TOKENS + OUT_TOKENS)

    def one_cap_rc(k: int) -> None:
        for _ in range(k):
            one_cap.commit(one_cap.reserve(MODEL, IN_TOKENS, MAX_OUT), usage)

    def store_rc(k: int) -> None:
        for _ in range(k):
            hold = str(next(ids))
            store.reserve(hold, reserve_lines, now=clock.now, ttl=600.0, group="bench")
            store.commit(hold, commit_lines, now=clock.now, group="bench")

    def budget_rc(k: int) -> None:
        for _ in range(k):
            budget.commit(budget.reserve(MODEL, IN_TOKENS, MAX_OUT), usage)

    def floor_cr(k: int) -> None:
        for _ in range(k):
            floor.check(IN_TOKENS, MAX_OUT)
            floor.record(IN_TOKENS, OUT_TOKENS)

    def store_cr(k: int) -> None:
        for _ in range(k):
            store.reserve(
                "check", reserve_lines, now=clock.now, ttl=600.0, group="bench", dry_run=True
            )
            store.commit(str(next(ids)), commit_lines, now=clock.now, group="bench")
            store.read("bench", now=clock.now, group="bench")

    def budget_cr(k: int) -> None:
        for _ in range(k):
            budget.check(MODEL, IN_TOKENS, MAX_OUT)
            budget.record("s1", MODEL, IN_TOKENS, OUT_TOKENS)

    def threaded(fn: Callable[[int], None]) -> Callable[[int], None]:
        return fn if threads == 1 else (lambda n: run_threads(fn, n, threads))

    return {
        "reserve+commit": {
            "lock+dict floor": threaded(floor_rc),
            "lean floor": threaded(lean_rc),
            "MemoryStore only": threaded(store_rc),
            "Budget": threaded(budget_rc),
            "Budget, one cap": threaded(one_cap_rc),
        },
        "check+record": {
            "lock+dict floor": threaded(floor_cr),
            "MemoryStore only": threaded(store_cr),
            "Budget": threaded(budget_cr),
        },
    }


def run(quick: bool = False) -> list[Table]:
    """Both operations, 1 and 8 threads; one table per operation."""
    n, rounds = (200, 2) if quick else (10_000, 5)
    tables = []
    results: dict[tuple[str, int], dict[str, float]] = {}
    for threads in (1, 8):
        for op, cases in _cases(threads).items():
            results[(op, threads)] = interleaved(cases, n, rounds, clock=CPU)
    for op in ("reserve+commit", "check+record"):
        merged: dict[str, float] = {}
        for threads in (1, 8):
            for name, value in results[(op, threads)].items():
                merged[f"{name}, {threads} thread{'s' if threads > 1 else ''}"] = value
        table = ratio_table(
            f"Core: {op} on MemoryStore (microseconds of CPU per operation)",
            merged,
            "lock+dict floor, 1 thread",
        )
        lean = op == "reserve+commit"
        table.columns.append("x floor, same threads")
        if lean:
            table.columns.append("x lean floor, same threads")
        for row in table.rows:
            threads = 1 if row[0].endswith(", 1 thread") else 8
            suffix = f"{threads} thread{'s' if threads > 1 else ''}"
            row.append(f"{merged[row[0]] / merged[f'lock+dict floor, {suffix}']:.2f}")
            if lean:
                row.append(f"{merged[row[0]] / merged[f'lean floor, {suffix}']:.2f}")
        ratios = {
            t: merged[f"Budget, {t} thread{'s' if t > 1 else ''}"]
            / merged[f"lock+dict floor, {t} thread{'s' if t > 1 else ''}"]
            for t in (1, 8)
        }
        worst = max(ratios.values())
        table.notes += [
            f"{n:,} operations per round, {rounds} rounds, median CPU time; 8 threads split "
            "the same number of operations over one shared Budget (per-op cost is the "
            "process's CPU time / ops).",
            f"model {MODEL} (built-in rates), {IN_TOKENS} input tokens, {MAX_OUT} max output, "
            f"{OUT_TOKENS} actual output; Budget: four caps (session and day, tokens and USD).",
            f"Target: Budget within {TARGET:.0f}x of the lock+dict floor. Measured "
            f"{ratios[1]:.2f}x with 1 thread, {ratios[8]:.2f}x with 8 "
            f"({'met' if worst <= TARGET else 'NOT met'}).",
        ]
        if lean:
            table.notes.append(
                "lean floor: one counter and one cap, check-and-hold then release-and-add, "
                "each under a lock (the second floor); 'Budget, one cap' is the Budget "
                "doing the same job with records, alerts, pricing and idempotency."
            )
        tables.append(table)
    return tables


def profile(n: int = 5_000, top: int = 15) -> str:
    """cProfile of Budget reserve+commit and check+record; the top functions by own time."""
    budget = make_budget()
    usage = Usage(IN_TOKENS, OUT_TOKENS)
    out = []
    for label, stmt in (
        ("reserve+commit", "for _ in range(n): budget.commit(budget.reserve(MODEL, I, M), usage)"),
        (
            "check+record",
            "for _ in range(n): budget.check(MODEL, I, M); budget.record('s1', MODEL, I, O)",
        ),
    ):
        env: dict[str, Any] = {
            "budget": budget,
            "usage": usage,
            "n": n,
            "MODEL": MODEL,
            "I": IN_TOKENS,
            "M": MAX_OUT,
            "O": OUT_TOKENS,
        }
        prof = cProfile.Profile()
        prof.runctx(stmt, env, env)
        import io

        buf = io.StringIO()
        stats = pstats.Stats(prof, stream=buf)
        stats.sort_stats("tottime").print_stats(top)
        buf.write("\n--- by cumulative time ---\n")
        stats.sort_stats("cumulative").print_stats(top)
        out.append(f"===== {label}, {n} ops\n{buf.getvalue()}")
    return "\n".join(out)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_core")
    parser.add_argument("--profile", action="store_true", help="print a cProfile instead")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.profile:
        print(profile())
    else:
        for t in run(quick=args.quick):
            print(t.text())
