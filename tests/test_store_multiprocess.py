"""Eight processes on one store against one cap: SQLite file and Redis server.

Each process (started with the ``spawn`` context, so nothing is shared but the store)
reserves worst cases against its own user budget under a shared global cap and commits what
the "call" used. The global total never exceeds the cap, and the store's totals equal the
sum of what each process committed, to the nano-dollar.
"""

from __future__ import annotations

import multiprocessing
import queue
import random
import time
from pathlib import Path
from typing import Any

import pytest

from agent_budget import Budget, BudgetExceededError, BudgetScope, ModelRates, Usage
from agent_budget.money import usd_to_nanos
from agent_budget.stores import Level, Store
from agent_budget.stores.sqlite import SQLiteStore

PROCESSES = 8
OPS = 150
CAP_USD = "0.04"
RATES = {"test-model": ModelRates("0.001", "0.003")}  # 1,000 / 3,000 nano-USD per token


def _worker(url: str, index: int, barrier: Any, results: Any) -> None:
    """One process: OPS guarded calls; reports (index, admitted, refused, tokens, nanos)."""
    try:
        store = Store.from_url(url)
        glob = Budget(BudgetScope("global", max_cost_per_session_usd=CAP_USD), RATES, store=store)
        user = Budget(
            BudgetScope(f"user:{index}", max_tokens_per_session=10**9), RATES, parent=glob
        )
        rng = random.Random(index)
        admitted = refused = tokens = nanos = 0
        barrier.wait(timeout=60)
        for _ in range(OPS):
            inp, out = rng.randint(1, 50), rng.randint(1, 50)
            try:
                reservation = user.reserve("test-model", inp, out)
            except BudgetExceededError:
                refused += 1
                continue
            used = out if rng.random() < 0.5 else rng.randint(0, out)
            record = reservation.commit(Usage(inp, used))
            admitted += 1
            tokens += record.total_tokens
            nanos += record.cost_nanos
        store.close()
        results.put((index, admitted, refused, tokens, nanos))
    except BaseException as exc:  # report, so the parent fails with the reason
        results.put((index, "error", repr(exc)))
        raise


def _hammer(url: str) -> list[tuple[int, int, int, int, int]]:
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(PROCESSES)
    results = ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(url, i, barrier, results)) for i in range(PROCESSES)]
    for proc in procs:
        proc.start()
    out = []
    deadline = time.monotonic() + 240
    try:
        while len(out) < len(procs):
            try:
                item = results.get(timeout=0.5)
            except queue.Empty:
                dead = [p.exitcode for p in procs if p.exitcode not in (None, 0)]
                assert not dead, f"a worker died without reporting: exit codes {dead}"
                assert time.monotonic() < deadline, "workers did not finish in time"
                continue
            assert item[1] != "error", f"worker {item[0]} failed: {item[2]}"
            out.append(item)
    finally:
        for proc in procs:
            proc.join(timeout=60)
            if proc.is_alive():
                proc.kill()
                proc.join()
    assert all(proc.exitcode == 0 for proc in procs)
    return sorted(out)


def _check_totals(url: str, results: list[tuple[int, int, int, int, int]]) -> None:
    cap = usd_to_nanos(CAP_USD)
    total_nanos = sum(r[4] for r in results)
    total_tokens = sum(r[3] for r in results)
    assert sum(r[1] for r in results) > 0 and sum(r[2] for r in results) > 0, "cap never hit"
    assert total_nanos <= cap
    store = Store.from_url(url)
    try:
        glob = store.read("global", now=time.time(), group="global")
        assert glob["session:cost"].committed == total_nanos
        assert glob["session:cost"].reserved == 0
        assert glob["day:cost"].committed == total_nanos
        assert glob["session:tokens"].committed == total_tokens
        for index, _admitted, _refused, tokens, nanos in results:
            # A worker the others beat to the cap admitted nothing: no counters at all.
            mine = store.read(f"user:{index}", now=time.time(), group="global")
            assert mine.get("session:cost", Level()).committed == nanos
            assert mine.get("session:tokens", Level()).committed == tokens
            assert mine.get("session:tokens", Level()).reserved == 0
        if isinstance(store, SQLiteStore):
            ledger = store.ledger(scope=None)
            assert len(ledger) == sum(r[1] for r in results)
            assert sum(row["cost_nanos"] for row in ledger) == total_nanos
    finally:
        store.close()


@pytest.mark.slow
def test_eight_processes_share_one_sqlite_file(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'shared.db'}?busy_timeout=30"
    Store.from_url(url).close()  # create the schema once, as an app's setup would
    _check_totals(url, _hammer(url))
    store = SQLiteStore(tmp_path / "shared.db")
    conn = store._conn()
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    store.close()


@pytest.mark.slow
@pytest.mark.redis
def test_eight_processes_share_one_redis(redis_url: str) -> None:
    _check_totals(redis_url, _hammer(redis_url))
