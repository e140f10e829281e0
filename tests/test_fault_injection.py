"""Fault injection: nothing billed is lost and nothing is counted twice (issue 16).

Real parts only: redis-server processes (SIGSTOPped, SIGCONTed, killed and restarted), a
loopback TCP proxy between client and server that drops, delays and cuts replies
(``tests/fault_proxy.py``), SQLite files written by processes killed with SIGKILL, and the
durable outage spool those processes leave behind. Every wait is bounded (short socket
timeouts, polls with deadlines); the longer runs are marked ``slow`` and run in CI.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import random
import signal
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from agent_budget import (
    Budget,
    BudgetExceededError,
    BudgetScope,
    MemoryStore,
    ModelRates,
    StoreError,
    StoreTransientError,
    StoreUnavailableError,
    Usage,
)
from agent_budget.outage import QUARANTINE_ALERT, PendingOp, buffer_for
from agent_budget.stores import Level, Line, Store

from .clock import FakeClock
from .fault_proxy import FaultProxy
from .store_fixtures import RedisServer, need_redis

RATES = {"test-model": ModelRates("0.001", "0.003")}
SPAWN = multiprocessing.get_context("spawn")
FAST = "server_time=0&socket_timeout=0.3&socket_connect_timeout=0.3"


def _wait_for(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.02)


@contextmanager
def _stopped(server: RedisServer) -> Iterator[None]:
    """The server frozen with SIGSTOP (a hung Redis), thawed with SIGCONT on exit."""
    assert server.process is not None
    os.kill(server.process.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(server.process.pid, signal.SIGCONT)


def _raw_level(server: RedisServer, scope: str, metric: str, clock: FakeClock) -> Level:
    store = Store.from_url(f"{server.url}?server_time=0")
    try:
        return store.read(scope, now=clock(), group=scope).get(metric, Level())
    finally:
        store.close()


@pytest.fixture
def redis_node(redis_server_factory: Callable[..., RedisServer]) -> RedisServer:
    return redis_server_factory()


@pytest.fixture
def proxy(redis_node: RedisServer) -> Iterator[FaultProxy]:
    with FaultProxy(redis_node.port) as fault_proxy:
        yield fault_proxy


# -- 3. no phantom holds -----------------------------------------------------------------------


@pytest.mark.redis
def test_reserves_that_timed_out_on_a_hung_redis_leave_no_phantom_holds(
    redis_node: RedisServer, clock: FakeClock
) -> None:
    """Five reserves time out against a SIGSTOPped Redis, which runs them when it wakes:
    their holds are released as soon as it answers, so new calls are admitted at once."""
    store = Store.from_url(f"{redis_node.url}?{FAST}")
    budget = Budget(
        BudgetScope("t", max_tokens_per_session=12_000), RATES, store=store, clock=clock
    )
    budget.reserve("test-model", 1, 0).release()  # connected
    with _stopped(redis_node):
        for _ in range(5):
            with pytest.raises(StoreUnavailableError):
                budget.reserve("test-model", 2_000, 0)
    # Redis ran the five reserves when it woke: 10,000 tokens held, nothing spent.
    _wait_for(lambda: _raw_level(redis_node, "t", "session:tokens", clock).reserved > 0)
    big = budget.reserve("test-model", 11_000, 0)  # fits only once the phantoms are gone
    assert _raw_level(redis_node, "t", "session:tokens", clock) == Level(0, 11_000)
    big.release()
    assert budget.pending_commits == 0 and len(buffer_for(store, 1)) == 0
    store.close()


@pytest.mark.redis
@pytest.mark.parametrize("policy", ["fail_closed", "fail_open"])
def test_a_hung_redis_costs_each_call_one_timeout_not_two(
    redis_node: RedisServer, clock: FakeClock, monkeypatch: pytest.MonkeyPatch, policy: str
) -> None:
    """Each timed-out reserve queues a release of its possible hold; the next call replays
    it first. When that replay times out, the call is not sent as well: one wait per call
    (issue 16, #5), whatever the policy; a commit goes to the spool the same way."""
    store = Store.from_url(f"{redis_node.url}?{FAST}")
    budget = Budget(
        BudgetScope("h", max_tokens_per_session=100_000),
        RATES,
        store=store,
        clock=clock,
        on_store_error=policy,  # type: ignore[arg-type]
    )
    budget.reserve("test-model", 1, 0).release()  # connected
    held = budget.reserve("test-model", 10, 10)
    sent: list[str] = []
    for name in ("reserve", "commit", "release"):
        real = getattr(store, name)

        def counted(*args: Any, _real: Any = real, _name: str = name, **kwargs: Any) -> Any:
            sent.append(_name)
            return _real(*args, **kwargs)

        monkeypatch.setattr(store, name, counted)
    with _stopped(redis_node):
        for call in range(4):
            before = len(sent)
            if policy == "fail_closed":
                with pytest.raises(StoreUnavailableError):
                    budget.reserve("test-model", 100, 0)
            else:
                assert not budget.reserve("test-model", 100, 0).held
            assert len(sent) - before == 1, (call, sent[before:])
        before = len(sent)
        held.commit(Usage(10, 5))  # spooled, after at most one wait
        assert len(sent) - before <= 1
        assert budget.pending_commits == 1
    monkeypatch.undo()

    def drained() -> bool:  # the store answers again: the spool and the releases replay
        budget.reserve("test-model", 1, 0).release()
        return budget.pending_commits == 0 and len(buffer_for(store, 1)) == 0

    _wait_for(drained)
    assert _raw_level(redis_node, "h", "session:tokens", clock) == Level(15, 0)
    store.close()


@pytest.mark.redis
def test_a_redis_restart_without_persistence_keeps_new_ledger_rows_readable(
    redis_server_factory: Callable[..., RedisServer], clock: FakeClock
) -> None:
    """The set of groups readers enumerate and the scope registry are lost with the rest;
    the store writes both again once it finds the server restarted, so rows written after
    it are read, and other processes know the scope."""
    server = redis_server_factory()
    store = Store.from_url(f"{server.url}?{FAST}")
    budget = Budget(BudgetScope("g", max_tokens_per_day=10**6), RATES, store=store, clock=clock)
    budget.record("s", "test-model", 5, 5)  # loads the library, notes the group
    budget.record("s", "test-model", 6, 6)  # the group noted is remembered from here on
    assert len(store.ledger()) == 2
    held = budget.reserve("test-model", 7, 7)
    server.kill()
    server.start()
    held.commit(Usage(7, 7))  # the first call after the restart is this commit
    assert [row["input_tokens"] for row in store.ledger()] == [7]
    reader = Store.from_url(server.url)
    assert [row["input_tokens"] for row in reader.ledger()] == [7]
    assert "g" in reader.load_scopes()  # the scope definition is saved again too
    reader.close()
    store.close()


class _OneOpFails(MemoryStore):
    """Answers every call, except the replay of one commit (an unclassified error)."""

    poisoned: str | None = None

    def commit(self, hold_id: str, *args: Any, **kwargs: Any) -> Any:
        if self.poisoned is None:
            self.poisoned = hold_id
            raise StoreTransientError("timed out", maybe_applied=False)
        if hold_id == self.poisoned:
            raise StoreError("unclassified failure of this operation only")
        return super().commit(hold_id, *args, **kwargs)


def test_a_replay_failing_while_the_store_answers_never_stops_calls(clock: FakeClock) -> None:
    """Only a store that does not answer (a transient error) spares the call its own
    round trip; an operation that fails on its own is struck and quarantined while calls
    go on, even when they come further apart than the replay's backoff."""
    store = _OneOpFails()
    budget = Budget(
        BudgetScope("u", max_tokens_per_day=10**9),
        RATES,
        store=store,
        clock=clock,
        on_store_error="fail_closed",
    )
    budget.reserve("test-model", 10, 10).commit(Usage(10, 10))  # spooled
    assert budget.pending_commits == 1
    for _ in range(6):
        budget._pending._retry_at = 0.0  # calls further apart than the backoff
        budget.reserve("test-model", 10, 10).commit(Usage(10, 10))
    assert budget.pending_commits == 0
    assert len(budget._pending.quarantined()) == 1
    assert budget.usage()["day:tokens"].committed == 6 * 20


@pytest.mark.redis
def test_fail_open_releases_reach_the_store(
    redis_node: RedisServer, proxy: FaultProxy, clock: FakeClock
) -> None:
    store = Store.from_url(f"{proxy.url}?{FAST}")
    budget = Budget(
        BudgetScope("o", max_tokens_per_session=10_000),
        RATES,
        store=store,
        clock=clock,
        on_store_error="fail_open",
    )
    budget.reserve("test-model", 1, 0).release()
    with proxy.fault("cut_replies"):  # the reserve lands; its reply never comes back
        lost = budget.reserve("test-model", 4_000, 0)
    assert not lost.held
    _wait_for(lambda: _raw_level(redis_node, "o", "session:tokens", clock).reserved == 4_000)
    lost.release()  # admitted unchecked, and its hold is still released in the store
    held = budget.reserve("test-model", 3_000, 0)
    with proxy.fault("refuse"):
        held.release()  # cannot reach the store now: queued
    assert _raw_level(redis_node, "o", "session:tokens", clock) == Level(0, 3_000)
    budget.reserve("test-model", 1, 0).release()  # the store answers: queued releases go
    assert _raw_level(redis_node, "o", "session:tokens", clock) == Level(0, 0)
    store.close()


# -- 1. a poisoned item never blocks replay --------------------------------------------------


@pytest.mark.redis
def test_a_poisoned_buffered_commit_is_quarantined_and_replay_goes_on(
    redis_server_factory: Callable[..., RedisServer],
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    server = redis_server_factory(persist=True)
    store = Store.from_url(f"{server.url}?{FAST}")
    budget = Budget(
        BudgetScope("p", max_tokens_per_session=100_000),
        RATES,
        store=store,
        clock=clock,
        on_store_error="fail_open",
    )
    # The surrogate model name of the report is refused before anything is held.
    with pytest.raises(ValueError, match="surrogate"):
        budget.reserve("gpt-\udcff", 10, 10)
    # One already waits in the buffer (as an older version would have put it there).
    buffer = buffer_for(store, 1)
    poisoned = (Line("p", "model:gpt-\udcff:tokens", 5), Line("p", "session:tokens", 5))
    buffer._queue.add(PendingOp("commit", "poison", "p", clock(), poisoned))
    server.kill()
    budget.record("s", "test-model", 1_000, 0)  # a real outage's commit, buffered behind it
    assert budget.pending_commits == 2
    server.start()
    alerts: list[Any] = []
    budget.on_alert(alerts.append)
    with caplog.at_level(logging.ERROR, logger="agent_budget"):
        budget.reserve("test-model", 1, 0).release()
    assert budget.pending_commits == 0
    assert budget.usage()["session:tokens"] == Level(1_000, 0)
    assert "quarantined" in caplog.text and "poison" in caplog.text
    assert [a.limit_type for a in alerts] == [QUARANTINE_ALERT]
    assert [item["hold_id"] for item in buffer.quarantined()] == ["poison"]
    store.close()


# -- 2. buffered commits survive the process ---------------------------------------------------


def _commit_during_outage(url: str, count: int, ready: Any) -> None:
    """A process that bills usage while Redis is down, then is killed."""
    budget = Budget(
        BudgetScope("d", max_tokens_per_session=10**9),
        RATES,
        store=Store.from_url(url),
        on_store_error="fail_open",
    )
    for index in range(count):
        budget.record(f"s{index}", "test-model", 100 + index, 0)
    ready.send(budget.pending_commits)
    time.sleep(600)


def _replay_and_report(url: str, out: Any) -> None:
    """The next process: one store call replays what the earlier one spooled."""
    budget = Budget(BudgetScope("d", max_tokens_per_session=10**9), RATES, store=url)
    budget.reserve("test-model", 1, 0).release()
    out.put(budget.pending_commits)


@pytest.mark.redis
@pytest.mark.slow
def test_commits_buffered_by_a_killed_process_are_replayed_once_by_the_next(
    tmp_path: Path,
) -> None:
    server = RedisServer(need_redis(), tmp_path / "redis")  # a port, nothing listening yet
    url = f"{server.url}?socket_timeout=0.5&socket_connect_timeout=0.5"
    receive, send = SPAWN.Pipe(duplex=False)
    writer = SPAWN.Process(target=_commit_during_outage, args=(url, 5, send))
    writer.start()
    send.close()
    try:
        assert receive.poll(60), "writer never reported"
        assert receive.recv() == 5
        assert writer.pid is not None
        os.kill(writer.pid, signal.SIGKILL)  # usage billed, process gone
        writer.join(timeout=30)
    finally:
        if writer.is_alive():
            writer.kill()
    spools = list(Path(os.environ["AGENT_BUDGET_SPOOL_DIR"]).glob("spool-*.sqlite3"))
    assert len(spools) == 1
    server.start()
    try:
        results = SPAWN.Queue()
        replayers = [SPAWN.Process(target=_replay_and_report, args=(url, results)) for _ in "ab"]
        for proc in replayers:  # two next processes race to replay: exactly once
            proc.start()
        for proc in replayers:
            proc.join(timeout=60)
            assert proc.exitcode == 0
        # each saw what was still waiting when it finished (the other may have been sending
        # it); together they replayed everything, once
        assert len([results.get(timeout=10) for _ in replayers]) == 2
        store = Store.from_url(url)
        level = store.read("d", now=time.time(), group="d")["session:tokens"]
        assert level == Level(sum(100 + i for i in range(5)), 0)
        store.close()
        with sqlite3.connect(spools[0]) as raw:
            assert raw.execute("SELECT COUNT(*) FROM ops").fetchone()[0] == 0
    finally:
        server.stop()


# -- 8. a late replay is never counted twice ---------------------------------------------------


@pytest.mark.redis
def test_a_commit_whose_reply_was_lost_is_not_replayed_after_the_tombstone_ttl(
    redis_node: RedisServer, proxy: FaultProxy, clock: FakeClock
) -> None:
    store = Store.from_url(f"{proxy.url}?{FAST}&tombstone_ttl=1")
    budget = Budget(
        BudgetScope("late", max_tokens_per_session=10**6),
        RATES,
        store=store,
        clock=clock,
        on_store_error="fail_open",
    )
    alerts: list[Any] = []
    budget.on_alert(alerts.append)
    budget.record("s", "test-model", 1_000, 0)
    with proxy.fault("cut_replies"):
        budget.record("s", "test-model", 1_000, 0)  # applied, reply lost: buffered, uncertain
    with proxy.fault("refuse"):
        budget.record("s", "test-model", 1_000, 0)  # never reached Redis: buffered, certain
        clock.advance(5)  # longer than the tombstone ttl, by Redis's clock too:
        time.sleep(1.1)
    budget.record("s", "test-model", 1, 0)  # replay: the certain one counts, the other not
    assert _raw_level(redis_node, "late", "session:tokens", clock).committed == 3_001
    assert budget.pending_commits == 0
    assert [a.limit_type for a in alerts] == [QUARANTINE_ALERT]
    assert "may already be counted" in alerts[0].message
    store.close()


@pytest.mark.redis
def test_a_lost_reply_replayed_within_the_tombstone_ttl_counts_once(
    redis_node: RedisServer, proxy: FaultProxy, clock: FakeClock
) -> None:
    store = Store.from_url(f"{proxy.url}?{FAST}")
    budget = Budget(
        BudgetScope("soon", max_tokens_per_session=10**6),
        RATES,
        store=store,
        clock=clock,
        on_store_error="fail_open",
    )
    for mode in ("cut_replies", "drop", "delay"):
        with proxy.fault(mode, delay=0.5):
            budget.record("s", "test-model", 1_000, 0)
    budget.record("s", "test-model", 1, 0)
    assert _raw_level(redis_node, "soon", "session:tokens", clock).committed == 3_001
    assert budget.pending_commits == 0 and not buffer_for(store, 1).quarantined()
    store.close()


# -- 5. the event loop never waits on a hung store -------------------------------------------


async def _heartbeat_during(call: Any) -> tuple[float, BaseException | None]:
    """Run ``call`` while a heartbeat task ticks every 10 ms; the longest gap between ticks."""
    gaps: list[float] = []
    done = asyncio.Event()

    async def heartbeat() -> None:
        last = time.monotonic()
        while not done.is_set():
            await asyncio.sleep(0.01)
            now = time.monotonic()
            gaps.append(now - last)
            last = now

    task = asyncio.create_task(heartbeat())
    error: BaseException | None = None
    try:
        await call
    except Exception as exc:
        error = exc
    done.set()
    await task
    return max(gaps), error


@pytest.mark.redis
def test_a_hung_redis_never_blocks_the_event_loop(
    redis_node: RedisServer, clock: FakeClock
) -> None:
    async def scenario() -> tuple[float, BaseException | None]:
        store = Store.from_url(f"{redis_node.url}?server_time=0&socket_timeout=1")
        lines = [Line("a", "session:tokens", 5, 100)]
        assert (await store.areserve("warm", lines, now=clock(), ttl=60, group="a")).admitted
        with _stopped(redis_node):
            result = await _heartbeat_during(
                store.areserve("hung", lines, now=clock(), ttl=60, group="a")
            )
        await store.aclose()
        return result

    gap, error = asyncio.run(scenario())
    assert isinstance(error, StoreTransientError) and error.maybe_applied
    assert gap < 0.5, f"the event loop stalled {gap:.2f} s (the call waited 1 s)"


def test_a_locked_sqlite_file_never_blocks_the_event_loop(tmp_path: Path, clock: FakeClock) -> None:
    path = tmp_path / "locked.db"
    store = Store.from_url(f"sqlite:///{path}?busy_timeout=1")
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")  # another writer holds the file
    try:
        gap, error = asyncio.run(
            _heartbeat_during(
                store.areserve(
                    "h", [Line("s", "session:tokens", 1, 9)], now=clock(), ttl=9, group="s"
                )
            )
        )
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert isinstance(error, StoreTransientError) and not error.maybe_applied
    assert gap < 0.5, f"the event loop stalled {gap:.2f} s (the call waited 1 s)"
    store.close()


# -- Redis killed and restarted under load, AOF on ---------------------------------------------


@pytest.mark.redis
@pytest.mark.slow
def test_redis_killed_twice_under_load_loses_and_doubles_nothing(
    redis_server_factory: Callable[..., RedisServer], clock: FakeClock
) -> None:
    server = redis_server_factory(persist=True)
    store = Store.from_url(f"{server.url}?{FAST}")
    budget = Budget(
        BudgetScope("load", max_tokens_per_session=10**12),
        RATES,
        store=store,
        clock=clock,
        on_store_error="fail_open",
    )
    billed = 0
    rng = random.Random(16)
    for round_ in range(3):
        for _ in range(60):
            tokens = rng.randint(1, 500)
            with budget.reserve("test-model", tokens, 10) as reservation:
                reservation.commit(Usage(tokens, 5))
            billed += tokens + 5
        if round_ < 2:
            server.kill()
            for _ in range(20):  # calls while it is down: admitted, billed, spooled
                tokens = rng.randint(1, 500)
                budget.record("s", "test-model", tokens, 0)
                billed += tokens
            server.start()
    budget.reserve("test-model", 1, 0).release()
    assert budget.pending_commits == 0
    assert budget.usage()["session:tokens"] == Level(billed, 0)
    store.close()


# -- SQLite writers killed with SIGKILL, with the spool in play --------------------------------


def _sqlite_budget_writer(url: str, index: int, acks: Any) -> None:
    """Bill calls through a Budget forever, acknowledging each once ``commit`` returned (in
    the store, or spooled when the file stayed locked past the short busy timeout)."""
    logging.getLogger("agent_budget").setLevel(logging.CRITICAL)  # outages are expected here
    budget = Budget(
        BudgetScope(f"w{index}", max_tokens_per_session=10**12),
        RATES,
        store=Store.from_url(url),
        on_store_error="fail_open",
    )
    number = 0
    while True:
        tokens = 1 + (index * 7919 + number) % 997
        record = budget.record("s", "test-model", tokens, 0)
        acks.put((index, record.reservation_id, tokens))
        number += 1


@pytest.mark.slow
def test_sqlite_writers_killed_mid_commit_lose_and_double_nothing(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'killed.db'}?busy_timeout=0.01"
    Store.from_url(url).close()
    acks = SPAWN.Queue()
    acked: dict[str, tuple[int, int]] = {}
    stop = threading.Event()

    hog_lock = threading.Lock()

    def hog() -> None:
        """Another writer holding the file for longer than the busy timeout, now and then
        (and throughout while ``hog_lock`` is held), so commits wait in the spool."""
        raw = sqlite3.connect(tmp_path / "killed.db", isolation_level=None, timeout=5)
        while not stop.is_set():
            raw.execute("BEGIN IMMEDIATE")
            time.sleep(0.03)
            if hog_lock.locked():
                while hog_lock.locked():
                    time.sleep(0.01)
            raw.execute("COMMIT")
            time.sleep(0.02)
        raw.close()

    hogger = threading.Thread(target=hog, daemon=True)
    hogger.start()
    for round_ in range(3):
        writers = [
            SPAWN.Process(target=_sqlite_budget_writer, args=(url, i, acks)) for i in range(4)
        ]
        for proc in writers:
            proc.start()
        deadline = time.monotonic() + 60
        target = 60 * (round_ + 1)
        while len(acked) < target:
            assert time.monotonic() < deadline, "writers too slow"
            try:
                index, hold_id, tokens = acks.get(timeout=1)
            except Exception:
                continue
            acked[hold_id] = (index, tokens)
        # The file stays locked a while: commits made meanwhile wait in the spool, and the
        # writers are killed wherever they are (mid-transaction, mid-spool).
        with hog_lock:
            time.sleep(0.3)
            for proc in writers:
                assert proc.pid is not None
                os.kill(proc.pid, signal.SIGKILL)
            for proc in writers:
                proc.join(timeout=30)
        while True:
            try:
                index, hold_id, tokens = acks.get(timeout=0.2)
            except Exception:
                break
            acked[hold_id] = (index, tokens)
    stop.set()
    hogger.join(timeout=10)
    with sqlite3.connect(tmp_path / "killed.db") as raw:
        assert raw.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    spooled = _spooled_ops()
    # the next process replays whatever the killed ones spooled
    final = Budget(BudgetScope("w0", max_tokens_per_session=10**12), RATES, store=url)
    final.reserve("test-model", 1, 0).release()
    assert final.pending_commits == 0 and _spooled_ops() == 0
    print(f"{len(acked)} commits acknowledged, {spooled} left spooled by killed writers")
    store = final.store
    rows = store.ledger()  # type: ignore[attr-defined]
    ids = [row["reservation_id"] for row in rows]
    assert len(ids) == len(set(ids)), "a commit was counted twice"
    assert set(acked) <= set(ids), "an acknowledged commit was lost"
    now = time.time()
    for index in range(4):
        scope = f"w{index}"
        expected = sum(row["input_tokens"] for row in rows if row["scope"] == scope)
        level = store.read(scope, now=now, group=scope).get("session:tokens", Level())
        assert level.committed == expected  # counters and ledger agree
    store.close()


# -- 9 and 12: huge amounts, on every store --------------------------------------------------


def test_huge_costs_are_recorded_exactly_and_summarised(
    store_factory: Any, clock: FakeClock
) -> None:
    """A rate typo ($1,000 per token) bills 1e21 nano-USD and more: recorded exactly,
    summary() works, nothing raises OverflowError (issue 16, #9 and #12)."""
    rates = {"typo": ModelRates("1000000", "1000000")}  # USD per 1K tokens: $1,000 a token
    budget = Budget(BudgetScope("huge"), rates, store=store_factory(), clock=clock)
    first = budget.record("s", "typo", 10**8, 0)  # 1e20 nano-USD
    second = budget.record("s", "typo", 10**12, 10**12)  # 2e24
    total = first.cost_nanos + second.cost_nanos
    assert total == 10**20 + 2 * 10**24
    assert budget.usage()["session:cost"].committed == total
    assert budget.usage()["day:cost"].committed == total
    summary = budget.summary(exact=True)
    assert summary["session"]["cost_usd"] * 10**9 == total


def test_reserve_refuses_what_a_commit_could_not_store(
    store_factory: Any, clock: FakeClock
) -> None:
    """Bad metadata keys and model names fail at reserve, with nothing held (issue 16, #7);
    a bad ``estimated`` or commit metadata fails the commit and leaves the hold open."""
    budget = Budget(
        BudgetScope("v", max_tokens_per_session=1_000), RATES, store=store_factory(), clock=clock
    )
    for metadata in ({("a", 1): 1}, {b"k": 1}, {1: "x"}):
        with pytest.raises(TypeError, match="keys must be str"):
            budget.reserve("test-model", 10, 10, metadata=metadata)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="surrogate"):
        budget.reserve("test-\udcff", 10, 10)
    # A session id from undecodable bytes: refused at reserve, record and check alike, on
    # every store (SQLite keeps it as UTF-8 text; it would be quarantined at commit).
    undecodable = os.fsdecode(b"conv-\xff")
    with pytest.raises(ValueError, match=r"session_id .* surrogate"):
        budget.reserve("test-model", 10, 10, session_id=undecodable)
    with pytest.raises(ValueError, match=r"session_id .* surrogate"):
        budget.record(undecodable, "test-model", 10, 10)
    with pytest.raises(ValueError, match=r"session_id .* surrogate"):
        budget.check("test-model", 10, 10, session_id=undecodable)
    with pytest.raises(ValueError, match=r"session_id .* surrogate"):
        budget.usage(session_id=undecodable)
    assert budget.usage() == {}
    assert budget.records == []
    reservation = budget.reserve("test-model", 10, 10, metadata={"ticket": "T-1"})
    with pytest.raises(TypeError, match="estimated"):
        reservation.commit(Usage(5, 5), estimated="yes")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="keys must be str"):
        reservation.commit(Usage(5, 5), metadata={(1,): 2})  # type: ignore[dict-item]
    assert budget.usage()["session:tokens"] == Level(0, 20)
    record = reservation.commit(Usage(5, 5), metadata={"odd": "\udcff", "obj": object()})
    assert record.total_tokens == 10 and not record.estimated
    assert budget.usage()["session:tokens"] == Level(10, 0)


