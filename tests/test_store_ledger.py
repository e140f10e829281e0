"""Each store's ledger and events log stay bounded; reads write nothing and create nothing.

The shared ledger behaviour (fields, filters, aggregation, events, read-only handles) is in
the conformance suite; these are the parts where stores differ: how the bound is set, the
SQLite schema migration, and what a read may touch on disk or on a Redis server.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from agent_budget import Budget, BudgetScope, MemoryStore, ModelRates, StoreError, Usage
from agent_budget.stores import Level, Line, Store

from .clock import FakeClock

RATES = {"m": ModelRates("0.001", "0.002")}
G = "tenant"


def _record(clock: FakeClock, n: int, scope: str = "s") -> dict[str, Any]:
    return {"timestamp": clock(), "scope": scope, "model": "m", "input_tokens": n}


def _commit_many(store: Store, clock: FakeClock, count: int, prefix: str = "h") -> None:
    for i in range(count):
        line = [Line("s", "session:tokens", i)]
        store.commit(f"{prefix}{i}", line, now=clock(), group=G, record=_record(clock, i))
        clock.advance(1)


# -- memory ----------------------------------------------------------------------------------


def test_memory_ledger_and_events_are_rings(clock: FakeClock) -> None:
    store = MemoryStore(ledger_size=3, events_size=2)
    _commit_many(store, clock, 5)
    assert [row["input_tokens"] for row in store.ledger()] == [2, 3, 4]
    for i in range(4):
        store.record_event({"kind": "refusal", "scope": "s", "timestamp": float(i)}, group=G)
    assert [e["timestamp"] for e in store.events()] == [3.0, 2.0]
    assert store.event_counts() == {"s": {"refusal": 4}}  # counts outlive the ring
    assert MemoryStore(ledger_size=0).ledger() == []
    with pytest.raises(ValueError, match="ledger_size"):
        MemoryStore(ledger_size=-1)


# -- SQLite ----------------------------------------------------------------------------------


def test_sqlite_events_follow_the_ledger_retention(tmp_path: Path, clock: FakeClock) -> None:
    store = Store.from_url(f"sqlite:///{tmp_path / 'e.db'}?retention_days=1")
    store.record_event({"kind": "alert", "scope": "s", "timestamp": clock()}, group=G)
    clock.advance(86_400 + 120)
    store.record_event({"kind": "alert", "scope": "s", "timestamp": clock()}, group=G)
    store.commit("prune", [], now=clock(), group=G)  # maintenance runs with a commit
    assert [e["timestamp"] for e in store.events()] == [clock()]
    assert store.event_counts() == {"s": {"alert": 2}}
    store.close()


def _old_file(path: Path, schema: str = "1") -> None:
    """A ledger as agent-budget 0.2 wrote it: JSON rows only (schema "2" files of some
    later versions still had that ledger)."""
    conn = sqlite3.connect(path)
    conn.executescript(
        f"""
        CREATE TABLE ab_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        INSERT INTO ab_meta VALUES ('schema', '{schema}');
        CREATE TABLE ab_ledger (
            id INTEGER PRIMARY KEY, ts REAL NOT NULL, hold_id TEXT NOT NULL, scope TEXT,
            record TEXT NOT NULL);
        CREATE INDEX ab_ledger_ts ON ab_ledger (ts);
        CREATE TABLE ab_defs (name TEXT PRIMARY KEY, data TEXT NOT NULL);
        """
    )
    record = {
        "session_id": "s1",
        "model": "gpt-4o",
        "input_tokens": 100,
        "output_tokens": 7,
        "cost_usd": 0.00032,
        "timestamp": 1_800_000_000.0,
        "metadata": {"ticket": "T-9"},
        "cache_read_tokens": 0,
        "cache_write_tokens": 0,
        "reasoning_tokens": 0,
        "cost_nanos": 320_000,
        "estimated": True,
        "scope": "user:1",
        "reservation_id": "r-1",
    }
    conn.execute(
        "INSERT INTO ab_ledger (ts, hold_id, scope, record) VALUES (?, ?, ?, ?)",
        (1_800_000_000.0, "r-1", "user:1", json.dumps(record)),
    )
    conn.commit()
    conn.close()


@pytest.mark.parametrize("read_only", [True, False])
def test_sqlite_reads_a_ledger_written_by_0_2(tmp_path: Path, read_only: bool) -> None:
    path = tmp_path / "old.db"
    _old_file(path)
    store = Store.from_url(f"sqlite:///{path}", read_only=read_only)
    [row] = store.ledger()
    assert (row["model"], row["session_id"], row["input_tokens"]) == ("gpt-4o", "s1", 100)
    assert (row["cost_nanos"], row["estimated"], row["metadata"]) == (
        320_000,
        True,
        {"ticket": "T-9"},
    )
    assert row["reservation_id"] == "r-1" and row["price_source"] == ""
    assert len(store.ledger(since=1_800_000_000.0 - 1)) == 1  # found by time (marks made)
    assert store.ledger(since=1_800_000_000.0 + 1) == []
    [group] = store.aggregate(by=["model"], session="s1")
    assert (group["model"], group["calls"], group["cost_nanos"]) == ("gpt-4o", 1, 320_000)
    store.close()
    conn = sqlite3.connect(path)
    version = conn.execute("SELECT value FROM ab_meta WHERE key = 'schema'").fetchone()[0]
    conn.close()
    assert version == ("1" if read_only else "2")  # a reader never migrates


def test_sqlite_migrates_a_schema_2_file_with_the_old_ledger(
    tmp_path: Path, clock: FakeClock
) -> None:
    """The schema version alone does not pin the ledger's layout: such a file is migrated
    on opening, and commits go on recording (none spooled)."""
    path = tmp_path / "two.db"
    _old_file(path, schema="2")
    store = Store.from_url(f"sqlite:///{path}")
    scope = BudgetScope("user:1", max_tokens_per_day=1_000)
    budget = Budget(scope, RATES, store=store, clock=clock)
    budget.reserve("m", 10, 10).commit(Usage(10, 10))
    assert budget.pending_commits == 0
    assert budget.usage()["day:tokens"] == Level(20, 0)
    assert len(store.ledger()) == 2
    store.close()


def test_sqlite_finds_rows_by_time_through_hour_marks(tmp_path: Path, clock: FakeClock) -> None:
    """No index on the time (it would cost every commit a page): the first row id of each
    hour finds a period, a clock that steps back a little still finds every row, and the
    retention is exact."""
    store = Store.from_url(f"sqlite:///{tmp_path / 'm.db'}?retention_days=1")
    start = clock()
    for i in range(50):
        # ten rows an hour; the clock jumps two hours ahead at row 20, then back
        clock.advance({20: 7_200, 21: -7_200, 30: -1_800}.get(i, 360))
        store.commit(f"h{i}", [], now=clock(), group=G, record=_record(clock, i))
    rows = store.ledger()
    for since in (start, start + 7_000, start + 10_000, start + 20_000, start + 30_000):
        wanted = [r["input_tokens"] for r in rows if r["timestamp"] >= since]
        assert sorted(r["input_tokens"] for r in store.ledger(since=since)) == sorted(wanted)
        groups = store.aggregate(by=["model"], since=since)
        assert sum(g["calls"] for g in groups) == len(wanted)
    conn = sqlite3.connect(tmp_path / "m.db")
    hours = [h for (h,) in conn.execute("SELECT hour FROM ab_ledger_marks ORDER BY hour")]
    plan = " ".join(str(r) for r in conn.execute("EXPLAIN QUERY PLAN SELECT * FROM ab_ledger"))
    indexes = conn.execute(
        "SELECT name FROM sqlite_master WHERE tbl_name = 'ab_ledger' AND type = 'index'"
    ).fetchall()
    conn.close()
    assert len(hours) == 5 and indexes == [] and "SCAN" in plan
    clock.advance(86_400 - 4 * 3600)  # the first rows pass the 1-day retention
    store.commit("prune", [], now=clock(), group=G)  # maintenance runs with a commit
    kept = [r["timestamp"] for r in store.ledger()]
    assert kept == [t for t in sorted(r["timestamp"] for r in rows) if t >= clock() - 86_400]
    assert 0 < len(kept) < 50
    store.close()


def test_sqlite_read_only_creates_nothing(tmp_path: Path, clock: FakeClock) -> None:
    missing = tmp_path / "typo.db"
    with pytest.raises(StoreError, match="no SQLite store"):
        Store.from_url(f"sqlite:///{missing}", read_only=True)
    assert list(tmp_path.iterdir()) == []
    path = tmp_path / "budget.db"
    writer = Store.from_url(f"sqlite:///{path}")
    budget = Budget(BudgetScope("s", max_tokens_per_day=10), RATES, store=writer, clock=clock)
    budget.record("x", "m", 5, 5)
    writer.close()
    before = sorted(p.name for p in tmp_path.iterdir())
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    reader = Store.from_url(f"sqlite:///{path}?read_only=1")
    assert reader.peek("s", now=clock(), group="s")["day:tokens"].committed == 10
    assert len(reader.ledger()) == 1 and reader.events()[0]["kind"] == "alert"
    assert reader.load_scopes()["s"]["max_tokens_per_day"] == 10
    reader.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert hashlib.sha256(path.read_bytes()).hexdigest() == digest


def test_sqlite_opened_for_writing_changes_nothing_until_written(
    tmp_path: Path, clock: FakeClock
) -> None:
    """A process that opens the store read-write, rebuilds its Budget and reads changes
    neither the file's bytes nor its mtime: the schema and an unchanged scope definition
    are only read."""
    path = tmp_path / "budget.db"
    scope = BudgetScope("s", max_tokens_per_day=1_000)
    writer = Store.from_url(f"sqlite:///{path}")
    Budget(scope, RATES, store=writer, clock=clock).record("x", "m", 5, 5)
    writer.close()
    stamp, digest = path.stat().st_mtime_ns, hashlib.sha256(path.read_bytes()).hexdigest()
    again = Store.from_url(f"sqlite:///{path}")
    budget = Budget(scope, RATES, store=again, clock=clock)
    assert budget.summary()["day"]["tokens"] == 10
    assert budget.usage()["day:tokens"].committed == 10
    again.close()
    assert path.stat().st_mtime_ns == stamp
    assert hashlib.sha256(path.read_bytes()).hexdigest() == digest


def test_sqlite_reads_do_not_block_writers(tmp_path: Path, clock: FakeClock) -> None:
    """A report's read transaction holds no write lock: a commit goes through meanwhile."""
    path = tmp_path / "b.db"
    writer = Store.from_url(f"sqlite:///{path}?busy_timeout=0.2")
    _commit_many(writer, clock, 3)
    reader = Store.from_url(f"sqlite:///{path}", read_only=True)

    def during(conn: sqlite3.Connection) -> int:
        writer.commit("meanwhile", [Line("s", "session:tokens", 1)], now=clock(), group=G)
        return len(conn.execute("SELECT * FROM ab_ledger").fetchall())

    assert reader._read(during) == 3  # type: ignore[attr-defined]
    writer.close()
    reader.close()


