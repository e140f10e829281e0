"""Scaling: per-call cost after many recorded calls, memory per scope, memory over days.

One scope records 10^6 calls spread evenly over three simulated days (the injectable clock
moves 0.26 s per call). At 10^3, 10^5 and 10^6 calls, reserve+commit and check+record on
that scope are timed interleaved with the same operations on a fresh scope; the ratio must
stay near 1 (flat). The store's size is taken at the same points: a day counter keeps at
most ``window / bucket + 1`` buckets, so the scope itself stays bounded; finished hold ids
(tombstones, kept ``tombstone_ttl`` for idempotent commits) grow with the call rate over
the last day. Then memory per scope (tracemalloc): 10^5 scopes with one call each in one
MemoryStore, and 10^4 scopes made by a BudgetManager template (whose Budget objects are
cached up to ``max_cached``).
"""

from __future__ import annotations

import gc
import sys
import tracemalloc
import types
import uuid
from collections.abc import Callable
from typing import Any

from agent_budget import BudgetManager, BudgetScope, MemoryStore, RateTable, Usage
from agent_budget.scope import Metric
from agent_budget.stores import Line

from .bench_core import IN_TOKENS, MAX_OUT, MODEL, OUT_TOKENS, _Clock, make_budget
from .harness import CPU, Table, fmt_bytes, interleaved, verdict

__all__ = ["deep_size", "run"]

DAYS = 3
START = 1_800_000_000.0
BUDGET_FILL = 10_000  # calls made through Budget.record before the direct store fill


def deep_size(root: object) -> int:
    """Bytes of every object reachable from ``root`` (sys.getsizeof, each object once).

    Classes, modules and functions are skipped: they are shared, not owned by ``root``.
    """
    seen: set[int] = set()
    stack = [root]
    total = 0
    skip = (type, types.ModuleType, types.FunctionType, types.BuiltinFunctionType)
    while stack:
        obj = stack.pop()
        if id(obj) in seen or isinstance(obj, skip):
            continue
        seen.add(id(obj))
        total += sys.getsizeof(obj)
        stack.extend(gc.get_referents(obj))
    return total


def _store_parts(store: MemoryStore) -> tuple[int, int]:
    """Bytes of (scope counters and buckets, tombstones); MemoryStore internals, best effort."""
    scopes = getattr(store, "_scopes", None)
    finished = getattr(store, "_finished", None)
    counters = deep_size(scopes) if scopes is not None else 0
    tombstones = deep_size(finished) if finished is not None else 0
    return counters, tombstones