# 10. The commit reply decides crossings: agent_budget.testing's
# concurrent_commits_report_levels_that_tile_exactly runs on every store.


# -- 4 and 6: settings that cannot void a cap ----------------------------------------------------


def test_idle_ttl_shorter_than_the_day_cannot_void_the_day_cap(
    store_factory: Any, clock: FakeClock
) -> None:
    """The report's run: a 100,000-token / $1 rolling-day cap with idle_ttl=3600, spent in
    bursts an idle hour apart. Without the fix 1,200,000 tokens got through (issue 16, #4)."""
    budget = Budget(
        BudgetScope("tenant", max_tokens_per_day=100_000, max_cost_per_day_usd=1),
        RATES,
        store=store_factory(idle_ttl=3600),
        clock=clock,
    )
    admitted = 0
    for _ in range(12):  # twelve bursts within one day
        for _ in range(10):
            try:
                reservation = budget.reserve("test-model", 9_000, 1_000)
            except BudgetExceededError:
                continue
            reservation.commit(Usage(9_000, 1_000))
            admitted += 10_000
        clock.advance(3600 + 60)
    assert admitted <= 100_000


@pytest.mark.parametrize(
    "second", ["GPT-4o", "openai/gpt-4o", "gpt-4o-2024-08-06"], ids=["case", "provider", "dated"]
)
def test_duplicate_model_caps_after_normalisation_are_an_error(second: str) -> None:
    for field in ("max_tokens_per_model", "max_cost_per_model_usd"):
        scope = BudgetScope("dup", **{field: {"gpt-4o": 100, second: 1_000_000}})
        with pytest.raises(ValueError, match=r"two caps for model 'gpt-4o'"):
            Budget(scope)