# -- Redis -----------------------------------------------------------------------------------


@pytest.mark.redis
def test_redis_ledger_is_capped_by_length_and_age(redis_url: str, clock: FakeClock) -> None:
    store = Store.from_url(f"{redis_url}?server_time=0&ledger_maxlen=5&retention_days=1")
    _commit_many(store, clock, 8)
    assert [row["input_tokens"] for row in store.ledger()] == [3, 4, 5, 6, 7]
    clock.advance(86_400 + 3600)
    _commit_many(store, clock, 1, prefix="later")
    assert [row["input_tokens"] for row in store.ledger()] == [0]
    off = Store.from_url(f"{redis_url}?server_time=0&ledger_maxlen=0&key_prefix=off")
    _commit_many(off, clock, 2)
    assert off.ledger() == []
    store.close()
    off.close()


@pytest.mark.redis
def test_redis_ledger_rows_ride_the_commit_function(redis_url: str, clock: FakeClock) -> None:
    """The ledger entry is written by the commit's one server call, and a clock that steps
    back still gets an entry (with the next id)."""
    import redis

    store = Store.from_url(f"{redis_url}?server_time=0")
    admin = redis.Redis.from_url(redis_url)
    _commit_many(store, clock, 1)  # loads the functions, notes the group
    sent: list[str] = []
    client = store.client  # type: ignore[attr-defined]
    execute = client.execute_command
    client.execute_command = lambda *args, **kw: sent.append(args[0]) or execute(*args, **kw)
    clock.advance(-3600)
    _commit_many(store, clock, 2, prefix="back")
    assert sent == ["FCALL", "FCALL"]  # the XADD runs inside the commit function
    assert [row["input_tokens"] for row in store.ledger()] == [0, 1, 0]  # by their time
    assert admin.xlen("ab:{tenant}:ledger") == 3
    store.close()
    admin.close()


