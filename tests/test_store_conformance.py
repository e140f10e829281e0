"""One conformance suite over every store: memory, SQLite, Redis and a 3-master Redis Cluster.

Every case runs identically on each store (``store_factory`` is parametrized in
``tests/store_fixtures.py``), first against the raw Store contract of ``stores/base.py``,
then through Budget and BudgetManager, which must behave the same whatever holds the state.
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
    PERIOD_HORIZON,
    is_session_scope,
    roll_bucket,
    roll_metric,
    session_scope,
    window_of,
)

from .clock import FakeClock
from .store_fixtures import FakeProvider, RedisCluster, StoreFactory, redis_client

G = "tenant"
RATES = {"test-model": ModelRates("0.0015", "0.002")}


def L(scope: str, metric: str, amount: int, limit: int | None = None) -> Line:
    return Line(scope, metric, amount, limit)


# -- the store contract ----------------------------------------------------------------------


def test_reserve_holds_every_line_and_reports_levels_before_the_hold(
    store_factory: StoreFactory, clock: FakeClock
) -> None:
    store = store_factory()
    lines = [L("conv", "session:tokens", 30, 100), L("user", "session:tokens", 30, 1000)]
    first = store.reserve("h1", lines, now=clock(), ttl=60, group=G)
    assert first.admitted and first.refused_at is None
    assert first.levels == (Level(0, 0), Level(0, 0))
    second = store.reserve("h2", lines, now=clock(), ttl=60, group=G)
    assert second.admitted
    assert second.levels == (Level(0, 30), Level(0, 30))
    assert store.read("conv", now=clock(), group=G) == {"session:tokens": Level(0, 60)}
    assert store.read("user", now=clock(), group=G) == {"session:tokens": Level(0, 60)}


def test_reserve_is_all_or_nothing_across_scopes(
    store_factory: StoreFactory, clock: FakeClock
) -> None:
    store = store_factory()
    store.commit("spent", [L("global", "session:cost", 950)], now=clock(), group=G)
    lines = [
        L("conv", "session:cost", 100, 10_000),
        L("user", "session:cost", 100, 10_000),
        L("global", "session:cost", 100, 1_000),
    ]
    result = store.reserve("h", lines, now=clock(), ttl=60, group=G)
    assert not result.admitted
    assert result.refused_at == 2
    assert result.levels == (Level(0, 0), Level(0, 0), Level(950, 0))
    assert store.read("conv", now=clock(), group=G) == {}
    assert store.read("user", now=clock(), group=G) == {}
    assert store.read("global", now=clock(), group=G) == {"session:cost": Level(950, 0)}
    # Nothing was held, so the id is still free and a fitting call is admitted.
    fits = [
        line if line.scope != "global" else L("global", "session:cost", 50, 1_000) for line in lines
    ]
    assert store.reserve("h", fits, now=clock(), ttl=60, group=G).admitted


def test_limit_counts_committed_plus_reserved_plus_amount(
    store_factory: StoreFactory, clock: FakeClock
) -> None:
    store = store_factory()
    store.commit("c", [L("s", "session:tokens", 40)], now=clock(), group=G)
    assert store.reserve(
        "a", [L("s", "session:tokens", 30, 100)], now=clock(), ttl=60, group=G
    ).admitted
    exact = store.reserve("b", [L("s", "session:tokens", 30, 100)], now=clock(), ttl=60, group=G)
    assert exact.admitted and exact.levels == (Level(40, 30),)
    over = store.reserve("c2", [L("s", "session:tokens", 1, 100)], now=clock(), ttl=60, group=G)
    assert not over.admitted and over.refused_at == 0 and over.levels == (Level(40, 60),)
    # A line without a limit never refuses.
    assert store.reserve(
        "d", [L("s", "session:tokens", 10**12)], now=clock(), ttl=60, group=G
    ).admitted


def test_refused_at_is_the_first_line_over_its_limit(
    store_factory: StoreFactory, clock: FakeClock
) -> None:
    store = store_factory()
    lines = [
        L("s", "session:tokens", 5, 100),
        L("s", "session:cost", 50, 10),
        L("s", "day:cost", 50, 10),
    ]
    result = store.reserve("h", lines, now=clock(), ttl=60, group=G)
    assert (result.admitted, result.refused_at) == (False, 1)
    assert len(result.levels) == 3


def test_dry_run_checks_without_holding(store_factory: StoreFactory, clock: FakeClock) -> None:
    store = store_factory()
    lines = [L("s", "session:tokens", 60, 100)]
    assert store.reserve("check", lines, now=clock(), ttl=60, group=G, dry_run=True).admitted
    assert store.read("s", now=clock(), group=G) == {}
    assert store.reserve("h", lines, now=clock(), ttl=60, group=G).admitted
    dry = store.reserve("check", lines, now=clock(), ttl=60, group=G, dry_run=True)
    assert not dry.admitted and dry.levels == (Level(0, 60),)
    # dry runs may repeat one id; they never hold it
    assert store.reserve(
        "check", [L("s", "session:tokens", 40, 100)], now=clock(), ttl=60, group=G, dry_run=True
    ).admitted
    assert store.read("s", now=clock(), group=G) == {"session:tokens": Level(0, 60)}


def test_commit_frees_the_hold_and_adds_actual_amounts(
    store_factory: StoreFactory, clock: FakeClock
) -> None:
    store = store_factory()
    store.reserve(
        "h",
        [L("s", "session:tokens", 80, 100), L("s", "session:cost", 900, 1000)],
        now=clock(),
        ttl=60,
        group=G,
    )
    result = store.commit(
        "h", [L("s", "session:tokens", 55), L("s", "session:cost", 700)], now=clock(), group=G
    )
    assert result.applied
    assert result.levels == (Level(55, 0), Level(700, 0))
    assert store.read("s", now=clock(), group=G) == {
        "session:tokens": Level(55, 0),
        "session:cost": Level(700, 0),
    }


def test_commit_is_idempotent_per_hold_id(store_factory: StoreFactory, clock: FakeClock) -> None:
    store = store_factory()
    lines = [L("s", "session:tokens", 10)]
    store.reserve("h", [L("s", "session:tokens", 20, 100)], now=clock(), ttl=60, group=G)
    assert store.commit("h", lines, now=clock(), group=G).applied
    again = store.commit("h", lines, now=clock(), group=G)
    assert not again.applied
    assert again.levels == (Level(10, 0),)
    # a commit without a prior reserve (Budget.record) is also counted once
    assert store.commit("r", lines, now=clock(), group=G).applied
    assert not store.commit("r", lines, now=clock(), group=G).applied
    assert store.read("s", now=clock(), group=G) == {"session:tokens": Level(20, 0)}


def test_commit_records_above_the_limit(store_factory: StoreFactory, clock: FakeClock) -> None:
    store = store_factory()
    store.reserve("h", [L("s", "session:cost", 100, 100)], now=clock(), ttl=60, group=G)
    result = store.commit("h", [L("s", "session:cost", 250)], now=clock(), group=G)
    assert result.applied and result.levels == (Level(250, 0),)
    refused = store.reserve("n", [L("s", "session:cost", 0, 100)], now=clock(), ttl=60, group=G)
    assert not refused.admitted


def test_release_frees_and_is_idempotent(store_factory: StoreFactory, clock: FakeClock) -> None:
    store = store_factory()
    lines = [L("s", "session:tokens", 70, 100)]
    assert store.reserve("h", lines, now=clock(), ttl=60, group=G).admitted
    assert not store.reserve("h2", lines, now=clock(), ttl=60, group=G).admitted
    assert store.release("h", now=clock(), group=G) is True
    assert store.release("h", now=clock(), group=G) is False
    assert store.release("never-made", now=clock(), group=G) is False
    assert store.read("s", now=clock(), group=G) == {}
    assert store.reserve("h2", lines, now=clock(), ttl=60, group=G).admitted


def test_commit_after_release_still_records(store_factory: StoreFactory, clock: FakeClock) -> None:
    store = store_factory()
    store.reserve("h", [L("s", "session:tokens", 50, 100)], now=clock(), ttl=60, group=G)
    assert store.release("h", now=clock(), group=G)
    result = store.commit("h", [L("s", "session:tokens", 45)], now=clock(), group=G)
    assert result.applied and result.levels == (Level(45, 0),)
    assert not store.commit("h", [L("s", "session:tokens", 45)], now=clock(), group=G).applied
    assert store.release("h", now=clock(), group=G) is False
    assert store.read("s", now=clock(), group=G) == {"session:tokens": Level(45, 0)}


def test_release_of_a_committed_hold_is_a_noop(
    store_factory: StoreFactory, clock: FakeClock
) -> None:
    store = store_factory()
    store.reserve("h", [L("s", "session:tokens", 50, 100)], now=clock(), ttl=60, group=G)
    store.commit("h", [L("s", "session:tokens", 20)], now=clock(), group=G)
    assert store.release("h", now=clock(), group=G) is False
    assert store.read("s", now=clock(), group=G) == {"session:tokens": Level(20, 0)}


def test_hold_expiry_frees_budget(store_factory: StoreFactory, clock: FakeClock) -> None:
    store = store_factory()
    lines = [L("s", "session:tokens", 100, 100)]
    assert store.reserve("h", lines, now=clock(), ttl=30, group=G).admitted
    clock.advance(29.5)
    assert not store.reserve("h2", lines, now=clock(), ttl=30, group=G).admitted
    clock.advance(0.5)  # expires_at <= now: expired
    assert store.read("s", now=clock(), group=G) == {}
    assert store.reserve("h2", lines, now=clock(), ttl=30, group=G).admitted
    assert store.release("h", now=clock(), group=G) is False


def test_commit_after_expiry_still_records(store_factory: StoreFactory, clock: FakeClock) -> None:
    store = store_factory()
    store.reserve("h", [L("s", "session:cost", 500, 1000)], now=clock(), ttl=10, group=G)
    clock.advance(11)
    result = store.commit("h", [L("s", "session:cost", 480)], now=clock(), group=G)
    assert result.applied and result.levels == (Level(480, 0),)


def test_hold_id_in_use_is_rejected(store_factory: StoreFactory, clock: FakeClock) -> None:
    store = store_factory()
    store.reserve("h", [L("s", "session:tokens", 5, 100)], now=clock(), ttl=60, group=G)
    with pytest.raises(ValueError, match="in use"):
        store.reserve("h", [L("s", "session:tokens", 6, 100)], now=clock(), ttl=60, group=G)
    store.commit("h", [L("s", "session:tokens", 5)], now=clock(), group=G)
    with pytest.raises(ValueError, match="in use"):
        store.reserve("h", [L("s", "session:tokens", 5, 100)], now=clock(), ttl=60, group=G)
    assert store.read("s", now=clock(), group=G) == {"session:tokens": Level(5, 0)}


def test_rolling_window_buckets(store_factory: StoreFactory, clock: FakeClock) -> None:
    store = store_factory(window_seconds=3600, bucket_seconds=900)
    start = (int(clock()) // 900) * 900
    clock.now = start + 100.0
    store.commit("a", [L("s", "day:cost", 7), L("s", "session:cost", 7)], now=clock(), group=G)
    clock.now = start + 1000.0  # next bucket
    store.commit("b", [L("s", "day:cost", 5), L("s", "session:cost", 5)], now=clock(), group=G)

    def day() -> int:
        return store.read("s", now=clock(), group=G).get("day:cost", Level()).committed

    assert day() == 12
    clock.now = start + 3600.0 + 100.0  # a full window after the first add: still counted
    assert day() == 12
    clock.now = start + 3600 + 900 - 0.001  # never early: the bucket may stay one bucket late
    assert day() == 12
    clock.now = start + 3600 + 900.0  # first bucket (start) leaves
    assert day() == 5
    clock.now = start + 900 + 3600 + 900.0  # second bucket leaves
    assert day() == 0
    assert store.read("s", now=clock(), group=G) == {"session:cost": Level(12, 0)}
    # a limit on the window sees only what is inside it
    assert store.reserve("c", [L("s", "day:cost", 10, 10)], now=clock(), ttl=60, group=G).admitted


def test_window_limits_use_the_window_total(store_factory: StoreFactory, clock: FakeClock) -> None:
    store = store_factory(window_seconds=3600, bucket_seconds=900)
    store.commit("a", [L("s", "day:tokens", 90)], now=clock(), group=G)
    refused = store.reserve("h", [L("s", "day:tokens", 20, 100)], now=clock(), ttl=60, group=G)
    assert not refused.admitted and refused.levels == (Level(90, 0),)
    clock.advance(3600 + 900)
    admitted = store.reserve("h", [L("s", "day:tokens", 20, 100)], now=clock(), ttl=60, group=G)
    assert admitted.admitted and admitted.levels == (Level(0, 0),)


def test_window_merges_a_clock_step_back_into_the_newest_bucket(
    store_factory: StoreFactory, clock: FakeClock
) -> None:
    store = store_factory(window_seconds=3600, bucket_seconds=900)
    start = (int(clock()) // 900) * 900
    clock.now = start + 2000.0
    store.commit("a", [L("s", "day:cost", 3)], now=clock(), group=G)
    clock.now = start + 100.0  # an earlier bucket: lands in the newest one, never lost
    store.commit("b", [L("s", "day:cost", 4)], now=clock(), group=G)
    clock.now = start + 1800 + 3600 + 900 - 1.0
    assert store.read("s", now=clock(), group=G) == {"day:cost": Level(7, 0)}
    clock.now = start + 1800 + 3600 + 900.0
    assert store.read("s", now=clock(), group=G) == {}


def test_reset_by_prefix_keeps_holds(store_factory: StoreFactory, clock: FakeClock) -> None:
    store = store_factory()
    metrics = ["session:tokens", "session:cost", "day:tokens", "model:m:tokens"]
    store.commit("c", [L("s", m, 10) for m in metrics], now=clock(), group=G)
    store.reserve("h", [L("s", m, 3, 1000) for m in metrics], now=clock(), ttl=60, group=G)
    store.reset("s", "session:", now=clock(), group=G)
    assert store.read("s", now=clock(), group=G) == {
        "session:tokens": Level(0, 3),
        "session:cost": Level(0, 3),
        "day:tokens": Level(10, 3),
        "model:m:tokens": Level(10, 3),
    }
    store.reset("s", "", now=clock(), group=G)
    assert store.read("s", now=clock(), group=G) == {m: Level(0, 3) for m in metrics}
    store.commit("h", [L("s", m, 2) for m in metrics], now=clock(), group=G)
    assert store.read("s", now=clock(), group=G) == {m: Level(2, 0) for m in metrics}
    store.reset("nobody", "", now=clock(), group=G)  # unknown scope: nothing to do
    assert store.read("nobody", now=clock(), group=G) == {}


def test_read_lists_only_non_zero_or_held_counters(
    store_factory: StoreFactory, clock: FakeClock
) -> None:
    store = store_factory()
    assert store.read("s", now=clock(), group=G) == {}
    store.commit(
        "z", [L("s", "session:tokens", 0), L("s", "session:cost", 4)], now=clock(), group=G
    )
    assert store.read("s", now=clock(), group=G) == {"session:cost": Level(4, 0)}


def test_scope_definitions_round_trip(store_factory: StoreFactory) -> None:
    store = store_factory()
    data = BudgetScope("user:1", max_cost_per_day_usd="2.5").to_dict()
    data["parent"] = "global"
    store.save_scope("user:1", data)
    store.save_scope("global", {"name": "global", "parent": None})
    other = store_factory()
    assert other.load_scopes() == {"user:1": data, "global": {"name": "global", "parent": None}}
    other.delete_scope("user:1")
    other.delete_scope("missing")
    assert list(store.load_scopes()) == ["global"]
    loaded = store.load_scopes()
    loaded["global"]["name"] = "changed"  # a copy, not the stored value
    assert store.load_scopes()["global"]["name"] == "global"


def test_idle_scopes_expire(store_factory: StoreFactory, clock: FakeClock) -> None:
    store = store_factory(idle_ttl=100)
    store.commit("a", [L("s", "session:tokens", 9)], now=clock(), group=G)
    clock.advance(99)
    assert store.read("s", now=clock(), group=G) == {"session:tokens": Level(9, 0)}
    clock.advance(1)
    assert store.read("s", now=clock(), group=G) == {}


def test_idle_expiry_counts_refused_and_dry_run_reserves_as_use(
    store_factory: StoreFactory, clock: FakeClock
) -> None:
    store = store_factory(idle_ttl=100)
    store.commit("a", [L("s", "session:tokens", 9)], now=clock(), group=G)
    clock.advance(60)
    store.reserve("x", [L("s", "session:tokens", 1, 5)], now=clock(), ttl=10, group=G)
    clock.advance(60)
    store.reserve(
        "y", [L("s", "session:tokens", 1, 50)], now=clock(), ttl=10, group=G, dry_run=True
    )
    clock.advance(60)
    assert store.read("s", now=clock(), group=G) == {"session:tokens": Level(9, 0)}


def test_idle_expiry_spares_a_scope_with_a_live_hold(
    store_factory: StoreFactory, clock: FakeClock
) -> None:
    store = store_factory(idle_ttl=100)
    store.commit("a", [L("s", "session:cost", 9)], now=clock(), group=G)
    store.reserve("h", [L("s", "session:cost", 5, 100)], now=clock(), ttl=1000, group=G)
    clock.advance(500)
    assert store.read("s", now=clock(), group=G) == {"session:cost": Level(9, 5)}
    clock.advance(500)  # hold expired, then the idle scope goes with it
    assert store.read("s", now=clock(), group=G) == {}


def test_commit_of_a_hold_on_an_idle_scope_keeps_its_history(
    store_factory: StoreFactory, clock: FakeClock
) -> None:
    store = store_factory(idle_ttl=100)
    store.commit("a", [L("s", "session:cost", 9)], now=clock(), group=G)
    store.reserve("h", [L("s", "session:cost", 5, 100)], now=clock(), ttl=1000, group=G)
    clock.advance(500)
    result = store.commit("h", [L("s", "session:cost", 4)], now=clock(), group=G)
    assert result.levels == (Level(13, 0),)


def test_exact_integers_up_to_two_to_the_53(store_factory: StoreFactory, clock: FakeClock) -> None:
    store = store_factory()
    big = 2**52 + 1
    store.commit("a", [L("s", "session:cost", big)], now=clock(), group=G)
    store.commit("b", [L("s", "session:cost", 2**52 - 3)], now=clock(), group=G)
    assert store.read("s", now=clock(), group=G) == {"session:cost": Level(2**53 - 2, 0)}
    result = store.reserve(
        "c", [L("s", "session:cost", 1, 2**53 - 1)], now=clock(), ttl=60, group=G
    )
    assert result.admitted
    assert not store.reserve(
        "d", [L("s", "session:cost", 1, 2**53 - 1)], now=clock(), ttl=60, group=G
    ).admitted


def test_exact_integers_at_any_size(store_factory: StoreFactory, clock: FakeClock) -> None:
    """Counters at or above 1e17 nano-USD, above 2^53 and above 2^64 read back exactly on
    every store, through windows and holds too (issue 16, #9)."""
    store = store_factory()
    sizes = [10**17, 2**53 + 1, 18 * 10**16 + 7, 2**64 + 3, 10**30 + 1, 99_999_999_999_999]
    expected = 0
    for index, amount in enumerate(sizes):
        lines = [L("s", "session:cost", amount), L("s", "day:cost", amount)]
        result = store.commit(f"c{index}", lines, now=clock(), group=G)
        expected += amount
        assert result.levels == (Level(expected, 0), Level(expected, 0))
    assert store.read("s", now=clock(), group=G) == {
        "session:cost": Level(expected, 0),
        "day:cost": Level(expected, 0),
    }
    limit = expected + 10**25
    held = store.reserve("h", [L("s", "session:cost", 10**25, limit)], now=clock(), ttl=60,
                         group=G)  # fmt: skip
    assert held.admitted and held.levels == (Level(expected, 0),)
    assert not store.reserve(
        "x", [L("s", "session:cost", 1, limit)], now=clock(), ttl=60, group=G
    ).admitted
    assert store.read("s", now=clock(), group=G)["session:cost"] == Level(expected, 10**25)
    store.release("h", now=clock(), group=G)
    store.commit("small", [L("s", "session:cost", -(expected - 5))], now=clock(), group=G)
    assert store.read("s", now=clock(), group=G)["session:cost"] == Level(5, 0)
    clock.advance(86_400 + 900)
    assert "day:cost" not in store.read("s", now=clock(), group=G)


def test_repeated_reserve_rule(store_factory: StoreFactory, clock: FakeClock) -> None:
    """One rule on every store (issue 16, #13): a retry of a live hold with the same lines is
    admitted once and reports the levels before that hold; anything else is "in use"."""
    store = store_factory()
    store.commit("spent", [L("s", "session:tokens", 20)], now=clock(), group=G)
    store.reserve("other", [L("s", "session:tokens", 5, 100)], now=clock(), ttl=60, group=G)
    lines = [L("s", "session:tokens", 30, 100), L("t", "session:cost", 7, 10)]
    first = store.reserve("h", lines, now=clock(), ttl=60, group=G)
    assert first.admitted and first.levels == (Level(20, 5), Level(0, 0))
    again = store.reserve("h", lines, now=clock(), ttl=60, group=G)
    assert again == first
    # the limits may differ (the retry fits as the first did): the hold is the same
    assert store.reserve("h", [L("s", "session:tokens", 30, 50), L("t", "session:cost", 7, 7)],
                         now=clock(), ttl=60, group=G).admitted  # fmt: skip
    assert store.read("s", now=clock(), group=G) == {"session:tokens": Level(20, 35)}
    assert store.read("t", now=clock(), group=G) == {"session:cost": Level(0, 7)}
    for different in ([L("s", "session:tokens", 31, 100)], lines[:1], [*lines, lines[0]]):
        with pytest.raises(ValueError, match="in use"):
            store.reserve("h", different, now=clock(), ttl=60, group=G)
    store.commit("h", [L("s", "session:tokens", 25)], now=clock(), group=G)
    with pytest.raises(ValueError, match="in use"):
        store.reserve("h", lines, now=clock(), ttl=60, group=G)  # finished: never again
    store.reserve("r", lines, now=clock(), ttl=60, group=G)
    store.release("r", now=clock(), group=G)
    with pytest.raises(ValueError, match="in use"):
        store.reserve("r", lines, now=clock(), ttl=60, group=G)
    store.reserve("e", lines, now=clock(), ttl=10, group=G)
    clock.advance(10)  # an expired hold's id may be used again
    assert store.reserve("e", lines, now=clock(), ttl=10, group=G).admitted
    assert store.read("s", now=clock(), group=G) == {"session:tokens": Level(45, 35)}


def test_a_second_handle_sees_every_hold_and_commit(
    store_factory: StoreFactory, clock: FakeClock
) -> None:
    one, two = store_factory(), store_factory()
    one.reserve("h", [L("s", "session:tokens", 60, 100)], now=clock(), ttl=60, group=G)
    assert not two.reserve(
        "h2", [L("s", "session:tokens", 60, 100)], now=clock(), ttl=60, group=G
    ).admitted
    two.commit("h", [L("s", "session:tokens", 30)], now=clock(), group=G)
    assert one.read("s", now=clock(), group=G) == {"session:tokens": Level(30, 0)}
    assert not one.commit("h", [L("s", "session:tokens", 30)], now=clock(), group=G).applied


@pytest.mark.parametrize(
    ("group", "scopes"),
    [
        ("tenant:{acme}", ["tenant:{acme}", "user:{42}:x", "conv:ü/1 2"]),
        ("odd}group{", ["odd}group{", "a}b", "{}"]),
    ],
)
def test_any_scope_and_group_names(
    store_factory: StoreFactory, clock: FakeClock, group: str, scopes: list[str]
) -> None:
    store = store_factory()
    lines = [L(scope, "model:gpt-4o:tokens", 10, 100) for scope in scopes]
    assert store.reserve("h", lines, now=clock(), ttl=60, group=group).admitted
    store.commit("h", [L(s, "model:gpt-4o:tokens", 7) for s in scopes], now=clock(), group=group)
    for scope in scopes:
        assert store.read(scope, now=clock(), group=group) == {"model:gpt-4o:tokens": Level(7, 0)}


def test_empty_line_lists(store_factory: StoreFactory, clock: FakeClock) -> None:
    store = store_factory()
    assert store.reserve("h", [], now=clock(), ttl=60, group=G) == (
        store.reserve("h2", [], now=clock(), ttl=60, group=G)
    )
    result = store.commit("c", [], now=clock(), group=G)
    assert result.applied and result.levels == ()


# -- rolling windows of any length, calendar periods, session scopes --------------------------


def test_rolling_windows_of_any_length(store_factory: StoreFactory, clock: FakeClock) -> None:
    store = store_factory()
    hour, week = "roll:3600:tokens", "roll:604800:cost"
    assert (roll_bucket(3600), roll_bucket(604800), roll_bucket(50)) == (37, 6300, 1)
    start = (int(clock()) // 37) * 37
    clock.now = start + 1.0
    store.commit("a", [L("s", hour, 7), L("s", week, 7)], now=clock(), group=G)
    clock.now = start + 40.0  # the next bucket of the hour window
    store.commit("b", [L("s", hour, 5), L("s", week, 5)], now=clock(), group=G)

    def level(metric: str) -> int:
        return store.read("s", now=clock(), group=G).get(metric, Level()).committed

    clock.now = start + 1.0 + 3600  # a full window after the first add: still counted
    assert (level(hour), level(week)) == (12, 12)
    clock.now = start + 3600 + 37 - 0.001  # never early
    assert level(hour) == 12
    clock.now = start + 3600 + 37.0  # the first bucket leaves, at most one bucket late
    assert (level(hour), level(week)) == (5, 12)
    clock.now = start + 37 + 3600 + 37.0
    assert level(hour) == 0
    # a cap on the hour sees only the hour; the week still counts everything
    lines = [L("s", hour, 10, 10), L("s", week, 1, 13)]
    assert store.reserve("c", lines, now=clock(), ttl=60, group=G).admitted
    clock.now = start + 604800 + 6300 * 2
    assert level(week) == 0


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


def test_a_malformed_window_changes_nothing(store_factory: StoreFactory, clock: FakeClock) -> None:
    store = store_factory()
    for bad in ("roll:0:tokens", "roll:ten:tokens"):
        with pytest.raises(ValueError):
            store.reserve("h", [L("s", "session:tokens", 5, 100), L("s", bad, 1, 10)],
                          now=clock(), ttl=60, group=G)  # fmt: skip
        with pytest.raises(ValueError):
            store.commit("c", [L("s", "session:tokens", 5), L("s", bad, 1)], now=clock(), group=G)
    assert store.read("s", now=clock(), group=G) == {}
    assert store.commit("c", [L("s", "session:tokens", 5)], now=clock(), group=G).applied


def P(scope: str, metric: str, amount: int, period: int, limit: int | None = None) -> Line:
    return Line(scope, metric, amount, limit, period)


def test_calendar_periods_restart_counters(store_factory: StoreFactory, clock: FakeClock) -> None:
    store = store_factory()
    jan, feb, mar = 1_000, 2_000, 3_000  # period starts, as the Budget computes them
    month = "cal:month:cost"
    assert store.commit("a", [P("s", month, 10, jan)], now=clock(), group=G).levels == (
        Level(10, 0),
    )
    held = store.reserve("h", [P("s", month, 4, jan, 100)], now=clock(), ttl=60, group=G)
    assert held.levels == (Level(10, 0),)
    # a new period starts from zero; the hold stays
    result = store.commit("b", [P("s", month, 5, feb)], now=clock(), group=G)
    assert result.applied and result.levels == (Level(5, 4),)
    # a late line of the old period counts into the newer one
    assert store.commit("c", [P("s", month, 3, jan)], now=clock(), group=G).levels == (Level(8, 4),)
    # a line without a period counts into the stored one
    assert store.commit("d", [L("s", month, 1)], now=clock(), group=G).levels == (Level(9, 4),)
    assert store.read("s", now=clock(), group=G) == {month: Level(9, 4)}
    assert store.read("s", now=clock(), group=G, periods={month: feb}) == {month: Level(9, 4)}
    # a reader already in March sees March: nothing committed yet (the hold still shows)
    assert store.read("s", now=clock(), group=G, periods={month: mar}) == {month: Level(0, 4)}
    # the cap applies per period
    lines = [P("s", month, 95, feb, 100)]
    assert not store.reserve("x", lines, now=clock(), ttl=60, group=G).admitted
    march = store.reserve("y", [P("s", month, 95, mar, 100)], now=clock(), ttl=60, group=G)
    assert march.admitted and march.levels == (Level(0, 4),)
    store.commit("y", [P("s", month, 90, mar)], now=clock(), group=G)
    store.commit("h", [P("s", month, 4, jan)], now=clock(), group=G)  # commits into March
    assert store.read("s", now=clock(), group=G) == {month: Level(94, 0)}
    # other counters of the scope are untouched by the period change
    store.commit("e", [L("s", "session:cost", 1)], now=clock(), group=G)
    assert store.read("s", now=clock(), group=G)["session:cost"] == Level(1, 0)


def test_refused_and_dry_run_reserves_move_no_period(
    store_factory: StoreFactory, clock: FakeClock
) -> None:
    store = store_factory()
    month = "cal:month:tokens"
    store.commit("a", [P("s", month, 50, 1_000)], now=clock(), group=G)
    refused = store.reserve(
        "r", [P("s", month, 500, 2_000, 100), L("s", "session:tokens", 1, 0)],
        now=clock(), ttl=60, group=G,
    )  # fmt: skip
    assert not refused.admitted and refused.levels[0] == Level(0, 0)
    dry = store.reserve("d", [P("s", month, 5, 2_000, 100)], now=clock(), ttl=60, group=G,
                        dry_run=True)  # fmt: skip
    assert dry.admitted and dry.levels == (Level(0, 0),)
    assert store.read("s", now=clock(), group=G) == {month: Level(50, 0)}  # still the old one


def test_a_period_on_a_window_is_refused(store_factory: StoreFactory, clock: FakeClock) -> None:
    store = store_factory()
    with pytest.raises(ValueError, match="period"):
        store.commit("a", [L("s", "session:tokens", 1), P("s", "day:tokens", 1, 5)],
                     now=clock(), group=G)  # fmt: skip
    with pytest.raises(ValueError, match="period"):
        store.reserve("h", [P("s", "roll:60:tokens", 1, 5, 10)], now=clock(), ttl=60, group=G)
    assert store.read("s", now=clock(), group=G) == {}


def test_session_scopes_expire_after_the_session_ttl(
    store_factory: StoreFactory, clock: FakeClock
) -> None:
    store = store_factory(session_ttl=100, idle_ttl=1000)
    one, two = session_scope("user:1", "conv-a"), session_scope("user:1", "conv-b")
    assert is_session_scope(one) and not is_session_scope("user:1") and one != two
    for scope in (one, two, "user:1"):
        store.commit(f"c-{scope}", [L(scope, "session:tokens", 9)], now=clock(), group=G)
    clock.advance(60)
    store.commit("again", [L(two, "session:tokens", 1)], now=clock(), group=G)
    clock.advance(40)  # one is idle for its session ttl; two was used 40 s ago
    assert store.read(one, now=clock(), group=G) == {}
    assert store.read(two, now=clock(), group=G) == {"session:tokens": Level(10, 0)}
    assert store.read("user:1", now=clock(), group=G) == {"session:tokens": Level(9, 0)}
    clock.advance(900)  # the ordinary scope follows idle_ttl
    assert store.read("user:1", now=clock(), group=G) == {}
    forever = store_factory(session_ttl=None)
    forever.commit("f", [L(session_scope("u", "c"), "session:tokens", 3)], now=clock(), group=G)
    clock.advance(10**8)
    assert forever.read(session_scope("u", "c"), now=clock(), group=G) == {
        "session:tokens": Level(3, 0)
    }


def test_session_scope_names_cannot_collide_with_scope_names() -> None:
    name = session_scope("user:1", "a\x1fb")
    assert name.split("\x1f", 1) == ["user:1", "a\x1fb"]
    with pytest.raises(ValueError, match="U\\+001F"):
        BudgetScope(name)
    with pytest.raises(ValueError):
        session_scope(name, "x")
    with pytest.raises(ValueError):
        session_scope("user:1", "")


def test_idle_expiry_never_drops_what_a_window_still_counts(
    store_factory: StoreFactory, clock: FakeClock
) -> None:
    """An idle_ttl shorter than the window must not void the window's cap (issue 16, #4)."""
    store = store_factory(idle_ttl=3600, session_ttl=3600)
    conv = session_scope("t", "c")
    for scope in ("t", conv):
        lines = [L(scope, "day:tokens", 90_000, 100_000), L(scope, "roll:7200:cost", 5, 10)]
        assert store.reserve(f"h-{scope}", lines, now=clock(), ttl=60, group=G).admitted
        store.commit(f"h-{scope}", lines, now=clock(), group=G)
    clock.advance(3 * 3600)  # idle three times over, inside the day
    for scope in ("t", conv):
        again = [L(scope, "day:tokens", 20_000, 100_000)]
        result = store.reserve(f"x-{scope}", again, now=clock(), ttl=60, group=G)
        assert not result.admitted and result.levels == (Level(90_000, 0),)
    clock.advance(86_400 + 900)  # the window emptied, then idle: now it may go
    assert store.read("t", now=clock(), group=G) == {}
    assert store.read(conv, now=clock(), group=G) == {}


def test_idle_expiry_keeps_a_recent_period_counter(
    store_factory: StoreFactory, clock: FakeClock
) -> None:
    store = store_factory(idle_ttl=60)
    start = int(clock())
    store.commit("a", [P("s", "cal:month:cost", 70, start, None)], now=clock(), group=G)
    clock.advance(10 * 86_400)  # idle, but the month still counts
    lines = [P("s", "cal:month:cost", 40, start, 100)]
    assert not store.reserve("h", lines, now=clock(), ttl=60, group=G).admitted
    clock.advance(PERIOD_HORIZON)
    assert store.read("s", now=clock(), group=G) == {}


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


def test_threads_share_one_store_handle(store_factory: StoreFactory, clock: FakeClock) -> None:
    import threading

    store = store_factory()
    admitted: list[int] = []
    lock = threading.Lock()

    def work(index: int) -> None:
        for i in range(25):
            hold = f"t{index}-{i}"
            if store.reserve(
                hold, [L("s", "session:tokens", 7, 500)], now=clock(), ttl=60, group=G
            ).admitted:
                store.commit(hold, [L("s", "session:tokens", 7)], now=clock(), group=G)
                with lock:
                    admitted.append(7)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(admitted) == 497  # 71 calls of 7 fit under 500
    assert store.read("s", now=clock(), group=G) == {"session:tokens": Level(497, 0)}


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
