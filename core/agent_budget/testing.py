"""The store conformance suite, for any :class:`~agent_budget.stores.Store`: the rules of
``agent_budget/stores/base.py``, checked case by case. Every built-in store runs it
(``tests/test_store_conformance.py``); a third-party store runs it the same way.

Needs only the standard library; pytest is optional. With pytest, one test per case::

    import pytest
    from agent_budget.testing import CASES, ManualClock

    pytest.register_assert_rewrite("agent_budget.testing")  # in conftest.py: full messages

    @pytest.mark.parametrize("case", CASES.values(), ids=list(CASES))
    def test_my_store(case, tmp_path):
        case(lambda **options: MyStore(tmp_path / "state", **options), ManualClock())

Without pytest, :func:`run_conformance` runs every case and raises
:class:`ConformanceError` listing the failures.

A case gets a *factory* and a clock. ``factory(**options)`` (``StoreOptions`` fields as
keywords: ``window_seconds``, ``idle_ttl``, ...) returns a handle on **the case's own
store**: two calls with the same options are two handles on the same state (as two
processes opening one URL would be); each case starts empty. The store must use the
``now`` each call passes (a Redis store needs ``server_time=0``). Plain ``assert``
statements do the checking, so run with assertions enabled (not ``python -O``).
"""

from __future__ import annotations

import contextlib
import re
import threading
import traceback
from collections.abc import Callable, Iterable, Iterator
from itertools import pairwise

from .stores import Level, Line, Store
from .stores.base import PERIOD_HORIZON, is_session_scope, roll_bucket, session_scope

__all__ = [
    "CASES",
    "Case",
    "ConformanceError",
    "ManualClock",
    "StoreFactory",
    "run_conformance",
]

StoreFactory = Callable[..., Store]
"""``factory(**store_options) -> Store``: a handle on the case's one shared store."""

G = "tenant"


class ManualClock:
    """A wall clock that moves only when told to: windows and expiry without sleeping."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.now = start
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return self.now

    def advance(self, seconds: float) -> None:
        with self._lock:
            self.now += seconds


Clock = ManualClock
Case = Callable[[StoreFactory, ManualClock], None]


class ConformanceError(AssertionError):
    """Cases a store failed, with each one's error."""


@contextlib.contextmanager
def raises(kind: type[BaseException], match: str | None = None) -> Iterator[None]:
    """Assert the block raises ``kind`` (its message matching ``match``)."""
    try:
        yield
    except kind as exc:
        if match is not None and not re.search(match, str(exc)):
            raise AssertionError(f"{kind.__name__} {str(exc)!r} does not match {match!r}") from exc
        return
    raise AssertionError(f"did not raise {kind.__name__}")


def L(scope: str, metric: str, amount: int, limit: int | None = None) -> Line:
    return Line(scope, metric, amount, limit)


def P(scope: str, metric: str, amount: int, period: int, limit: int | None = None) -> Line:
    return Line(scope, metric, amount, limit, period)


# -- the cases ---------------------------------------------------------------------------------


def reserve_holds_every_line_and_reports_levels_before_the_hold(
    factory: StoreFactory, clock: Clock
) -> None:
    store = factory()
    lines = [L("conv", "session:tokens", 30, 100), L("user", "session:tokens", 30, 1000)]
    first = store.reserve("h1", lines, now=clock(), ttl=60, group=G)
    assert first.admitted and first.refused_at is None
    assert first.levels == (Level(0, 0), Level(0, 0))
    second = store.reserve("h2", lines, now=clock(), ttl=60, group=G)
    assert second.admitted
    assert second.levels == (Level(0, 30), Level(0, 30))
    assert store.read("conv", now=clock(), group=G) == {"session:tokens": Level(0, 60)}
    assert store.read("user", now=clock(), group=G) == {"session:tokens": Level(0, 60)}


def reserve_is_all_or_nothing_across_scopes(factory: StoreFactory, clock: Clock) -> None:
    store = factory()
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


def limit_counts_committed_plus_reserved_plus_amount(factory: StoreFactory, clock: Clock) -> None:
    store = factory()
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


