"""One conformance suite over every store: memory, SQLite, Redis (Functions and scripts) and
a 3-master Redis Cluster.

Every case runs identically on each store (``store_factory`` is parametrized in
``tests/store_fixtures.py``): first the raw Store contract of ``stores/base.py``, as shipped
in :mod:`agent_budget.testing` for third-party stores, then Budget and BudgetManager, which
must behave the same whatever holds the state, then each backend's specifics.
"""

from __future__ import annotations

import os
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from agent_budget import (
    Budget,
    BudgetExceededError,
    BudgetManager,
    BudgetScope,
    ModelRates,
    Usage,
)
from agent_budget.stores import Level, Line, MemoryStore, Store, StoreOptions
from agent_budget.stores.base import (
    roll_metric,
    session_scope,
    window_of,
)
from agent_budget.testing import CASES, Case, ConformanceError, run_conformance

from .clock import FakeClock
from .store_fixtures import FakeProvider, RedisCluster, StoreFactory, redis_client

G = "tenant"
RATES = {"test-model": ModelRates("0.0015", "0.002")}


def L(scope: str, metric: str, amount: int, limit: int | None = None) -> Line:
    return Line(scope, metric, amount, limit)


# -- the store contract: agent_budget.testing, on every store -------------------------------


@pytest.mark.parametrize("case", list(CASES.values()), ids=list(CASES))
def test_store_contract(case: Case, store_factory: StoreFactory, clock: FakeClock) -> None:
    case(store_factory, clock)  # type: ignore[arg-type]


def test_the_suite_runs_without_pytest(tmp_path: Path) -> None:
    """run_conformance: what a third-party store calls outside pytest."""
    from agent_budget.stores.sqlite import SQLiteStore

    made: list[int] = []

    def fresh() -> Any:
        made.append(1)
        path = tmp_path / f"s{len(made)}.db"
        return lambda **options: SQLiteStore(path, **options)

    ran = run_conformance(fresh, skip={"threads_share_one_store_handle"})
    assert len(ran) == len(CASES) - 1 == len(made)


def test_the_suite_names_what_a_broken_store_gets_wrong() -> None:
    class ForgetfulStore(MemoryStore):
        """Counts a repeated commit again: the suite must catch it."""

        def commit(self, hold_id: str, lines: Any, **kw: Any) -> Any:
            self._done.pop(hold_id, None)
            return super().commit(hold_id, lines, **kw)

    def fresh() -> Any:
        stores: dict[Any, MemoryStore] = {}
        return lambda **o: stores.setdefault(tuple(sorted(o.items())), ForgetfulStore(**o))

    with pytest.raises(ConformanceError, match="commit_is_idempotent_per_hold_id"):
        run_conformance(fresh)


# -- rolling windows of any length, calendar periods, session scopes --------------------------


def test_window_rule_is_said_once() -> None:
    from agent_budget.scope import Limit

    opts = StoreOptions(window_seconds=3600, bucket_seconds=900)
    assert window_of("day:tokens", opts) == (3600, 900)
    assert window_of("roll:86400:cost", opts) == (86400, 900)
    assert window_of("session:tokens", opts) is None
    assert window_of("model:roll:tokens", opts) is None
    assert Limit("x", "roll:60:tokens", 1, "tokens").windowed
    assert not Limit("x", "session:tokens", 1, "tokens").windowed
    assert roll_metric(3600, "tokens") == "roll:3600:tokens"
    bad_metrics = (
        "roll:0:x",
        "roll:abc:x",
        "roll:010:x",
        "roll:60",
        "roll:-5:x",
        "roll:" + "9" * 12 + ":x",
    )
    for bad in bad_metrics:
        with pytest.raises(ValueError, match="roll:<seconds>"):
            window_of(bad, opts)


def test_session_scope_names_cannot_collide_with_scope_names() -> None:
    name = session_scope("user:1", "a\x1fb")
    assert name.split("\x1f", 1) == ["user:1", "a\x1fb"]
    with pytest.raises(ValueError, match="U\\+001F"):
        BudgetScope(name)
    with pytest.raises(ValueError):
        session_scope(name, "x")
    with pytest.raises(ValueError):
        session_scope("user:1", "")


def test_memory_stays_bounded_with_a_hundred_thousand_sessions(clock: FakeClock) -> None:
    store = MemoryStore(session_ttl=3600)
    lines = [L("", "session:tokens", 10, 1000), L("", "session:cost", 10, 1000)]
    peak = 0
    for index in range(100_000):
        scope = session_scope("tenant", f"conv-{index}")
        own = [Line(scope, line.metric, line.amount, line.limit) for line in lines]
        assert store.reserve(f"h{index}", own, now=clock(), ttl=60, group=G).admitted
        store.commit(f"h{index}", own, now=clock(), group=G)
        clock.advance(0.36)  # 10,000 conversations an hour, for ten hours
        if index % 5_000 == 0:
            peak = max(peak, store.stats()["scopes"])
    stats = store.stats()
    assert stats["scopes"] <= 10_100 and peak <= 10_100
    assert stats["idle_queue"] <= 2 * stats["scopes"] + 10
    assert stats["tombstones"] <= 10_100 and stats["holds"] == 0


