"""Budget: reservations, windows, alerts, parents, store outages and input checks."""

from __future__ import annotations

import logging
from decimal import Decimal

import pytest

from agent_budget import (
    AlertLevel,
    Budget,
    BudgetExceededError,
    BudgetScope,
    MemoryStore,
    ModelRates,
    StoreError,
    StoreUnavailableError,
    Usage,
)
from agent_budget.stores import Store

from .flaky_store import FlakyStore

RATES = {"m": ModelRates(input_per_1k=1, output_per_1k=2)}  # $1 / $2 per 1k tokens


def make(clock, **limits):
    return Budget(BudgetScope(name="b", **limits), RATES, clock=clock)


# -- reservations -----------------------------------------------------------------------------


def test_refusal_names_limit_and_amounts_and_writes_nothing(clock):
    b = make(clock, max_tokens_per_session=1000)
    b.record("s", "m", 500, 100)
    held = b.reserve("m", 200, 100)
    before = b.usage()
    with pytest.raises(BudgetExceededError) as info:
        b.reserve("m", 150, 100)
    err = info.value
    assert (err.scope, err.limit_type) == ("b", "session_tokens")
    assert (err.used, err.reserved, err.requested, err.limit) == (600, 300, 250, 1000)
    assert "used 600" in str(err) and "reserved 300" in str(err) and "requested 250" in str(err)
    assert b.usage() == before
    held.release()


def test_reservation_fits_exactly_at_cap(clock):
    b = make(clock, max_tokens_per_session=100)
    b.reserve("m", 60, 40)
    with pytest.raises(BudgetExceededError):
        b.reserve("m", 1, 0)


def test_all_or_nothing_across_limits(clock):
    b = make(clock, max_tokens_per_session=10_000, max_cost_per_day_usd=0.5)
    with pytest.raises(BudgetExceededError) as info:
        b.reserve("m", 100, 200)  # $0.1 + $0.4 = 0.5 fits; next one cannot
        b.reserve("m", 1, 0)
    assert info.value.limit_type == "day_cost_usd"
    level = b.usage()["session:tokens"]
    assert level.reserved == 300, "the refused reservation held nothing on other limits"


def test_commit_records_actual_even_above_cap_and_frees_hold(clock):
    b = make(clock, max_tokens_per_session=100)
    r = b.reserve("m", 50, 50)
    record = r.commit(Usage(80, 70))  # more than estimated: the money is spent
    assert record.total_tokens == 150 and not record.estimated
    assert b.usage()["session:tokens"].committed == 150
    assert b.usage()["session:tokens"].reserved == 0
    with pytest.raises(BudgetExceededError):
        b.reserve("m", 1, 0)


def test_commit_and_release_are_idempotent(clock):
    b = make(clock, max_tokens_per_session=1000)
    r = b.reserve("m", 10, 10)
    first = r.commit(Usage(5, 5))
    assert r.commit(Usage(50, 50)) is first
    assert r.release() is False
    assert b.usage()["session:tokens"] == b.usage()["session:tokens"].__class__(10, 0)
    r2 = b.reserve("m", 10, 10)
    assert r2.release() is True and r2.release() is False
    assert b.usage()["session:tokens"].reserved == 0


def test_commit_without_usage_records_estimate_marked(clock):
    b = make(clock, max_tokens_per_session=1000)
    record = b.reserve("m", 30, 20).commit()
    assert record.estimated and record.total_tokens == 50


def test_commit_prices_the_model_that_answered(clock):
    rates = {"small": ModelRates(1, 1), "big": ModelRates(10, 10)}
    b = Budget(BudgetScope(name="b", max_tokens_per_model={"small": 10**6}), rates, clock=clock)
    record = b.reserve("small", 1000, 0).commit(Usage(1000, 0), model="big")
    assert record.model == "big" and record.cost_nanos == 10 * 10**9
    assert "big" in b.summary()["per_model"] and "small" not in b.summary()["per_model"]


def test_hold_expires_on_its_own(clock):
    b = Budget(BudgetScope(name="b", max_tokens_per_session=100), RATES, clock=clock, hold_ttl=60)
    b.reserve("m", 100, 0)  # never ended: a crashed or timed-out caller
    with pytest.raises(BudgetExceededError):
        b.reserve("m", 1, 0)
    clock.advance(61)
    b.reserve("m", 100, 0)


