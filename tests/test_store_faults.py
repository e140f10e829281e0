"""Faults: a redis-server killed mid-run, a SQLite writer killed with SIGKILL mid-commit, and
holds left behind by a killed process.

Fail-closed budgets refuse with StoreUnavailableError while Redis is down; fail-open ones
admit, log and buffer their commits, which are replayed once Redis is back. A killed SQLite
writer leaves a clean file holding every commit it acknowledged. A dead process's holds
expire and free the budget.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from agent_budget import (
    Budget,
    BudgetExceededError,
    BudgetScope,
    ModelRates,
    StoreError,
    StoreUnavailableError,
    Usage,
)
from agent_budget.stores import Line, Store
from agent_budget.stores.sqlite import SQLiteStore

from .clock import FakeClock
from .store_fixtures import FakeProvider, RedisServer

RATES = {"test-model": ModelRates("0.001", "0.003")}
SPAWN = multiprocessing.get_context("spawn")


# -- Redis killed in the middle of a run ------------------------------------------------------


@pytest.mark.redis
def test_redis_killed_mid_run_fail_closed_fail_open_and_replay(
    redis_server_factory: Callable[..., RedisServer],
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    import redis

    server = redis_server_factory(persist=True)  # appendfsync always: acknowledged = on disk
    store = Store.from_url(server.url + "?server_time=0")
    closed = Budget(
        BudgetScope("closed", max_tokens_per_session=10_000), RATES, store=store, clock=clock
    )
    opened = Budget(
        BudgetScope("open", max_tokens_per_session=10_000),
        RATES,
        store=store,
        clock=clock,
        on_store_error="fail_open",
    )
    assert closed.on_store_error == "fail_closed"  # the default with hard_stop
    provider = FakeProvider()
    for budget in (closed, opened):
        budget.reserve("test-model", 100, 50).commit(provider(100, 50))
    in_flight = opened.reserve("test-model", 10, 10)  # a call running when Redis dies

    server.kill()
    with pytest.raises(StoreUnavailableError) as info:
        closed.reserve("test-model", 10, 10)
        provider(10, 10)
    assert provider.calls == 2
    assert isinstance(info.value.__cause__, StoreError)
    assert isinstance(info.value.__cause__.__cause__, redis.exceptions.ConnectionError)
    with caplog.at_level(logging.WARNING, logger="agent_budget"):
        admitted = opened.reserve("test-model", 30, 20)
        admitted.commit(provider(30, 20))
        in_flight.commit(provider(10, 5))
    assert provider.calls == 4
    assert "fail_open" in caplog.text and "buffered" in caplog.text
    assert opened.alerts[-1].limit_type == "store_unavailable"
    assert opened.pending_commits == 2
    with pytest.raises(StoreError):
        opened.usage()  # reads fail loudly too, as the library's own error

    server.start()  # same port, state restored from the append-only file
    opened.reserve("test-model", 1, 0).release()  # the next operation replays the buffer
    assert opened.pending_commits == 0
    assert (
        opened.usage()["session:tokens"]
        == store.read("open", now=clock(), group="open")["session:tokens"]
    )
    level = opened.usage()["session:tokens"]
    assert (level.committed, level.reserved) == (150 + 50 + 15, 0)
    closed.reserve("test-model", 10, 10).commit(provider(10, 10))
    assert closed.usage()["session:tokens"].committed == 170
    opened.reserve("test-model", 1, 0).release()
    assert opened.usage()["session:tokens"].committed == 215, "replay is idempotent"
    store.close()


@pytest.mark.redis
def test_redis_outage_without_persistence_still_counts_buffered_usage(
    redis_server_factory: Callable[..., RedisServer], clock: FakeClock
) -> None:
    server = redis_server_factory()
    store = Store.from_url(server.url + "?server_time=0")
    budget = Budget(
        BudgetScope("b", max_tokens_per_session=1000),
        RATES,
        store=store,
        clock=clock,
        on_store_error="fail_open",
    )
    server.kill()
    budget.record("s", "test-model", 40, 2)
    assert budget.pending_commits == 1
    server.start()  # an empty server: the buffered commit is all it will know
    budget.record("s", "test-model", 1, 0)
    assert budget.pending_commits == 0
    assert budget.usage()["session:tokens"].committed == 43
    store.close()


# -- SQLite writer killed with SIGKILL during heavy commits ------------------------------------


def _sqlite_writer(path: str, acks: Any) -> None:
    """Commit forever, acknowledging each commit once the store returned."""
    store = SQLiteStore(path)
    index = 0
    while True:
        hold = f"w{index}"
        amount = 1_000 + index
        lines = [
            Line("writer", "session:cost", amount),
            Line("writer", "day:cost", amount),
            Line("global", "session:cost", amount),
        ]
        store.reserve(
            hold,
            [Line(x.scope, x.metric, amount, 10**15) for x in lines],
            now=time.time(),
            ttl=60,
            group="global",
        )
        store.commit(
            hold,
            lines,
            now=time.time(),
            group="global",
            record={"scope": "writer", "cost_nanos": amount},
        )
        acks.send((hold, amount))
        index += 1


def _receive_until(conn: Any, count: int, proc: Any) -> list[tuple[str, int]]:
    got: list[tuple[str, int]] = []
    deadline = time.monotonic() + 120
    while len(got) < count:
        assert proc.is_alive() or conn.poll(0), "writer died early"
        assert time.monotonic() < deadline, "writer too slow"
        if conn.poll(0.5):
            got.append(conn.recv())
    return got


def test_sqlite_writer_killed_mid_commit_loses_no_acknowledged_commit(tmp_path: Path) -> None:
    path = str(tmp_path / "crash.db")
    SQLiteStore(path).close()
    receive, send = SPAWN.Pipe(duplex=False)
    writer = SPAWN.Process(target=_sqlite_writer, args=(path, send))
    writer.start()
    send.close()
    try:
        acked = _receive_until(receive, 300, writer)
        assert writer.pid is not None
        os.kill(writer.pid, signal.SIGKILL)  # in the middle of its next transaction
        writer.join(timeout=30)
    finally:
        if writer.is_alive():
            writer.kill()
            writer.join()
    assert writer.exitcode == -signal.SIGKILL
    while receive.poll(0):
        try:
            acked.append(receive.recv())
        except EOFError:
            break

    with sqlite3.connect(path) as raw:
        assert raw.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    store = SQLiteStore(path)
    now = time.time()
    ledger = store.ledger(scope="writer")
    in_ledger = {row["cost_nanos"] for row in ledger}
    assert {amount for _, amount in acked} <= in_ledger  # every acknowledged commit is there
    total = sum(row["cost_nanos"] for row in ledger)
    writer_level = store.read("writer", now=now, group="global")
    assert writer_level["session:cost"].committed == total  # counters and ledger agree
    assert writer_level["day:cost"].committed == total
    assert store.read("global", now=now, group="global")["session:cost"].committed == total
    hold, amount = acked[-1]
    again = store.commit(hold, [Line("writer", "session:cost", amount)], now=now, group="global")
    assert not again.applied  # the tombstone survived the crash too
    store.close()


# -- holds of a killed process expire -----------------------------------------------------------


class FixedClock:
    """A clock stuck at one instant (picklable for a spawned process)."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _hold_and_hang(url: str, now: float, ready: Any) -> None:
    budget = Budget(
        BudgetScope("capped", max_tokens_per_session=1000),
        RATES,
        store=Store.from_url(url),
        clock=FixedClock(now),
        hold_ttl=30,
    )
    budget.reserve("test-model", 900, 0)
    ready.send("held")
    time.sleep(600)