# -- Budget and BudgetManager over each store -------------------------------------------------


def _guarded_call(budget: Budget, provider: FakeProvider, inp: int, out: int) -> None:
    reservation = budget.reserve("test-model", inp, out)
    usage = provider(inp, out)
    reservation.commit(usage)


def test_budget_refuses_before_the_provider_runs(
    store_factory: StoreFactory, clock: FakeClock
) -> None:
    store = store_factory()
    budget = Budget(BudgetScope("s", max_tokens_per_session=1000), RATES, store=store, clock=clock)
    provider = FakeProvider()
    _guarded_call(budget, provider, 400, 200)
    held = budget.reserve("test-model", 300, 100)
    with pytest.raises(BudgetExceededError) as info:
        _guarded_call(budget, provider, 1, 1)
    assert provider.calls == 1
    assert info.value.scope == "s" and info.value.limit_type == "session_tokens"
    assert info.value.used == 600 and info.value.reserved == 400
    held.release()
    _guarded_call(budget, provider, 1, 1)
    assert provider.calls == 2
    assert budget.summary()["session"]["tokens"] == 602


def test_parent_chain_is_all_or_nothing(store_factory: StoreFactory, clock: FakeClock) -> None:
    store = store_factory()
    glob = Budget(
        BudgetScope("global", max_tokens_per_session=1_000), RATES, store=store, clock=clock
    )
    user = Budget(
        BudgetScope("user:1", max_tokens_per_session=5_000), parent=glob, clock=clock, rates=RATES
    )
    conv = Budget(
        BudgetScope("conv:1", max_tokens_per_session=5_000), parent=user, clock=clock, rates=RATES
    )
    assert conv.store is store and conv.group == "global"
    held = conv.reserve("test-model", 600, 300)
    assert [b.usage()["session:tokens"] for b in (conv, user, glob)] == [Level(0, 900)] * 3
    provider = FakeProvider()
    with pytest.raises(BudgetExceededError) as info:
        _guarded_call(conv, provider, 100, 50)
    assert info.value.scope == "global" and provider.calls == 0
    assert [b.usage()["session:tokens"] for b in (conv, user, glob)] == [Level(0, 900)] * 3
    held.commit(Usage(500, 100))
    assert [b.usage()["session:tokens"] for b in (conv, user, glob)] == [Level(600, 0)] * 3
    # the user's own limit refuses too, leaving the conversation and global untouched
    small = Budget(
        BudgetScope("user:2", max_tokens_per_session=10), parent=glob, clock=clock, rates=RATES
    )
    with pytest.raises(BudgetExceededError) as info:
        small.reserve("test-model", 20)
    assert info.value.scope == "user:2"
    assert glob.usage()["session:tokens"] == Level(600, 0)


def test_a_second_budget_object_sees_the_usage(
    store_factory: StoreFactory, clock: FakeClock
) -> None:
    scope = BudgetScope(
        "shared",
        max_tokens_per_session=10**6,
        max_cost_per_session_usd="1.00",
        max_tokens_per_day=10**6,
    )
    first = Budget(scope, RATES, store=store_factory(), clock=clock)
    second = Budget(scope, RATES, store=store_factory(), clock=clock)
    first.record("sess", "test-model", 1000, 500)
    held = first.reserve("test-model", 100, 100)
    summary = second.summary(exact=True)
    assert summary["session"]["tokens"] == 1500
    assert summary["session"]["cost_usd"] == Decimal("0.0025")
    assert summary["session"]["reserved_tokens"] == 200
    assert summary["day"]["tokens"] == 1500
    assert summary["per_model"]["test-model"]["tokens"] == 1500
    held.release()
    assert second.summary()["session"]["reserved_tokens"] == 0


def test_manager_summaries_read_from_the_store(
    store_factory: StoreFactory, clock: FakeClock
) -> None:
    def manager() -> BudgetManager:
        mgr = BudgetManager(store=store_factory(), rates=RATES, clock=clock)
        mgr.register(BudgetScope("global", max_cost_per_day_usd="100"))
        mgr.add_template(
            "user:", BudgetScope("user:", max_cost_per_session_usd="5"), parent="global"
        )
        return mgr

    writer, reader = manager(), manager()
    writer.record("user:1", "s", "test-model", 2000, 1000)
    writer.record("user:2", "s", "test-model", 1000, 0)
    summaries = reader.all_summaries(exact=True)
    assert set(summaries) >= {"global"}
    assert summaries["global"]["day"]["cost_usd"] == Decimal("0.0065")
    assert reader.summary("user:1", exact=True)["session"]["cost_usd"] == Decimal("0.005")
    assert reader.summary("user:2", exact=True)["session"]["cost_usd"] == Decimal("0.0015")


def test_manager_sees_scopes_registered_by_another_manager(
    store_factory: StoreFactory, clock: FakeClock
) -> None:
    writer = BudgetManager(store=store_factory(), rates=RATES, clock=clock)
    writer.register(BudgetScope("team:a", max_tokens_per_session=100))
    writer.record("team:a", "s", "test-model", 10, 5)
    reader = BudgetManager(store=store_factory(), rates=RATES, clock=clock)
    assert "team:a" in reader.scopes()
    summary = reader.all_summaries()["team:a"]
    assert summary["session"]["tokens"] == 15
    assert summary["limits"]["session_tokens"]["limit"] == 100