def test_commit_after_hold_expired_still_records(clock):
    b = Budget(BudgetScope(name="b", max_tokens_per_session=100), RATES, clock=clock, hold_ttl=10)
    r = b.reserve("m", 50, 0)
    clock.advance(11)
    r.commit(Usage(50, 0))
    assert b.usage()["session:tokens"].committed == 50


@pytest.mark.filterwarnings("ignore:a `with budget.reserve")  # tests/test_names.py
def test_context_manager_releases_on_error_and_commits_estimate_otherwise(clock):
    b = make(clock, max_tokens_per_session=1000)
    with pytest.raises(RuntimeError), b.reserve("m", 10, 10):
        raise RuntimeError("provider down")
    assert b.usage() == {}
    with b.reserve("m", 10, 10):
        pass
    assert b.usage()["session:tokens"].committed == 20


def test_soft_scope_never_refuses_but_alerts(clock):
    b = make(clock, max_tokens_per_session=100, hard_stop=False)
    b.reserve("m", 500, 0).commit(Usage(500, 0))
    assert [a.level for a in b.alerts] == [AlertLevel.CRITICAL]
    b.reserve("m", 500, 0)  # still admitted


# -- rolling window ---------------------------------------------------------------------------


def test_day_window_is_rolling_with_bucket_precision(clock):
    clock.now = 1_800_000_000.0  # a bucket boundary (divisible by 900)
    b = make(clock, max_tokens_per_day=1000)
    b.record("s", "m", 600, 0)
    clock.advance(12 * 3600)
    b.record("s", "m", 300, 0)
    with pytest.raises(BudgetExceededError):
        b.reserve("m", 200, 0)
    clock.advance(12 * 3600 - 1)  # 24 h after the first record, minus a second: still counted
    assert b.summary()["day"]["tokens"] == 900
    clock.advance(901)  # past 24 h + one 15-minute bucket: the first record left
    assert b.summary()["day"]["tokens"] == 300
    b.reserve("m", 700, 0)


def test_session_and_model_counters_do_not_roll(clock):
    b = make(clock, max_tokens_per_session=10**6)
    b.record("s", "m", 100, 0)
    clock.advance(3 * 86400)
    summary = b.summary()
    assert summary["session"]["tokens"] == 100 and summary["per_model"]["m"]["tokens"] == 100
    assert summary["day"]["tokens"] == 0