@pytest.mark.redis
def test_redis_reads_use_plain_commands_only(redis_server_factory: Any, clock: FakeClock) -> None:
    """A reader loads no function or script and writes nothing: it works against a server
    that has never seen agent-budget's code."""
    import redis

    redis_url = redis_server_factory().url  # a private server: no other client touches it

    writer = Store.from_url(f"{redis_url}?server_time=0")
    budget = Budget(BudgetScope("s", max_tokens_per_day=14), RATES, store=writer, clock=clock)
    budget.record("x", "m", 6, 6)  # 86%: a WARNING alert
    writer.reserve("held", [Line("s", "session:tokens", 3)], now=clock(), ttl=60, group="s")
    admin = redis.Redis.from_url(redis_url)
    admin.function_flush()
    admin.script_flush()
    keys_before = {k: admin.dump(k) for k in admin.keys("*")}
    admin.config_resetstat()
    reader = Store.from_url(f"{redis_url}?server_time=0", read_only=True)
    assert reader.read("s", now=clock(), group="s")["day:tokens"].committed == 12
    assert reader.peek("s", now=clock(), group="s")["session:tokens"].reserved == 3
    assert len(reader.ledger()) == 1 and reader.aggregate()[0]["calls"] == 1
    assert reader.events()[0]["kind"] == "alert" and reader.event_counts()
    assert "s" in reader.load_scopes()
    stats = {name.removeprefix("cmdstat_") for name in admin.info("commandstats")}
    assert stats <= {
        "hello",
        "client|setinfo",
        "config|resetstat",
        "hgetall",
        "hmget",
        "smembers",
        "time",
        "xrange",
        "xrevrange",
        "zrangebyscore",
    }, stats
    assert admin.function_list() == []
    assert {k: admin.dump(k) for k in admin.keys("*")} == keys_before
    reader.close()
    writer.close()
    admin.close()


