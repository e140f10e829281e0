"""Async Redis and the outage spool: what issue 16's paths cost while the store is up.

1. Redis through ``redis.asyncio``: reserve+commit pairs per second with 64 concurrent
   tasks on one event loop, against the sync path with 8 threads (the baseline), and the
   default async path of a store without its own (a worker thread per call) for scale.
2. The durable spool adds nothing to a commit while the store answers: Budget
   reserve+commit pairs on SQLite and Redis with the spool on (the default, a file per
   store) and off (``spool=off``), interleaved; the ratio should be 1.00 within noise,
   since the spool is touched only when a call fails.

Each part starts its own redis-server on a free loopback port (left out, with a note,
without a redis-server binary).
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from agent_budget import Budget
from agent_budget.outage import buffer_for
from agent_budget.stores import Line, Store

from .bench_stores import MODEL, _lines, _redis_binary, _RedisServer
from .harness import Table, bench_scope, interleaved

__all__ = ["run"]

SMOKE_MARKS = ("redis",)
TASKS = 64
THREADS = 8


def _sync_threads(store: Store, reserve: list[Line], commit: list[Line], n: int) -> float:
    """Seconds for ``n`` pairs from 8 threads on the sync API."""
    share = n // THREADS
    barrier = threading.Barrier(THREADS + 1)

    def work(index: int) -> None:
        barrier.wait()
        for i in range(share):
            hold = f"s{index}-{i}-{time.perf_counter_ns()}"
            store.reserve(hold, reserve, now=time.time(), ttl=600, group="bench")
            store.commit(hold, commit, now=time.time(), group="bench")

    threads = [threading.Thread(target=work, args=(i,)) for i in range(THREADS)]
    for thread in threads:
        thread.start()
    barrier.wait()
    start = time.perf_counter()
    for thread in threads:
        thread.join()
    return time.perf_counter() - start


def _async_tasks(
    store: Store, reserve: list[Line], commit: list[Line], n: int, *, worker_thread: bool
) -> float:
    """Seconds for ``n`` pairs from 64 tasks on one event loop (``worker_thread``: through
    the base class's ``asyncio.to_thread`` default instead of redis.asyncio)."""
    share = n // TASKS
    base = Store.areserve if worker_thread else type(store).areserve
    base_commit = Store.acommit if worker_thread else type(store).acommit

    async def work(index: int) -> None:
        for i in range(share):
            hold = f"a{index}-{i}-{time.perf_counter_ns()}"
            await base(store, hold, reserve, now=time.time(), ttl=600, group="bench")
            await base_commit(store, hold, commit, now=time.time(), group="bench")

    async def main() -> float:
        await base(store, "warm", reserve, now=time.time(), ttl=600, group="bench")
        start = time.perf_counter()
        await asyncio.gather(*(work(i) for i in range(TASKS)))
        elapsed = time.perf_counter() - start
        await store.aclose()
        return elapsed

    return asyncio.run(main())


def _async_table(url: str, quick: bool) -> Table:
    reserve, commit = _lines()
    n = 640 if quick else 12_800
    rounds = 1 if quick else 3
    results: dict[str, list[float]] = {"sync, 8 threads": [], "async, 64 tasks": []}
    results["async, 64 tasks in worker threads"] = []
    for _ in range(rounds):
        for name in list(results):
            store = Store.from_url(url)
            if name.startswith("sync"):
                seconds = _sync_threads(store, reserve, commit, n)
            else:
                seconds = _async_tasks(store, reserve, commit, n, worker_thread="worker" in name)
            store.close()
            results[name].append(n / seconds)
    medians = {name: sorted(v)[len(v) // 2] for name, v in results.items()}
    base = medians["sync, 8 threads"]
    rows = [[name, f"{rate:,.0f}", f"{rate / base:.2f}"] for name, rate in medians.items()]
    return Table(
        "Redis: async (redis.asyncio) with 64 tasks against sync with 8 threads",
        ["path", "pairs/s", "x sync"],
        rows,
        [
            f"{n} reserve+commit pairs of Budget-shaped lines per run, median of {rounds} "
            "interleaved runs, one loopback redis-server, Redis Functions.",
            "Above 1 is faster than the sync path. The async path never blocks the event "
            "loop (tests/test_fault_injection.py: a heartbeat keeps ticking while Redis is "
            "SIGSTOPped); the worker-thread row is what a store without its own async "
            "path gets from the Store base class.",
        ],
    )


def _budget_pairs(budget: Budget) -> Callable[[int], None]:
    def op(k: int) -> None:
        for _ in range(k):
            reservation = budget.reserve(MODEL, 1200, 400)
            budget.commit(reservation)

    return op


def _spool_table(urls: dict[str, str], quick: bool, spool_dir: Path) -> Table:
    n, rounds = (100, 2) if quick else (2000, 5)
    cases: dict[str, Callable[[int], None]] = {}
    for kind, url in urls.items():
        for spool in ("on", "off"):
            option = "" if spool == "on" else ("&" if "?" in url else "?") + "spool=off"
            store = Store.from_url(url + option)
            scope = bench_scope(f"bench-{kind}-{spool}")
            budget = Budget(scope, store=store, hold_ttl=600)
            assert buffer_for(store, 1).durable == (spool == "on"), (kind, spool)
            cases[f"{kind}, spool {spool}"] = _budget_pairs(budget)
    results = interleaved(cases, n, rounds)
    rows = []
    for kind in urls:
        on, off = results[f"{kind}, spool on"], results[f"{kind}, spool off"]
        rows.append([kind, f"{off:.1f}", f"{on:.1f}", f"{on / off:.2f}"])
    return Table(
        "The durable spool adds nothing to a commit while the store is up",
        ["store", "spool off, us/pair", "spool on, us/pair", "x off"],
        rows,
        [
            f"Budget reserve+commit pairs (four caps), median of {rounds} interleaved runs of "
            f"{n}. The spool file lives in {spool_dir.name}/ and is touched only when a store "
            "call fails; while the store answers a call pays one length check.",
        ],
    )


def run(quick: bool = False) -> list[Table]:
    """The async Redis table and the spool table (SQLite always, Redis when available)."""
    tables: list[Table] = []
    with tempfile.TemporaryDirectory(prefix="ab-bench-outage-") as tmp:
        work = Path(tmp)
        spool_dir = work / "spool"
        previous = os.environ.get("AGENT_BUDGET_SPOOL_DIR")
        os.environ["AGENT_BUDGET_SPOOL_DIR"] = str(spool_dir)
        binary = _redis_binary()
        server = _RedisServer(binary, work) if binary else None
        try:
            urls = {"sqlite": f"sqlite:///{work / 'spool-bench.db'}?busy_timeout=60"}
            if server is not None:
                urls["redis"] = server.url
                tables.append(_async_table(server.url, quick))
            table = _spool_table(urls, quick, spool_dir)
            if server is None:
                table.notes.append("No redis-server binary: the Redis rows are left out.")
            tables.append(table)
        finally:
            if server is not None:
                server.stop()
            if previous is None:
                os.environ.pop("AGENT_BUDGET_SPOOL_DIR", None)
            else:
                os.environ["AGENT_BUDGET_SPOOL_DIR"] = previous
    return tables
