"""The lean hot path (issue 18) changes no behaviour: MemoryStore's prepared lines answer as
its operations on lines do, finished hold ids and expiry entries stay bounded, budgets a
manager clones from a template are budgets of their own, and the adapters' per-call state
is forgotten when a call never ends."""

from __future__ import annotations

import random
import threading
from typing import Any

import pytest

from agent_budget import (
    AlertLevel,
    Budget,
    BudgetExceededError,
    BudgetManager,
    BudgetScope,
    MemoryStore,
    ModelRates,
    Usage,
    calendar,
    rolling,
)
from agent_budget.ring import Ring
from agent_budget.stores import Line

from .clock import FakeClock

RATES = {"m": ModelRates(input_per_1k=1, output_per_1k=2), "n": ModelRates(3, 4)}


class LinesOnly(MemoryStore):
    """A MemoryStore without the prepared fast path (it wraps reserve and commit), so every
    call goes through the operations on lines: the reference the fast path must match."""

    schemes = ()

    def reserve(self, *a: Any, **k: Any) -> Any:
        return super().reserve(*a, **k)

    def commit(self, *a: Any, **k: Any) -> Any:
        return super().commit(*a, **k)


def _scope(kind: str) -> BudgetScope:
    if kind == "plain":  # no period on any line: the fast path's own loops
        return BudgetScope(
            "t",
            max_tokens_per_session=40_000,
            max_cost_per_day_usd=60,
            max_tokens_per_model={"n": 9_000},
            alert_at_pct=0.5,
            per_session_id=False,
        )
    return BudgetScope(
        "t",
        max_tokens_per_session=40_000,
        max_cost_per_day_usd=60,
        max_tokens_per_model={"n": 9_000},
        windows=[rolling(hours=1, max_tokens=30_000), calendar("day", max_cost_usd=50)],
        alert_at_pct=0.5,
    )


def _drive(budget: Budget, clock: FakeClock, seed: int) -> list[Any]:
    """A fixed random mix of calls (sessions, two models, refusals, releases, time moving
    across windows, a session reset); what each returned."""
    rng = random.Random(seed)
    out: list[Any] = []
    for step in range(400):
        model = rng.choice(["m", "n"])
        session = rng.choice(["", "", "conv-1", "conv-2"])
        try:
            hold = budget.reserve(
                model, rng.randint(1, 900), rng.randint(0, 700), session_id=session
            )
        except BudgetExceededError as exc:
            out.append(("refused", exc.limit_type))
        else:
            if rng.random() < 0.15:
                out.append(("released", hold.release()))
            else:
                record = hold.commit(Usage(hold.input_tokens, rng.randint(0, 700)))
                out.append(("committed", record.cost_nanos, record.total_tokens))
        if step % 37 == 0:
            try:
                budget.record("", model, rng.randint(1, 300), rng.randint(1, 300))
            except BudgetExceededError as exc:  # recorded anyway; the raise says stop
                out.append(("exceeded", exc.limit_type, exc.used, exc.reserved))
        if step == 200:
            budget.reset_session()
        if step in (250, 330):  # a new calendar day, first seen by a record()
            clock.advance(86_400)
            try:
                budget.record("conv-1", model, 50, 50)
            except BudgetExceededError as exc:
                out.append(("exceeded", exc.limit_type, exc.used, exc.reserved))
        clock.advance(rng.choice([1, 5, 60, 900]))
    out.append(budget.usage())
    out.append(budget.usage(session_id="conv-1"))
    out.append([(a.level, a.limit_type) for a in budget.alerts])
    return out


@pytest.mark.parametrize("kind", ["plain", "windows and sessions"])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_prepared_lines_answer_as_the_operations_on_lines_do(seed: int, kind: str) -> None:
    results = []
    for store in (MemoryStore(), LinesOnly()):
        clock = FakeClock()
        budget = Budget(_scope(kind), RATES, store=store, clock=clock)
        results.append(_drive(budget, clock, seed))
    assert results[0] == results[1]
    assert any(r[0] == "refused" for r in results[0][:-3])  # the mix does reach the caps