def test_exact_nano_dollar_totals(store_factory: StoreFactory, clock: FakeClock) -> None:
    rates = {"test-model": ModelRates("0.0000013", "0.0000017")}  # sub-nano per token
    budget = Budget(
        BudgetScope("s", max_cost_per_day_usd="1000"), rates, store=store_factory(), clock=clock
    )
    expected = 0
    for i in range(1, 60):
        record = budget.record("sess", "test-model", 7 * i + 3, 11 * i + 1)
        expected += record.cost_nanos
        clock.advance(97)
    assert sum(r.cost_nanos for r in budget.records) == expected
    summary = budget.summary(exact=True)
    assert summary["day"]["cost_usd"] == Decimal(expected) / Decimal(10**9)
    assert budget.usage()["day:cost"].committed == expected
    assert budget.usage()["session:cost"].committed == expected


def test_budget_reserve_window_and_reset(store_factory: StoreFactory, clock: FakeClock) -> None:
    budget = Budget(
        BudgetScope("s", max_tokens_per_day=1000, max_tokens_per_session=5000),
        RATES,
        store=store_factory(),
        clock=clock,
    )
    budget.record("a", "test-model", 900, 0)
    with pytest.raises(BudgetExceededError) as info:
        budget.reserve("test-model", 200)
    assert info.value.limit_type == "day_tokens"
    clock.advance(86_400 + 900)
    budget.reserve("test-model", 200).commit(Usage(150, 0))
    budget.reset_session()
    summary = budget.summary()
    assert summary["session"]["tokens"] == 0
    assert summary["day"]["tokens"] == 150


# -- Redis Cluster specifics ---------------------------------------------------------------


@pytest.mark.redis
def test_cluster_keys_of_one_group_share_a_slot(
    redis_cluster: RedisCluster, clock: FakeClock
) -> None:
    redis_cluster.flush()
    store = Store.from_url(redis_cluster.url + "?server_time=0&idle_ttl=3600")
    groups = [f"tenant-{i}" for i in range(12)]
    for group in groups:
        lines = [L(group, "day:cost", 5, 100), L(f"user:{group}", "session:tokens", 5, 100)]
        store.reserve(f"h-{group}", lines, now=clock(), ttl=60, group=group)
        store.reserve(f"k-{group}", lines, now=clock(), ttl=60, group=group)
        record = {"timestamp": clock(), "scope": group, "model": "m", "input_tokens": 5}
        store.commit(f"h-{group}", lines, now=clock(), group=group, record=record)
        store.record_event({"kind": "alert", "scope": group, "timestamp": clock()}, group=group)
    assert len(store.ledger()) == len(groups) and len(store.events()) == len(groups)
    store.close()
    slots: dict[str, set[int]] = {}
    kinds: set[str] = set()
    nodes_used: set[int] = set()
    for node in redis_cluster.nodes:
        with redis_client(node.port) as client:
            for key in client.keys("ab:{*"):
                text = key.decode()
                tag = text[text.index("{") + 1 : text.index("}")]
                slots.setdefault(tag, set()).add(int(client.cluster("KEYSLOT", key)))
                kinds.add(text[text.index("}") + 2 :].split(":")[0])
                nodes_used.add(node.port)
    assert set(slots) == set(groups)
    assert all(len(found) == 1 for found in slots.values())
    assert {"ledger", "events", "event_counts", "s", "holds"} <= kinds
    assert len(nodes_used) > 1  # tenants spread over the masters


def test_budget_context_manager_soft_scope_and_alerts(
    store_factory: StoreFactory, clock: FakeClock
) -> None:
    store = store_factory()
    budget = Budget(
        BudgetScope("b", max_tokens_per_day=1000, alert_at_pct=0.8), RATES, store=store, clock=clock
    )
    with pytest.raises(RuntimeError), budget.reserve("test-model", 10, 10):
        raise RuntimeError("provider down")
    assert budget.usage() == {}
    with budget.reserve("test-model", 10, 10):
        pass
    assert budget.usage()["day:tokens"].committed == 20
    for _ in range(8):
        budget.record("s", "test-model", 100, 0)
    assert [a.level.name for a in budget.alerts] == ["WARNING"]
    for _ in range(3):
        with pytest.raises(BudgetExceededError):
            budget.reserve("test-model", 200, 0)
    assert [a.level.name for a in budget.alerts] == ["WARNING", "CRITICAL"]
    soft = Budget(
        BudgetScope("soft", max_tokens_per_session=100, hard_stop=False),
        RATES,
        store=store,
        clock=clock,
    )
    soft.reserve("test-model", 500, 0).commit(Usage(500, 0))
    soft.reserve("test-model", 500, 0).release()
    assert soft.usage()["session:tokens"].committed == 500