def refused_at_is_the_first_line_over_its_limit(factory: StoreFactory, clock: Clock) -> None:
    store = factory()
    lines = [
        L("s", "session:tokens", 5, 100),
        L("s", "session:cost", 50, 10),
        L("s", "day:cost", 50, 10),
    ]
    result = store.reserve("h", lines, now=clock(), ttl=60, group=G)
    assert (result.admitted, result.refused_at) == (False, 1)
    assert len(result.levels) == 3


def dry_run_checks_without_holding(factory: StoreFactory, clock: Clock) -> None:
    store = factory()
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


def commit_frees_the_hold_and_adds_actual_amounts(factory: StoreFactory, clock: Clock) -> None:
    store = factory()
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


def commit_is_idempotent_per_hold_id(factory: StoreFactory, clock: Clock) -> None:
    store = factory()
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


def commit_records_above_the_limit(factory: StoreFactory, clock: Clock) -> None:
    store = factory()
    store.reserve("h", [L("s", "session:cost", 100, 100)], now=clock(), ttl=60, group=G)
    result = store.commit("h", [L("s", "session:cost", 250)], now=clock(), group=G)
    assert result.applied and result.levels == (Level(250, 0),)
    refused = store.reserve("n", [L("s", "session:cost", 0, 100)], now=clock(), ttl=60, group=G)
    assert not refused.admitted


def release_frees_and_is_idempotent(factory: StoreFactory, clock: Clock) -> None:
    store = factory()
    lines = [L("s", "session:tokens", 70, 100)]
    assert store.reserve("h", lines, now=clock(), ttl=60, group=G).admitted
    assert not store.reserve("h2", lines, now=clock(), ttl=60, group=G).admitted
    assert store.release("h", now=clock(), group=G) is True
    assert store.release("h", now=clock(), group=G) is False
    assert store.release("never-made", now=clock(), group=G) is False
    assert store.read("s", now=clock(), group=G) == {}
    assert store.reserve("h2", lines, now=clock(), ttl=60, group=G).admitted


def commit_after_release_still_records(factory: StoreFactory, clock: Clock) -> None:
    store = factory()
    store.reserve("h", [L("s", "session:tokens", 50, 100)], now=clock(), ttl=60, group=G)
    assert store.release("h", now=clock(), group=G)
    result = store.commit("h", [L("s", "session:tokens", 45)], now=clock(), group=G)
    assert result.applied and result.levels == (Level(45, 0),)
    assert not store.commit("h", [L("s", "session:tokens", 45)], now=clock(), group=G).applied
    assert store.release("h", now=clock(), group=G) is False
    assert store.read("s", now=clock(), group=G) == {"session:tokens": Level(45, 0)}


def release_of_a_committed_hold_is_a_noop(factory: StoreFactory, clock: Clock) -> None:
    store = factory()
    store.reserve("h", [L("s", "session:tokens", 50, 100)], now=clock(), ttl=60, group=G)
    store.commit("h", [L("s", "session:tokens", 20)], now=clock(), group=G)
    assert store.release("h", now=clock(), group=G) is False
    assert store.read("s", now=clock(), group=G) == {"session:tokens": Level(20, 0)}


def hold_expiry_frees_budget(factory: StoreFactory, clock: Clock) -> None:
    store = factory()
    lines = [L("s", "session:tokens", 100, 100)]
    assert store.reserve("h", lines, now=clock(), ttl=30, group=G).admitted
    clock.advance(29.5)
    assert not store.reserve("h2", lines, now=clock(), ttl=30, group=G).admitted
    clock.advance(0.5)  # expires_at <= now: expired
    assert store.read("s", now=clock(), group=G) == {}
    assert store.reserve("h2", lines, now=clock(), ttl=30, group=G).admitted
    assert store.release("h", now=clock(), group=G) is False


def commit_after_expiry_still_records(factory: StoreFactory, clock: Clock) -> None:
    store = factory()
    store.reserve("h", [L("s", "session:cost", 500, 1000)], now=clock(), ttl=10, group=G)
    clock.advance(11)
    result = store.commit("h", [L("s", "session:cost", 480)], now=clock(), group=G)
    assert result.applied and result.levels == (Level(480, 0),)