def _scaling(checkpoints: tuple[int, ...], n: int, rounds: int) -> list[Table]:
    """Fill one scope up to each checkpoint, timing it against a fresh scope there."""
    total = checkpoints[-1]
    step = DAYS * 86_400 / total
    clock = _Clock(START)
    budget = make_budget(clock=clock)
    store = budget.store
    assert isinstance(store, MemoryStore)
    rates = RateTable().resolve(MODEL).rates
    tokens = IN_TOKENS + OUT_TOKENS
    cost = rates.cost_nanos(Usage(IN_TOKENS, OUT_TOKENS))
    metrics = [
        (Metric.SESSION_TOKENS, tokens),
        (Metric.SESSION_COST, cost),
        (Metric.DAY_TOKENS, tokens),
        (Metric.DAY_COST, cost),
        (Metric.model_tokens(MODEL), tokens),
        (Metric.model_cost(MODEL), cost),
    ]
    lines = [Line(budget.name, metric, amount) for metric, amount in metrics]
    usage = Usage(IN_TOKENS, OUT_TOKENS)
    timing_rows: list[list[str]] = []
    memory_rows: list[list[str]] = []
    done = 0
    measured_ops = 0
    for checkpoint in checkpoints:
        while done < checkpoint:
            clock.now = START + done * step
            if done < BUDGET_FILL:
                budget.record("fill", MODEL, IN_TOKENS, OUT_TOKENS)
            else:
                # Exactly the lines Budget.record writes, without its per-call Python layer.
                store.commit(uuid.uuid4().hex, lines, now=clock.now, group=budget.name)
            done += 1
        session = budget.summary()["session"]["tokens"]
        if session != (done + measured_ops) * tokens:
            raise AssertionError(f"fill went astray: {session} tokens after {done} calls")
        stats = store.stats()
        counters_b, tombstones_b = _store_parts(store)
        memory_rows.append(
            [
                f"{done + measured_ops:,}",
                f"{(clock.now - START) / 86_400:.2f}",
                str(stats["counters"]),
                str(stats["buckets"]),
                f"{stats['tombstones']:,}",
                fmt_bytes(counters_b),
                fmt_bytes(tombstones_b),
                f"{tombstones_b / max(1, stats['tombstones']):.0f}",
                fmt_bytes(deep_size(store)),
            ]
        )
        fresh = make_budget(clock=clock)

        def reserve_commit(b: Any) -> Callable[[int], None]:
            def op(k: int) -> None:
                for _ in range(k):
                    b.commit(b.reserve(MODEL, IN_TOKENS, MAX_OUT), usage)

            return op

        def check_record(b: Any) -> Callable[[int], None]:
            def op(k: int) -> None:
                for _ in range(k):
                    b.check(MODEL, IN_TOKENS, MAX_OUT)
                    b.record("s1", MODEL, IN_TOKENS, OUT_TOKENS)

            return op

        for label, make in (("reserve+commit", reserve_commit), ("check+record", check_record)):
            res = interleaved({"fresh": make(fresh), "filled": make(budget)}, n, rounds, clock=CPU)
            measured_ops += n * rounds
            timing_rows.append(
                [
                    f"{checkpoint:,}",
                    label,
                    f"{res['fresh']:.1f}",
                    f"{res['filled']:.1f}",
                    f"{res['filled'] / res['fresh']:.2f}",
                ]
            )
    bound = 2 * (store.options.window_seconds // store.options.bucket_seconds + 1)
    timing = Table(
        "Scaling: cost per operation on one scope after N recorded calls",
        ["recorded calls", "operation", "fresh scope us/op", "after N us/op", "x fresh"],
        timing_rows,
        [
            f"{n:,} operations per round, {rounds} rounds, median, interleaved with a fresh "
            "scope on its own MemoryStore. Flat means the x fresh column stays near 1.",
            f"The first {min(BUDGET_FILL, total):,} calls go through Budget.record; the rest "
            "are committed straight to the store with the same lines Budget.record writes "
            "(the Budget's own state is bounded by max_records).",
        ],
    )
    memory = Table(
        f"Scaling: one scope's store over {DAYS} simulated days ({total:,} calls)",
        [
            "recorded calls",
            "day",
            "counters",
            "day buckets",
            "tombstones",
            "counter bytes",
            "tombstone bytes",
            "bytes per tombstone",
            "whole store",
        ],
        memory_rows,
        [
            f"Calls are spread evenly over {DAYS} days. Day buckets are bounded by "
            f"{bound} (two day counters of window/bucket + 1): the scope's counters stay "
            "the same size however many calls it records.",
            "Tombstones are the finished hold ids the store remembers for "
            f"{store.options.tombstone_ttl / 3600:.0f} h so a repeated commit is not "
            "counted twice: bounded by the calls of the last tombstone_ttl and by "
            "max_tombstones (10,000 by default), whichever is fewer; each is a 60-bit key in "
            "a dict and a FIFO (stamps shared by the ids of the same second).",
            verdict(
                "bytes per tombstone",
                max(float(row[7].replace(",", "")) for row in memory_rows if row[4] != "0"),
                100,
                unit=" B",
            ),
            "Bytes are sys.getsizeof summed over reachable objects (MemoryStore internals). "
            "Recorded calls include the timed operations of earlier rows.",
        ],
    )
    return [timing, memory]


def _traced(fill: Callable[[], object]) -> tuple[int, object]:
    """Net bytes still allocated after ``fill()`` (tracemalloc), and what it returned."""
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        kept = fill()
        gc.collect()
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    return after - before, kept


def _per_scope(store_scopes: int, manager_scopes: int) -> Table:
    """Memory per scope: bare store state for many scopes, then scopes made by a manager."""
    tokens = IN_TOKENS + OUT_TOKENS
    metrics = [
        Metric.SESSION_TOKENS,
        Metric.SESSION_COST,
        Metric.DAY_TOKENS,
        Metric.DAY_COST,
        Metric.model_tokens(MODEL),
        Metric.model_cost(MODEL),
    ]

    def fill_store() -> MemoryStore:
        store = MemoryStore()
        for i in range(store_scopes):
            name = f"user:{i}"
            store.commit(
                uuid.uuid4().hex, [Line(name, m, tokens) for m in metrics], now=START, group=name
            )
        return store

    def fill_manager() -> BudgetManager:
        manager = BudgetManager(MemoryStore(), clock=_Clock(START))
        manager.add_template(
            "user:",
            BudgetScope(
                "user:",
                max_tokens_per_session=10**9,
                max_cost_per_session_usd=100,
                max_tokens_per_day=10**9,
                max_cost_per_day_usd=100,
            ),
        )
        for i in range(manager_scopes):
            manager.record(f"user:{i}", "s", MODEL, IN_TOKENS, OUT_TOKENS)
        return manager

    rows = []
    store_bytes, store = _traced(fill_store)
    assert isinstance(store, MemoryStore)
    _, tomb = _store_parts(store)
    rows.append(
        [
            f"{store_scopes:,}",
            "MemoryStore, one call per scope",
            fmt_bytes(store_bytes),
            f"{store_bytes / store_scopes:,.0f}",
            f"{tomb / store_scopes:,.0f}",
        ]
    )
    del store
    manager_bytes, manager = _traced(fill_manager)
    assert isinstance(manager, BudgetManager)
    assert isinstance(manager.store, MemoryStore)
    _, tomb = _store_parts(manager.store)
    rows.append(
        [
            f"{manager_scopes:,}",
            "BudgetManager template scope, one call each",
            fmt_bytes(manager_bytes),
            f"{manager_bytes / manager_scopes:,.0f}",
            f"{tomb / manager_scopes:,.0f}",
        ]
    )
    del manager
    return Table(
        "Scaling: memory per scope (tracemalloc, net bytes retained)",
        ["scopes", "what", "total", "bytes per scope", "of which tombstone bytes"],
        rows,
        [
            "A scope with one call holds six counters (session, day and model; tokens and "
            "cost), two of them with one day bucket, plus the call's tombstone.",
            "The manager row adds one cached Budget object per scope (cache bounded by "
            "max_cached, default 10,000) and its scope definition; beyond that bound only "
            "the store grows.",
        ],
    )


TEMPLATE = BudgetScope(
    "user:",
    max_tokens_per_session=10**9,
    max_cost_per_session_usd=100,
    max_tokens_per_day=10**9,
    max_cost_per_day_usd=100,
)


def _manager(store: MemoryStore, max_cached: int = 10_000) -> BudgetManager:
    manager = BudgetManager(store, clock=_Clock(START), max_cached=max_cached)
    manager.add_template("user:", TEMPLATE)
    return manager


def _tenant_bytes(tenants: int) -> int:
    """Growth of a fresh interpreter's resident memory over ``tenants`` tenants of one
    BudgetManager over a MemoryStore, each with one call recorded."""
    import subprocess

    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.bench_scaling", "--tenants", str(tenants)],
        capture_output=True,
        text=True,
        check=True,
    )
    return int(out.stdout.strip().splitlines()[-1])


