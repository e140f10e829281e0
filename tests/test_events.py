"""Call events: Budget/BudgetManager on_record and on_refusal, and the durable events log."""

from __future__ import annotations

import logging

import pytest

from agent_budget import (
    Budget,
    BudgetExceededError,
    BudgetManager,
    BudgetScope,
    MemoryStore,
    ModelRates,
    Usage,
)
from agent_budget.events import RecordEvent, RefusalEvent

from .clock import FakeClock
from .flaky_store import FlakyStore

RATES = {"m": ModelRates(input_per_1k=1, output_per_1k=1)}


def test_on_record_gets_the_record_and_when_the_call_started(clock: FakeClock) -> None:
    budget = Budget(BudgetScope("s"), RATES, clock=clock)
    heard: list[RecordEvent] = []
    budget.on_record(heard.append)
    hold = budget.reserve("m", 100, 50, session_id="conv")
    clock.advance(2.5)
    record = hold.commit(Usage(90, 40))
    clock.advance(1)
    later = budget.record("other", "m", 1, 1)
    assert [e.record for e in heard] == [record, later]
    assert heard[0].started_at == hold.created_at == record.timestamp - 2.5
    assert heard[0].ended_at == record.timestamp
    assert heard[1].started_at == heard[1].ended_at == later.timestamp
    assert record.price_source == "rates="
    hold.commit(Usage(1, 1))  # a repeated commit returns the first record, tells no one
    assert len(heard) == 2
    assert budget.remove_listener(heard.append) and not budget.remove_listener(heard.append)
    budget.record("x", "m", 1, 1)
    assert len(heard) == 2


def test_on_record_hears_buffered_commits_too(clock: FakeClock) -> None:
    store = FlakyStore()
    budget = Budget(BudgetScope("s", max_tokens_per_day=10**6), RATES, store=store, clock=clock)
    heard: list[RecordEvent] = []
    budget.on_record(heard.append)
    hold = budget.reserve("m", 10, 10)
    store.down = True
    record = hold.commit(Usage(5, 5))
    assert budget.pending_commits == 1 and [e.record for e in heard] == [record]


def test_on_refusal_names_the_refusing_scope_and_the_caller(clock: FakeClock) -> None:
    glob = Budget(BudgetScope("global", max_cost_per_day_usd=0.5), RATES, clock=clock)
    user = Budget(BudgetScope("user:1"), RATES, parent=glob, clock=clock)
    heard: list[RefusalEvent] = []
    user.on_refusal(heard.append)
    with pytest.raises(BudgetExceededError) as info:
        user.reserve("m", 400, 200, session_id="conv-3")
    [event] = heard
    assert event.error is info.value
    assert (event.scope, event.caller, event.limit_type) == ("global", "user:1", "day_cost_usd")
    assert (event.model, event.session_id, event.unit) == ("m", "conv-3", "usd")
    assert event.timestamp == clock()
    with pytest.raises(BudgetExceededError):
        user.check("m", 600, 0)  # the original API's check refuses too
    assert len(heard) == 2 and heard[1].session_id == ""
    assert glob.store.event_counts() == {"global": {"refusal": 2, "alert": 1}}


def test_a_failing_listener_is_logged_and_accounting_goes_on(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    budget = Budget(BudgetScope("s", max_tokens_per_session=100), RATES, clock=clock)

    def boom(event: object) -> None:
        raise RuntimeError("listener bug")

    budget.on_record(boom)
    budget.on_refusal(boom)
    with caplog.at_level(logging.ERROR, logger="agent_budget"):
        record = budget.record("x", "m", 10, 10)
        with pytest.raises(BudgetExceededError):
            budget.reserve("m", 500)
    assert record.total_tokens == 20 and budget.summary()["session"]["tokens"] == 20
    assert sum("listener" in r.getMessage() for r in caplog.records) == 2
    with pytest.raises(TypeError):
        budget.on_record("not callable")  # type: ignore[arg-type]


def test_manager_listeners_hear_every_scope_made_before_and_after(clock: FakeClock) -> None:
    mgr = BudgetManager(rates=RATES, clock=clock)
    mgr.register(BudgetScope("global", max_tokens_per_day=1_000))
    mgr.add_template("user:", BudgetScope("user"), parent="global")
    before = mgr.get("user:a")
    assert before is not None and before._listeners.record == ()  # no listener, no work
    records: list[RecordEvent] = []
    refusals: list[RefusalEvent] = []
    mgr.on_record(records.append)
    mgr.on_refusal(refusals.append)
    before.record("s", "m", 100, 0)
    mgr.record("user:b", "s", "m", 200, 0)  # made after the listener came
    with pytest.raises(BudgetExceededError):
        mgr.reserve("user:c", "m", 900)
    assert [e.record.scope for e in records] == ["user:a", "user:b"]
    assert [(e.scope, e.caller) for e in refusals] == [("global", "user:c")]
    assert mgr.remove_listener(records.append)
    mgr.record("user:a", "s", "m", 1, 0)
    assert len(records) == 2


def test_alerts_are_kept_in_the_store_but_not_outage_alerts(clock: FakeClock) -> None:
    store = FlakyStore()
    budget = Budget(
        BudgetScope("s", max_tokens_per_day=100),
        RATES,
        store=store,
        clock=clock,
        on_store_error="fail_open",
    )
    budget.record("x", "m", 85, 0)  # WARNING at 80%
    store.down = True
    budget.reserve("m", 1)  # fail_open: admitted, a store_unavailable alert
    store.down = False
    assert [a.limit_type for a in budget.alerts] == ["day_tokens", "store_unavailable"]
    assert [(e["kind"], e["limit_type"], e["unit"]) for e in store.events()] == [
        ("alert", "day_tokens", "tokens")
    ]


def test_a_store_without_an_events_log_is_fine(clock: FakeClock) -> None:
    """The base Store's record_event is a no-op: third-party stores need not keep events."""

    class Plain(MemoryStore):
        record_event = MemoryStore.__mro__[1].record_event  # the base class's default

    budget = Budget(BudgetScope("s", max_tokens_per_session=10), RATES, store=Plain())
    with pytest.raises(BudgetExceededError):
        budget.reserve("m", 50)
    assert budget.store.events() == [] and budget.store.event_counts() == {}


def test_an_async_refusal_is_noted_off_the_event_loop(tmp_path, clock: FakeClock) -> None:
    """On a store that does I/O, the refusal's store write and listeners never run on the
    event loop's thread."""
    import asyncio
    import threading

    budget = Budget(
        BudgetScope("s", max_tokens_per_session=10),
        RATES,
        store=f"sqlite:///{tmp_path / 'b.db'}",
        clock=clock,
    )
    threads: list[int] = []
    budget.on_refusal(lambda event: threads.append(threading.get_ident()))

    async def main() -> int:
        with pytest.raises(BudgetExceededError):
            await budget.areserve("m", 50)
        return threading.get_ident()

    loop_thread = asyncio.run(main())
    assert threads and threads[0] != loop_thread
    assert sorted(e["kind"] for e in budget.store.events()) == ["alert", "refusal"]