def hold_id_in_use_is_rejected(factory: StoreFactory, clock: Clock) -> None:
    store = factory()
    store.reserve("h", [L("s", "session:tokens", 5, 100)], now=clock(), ttl=60, group=G)
    with raises(ValueError, match="in use"):
        store.reserve("h", [L("s", "session:tokens", 6, 100)], now=clock(), ttl=60, group=G)
    store.commit("h", [L("s", "session:tokens", 5)], now=clock(), group=G)
    with raises(ValueError, match="in use"):
        store.reserve("h", [L("s", "session:tokens", 5, 100)], now=clock(), ttl=60, group=G)
    assert store.read("s", now=clock(), group=G) == {"session:tokens": Level(5, 0)}


def rolling_window_buckets(factory: StoreFactory, clock: Clock) -> None:
    store = factory(window_seconds=3600, bucket_seconds=900)
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


def window_limits_use_the_window_total(factory: StoreFactory, clock: Clock) -> None:
    store = factory(window_seconds=3600, bucket_seconds=900)
    store.commit("a", [L("s", "day:tokens", 90)], now=clock(), group=G)
    refused = store.reserve("h", [L("s", "day:tokens", 20, 100)], now=clock(), ttl=60, group=G)
    assert not refused.admitted and refused.levels == (Level(90, 0),)
    clock.advance(3600 + 900)
    admitted = store.reserve("h", [L("s", "day:tokens", 20, 100)], now=clock(), ttl=60, group=G)
    assert admitted.admitted and admitted.levels == (Level(0, 0),)