def _stored_buckets(store_factory: StoreFactory, store: Store) -> int:
    """How many window buckets the store keeps, looked up in its own storage."""
    if store_factory.kind == "memory":
        return int(store.stats()["buckets"])  # type: ignore[attr-defined]
    if store_factory.kind == "sqlite":
        conn = store._conn()  # type: ignore[attr-defined]
        return int(conn.execute("SELECT COUNT(*) FROM ab_buckets").fetchone()[0])
    client = store.client  # type: ignore[attr-defined]
    total = 0
    nodes = client.get_primaries() if hasattr(client, "get_primaries") else [None]
    for node in nodes:
        keys = client.keys("ab:*:w:*", target_nodes=node) if node else client.keys("ab:*:w:*")
        total += sum(int(client.hlen(key)) for key in keys)
    return total


def test_window_storage_stays_bounded(store_factory: StoreFactory, clock: FakeClock) -> None:
    store = store_factory()
    budget = Budget(BudgetScope("w", max_tokens_per_day=10**12), RATES, store=store, clock=clock)
    for _ in range(3 * 96):  # three days of calls every 15 minutes
        budget.record("s", "test-model", 1, 0)
        clock.advance(900)
    # two windowed metrics (day:tokens, day:cost), each at most window/bucket + 2 buckets
    assert _stored_buckets(store_factory, store) <= 2 * (86400 // 900 + 2)
    assert budget.summary()["day"]["tokens"] == 96


# -- Redis specifics ---------------------------------------------------------------------------


@pytest.mark.redis
def test_redis_idle_keys_get_a_ttl_and_holds_outlive_their_counters(
    redis_url: str, clock: FakeClock
) -> None:
    import redis

    store = Store.from_url(
        redis_url + "?server_time=0&idle_ttl=100&tombstone_ttl=30&window_seconds=600"
        "&bucket_seconds=60"
    )
    client = redis.Redis.from_url(redis_url)
    store.commit("c", [L("s", "day:cost", 5), L("s", "session:cost", 5)], now=clock(), group=G)
    store.commit("c0", [L("plain", "session:cost", 5)], now=clock(), group=G)
    keys = {k.decode(): client.pttl(k) for k in client.keys("ab:{tenant}:*")}
    assert keys["ab:{tenant}:d:c"] <= 30_000  # tombstone
    assert 0 < keys["ab:{tenant}:s:plain"] <= 160_000  # idle_ttl plus a 60 s margin
    # a scope whose window still counts lives until the window has emptied (plus a margin)
    window = [k for k in keys if ":w:" in k]
    assert len(window) == 1 and 600_000 < keys[window[0]] <= 720_000
    assert 600_000 < keys["ab:{tenant}:s:s"] <= 720_000
    store.reserve("h", [L("s", "session:cost", 1, 100)], now=clock(), ttl=1000, group=G)
    held = client.pttl("ab:{tenant}:s:s")
    assert held > 1_000_000  # a scope holding budget lives at least as long as its hold
    assert client.pttl("ab:{tenant}:holds") >= held - 5_000  # set by the same script
    assert client.pttl("ab:{tenant}:expiry") >= held - 5_000
    store.commit("c2", [L("s", "session:cost", 1)], now=clock(), group=G)
    assert client.pttl("ab:{tenant}:s:s") >= held - 5_000  # never shortened while held
    store.close()
    client.close()


@pytest.mark.redis
def test_redis_uses_the_server_clock_by_default(redis_url: str) -> None:
    store = Store.from_url(redis_url)  # server_time on: callers' clocks are ignored
    lines = [L("s", "session:tokens", 10, 10)]
    assert store.reserve("h", lines, now=0.0, ttl=60, group=G).admitted
    far = 4_000_000_000.0  # a caller whose clock is far ahead expires nothing
    assert not store.reserve("h2", lines, now=far, ttl=60, group=G).admitted
    assert store.read("s", now=far, group=G) == {"session:tokens": Level(0, 10)}
    store.close()


@pytest.mark.redis
def test_redis_answers_a_replayed_reserve_without_holding_twice(
    redis_url: str, clock: FakeClock
) -> None:
    store = Store.from_url(redis_url + "?server_time=0")
    lines = [L("s", "session:tokens", 40, 100)]
    first = store.reserve("h", lines, now=clock(), ttl=60, group=G)
    replay = store.reserve("h", lines, now=clock(), ttl=60, group=G)  # a client retry
    assert first == replay
    assert store.read("s", now=clock(), group=G) == {"session:tokens": Level(0, 40)}
    store.close()


@pytest.mark.redis
@pytest.mark.parametrize(("option", "command"), [("", "fcall"), ("&functions=0", "evalsha")])
def test_redis_runs_each_operation_as_one_function_call_or_one_script(
    redis_server: Any, clock: FakeClock, option: str, command: str
) -> None:
    """Functions by default; ``functions=0`` (the "redis-scripts" store kind) scripts only."""
    import redis

    admin = redis.Redis(port=redis_server.port)
    store = Store.from_url(f"{redis_server.url}?server_time=0{option}")
    lines = [L("o", "session:tokens", 10, 100)]
    store.reserve(f"one-{command}", lines, now=clock(), ttl=60, group=G)  # loaded on first use
    store.commit(f"one-{command}", lines, now=clock(), group=G)
    admin.config_resetstat()
    store.reserve(f"two-{command}", lines, now=clock(), ttl=60, group=G)
    store.commit(f"two-{command}", lines, now=clock(), group=G)
    stats = admin.info("commandstats")
    ran = {name: stats.get(f"cmdstat_{name}", {}).get("calls", 0) for name in ("fcall", "evalsha")}
    assert ran == {name: 2 if name == command else 0 for name in ran}
    store.close()
    admin.close()


@pytest.mark.redis
def test_redis_loads_its_functions_again_after_they_are_flushed(
    redis_url: str, clock: FakeClock
) -> None:
    import redis

    store = Store.from_url(redis_url + "?server_time=0")
    client = redis.Redis.from_url(redis_url)
    lines = [L("f", "session:tokens", 10, 100)]
    store.reserve("flushed", lines, now=clock(), ttl=60, group=G)
    assert any(b"agent_budget_" in bytes(lib[1]) for lib in client.function_list())
    client.function_flush()  # a restart without persistence, or an operator, drops them
    store.commit("flushed", lines, now=clock(), group=G)
    assert store.read("f", now=clock(), group=G) == {"session:tokens": Level(10, 0)}
    store.close()
    client.close()


@pytest.mark.redis
def test_redis_falls_back_to_scripts_where_functions_are_not_allowed(
    redis_server: Any, clock: FakeClock
) -> None:
    """A user whose ACL denies FUNCTION and FCALL (as a server before Redis 7 has neither)
    still gets every operation, as EVALSHA scripts."""
    import redis

    admin = redis.Redis(port=redis_server.port)
    admin.acl_setuser(
        "nofunctions",
        enabled=True,
        passwords=["+pw"],
        keys=["*"],
        channels=["*"],
        commands=["+@all", "-fcall", "-function"],
    )
    admin.config_resetstat()
    try:
        store = Store.from_url(
            f"redis://nofunctions:pw@127.0.0.1:{redis_server.port}/0?server_time=0"
        )
        lines = [L("n", "session:tokens", 10, 100)]
        assert store.reserve("no-functions", lines, now=clock(), ttl=60, group=G).admitted
        store.commit("no-functions", lines, now=clock(), group=G)
        assert store.read("n", now=clock(), group=G) == {"session:tokens": Level(10, 0)}
        assert admin.info("commandstats")["cmdstat_evalsha"]["calls"] >= 3
        store.close()
    finally:
        admin.acl_deluser("nofunctions")
        admin.close()


@pytest.mark.redis
def test_redis_reads_holds_written_by_the_previous_encoding(
    redis_url: str, clock: FakeClock
) -> None:
    """Holds stored as 0.2's length-prefixed text still free their amounts after an upgrade,
    on commit and when they expire."""
    import redis

    store = Store.from_url(redis_url + "?server_time=0")
    client = redis.Redis.from_url(redis_url)
    lines = [L("s", "session:tokens", 30, 100), L("s", "day:usd", 7, 100)]
    for hold_id in ("old-commit", "old-expire"):
        store.reserve(hold_id, lines, now=clock(), ttl=60, group=G)
        legacy = "1:s14:session:tokens30,100;1:s7:day:usd7,100;"
        client.hset("ab:{tenant}:holds", hold_id, legacy)
    assert store.read("s", now=clock(), group=G)["session:tokens"] == Level(0, 60)
    store.commit("old-commit", [L("s", "session:tokens", 12)], now=clock(), group=G)
    assert store.read("s", now=clock(), group=G)["session:tokens"] == Level(12, 30)
    clock.advance(61)
    assert store.read("s", now=clock(), group=G) == {"session:tokens": Level(12, 0)}
    store.close()
    client.close()


@pytest.mark.redis
def test_redis_lines_survive_any_scope_and_metric_text(redis_url: str, clock: FakeClock) -> None:
    store = Store.from_url(redis_url + "?server_time=0")
    odd = 'a;b:c,"d"\\e\n\u00e9\u6f22\U0001f600 '
    lines = [L(odd, "session:tokens", 5, 10), L(odd, 'model:x"y;z:tokens', 2**52, None)]
    assert store.reserve("h", lines, now=clock(), ttl=60, group=odd).admitted
    store.commit("h", lines, now=clock(), group=odd)
    assert store.read(odd, now=clock(), group=odd) == {
        "session:tokens": Level(5, 0),
        'model:x"y;z:tokens': Level(2**52, 0),
    }
    store.close()


# -- SQLite specifics --------------------------------------------------------------------------


def test_sqlite_ledger_keeps_records_for_the_retention(tmp_path: Path, clock: FakeClock) -> None:
    from agent_budget.stores.sqlite import SQLiteStore

    store = Store.from_url(f"sqlite:///{tmp_path / 'l.db'}?retention_days=1")
    assert isinstance(store, SQLiteStore)
    budget = Budget(BudgetScope("s"), RATES, store=store, clock=clock)
    first = budget.record("sess", "test-model", 10, 5, {"ticket": "T-1"})
    rows = store.ledger(scope="s")
    assert len(rows) == 1
    assert rows[0]["cost_nanos"] == first.cost_nanos and rows[0]["metadata"] == {"ticket": "T-1"}
    clock.advance(86_400 + 120)
    budget.record("sess", "test-model", 1, 0)
    assert [row["input_tokens"] for row in store.ledger()] == [1]
    assert budget.summary()["session"]["tokens"] == 16  # counters keep what the ledger drops
    store.close()


def _fork_child_commit(path: str) -> None:
    from agent_budget.stores.sqlite import SQLiteStore

    store = _FORK_STORE.get("store")
    assert isinstance(store, SQLiteStore)
    store.commit("child", [L("s", "session:tokens", 5)], now=1.0, group=G)


_FORK_STORE: dict[str, Store] = {}


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_sqlite_store_survives_a_fork(tmp_path: Path) -> None:
    import multiprocessing

    store = Store.from_url(f"sqlite:///{tmp_path / 'f.db'}")
    store.commit("parent", [L("s", "session:tokens", 3)], now=1.0, group=G)
    _FORK_STORE["store"] = store  # the child inherits this very object, connection included
    child = multiprocessing.get_context("fork").Process(
        target=_fork_child_commit, args=(str(tmp_path / "f.db"),)
    )
    child.start()
    child.join(timeout=60)
    assert child.exitcode == 0
    store.commit("parent2", [L("s", "session:tokens", 2)], now=1.0, group=G)
    assert store.read("s", now=1.0, group=G) == {"session:tokens": Level(10, 0)}
    _FORK_STORE.clear()
    store.close()


# -- the ledger, events and read-only reads (the same on every store) --------------------------

LEDGER_KEYS = {
    "timestamp",
    "scope",
    "session_id",
    "model",
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "reasoning_tokens",
    "cost_nanos",
    "cost_usd",
    "estimated",
    "price_source",
    "reservation_id",
    "metadata",
    "cache_write_1h_tokens",
    "web_searches",
    "price_date",
    "price_id",
    "price_tier",
}


def _reader(store_factory: StoreFactory, writer: Store) -> Store:
    """A second handle opened for reading only (memory has one handle: the writer)."""
    return writer if store_factory.kind == "memory" else store_factory(read_only=True)


def _tenants(store: Store, clock: FakeClock) -> tuple[Budget, Budget, Budget]:
    glob = Budget(BudgetScope("global", max_tokens_per_day=10**9), RATES, store=store, clock=clock)
    alice = Budget(BudgetScope("user:alice"), RATES, parent=glob, clock=clock)
    bob = Budget(BudgetScope("user:bob"), RATES, parent=glob, clock=clock)
    return glob, alice, bob


def test_ledger_keeps_every_call_with_the_same_fields(
    store_factory: StoreFactory, clock: FakeClock
) -> None:
    store = store_factory()
    _glob, alice, bob = _tenants(store, clock)
    first = alice.record("s1", "test-model", 100, 20, {"ticket": "T-1"}, cache_read_tokens=40)
    clock.advance(10)
    hold = bob.reserve("test-model", 50, 10, session_id="s2")
    clock.advance(2)
    second = hold.commit(Usage(30, 5, reasoning_tokens=2))
    clock.advance(1)
    third = bob.reserve("gpt-4o", 10, 10).commit()  # no usage: the estimate, marked
    reader = _reader(store_factory, store)
    rows = reader.ledger()
    assert [set(row) for row in rows] == [LEDGER_KEYS] * 3
    for row, record in zip(rows, (first, second, third), strict=True):
        assert row["timestamp"] == pytest.approx(record.timestamp)
        assert (row["scope"], row["session_id"], row["model"]) == (
            record.scope,
            record.session_id,
            record.model,
        )
        assert (row["input_tokens"], row["output_tokens"]) == (
            record.input_tokens,
            record.output_tokens,
        )
        assert (row["cache_read_tokens"], row["reasoning_tokens"]) == (
            record.cache_read_tokens,
            record.reasoning_tokens,
        )
        assert row["cost_nanos"] == record.cost_nanos and row["estimated"] == record.estimated
        assert row["price_source"] == record.price_source != ""
        assert (row["price_id"], row["price_date"], row["price_tier"]) == (
            record.price_id,
            record.price_date,
            record.price_tier,
        )
        assert row["reservation_id"] == record.reservation_id
    assert rows[0]["metadata"] == {"ticket": "T-1"}
    assert (rows[0]["price_source"], rows[0]["price_id"]) == ("rates=", "rates:test-model")
    assert rows[2]["estimated"] and rows[2]["price_id"].endswith(":gpt-4o")
    assert rows[2]["price_date"] != ""
    assert [r["scope"] for r in reader.ledger(newest_first=True)] == [
        "user:bob",
        "user:bob",
        "user:alice",
    ]


def test_ledger_filters_by_time_scope_session_model_and_limit(
    store_factory: StoreFactory, clock: FakeClock
) -> None:
    store = store_factory()
    _glob, alice, bob = _tenants(store, clock)
    start = clock()
    for i in range(6):
        (alice if i % 2 else bob).record(f"s{i % 3}", "test-model" if i < 4 else "gpt-4o", 10, i)
        clock.advance(3600)
    reader = _reader(store_factory, store)
    assert [r["output_tokens"] for r in reader.ledger(scope="user:alice")] == [1, 3, 5]
    assert len(reader.ledger(scope=["user:alice", "user:bob"])) == 6
    assert reader.ledger(scope="nobody") == []
    assert [r["output_tokens"] for r in reader.ledger(session="s0")] == [0, 3]
    assert [r["output_tokens"] for r in reader.ledger(model="gpt-4o")] == [4, 5]
    window = reader.ledger(since=start + 3600, until=start + 3 * 3600)
    assert [r["output_tokens"] for r in window] == [1, 2]
    assert [r["output_tokens"] for r in reader.ledger(limit=2)] == [0, 1]
    assert [r["output_tokens"] for r in reader.ledger(limit=2, newest_first=True)] == [5, 4]
    with pytest.raises(ValueError, match="limit"):
        reader.ledger(limit=-1)
    with pytest.raises(ValueError, match="since"):
        reader.ledger(since=float("nan"))
    # ledger_stream: the same rows in no set order (a report sums them as they come).
    for query in ({}, {"scope": "user:alice"}, {"session": "s0"}, {"model": "gpt-4o"}):
        streamed = sorted(r["output_tokens"] for r in reader.ledger_stream(**query))
        assert streamed == sorted(r["output_tokens"] for r in reader.ledger(**query)), query
    with pytest.raises(ValueError, match="since"):
        list(reader.ledger_stream(since=float("nan")))


def test_a_repeated_commit_adds_one_ledger_row(
    store_factory: StoreFactory, clock: FakeClock
) -> None:
    store = store_factory()
    lines = [L("s", "session:tokens", 5)]
    record = {"timestamp": clock(), "scope": "s", "model": "m", "input_tokens": 5}
    store.commit("once", lines, now=clock(), group=G, record=record)
    store.commit("once", lines, now=clock(), group=G, record=record)
    assert [row["input_tokens"] for row in store.ledger()] == [5]


def test_aggregate_sums_per_scope_session_model_and_bucket(
    store_factory: StoreFactory, clock: FakeClock
) -> None:
    from agent_budget.stores.ledger import aggregate_rows

    store = store_factory()
    _glob, alice, bob = _tenants(store, clock)
    for i in range(12):
        budget = alice if i % 3 else bob
        budget.record(f"s{i % 2}", "test-model" if i % 4 else "gpt-4o", 100 + i, 10 * i)
        clock.advance(1800)
    reader = _reader(store_factory, store)
    rows = reader.ledger()
    for by in (["scope"], ["model"], ["scope", "session_id"], ["bucket", "scope"], ["estimated"]):
        native = reader.aggregate(by=by, bucket=3600)
        assert native == aggregate_rows(rows, by, bucket=3600), by
    by_scope = reader.aggregate(by=["scope"])
    assert [g["scope"] for g in by_scope] == ["user:alice", "user:bob"]  # largest cost first
    assert by_scope[0]["calls"] == 8 and by_scope[1]["calls"] == 4
    assert sum(g["cost_nanos"] for g in by_scope) == sum(r["cost_nanos"] for r in rows)
    assert by_scope[0]["input_tokens"] == sum(100 + i for i in range(12) if i % 3)
    buckets = reader.aggregate(by=["bucket"], bucket=3600, order_by="calls")
    assert {g["calls"] for g in buckets} == {2} and len(buckets) == 6
    assert all(g["bucket"] % 3600 == 0 for g in buckets)
    top = reader.aggregate(by=["session_id"], order_by="tokens", limit=1)
    assert len(top) == 1 and top[0]["session_id"] == "s1"
    only = reader.aggregate(by=["model"], scope="user:bob", model="gpt-4o")
    assert [(g["model"], g["calls"]) for g in only] == [("gpt-4o", 1)]
    assert reader.aggregate(by=["scope"], scope="nobody") == []
    with pytest.raises(ValueError, match="bucket"):
        reader.aggregate(by=["bucket"])
    with pytest.raises(ValueError, match="group by"):
        reader.aggregate(by=["colour"])


def test_refusals_and_alerts_are_kept_and_counted(
    store_factory: StoreFactory, clock: FakeClock
) -> None:
    store = store_factory()
    glob = Budget(
        BudgetScope("global", max_tokens_per_day=1_000, alert_at_pct=0.5),
        RATES,
        store=store,
        clock=clock,
    )
    user = Budget(BudgetScope("user:7"), RATES, parent=glob, clock=clock)
    user.record("s", "test-model", 600, 0)  # WARNING at 50%
    for _ in range(3):
        clock.advance(1)
        with pytest.raises(BudgetExceededError):
            user.reserve("test-model", 500, 0, session_id="conv-9")
    reader = _reader(store_factory, store)
    events = reader.events()
    assert [e["kind"] for e in events] == ["refusal", "refusal", "refusal", "alert", "alert"]
    refusal = events[0]
    assert refusal["scope"] == "global" and refusal["caller"] == "user:7"
    assert (refusal["limit_type"], refusal["unit"]) == ("day_tokens", "tokens")
    assert (refusal["used"], refusal["limit"], refusal["model"]) == (600, 1000, "test-model")
    assert refusal["session_id"] == "conv-9" and "refused" in refusal["message"]
    assert [e["level"] for e in events if e["kind"] == "alert"] == ["critical", "warning"]
    assert reader.event_counts() == {"global": {"refusal": 3, "alert": 2}}
    assert reader.event_counts(scope="user:7") == {}
    assert len(reader.events(kinds=["alert"])) == 2
    assert len(reader.events(scope="user:7")) == 3  # as the caller
    assert len(reader.events(since=clock() - 1.5)) == 2
    assert [e["kind"] for e in reader.events(limit=1, newest_first=False)] == ["alert"]
    with pytest.raises(ValueError, match="kind"):
        reader.events(kinds=["nonsense"])


def test_peek_reads_what_read_reads_without_writing(
    store_factory: StoreFactory, clock: FakeClock
) -> None:
    store = store_factory()
    store.commit(
        "old", [L("s", "day:tokens", 7), L("s", "session:tokens", 7)], now=clock(), group=G
    )
    clock.advance(3 * 3600)
    store.commit("new", [L("s", "day:tokens", 5)], now=clock(), group=G)
    store.reserve("gone", [L("s", "session:tokens", 11)], now=clock(), ttl=60, group=G)
    store.reserve("live", [L("t", "session:tokens", 13)], now=clock(), ttl=10**6, group=G)
    clock.advance(86_400 - 2 * 3600)  # the old bucket has left the window, the new one not
    hour = "roll:3600:tokens"
    store.commit("roll-old", [L("t", hour, 3)], now=clock() - 5_000, group=G)
    store.commit("roll-new", [L("t", hour, 4)], now=clock() - 100, group=G)
    month = Line("t", "month:tokens", 6, None, 1_000)
    store.commit("month", [month], now=clock(), group=G)
    reader = _reader(store_factory, store)
    periods = {"t": {"month:tokens": 2_000}}  # a newer month: the old one's 6 read as 0
    peeked = reader.peek_many({"s": G, "t": G, "nobody": G}, now=clock(), periods=periods)
    assert peeked == {
        "s": {"day:tokens": Level(5, 0), "session:tokens": Level(7, 0)},
        "t": {"session:tokens": Level(0, 13), hour: Level(4, 0)},
        "nobody": {},
    }
    assert reader.peek("t", now=clock(), group=G)["month:tokens"] == Level(6, 0)
    assert reader.peek("s", now=clock(), group=G) == peeked["s"]
    assert store.read("s", now=clock(), group=G) == peeked["s"]
    assert store.read("t", now=clock(), group=G, periods=periods["t"]) == peeked["t"]


def test_a_read_only_handle_refuses_writes(store_factory: StoreFactory, clock: FakeClock) -> None:
    from agent_budget import StoreError

    store_factory().commit("c", [L("s", "session:tokens", 1)], now=clock(), group=G)
    if store_factory.kind == "memory":
        pytest.skip("a memory store has one handle; a new one is empty")
    reader = store_factory(read_only=True)
    assert reader.read_only
    assert reader.read("s", now=clock(), group=G) == {"session:tokens": Level(1, 0)}
    for write in (
        lambda: reader.commit("x", [L("s", "session:tokens", 1)], now=clock(), group=G),
        lambda: reader.reserve("y", [L("s", "session:tokens", 1)], now=clock(), ttl=9, group=G),
        lambda: reader.save_scope("s", {"name": "s"}),
        lambda: reader.record_event({"kind": "alert", "scope": "s"}, group=G),
    ):
        with pytest.raises(StoreError, match="read-only"):
            write()
    assert store_factory().read("s", now=clock(), group=G) == {"session:tokens": Level(1, 0)}


def test_template_made_scopes_are_registered_for_every_process(
    store_factory: StoreFactory, clock: FakeClock
) -> None:
    mgr = BudgetManager(store_factory(), rates=RATES, clock=clock)
    mgr.register(BudgetScope("global", max_cost_per_day_usd=100))
    mgr.add_template("user:", BudgetScope("user", max_tokens_per_day=5_000), parent="global")
    mgr.add_template("conv:", BudgetScope("conv", max_tokens_per_session=800))
    mgr.get("conv:c1", parent="user:u1").record("s", "test-model", 300, 0)
    mgr.get("user:u2").record("s", "test-model", 10, 0)
    # A fresh process: another manager, no templates, its own store handle.
    other = BudgetManager(store_factory(), rates=RATES, clock=clock)
    assert set(other.scopes()) == {"global", "user:u1", "conv:c1", "user:u2"}
    saved = other.store.load_scopes()
    assert saved["conv:c1"]["parent"] == "user:u1" and saved["conv:c1"]["template"] == "conv:"
    assert saved["conv:c1"]["max_tokens_per_session"] == 800
    assert saved["user:u1"]["parent"] == "global" and saved["user:u1"]["template"] == "user:"
    summaries = other.all_summaries()
    assert summaries["conv:c1"]["parent"] == "user:u1"
    assert summaries["conv:c1"]["session"]["tokens"] == 300
    assert summaries["user:u1"]["day"]["tokens"] == 300  # the child's call counts in its parent
    assert summaries["global"]["day"]["tokens"] == 310
    assert summaries["user:u2"]["limits"]["day_tokens"]["limit"] == 5_000