def _measure_tenants(tenants: int) -> int:
    import os

    manager = _manager(MemoryStore())
    for i in range(100):  # warm: code, caches, the template's prototype
        manager.record(f"user:w{i}", "", MODEL, IN_TOKENS, OUT_TOKENS)
    page = os.sysconf("SC_PAGE_SIZE")

    def rss() -> int:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * page

    gc.collect()
    before = rss()
    for i in range(tenants):
        manager.record(f"user:{i}", "", MODEL, IN_TOKENS, OUT_TOKENS)
    gc.collect()
    return rss() - before


def _tenants(tenants: int, timed: int, n: int, rounds: int) -> Table:
    """Memory per idle tenant, and what a get() costs when the Budget is cached and when it
    must be rebuilt (the tenant's usage is in the store; its Budget object was evicted)."""
    grown = _tenant_bytes(tenants)
    store = MemoryStore()
    cached = _manager(store, max_cached=timed + 10)
    evicting = _manager(store, max_cached=100)
    names = [f"user:{i}" for i in range(timed)]
    usage = Usage(IN_TOKENS, OUT_TOKENS)
    for name in names:
        budget = cached.get(name)
        assert budget is not None
        budget.commit(budget.reserve(MODEL, IN_TOKENS, MAX_OUT), usage)
    for name in names:
        evicting.get(name)

    def cycle(manager: BudgetManager, work: bool) -> Callable[[int], None]:
        state = {"i": 0}

        def op(k: int) -> None:
            i = state["i"]
            get = manager.get
            for _ in range(k):
                budget = get(names[i])
                i = (i + 1) % len(names)
                if work:
                    assert budget is not None
                    budget.commit(budget.reserve(MODEL, IN_TOKENS, MAX_OUT), usage)
            state["i"] = i

        return op

    res = interleaved(
        {
            "get(), cached": cycle(cached, False),
            "get(), rebuilt": cycle(evicting, False),
            "get() + reserve + commit, cached": cycle(cached, True),
            "get() + reserve + commit, rebuilt": cycle(evicting, True),
        },
        n,
        rounds,
        clock=CPU,
    )
    rows = [
        ["memory per idle tenant", f"{grown / tenants:,.0f} B", ""],
        *[[name, f"{value:.2f} us", ""] for name, value in res.items()],
    ]
    rows[2][2] = f"{res['get(), rebuilt'] / res['get(), cached']:.2f}"
    rows[4][2] = (
        f"{res['get() + reserve + commit, rebuilt'] / res['get() + reserve + commit, cached']:.2f}"
    )
    return Table(
        f"Scaling: {tenants:,} tenants of one BudgetManager over a MemoryStore",
        ["what", "value", "x cached"],
        rows,
        [
            f"Memory: growth of a fresh interpreter's resident set over {tenants:,} tenants "
            "made from one template (four caps), each with one call recorded: the store's "
            "counters, the scope definitions, the manager's names and its cache of up to "
            "10,000 Budget objects, the ledger and record rings.",
            f"get(): {timed:,} tenants whose usage is in the store, read through a manager that "
            "caches them all and one that caches 100 (so each get() rebuilds the Budget, as "
            f"90% do with uniform access over 10x the cache); {n:,} calls per round, "
            f"{rounds} rounds, median CPU time.",
            verdict("memory per idle tenant", grown / tenants, 1024, unit=" B"),
            verdict(
                "rebuilt get() / cached get()", res["get(), rebuilt"] / res["get(), cached"], 2
            ),
        ],
    )


def run(quick: bool = False) -> list[Table]:
    """Flatness and memory tables; quick runs use counts 100x to 1000x smaller."""
    if quick:
        tables = _scaling((100, 1_000, 3_000), n=100, rounds=2)
        tables.append(_per_scope(1_000, 200))
        tables.append(_tenants(2_000, 500, 500, 2))
    else:
        tables = _scaling((1_000, 100_000, 1_000_000), n=1_000, rounds=11)
        tables.append(_per_scope(100_000, 10_000))
        tables.append(_tenants(100_000, 5_000, 5_000, 5))
    return tables


if __name__ == "__main__":
    if sys.argv[1:2] == ["--tenants"]:
        print(_measure_tenants(int(sys.argv[2])))
    else:
        for t in run(quick="--quick" in sys.argv):
            print(t.text())