def test_finished_hold_ids_are_bounded_by_count_as_well_as_time(clock: FakeClock) -> None:
    store = MemoryStore(max_tombstones=100)
    lines = [Line("s", "session:tokens", 1)]
    for i in range(1_000):
        store.commit(f"h{i}", lines, now=clock(), group="s")
    assert store.stats()["tombstones"] == 100
    # The latest ids are remembered: a repeated commit counts once...
    assert not store.commit("h999", lines, now=clock(), group="s").applied
    assert not store.commit("h900", lines, now=clock(), group="s").applied
    # ... and the oldest were forgotten first (a bound, as the docstring says).
    assert store.commit("h0", lines, now=clock(), group="s").applied
    clock.advance(store.options.tombstone_ttl + 1)
    store.commit("later", lines, now=clock(), group="s")
    assert store.stats()["tombstones"] == 1  # the rest expired by time


def test_ended_holds_leave_their_expiry_queue(clock: FakeClock) -> None:
    store = MemoryStore()
    budget = Budget(BudgetScope("q", max_tokens_per_session=10**9), RATES, store=store, clock=clock)
    for _ in range(500):
        budget.reserve("m", 10, 10).commit(Usage(10, 5))
        budget.reserve("m", 10, 10).release()
    stats = store.stats()
    assert stats["holds"] == 0 and stats["hold_heap"] == 0


def test_a_hold_made_after_the_clock_stepped_back_still_expires(clock: FakeClock) -> None:
    store = MemoryStore()
    lines = [Line("s", "session:tokens", 60, 100)]
    assert store.reserve("late", lines, now=clock(), ttl=600, group="s").admitted
    clock.advance(-300)  # the clock steps back: the next hold expires before the first
    assert store.reserve("early", [Line("s", "session:tokens", 40, 100)], now=clock(),
                         ttl=60, group="s").admitted  # fmt: skip
    clock.advance(61)
    # "early" expired although "late", queued before it, did not.
    assert store.read("s", now=clock(), group="s")["session:tokens"].reserved == 60


def test_windows_count_across_bucket_edges_and_expire(clock: FakeClock) -> None:
    store = MemoryStore(window_seconds=3600, bucket_seconds=900)
    start = (int(clock()) // 900) * 900
    for offset in (10, 899, 900, 1800, 3599):
        clock.now = start + offset
        store.commit(f"c{offset}", [Line("s", "day:tokens", offset)], now=clock(), group="s")
    assert store.stats()["buckets"] == 4
    clock.now = start + 3600 + 899
    assert (
        store.read("s", now=clock(), group="s")["day:tokens"].committed
        == 10 + 899 + 900 + 1800 + 3599
    )
    clock.now = start + 3600 + 900  # the first bucket leaves
    assert store.read("s", now=clock(), group="s")["day:tokens"].committed == 900 + 1800 + 3599


def test_rebuilt_template_budgets_are_budgets_of_their_own(clock: FakeClock) -> None:
    manager = BudgetManager(MemoryStore(), rates=RATES, clock=clock, max_cached=1)
    manager.add_template(
        "user:", BudgetScope("user:", max_tokens_per_session=1000, alert_at_pct=0.5)
    )
    fired: list[str] = []
    manager.on_alert(lambda alert: fired.append(alert.scope))
    first = manager.get("user:1")
    assert first is not None
    first.reserve("m", 300, 300).commit(Usage(300, 300))  # 60%: a WARNING for user:1
    second = manager.get("user:2")  # evicts user:1
    assert second is not None and second.name == "user:2" and second.scope.name == "user:2"
    second.record("", "m", 100, 0)
    again = manager.get("user:1")
    assert again is not None and again is not first  # rebuilt from the template
    assert again.usage()["session:tokens"].committed == 600
    with pytest.raises(BudgetExceededError):
        again.reserve("m", 300, 200)
    assert fired == ["user:1", "user:1"]  # the WARNING, then the refusal's CRITICAL
    assert [a.level for a in again.alerts] == [AlertLevel.CRITICAL]
    assert second.alerts == [] and second.records[0].scope == "user:2"
    assert sorted(manager.scopes()) == ["user:1", "user:2"]


def test_ring_keeps_the_last_items_in_order() -> None:
    ring: Ring[int] = Ring(3)
    for i in range(7):
        ring.append(i)
    assert list(ring) == [4, 5, 6] and len(ring) == 3
    empty: Ring[int] = Ring(0)
    empty.append(1)
    assert list(empty) == []


def test_threads_through_the_prepared_path_lose_nothing(clock: FakeClock) -> None:
    budget = Budget(BudgetScope("th", max_tokens_per_session=10**9), RATES, clock=clock)

    def work() -> None:
        for _ in range(300):
            budget.reserve("m", 10, 10).commit(Usage(10, 5))

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert budget.usage()["session:tokens"].committed == 8 * 300 * 15
    assert budget.usage()["session:tokens"].reserved == 0