def _kill_holder(url: str, clock: FakeClock) -> None:
    receive, send = SPAWN.Pipe(duplex=False)
    holder = SPAWN.Process(target=_hold_and_hang, args=(url, clock(), send))
    holder.start()
    send.close()
    try:
        assert receive.poll(60), "holder never reserved"
        assert receive.recv() == "held"
        assert holder.pid is not None
        os.kill(holder.pid, signal.SIGKILL)
        holder.join(timeout=30)
    finally:
        if holder.is_alive():
            holder.kill()
            holder.join()


@pytest.mark.parametrize("kind", ["sqlite", pytest.param("redis", marks=pytest.mark.redis)])
def test_holds_of_a_killed_process_expire(
    kind: str, tmp_path: Path, clock: FakeClock, request: pytest.FixtureRequest
) -> None:
    if kind == "sqlite":
        url = f"sqlite:///{tmp_path / 'holds.db'}"
    else:
        url = request.getfixturevalue("redis_url") + "?server_time=0"
    _kill_holder(url, clock)
    store = Store.from_url(url)
    budget = Budget(
        BudgetScope("capped", max_tokens_per_session=1000), RATES, store=store, clock=clock
    )
    assert budget.usage()["session:tokens"].reserved == 900
    with pytest.raises(BudgetExceededError):
        budget.reserve("test-model", 200, 0)
    clock.advance(30)
    assert budget.usage() == {}
    budget.reserve("test-model", 1000, 0).commit(Usage(1000, 0))
    assert budget.usage()["session:tokens"].committed == 1000
    store.close()