@pytest.mark.redis
def test_redis_events_survive_a_clock_that_steps_back(redis_url: str, clock: FakeClock) -> None:
    store = Store.from_url(f"{redis_url}?server_time=0")
    for step in (0, -60, 10):
        clock.advance(step)
        store.record_event({"kind": "alert", "scope": "s", "timestamp": clock()}, group=G)
    times = [e["timestamp"] for e in store.events(newest_first=False)]
    assert times == [clock() - 10, clock(), clock() + 50]  # all kept, by their time
    assert store.event_counts() == {"s": {"alert": 3}}
    store.close()


@pytest.mark.redis
def test_redis_ledger_on_the_server_clock_and_with_idle_expiry(redis_url: str) -> None:
    """By default ids come from the server's clock (one clock for every host); with an
    idle ttl the stream expires like every other key of the group."""
    import time as _time

    import redis

    store = Store.from_url(f"{redis_url}?idle_ttl=600&retention_days=2")
    budget = Budget(BudgetScope("s"), RATES, store=store)
    budget.record("x", "m", 3, 4)
    admin = redis.Redis.from_url(redis_url)
    [(entry_id, _fields)] = admin.xrange("ab:{s}:ledger")
    server_ms = int(entry_id.decode().split("-")[0])
    assert abs(server_ms / 1000 - _time.time()) < 60
    assert 0 < admin.pttl("ab:{s}:ledger") <= (2 * 86_400 + 60) * 1000
    assert [r["output_tokens"] for r in store.ledger(since=_time.time() - 60)] == [4]
    admin.close()
    store.close()