def test_window_memory_is_bounded(clock):
    store = MemoryStore()
    b = Budget(BudgetScope(name="w", max_tokens_per_day=10**12), RATES, store=store, clock=clock)
    for _ in range(3 * 96 * 4):  # three days of calls every 3m45s
        b.record("s", "m", 1, 0)
        clock.advance(225)
    assert store.stats()["buckets"] <= 2 * (86400 // 900 + 2)


def test_reset_session_and_reset(clock):
    b = make(clock, max_tokens_per_session=1000, max_tokens_per_day=10_000)
    b.record("s", "m", 100, 0)
    b.reset_session()
    assert b.summary()["session"]["tokens"] == 0 and b.summary()["day"]["tokens"] == 100
    b.reset()
    assert b.summary()["day"]["tokens"] == 0 and b.summary()["per_model"] == {}


# -- alerts -----------------------------------------------------------------------------------


def test_alerts_fire_once_per_crossing_and_rearm(clock):
    b = make(clock, max_tokens_per_day=1000, alert_at_pct=0.8)
    for _ in range(9):
        b.record("s", "m", 100, 0)  # 800 at the 8th: one WARNING, not one per call
    assert [a.level for a in b.alerts] == [AlertLevel.WARNING]
    for _ in range(5):
        with pytest.raises(BudgetExceededError):
            b.reserve("m", 200, 0)
    assert [a.level for a in b.alerts] == [AlertLevel.WARNING, AlertLevel.CRITICAL]
    clock.advance(86400 + 1800)  # the window empties: re-armed
    for _ in range(8):
        b.record("s", "m", 100, 0)
    assert [a.level for a in b.alerts][-1] == AlertLevel.WARNING
    assert len(b.alerts) == 3


def test_alert_callback_errors_are_logged_not_raised(clock, caplog):
    b = make(clock, max_tokens_per_session=100)

    def boom(alert):
        raise RuntimeError("pager down")

    b.on_alert(boom)
    with caplog.at_level(logging.ERROR, logger="agent_budget"):
        b.reserve("m", 90, 0).commit(Usage(90, 0))
    assert "pager down" in caplog.text
    assert b.usage()["session:tokens"].committed == 90


# -- parents ----------------------------------------------------------------------------------


def test_parent_chain_is_all_or_nothing(clock):
    store = MemoryStore()
    root = Budget(
        BudgetScope(name="global", max_tokens_per_day=1000), RATES, store=store, clock=clock
    )
    user = Budget(BudgetScope(name="user", max_tokens_per_day=600), RATES, parent=root, clock=clock)
    conv = Budget(
        BudgetScope(name="conv", max_tokens_per_session=500), RATES, parent=user, clock=clock
    )
    assert [b.name for b in conv.chain] == ["conv", "user", "global"] and conv.group == "global"
    conv.reserve("m", 400, 0)
    with pytest.raises(BudgetExceededError) as info:
        conv.reserve("m", 250, 0)  # fits conv (500)? no: 650 > 500
    assert info.value.scope == "conv"
    other = Budget(BudgetScope(name="conv2"), RATES, parent=user, clock=clock)
    with pytest.raises(BudgetExceededError) as info:
        other.reserve("m", 250, 0)  # user: 400 + 250 > 600
    assert info.value.scope == "user"
    assert store.read("conv2", now=clock(), group="global") == {}
    assert store.read("global", now=clock(), group="global")["day:tokens"].reserved == 400


def test_parent_usage_rolls_up(clock):
    root = Budget(BudgetScope(name="g"), RATES, clock=clock)
    child = Budget(BudgetScope(name="c"), RATES, parent=root, clock=clock)
    child.record("s", "m", 10, 5)
    assert root.summary()["day"]["tokens"] == 15
    assert root.summary(exact=True)["day"]["cost_usd"] == Decimal("0.02")


def test_parent_cycle_and_store_mismatch_rejected(clock):
    root = Budget(BudgetScope(name="g"), RATES, clock=clock)
    with pytest.raises(ValueError, match="share one store"):
        Budget(BudgetScope(name="c"), parent=root, store=MemoryStore())
    with pytest.raises(ValueError, match="cycle"):
        Budget(BudgetScope(name="g"), parent=root)


# -- store outages ----------------------------------------------------------------------------


def test_fail_closed_refuses_when_store_down(clock):
    store = FlakyStore()
    b = Budget(BudgetScope(name="b", max_tokens_per_session=100), RATES, store=store, clock=clock)
    store.down = True
    with pytest.raises(StoreUnavailableError) as info:
        b.reserve("m", 1, 0)
    assert isinstance(info.value.__cause__, StoreError)


def test_fail_open_admits_and_buffered_commits_replay(clock, caplog):
    store = FlakyStore()
    b = Budget(
        BudgetScope(name="b", max_tokens_per_session=100),
        RATES,
        store=store,
        clock=clock,
        on_store_error="fail_open",
    )
    store.down = True
    with caplog.at_level(logging.WARNING, logger="agent_budget"):
        r = b.reserve("m", 10, 0)
        record = r.commit(Usage(10, 0))
    assert "fail_open" in caplog.text and record.total_tokens == 10
    assert b.pending_commits == 1 and b.alerts[-1].limit_type == "store_unavailable"
    store.down = False
    b.reserve("m", 1, 0).release()  # any next operation replays the buffer first
    assert b.pending_commits == 0
    assert b.usage()["session:tokens"].committed == 10
    b.reserve("m", 1, 0).release()
    assert b.usage()["session:tokens"].committed == 10, "replay is idempotent"


def test_default_policy_follows_hard_stop():
    assert Budget(BudgetScope(name="a")).on_store_error == "fail_closed"
    assert Budget(BudgetScope(name="a", hard_stop=False)).on_store_error == "fail_open"


# -- bad input --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "exc", "field"),
    [
        (lambda b: b.reserve("m", -1, 0), ValueError, "input_tokens"),
        (lambda b: b.reserve("m", 1.5, 0), TypeError, "input_tokens"),
        (lambda b: b.reserve("m", 1, "9"), TypeError, "max_output_tokens"),
        (lambda b: b.reserve("m", True, 0), TypeError, "input_tokens"),
        (lambda b: b.reserve("m", 1, 0, ttl=float("nan")), ValueError, "ttl"),
        (lambda b: b.reserve("m", 1, 0, ttl=0), ValueError, "ttl"),
        (lambda b: b.reserve("", 1, 0), ValueError, "model"),
        (lambda b: b.reserve(None, 1, 0), TypeError, "model"),
        (lambda b: b.record("s", "m", 1, -2), ValueError, "output_tokens"),
        (lambda b: b.record("s", "m", 1, 2, cache_read_tokens=5), ValueError, "cache_read"),
        (lambda b: b.record(7, "m", 1, 2), TypeError, "session_id"),
        (lambda b: b.check("m", float("nan")), TypeError, "input_tokens"),
        (lambda b: b.estimate("m", -1), ValueError, "input_tokens"),
        (lambda b: Usage(1, 1, reasoning_tokens=2), ValueError, "reasoning_tokens"),
    ],
)
def test_bad_input_names_the_field_and_changes_nothing(clock, call, exc, field):
    b = make(clock, max_tokens_per_session=1000)
    b.record("s", "m", 1, 1)
    before = (b.usage(), len(b.records), len(b.alerts))
    with pytest.raises(exc, match=field):
        call(b)
    assert (b.usage(), len(b.records), len(b.alerts)) == before


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"max_tokens_per_session": -1}, "max_tokens_per_session"),
        ({"max_tokens_per_day": 1.5}, "max_tokens_per_day"),
        ({"max_cost_per_day_usd": float("nan")}, "max_cost_per_day_usd"),
        ({"max_cost_per_session_usd": -0.01}, "max_cost_per_session_usd"),
        ({"max_cost_per_session_usd": "ten"}, "max_cost_per_session_usd"),
        ({"max_tokens_per_model": {"gpt-4o": -5}}, "max_tokens_per_model"),
        ({"max_cost_per_model_usd": {"": 1.0}}, "max_cost_per_model_usd"),
        ({"max_cost_per_model_usd": [1]}, "max_cost_per_model_usd"),
        ({"alert_at_pct": 1.5}, "alert_at_pct"),
        ({"alert_at_pct": -0.1}, "alert_at_pct"),
        ({"hard_stop": "yes"}, "hard_stop"),
        ({"name": ""}, "name"),
    ],
)
def test_bad_limits_name_the_field(kwargs, field):
    with pytest.raises((ValueError, TypeError), match=field):
        BudgetScope(**{"name": "x", **kwargs})