def _spooled_ops() -> int:
    """Operations waiting in the spool files of this test."""
    total = 0
    for path in Path(os.environ["AGENT_BUDGET_SPOOL_DIR"]).glob("spool-*.sqlite3"):
        with sqlite3.connect(path) as raw:
            total += raw.execute("SELECT COUNT(*) FROM ops").fetchone()[0]
    return total


def test_async_replay_runs_off_the_event_loop(tmp_path: Path, clock: FakeClock) -> None:
    """OutageBuffer.aflush: what the async call paths use to replay; the spool file is read
    and written in a worker thread and the store through its async API."""
    path = tmp_path / "async.db"
    store = Store.from_url(f"sqlite:///{path}?busy_timeout=0.05")
    budget = Budget(
        BudgetScope("a", max_tokens_per_session=10**6),
        RATES,
        store=store,
        clock=clock,
        on_store_error="fail_open",
    )
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    budget.record("s", "test-model", 700, 0)  # the file is locked: spooled
    blocker.execute("ROLLBACK")
    blocker.close()
    buffer = buffer_for(store, 1)
    assert buffer.durable and budget.pending_commits == 1

    async def replay() -> tuple[float, BaseException | None]:
        return await _heartbeat_during(buffer.aflush(store, clock(), answered=True))

    gap, error = asyncio.run(replay())
    assert error is None and gap < 0.25
    assert budget.pending_commits == 0
    assert budget.usage()["session:tokens"] == Level(700, 0)
    store.close()