def window_merges_a_clock_step_back_into_the_newest_bucket(
    factory: StoreFactory, clock: Clock
) -> None:
    store = factory(window_seconds=3600, bucket_seconds=900)
    start = (int(clock()) // 900) * 900
    clock.now = start + 2000.0
    store.commit("a", [L("s", "day:cost", 3)], now=clock(), group=G)
    clock.now = start + 100.0  # an earlier bucket: lands in the newest one, never lost
    store.commit("b", [L("s", "day:cost", 4)], now=clock(), group=G)
    clock.now = start + 1800 + 3600 + 900 - 1.0
    assert store.read("s", now=clock(), group=G) == {"day:cost": Level(7, 0)}
    clock.now = start + 1800 + 3600 + 900.0
    assert store.read("s", now=clock(), group=G) == {}


def reset_by_prefix_keeps_holds(factory: StoreFactory, clock: Clock) -> None:
    store = factory()
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


def read_lists_only_non_zero_or_held_counters(factory: StoreFactory, clock: Clock) -> None:
    store = factory()
    assert store.read("s", now=clock(), group=G) == {}
    store.commit(
        "z", [L("s", "session:tokens", 0), L("s", "session:cost", 4)], now=clock(), group=G
    )
    assert store.read("s", now=clock(), group=G) == {"session:cost": Level(4, 0)}


def scope_definitions_round_trip(factory: StoreFactory, clock: Clock) -> None:
    store = factory()
    data = {"name": "user:1", "max_cost_per_day_usd": "2.5", "hard_stop": True}
    data["parent"] = "global"
    store.save_scope("user:1", data)
    store.save_scope("global", {"name": "global", "parent": None})
    other = factory()
    assert other.load_scopes() == {"user:1": data, "global": {"name": "global", "parent": None}}
    other.delete_scope("user:1")
    other.delete_scope("missing")
    assert list(store.load_scopes()) == ["global"]
    loaded = store.load_scopes()
    loaded["global"]["name"] = "changed"  # a copy, not the stored value
    assert store.load_scopes()["global"]["name"] == "global"


def idle_scopes_expire(factory: StoreFactory, clock: Clock) -> None:
    store = factory(idle_ttl=100)
    store.commit("a", [L("s", "session:tokens", 9)], now=clock(), group=G)
    clock.advance(99)
    assert store.read("s", now=clock(), group=G) == {"session:tokens": Level(9, 0)}
    clock.advance(1)
    assert store.read("s", now=clock(), group=G) == {}


def idle_expiry_counts_refused_and_dry_run_reserves_as_use(
    factory: StoreFactory, clock: Clock
) -> None:
    store = factory(idle_ttl=100)
    store.commit("a", [L("s", "session:tokens", 9)], now=clock(), group=G)
    clock.advance(60)
    store.reserve("x", [L("s", "session:tokens", 1, 5)], now=clock(), ttl=10, group=G)
    clock.advance(60)
    store.reserve(
        "y", [L("s", "session:tokens", 1, 50)], now=clock(), ttl=10, group=G, dry_run=True
    )
    clock.advance(60)
    assert store.read("s", now=clock(), group=G) == {"session:tokens": Level(9, 0)}


def idle_expiry_spares_a_scope_with_a_live_hold(factory: StoreFactory, clock: Clock) -> None:
    store = factory(idle_ttl=100)
    store.commit("a", [L("s", "session:cost", 9)], now=clock(), group=G)
    store.reserve("h", [L("s", "session:cost", 5, 100)], now=clock(), ttl=1000, group=G)
    clock.advance(500)
    assert store.read("s", now=clock(), group=G) == {"session:cost": Level(9, 5)}
    clock.advance(500)  # hold expired, then the idle scope goes with it
    assert store.read("s", now=clock(), group=G) == {}


def commit_of_a_hold_on_an_idle_scope_keeps_its_history(
    factory: StoreFactory, clock: Clock
) -> None:
    store = factory(idle_ttl=100)
    store.commit("a", [L("s", "session:cost", 9)], now=clock(), group=G)
    store.reserve("h", [L("s", "session:cost", 5, 100)], now=clock(), ttl=1000, group=G)
    clock.advance(500)
    result = store.commit("h", [L("s", "session:cost", 4)], now=clock(), group=G)
    assert result.levels == (Level(13, 0),)


def exact_integers_up_to_two_to_the_53(factory: StoreFactory, clock: Clock) -> None:
    store = factory()
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


def exact_integers_at_any_size(factory: StoreFactory, clock: Clock) -> None:
    """Counters at or above 1e17 nano-USD, above 2^53 and above 2^64 read back exactly on
    every store, through windows and holds too (issue 16, #9)."""
    store = factory()
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


def repeated_reserve_rule(factory: StoreFactory, clock: Clock) -> None:
    """One rule on every store (issue 16, #13): a retry of a live hold with the same lines is
    admitted once and reports the levels before that hold; anything else is "in use"."""
    store = factory()
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
        with raises(ValueError, match="in use"):
            store.reserve("h", different, now=clock(), ttl=60, group=G)
    store.commit("h", [L("s", "session:tokens", 25)], now=clock(), group=G)
    with raises(ValueError, match="in use"):
        store.reserve("h", lines, now=clock(), ttl=60, group=G)  # finished: never again
    store.reserve("r", lines, now=clock(), ttl=60, group=G)
    store.release("r", now=clock(), group=G)
    with raises(ValueError, match="in use"):
        store.reserve("r", lines, now=clock(), ttl=60, group=G)
    store.reserve("e", lines, now=clock(), ttl=10, group=G)
    clock.advance(10)  # an expired hold's id may be used again
    assert store.reserve("e", lines, now=clock(), ttl=10, group=G).admitted
    assert store.read("s", now=clock(), group=G) == {"session:tokens": Level(45, 35)}


def a_second_handle_sees_every_hold_and_commit(factory: StoreFactory, clock: Clock) -> None:
    one, two = factory(), factory()
    one.reserve("h", [L("s", "session:tokens", 60, 100)], now=clock(), ttl=60, group=G)
    assert not two.reserve(
        "h2", [L("s", "session:tokens", 60, 100)], now=clock(), ttl=60, group=G
    ).admitted
    two.commit("h", [L("s", "session:tokens", 30)], now=clock(), group=G)
    assert one.read("s", now=clock(), group=G) == {"session:tokens": Level(30, 0)}
    assert not one.commit("h", [L("s", "session:tokens", 30)], now=clock(), group=G).applied


def any_scope_and_group_names(factory: StoreFactory, clock: Clock) -> None:
    for group, scopes in (
        ("tenant:{acme}", ["tenant:{acme}", "user:{42}:x", "conv:\u00fc/1 2"]),
        ("odd}group{", ["odd}group{", "a}b", "{}"]),
    ):
        store = factory()
        lines = [L(scope, "model:gpt-4o:tokens", 10, 100) for scope in scopes]
        assert store.reserve(f"h{group}", lines, now=clock(), ttl=60, group=group).admitted
        commit = [L(s, "model:gpt-4o:tokens", 7) for s in scopes]
        store.commit(f"h{group}", commit, now=clock(), group=group)
        for scope in scopes:
            found = store.read(scope, now=clock(), group=group)
            assert found == {"model:gpt-4o:tokens": Level(7, 0)}


def empty_line_lists(factory: StoreFactory, clock: Clock) -> None:
    store = factory()
    assert store.reserve("h", [], now=clock(), ttl=60, group=G) == (
        store.reserve("h2", [], now=clock(), ttl=60, group=G)
    )
    result = store.commit("c", [], now=clock(), group=G)
    assert result.applied and result.levels == ()


def rolling_windows_of_any_length(factory: StoreFactory, clock: Clock) -> None:
    store = factory()
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


def a_malformed_window_changes_nothing(factory: StoreFactory, clock: Clock) -> None:
    store = factory()
    for bad in ("roll:0:tokens", "roll:ten:tokens"):
        with raises(ValueError):
            store.reserve("h", [L("s", "session:tokens", 5, 100), L("s", bad, 1, 10)],
                          now=clock(), ttl=60, group=G)  # fmt: skip
        with raises(ValueError):
            store.commit("c", [L("s", "session:tokens", 5), L("s", bad, 1)], now=clock(), group=G)
    assert store.read("s", now=clock(), group=G) == {}
    assert store.commit("c", [L("s", "session:tokens", 5)], now=clock(), group=G).applied


def calendar_periods_restart_counters(factory: StoreFactory, clock: Clock) -> None:
    store = factory()
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


def refused_and_dry_run_reserves_move_no_period(factory: StoreFactory, clock: Clock) -> None:
    store = factory()
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
    assert store.read("s", now=clock(), group=G) == {month: Level(50, 0)}


def a_period_on_a_window_is_refused(factory: StoreFactory, clock: Clock) -> None:
    store = factory()
    with raises(ValueError, match="period"):
        store.commit("a", [L("s", "session:tokens", 1), P("s", "day:tokens", 1, 5)],
                     now=clock(), group=G)  # fmt: skip
    with raises(ValueError, match="period"):
        store.reserve("h", [P("s", "roll:60:tokens", 1, 5, 10)], now=clock(), ttl=60, group=G)
    assert store.read("s", now=clock(), group=G) == {}


def session_scopes_expire_after_the_session_ttl(factory: StoreFactory, clock: Clock) -> None:
    store = factory(session_ttl=100, idle_ttl=1000)
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
    forever = factory(session_ttl=None)
    forever.commit("f", [L(session_scope("u", "c"), "session:tokens", 3)], now=clock(), group=G)
    clock.advance(10**8)
    assert forever.read(session_scope("u", "c"), now=clock(), group=G) == {
        "session:tokens": Level(3, 0)
    }


def idle_expiry_never_drops_what_a_window_still_counts(factory: StoreFactory, clock: Clock) -> None:
    """An idle_ttl shorter than the window must not void the window's cap (issue 16, #4)."""
    store = factory(idle_ttl=3600, session_ttl=3600)
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


def idle_expiry_keeps_a_recent_period_counter(factory: StoreFactory, clock: Clock) -> None:
    store = factory(idle_ttl=60)
    start = int(clock())
    store.commit("a", [P("s", "cal:month:cost", 70, start, None)], now=clock(), group=G)
    clock.advance(10 * 86_400)  # idle, but the month still counts
    lines = [P("s", "cal:month:cost", 40, start, 100)]
    assert not store.reserve("h", lines, now=clock(), ttl=60, group=G).admitted
    clock.advance(PERIOD_HORIZON)
    assert store.read("s", now=clock(), group=G) == {}


def threads_share_one_store_handle(factory: StoreFactory, clock: Clock) -> None:
    store = factory()
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


def concurrent_commits_report_levels_that_tile_exactly(factory: StoreFactory, clock: Clock) -> None:
    """Each applied commit reports its own post-commit level, atomically: the intervals
    (level - amount, level] of concurrent commits never overlap and cover [0, total], so
    exactly one commit crosses any threshold (issue 16, #10)."""
    store = factory()
    spans: list[tuple[int, int]] = []
    lock = threading.Lock()

    def work(worker: int) -> None:
        other = factory()
        for number in range(40):
            amount = 1 + (worker * 31 + number) % 17
            result = other.commit(
                f"c{worker}-{number}", [Line("x", "session:cost", amount)], now=clock(), group="x"
            )
            assert result.applied
            with lock:
                spans.append((result.levels[0].committed - amount, result.levels[0].committed))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    spans.sort()
    assert spans[0][0] == 0
    for (_, end), (start, _) in pairwise(spans):
        assert start == end
    assert store.read("x", now=clock(), group="x")["session:cost"].committed == spans[-1][1]


CASES: dict[str, Case] = {
    case.__name__: case
    for case in (
        reserve_holds_every_line_and_reports_levels_before_the_hold,
        reserve_is_all_or_nothing_across_scopes,
        limit_counts_committed_plus_reserved_plus_amount,
        refused_at_is_the_first_line_over_its_limit,
        dry_run_checks_without_holding,
        commit_frees_the_hold_and_adds_actual_amounts,
        commit_is_idempotent_per_hold_id,
        commit_records_above_the_limit,
        release_frees_and_is_idempotent,
        commit_after_release_still_records,
        release_of_a_committed_hold_is_a_noop,
        hold_expiry_frees_budget,
        commit_after_expiry_still_records,
        hold_id_in_use_is_rejected,
        rolling_window_buckets,
        window_limits_use_the_window_total,
        window_merges_a_clock_step_back_into_the_newest_bucket,
        reset_by_prefix_keeps_holds,
        read_lists_only_non_zero_or_held_counters,
        scope_definitions_round_trip,
        idle_scopes_expire,
        idle_expiry_counts_refused_and_dry_run_reserves_as_use,
        idle_expiry_spares_a_scope_with_a_live_hold,
        commit_of_a_hold_on_an_idle_scope_keeps_its_history,
        exact_integers_up_to_two_to_the_53,
        exact_integers_at_any_size,
        repeated_reserve_rule,
        a_second_handle_sees_every_hold_and_commit,
        any_scope_and_group_names,
        empty_line_lists,
        rolling_windows_of_any_length,
        a_malformed_window_changes_nothing,
        calendar_periods_restart_counters,
        refused_and_dry_run_reserves_move_no_period,
        a_period_on_a_window_is_refused,
        session_scopes_expire_after_the_session_ttl,
        idle_expiry_never_drops_what_a_window_still_counts,
        idle_expiry_keeps_a_recent_period_counter,
        threads_share_one_store_handle,
        concurrent_commits_report_levels_that_tile_exactly,
    )
}
"""Every case, by name, in order."""


def run_conformance(
    fresh: Callable[[], StoreFactory],
    *,
    skip: Iterable[str] = (),
    clock: Callable[[], ManualClock] = ManualClock,
) -> list[str]:
    """Run every case (but ``skip``), each on ``fresh()``: a factory over a new, empty
    store. Returns the names of the cases run; raises :class:`ConformanceError` naming
    every case that failed."""
    if not __debug__:
        raise RuntimeError("the conformance suite checks with assert: run without python -O")
    skipped = set(skip)
    unknown = skipped - set(CASES)
    if unknown:
        raise ValueError(f"no such case(s): {', '.join(sorted(unknown))}")
    ran: list[str] = []
    failures: list[str] = []
    for name, case in CASES.items():
        if name in skipped:
            continue
        ran.append(name)
        try:
            case(fresh(), clock())
        except Exception:
            failures.append(f"{name}:\n{traceback.format_exc()}")
    if failures:
        raise ConformanceError(
            f"{len(failures)} of {len(ran)} conformance cases failed:\n\n" + "\n".join(failures)
        )
    return ran