def test_bad_budget_options():
    with pytest.raises(ValueError, match="hold_ttl"):
        Budget(BudgetScope(name="x"), hold_ttl=-1)
    with pytest.raises(ValueError, match="on_store_error"):
        Budget(BudgetScope(name="x"), on_store_error="maybe")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="scope"):
        Budget({"name": "x"})  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="store"):
        Budget(BudgetScope(name="x"), store=42)  # type: ignore[arg-type]


def test_foreign_reservation_rejected(clock):
    a, b = make(clock), make(clock)
    r = a.reserve("m", 1, 0)
    with pytest.raises(TypeError, match="Reservation"):
        b.commit(r)


# -- bounded memory ---------------------------------------------------------------------------


def test_records_ring_and_tombstones_stay_bounded(clock):
    store = MemoryStore(tombstone_ttl=60)
    b = Budget(
        BudgetScope(name="r", max_tokens_per_session=10**12),
        RATES,
        store=store,
        clock=clock,
        max_records=50,
        hold_ttl=30,
    )
    for _ in range(2000):
        b.reserve("m", 1, 1).commit(Usage(1, 1))
        clock.advance(1)
    assert len(b.records) == 50
    stats = store.stats()
    assert stats["tombstones"] <= 61 and stats["holds"] == 0 and stats["hold_heap"] <= 31


def test_idle_scopes_expire_from_memory_store(clock):
    store = MemoryStore(idle_ttl=3600)
    for i in range(100):
        Budget(BudgetScope(name=f"u{i}"), RATES, store=store, clock=clock).record("s", "m", 1, 0)
    clock.advance(3601)
    Budget(BudgetScope(name="fresh"), RATES, store=store, clock=clock).record("s", "m", 1, 0)
    assert store.stats()["scopes"] == 101  # idle, but their rolling day still counts
    clock.advance(86_400 + 900)
    Budget(BudgetScope(name="fresh"), RATES, store=store, clock=clock).record("s", "m", 1, 0)
    assert store.stats()["scopes"] == 1


def test_summary_shape(clock):
    b = make(clock, max_cost_per_session_usd=1, max_tokens_per_model={"m": 100})
    b.record("alice", "m", 10, 5)
    b.record("bob", "m", 1, 0)
    s = b.summary(by_session=True)
    assert s["limits"]["session_cost_usd"] == {
        "used": 0.021,
        "reserved": 0.0,
        "limit": 1.0,
        "remaining": 0.979,
        "pct": 0.021,
    }
    assert s["limits"]["model_m_tokens"]["used"] == 16
    assert s["sessions"] == {
        "alice": {"tokens": 15, "cost_usd": 0.02},
        "bob": {"tokens": 1, "cost_usd": 0.001},
    }
    assert s["record_count"] == 2


def test_store_is_an_abstract_interface():
    with pytest.raises(TypeError):
        Store()  # type: ignore[abstract]


def test_idle_expiry_is_not_blocked_by_a_scope_holding_budget(clock):
    # a window shorter than the idle time, so only the hold keeps a scope
    store = MemoryStore(idle_ttl=3600, window_seconds=1800, bucket_seconds=900)
    held = Budget(
        BudgetScope(name="held", max_tokens_per_session=10**6),
        RATES,
        store=store,
        clock=clock,
        hold_ttl=7200,
    )
    held.reserve("m", 10, 0)  # touched first, then idle but holding budget
    for i in range(5):
        Budget(BudgetScope(name=f"idle{i}"), RATES, store=store, clock=clock).record("s", "m", 1, 0)
    clock.advance(3601)
    Budget(BudgetScope(name="fresh"), RATES, store=store, clock=clock).record("s", "m", 1, 0)
    assert store.stats()["scopes"] == 2  # "held" (still holding) and "fresh"


def test_memory_store_answers_a_replayed_reserve_without_holding_twice(clock):
    store = MemoryStore()
    from agent_budget.stores import Line

    lines = [Line("s", "session:tokens", 10, 100)]
    first = store.reserve("h1", lines, now=clock(), ttl=60, group="s")
    again = store.reserve("h1", lines, now=clock(), ttl=60, group="s")
    assert first.admitted and again.admitted
    assert store.read("s", now=clock(), group="s")["session:tokens"].reserved == 10


def test_alerts_rearm_when_a_later_window_jumps_straight_over(clock):
    b = make(clock, max_tokens_per_day=100, alert_at_pct=0.8, hard_stop=False)
    b.record("s", "m", 85, 0)
    clock.advance(3 * 86400)
    b.record("s", "m", 90, 0)  # a new day window, crossed in one commit
    clock.advance(3 * 86400)
    b.record("s", "m", 150, 0)
    assert [a.level for a in b.alerts] == [
        AlertLevel.WARNING,
        AlertLevel.WARNING,
        AlertLevel.CRITICAL,
    ]


def test_check_on_a_soft_budget_alerts_without_refusing(clock):
    """As the original API did: check() on a hard_stop=False scope fires CRITICAL for a
    call that would exceed (once per crossing), and the real crossing alerts again."""
    b = make(clock, max_tokens_per_session=100, hard_stop=False)
    b.check("m", 500)
    b.check("m", 500)
    assert [(a.level, a.used) for a in b.alerts] == [(AlertLevel.CRITICAL, 500)]
    assert "would reach" in b.alerts[0].message
    b.record("s", "m", 150, 0)
    assert [a.level for a in b.alerts] == [AlertLevel.CRITICAL] * 2  # the real crossing


def test_check_follows_the_store_error_policy(clock):
    store = FlakyStore()
    open_ = Budget(
        BudgetScope(name="o", max_tokens_per_session=100),
        RATES,
        store=store,
        clock=clock,
        on_store_error="fail_open",
    )
    closed = Budget(
        BudgetScope(name="c", max_tokens_per_session=100), RATES, store=store, clock=clock
    )
    store.down = True
    open_.check("m", 10)  # admitted
    with pytest.raises(StoreUnavailableError):
        closed.check("m", 10)


@pytest.mark.parametrize(
    ("call", "exc", "field"),
    [
        (lambda b: b.reserve("m", 10**13, 0), ValueError, "input_tokens"),
        (lambda b: b.reserve("m", 1, 0, metadata=5), TypeError, "metadata"),
        (lambda b: b.reserve("m", 1, 0, session_id=123), TypeError, "session_id"),
        (lambda b: b.record("s", "m", 1, 1, metadata=[1]), TypeError, "metadata"),
        (lambda b: Budget(BudgetScope(name="x"), max_pending=0), ValueError, "max_pending"),
    ],
)
def test_more_bad_input_is_refused_before_any_change(clock, call, exc, field):
    b = make(clock, max_tokens_per_session=1000)
    before = (b.usage(), len(b.alerts))
    with pytest.raises(exc, match=field):
        call(b)
    assert (b.usage(), len(b.alerts)) == before
