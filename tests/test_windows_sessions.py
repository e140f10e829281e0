"""Per-conversation session caps and windows beyond the rolling day (issue 13), on every
store: each session id has its own session counters, rolling windows of any length, and
calendar periods that restart exactly at local midnight across a DST change."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from langchain_core.messages import HumanMessage

from agent_budget import (
    Budget,
    BudgetExceededError,
    BudgetManager,
    BudgetScope,
    ModelRates,
    Usage,
    Window,
    calendar,
    rolling,
)
from agent_budget.stores import Level
from agent_budget.windows import period_bounds
from agent_budget_callbacks.langchain import BudgetCallbackHandler

from .clock import FakeClock
from .fake_chat_models import Bill, FakeChatOpenAI
from .store_fixtures import StoreFactory

RATES = {"m": ModelRates.per_million(input=1, output=4)}
PARIS = ZoneInfo("Europe/Paris")


def at(text: str, zone: ZoneInfo = PARIS) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=zone).timestamp()


# -- per-conversation sessions -----------------------------------------------------------


def test_two_conversations_of_one_user_have_their_own_session_caps(
    store_factory: StoreFactory, clock: FakeClock
) -> None:
    mgr = BudgetManager(store_factory(), rates=RATES, clock=clock)
    mgr.add_template("user:", BudgetScope(name="user:", max_tokens_per_session=600))
    user = mgr.get("user:1")
    assert user is not None
    user.reserve("m", 100, 400, session_id="conv-1").commit(Usage(100, 400))
    with pytest.raises(BudgetExceededError) as err:
        user.reserve("m", 100, 400, session_id="conv-1")
    assert err.value.limit_type == "session_tokens" and err.value.used == 500
    # Conversation 2 of the same user starts with its own 600.
    user.reserve("m", 100, 400, session_id="conv-2").commit(Usage(100, 400))
    assert user.usage(session_id="conv-1")["session:tokens"].committed == 500
    assert user.usage(session_id="conv-2")["session:tokens"].committed == 500
    # The scope's whole session still shows both (reports, summary()).
    assert user.summary()["session"]["tokens"] == 1000
    left = user.remaining(session_id="conv-2").get("session_tokens")
    assert left is not None and left.remaining == 100


def test_calls_without_a_session_id_share_the_scope_session(clock: FakeClock) -> None:
    b = Budget(BudgetScope(name="s", max_tokens_per_session=600), RATES, clock=clock)
    b.record("", "m", 500, 0)
    with pytest.raises(BudgetExceededError):
        b.reserve("m", 100, 100)
    b.reserve("m", 100, 100, session_id="new-conversation")


def test_per_session_id_false_keeps_the_original_meaning(clock: FakeClock) -> None:
    scope = BudgetScope(name="s", max_tokens_per_session=600, per_session_id=False)
    b = Budget(scope, RATES, clock=clock)
    b.record("a", "m", 500, 0)
    with pytest.raises(BudgetExceededError):
        b.reserve("m", 100, 100, session_id="b")


def test_reset_session_restarts_every_conversation(clock: FakeClock) -> None:
    b = Budget(BudgetScope(name="s", max_tokens_per_session=600), RATES, clock=clock)
    b.record("c1", "m", 550, 0)
    with pytest.raises(BudgetExceededError):
        b.reserve("m", 100, 0, session_id="c1")
    b.reset_session("c1")  # one conversation
    b.reserve("m", 100, 0, session_id="c1").release()
    b.record("c1", "m", 550, 0)
    clock.advance(1)
    b.reset_session()  # every conversation, and the scope's own session
    assert b.summary()["session"]["tokens"] == 0
    b.reserve("m", 500, 0, session_id="c1").release()  # 550 + 500 would not fit before
    assert b.usage(session_id="c1").get("session:tokens", Level()).committed == 0


def test_langgraph_thread_ids_are_conversations(clock: FakeClock) -> None:
    b = Budget(BudgetScope(name="s", max_tokens_per_session=300), clock=clock)
    handler = BudgetCallbackHandler(b, default_max_output_tokens=10)
    model = FakeChatOpenAI(bill=Bill(100, 50), max_tokens=10)
    for _ in range(2):
        model.invoke(
            [HumanMessage("hi")], config={"callbacks": [handler], "metadata": {"thread_id": "t1"}}
        )
    with pytest.raises(BudgetExceededError):
        model.invoke(
            [HumanMessage("hi")], config={"callbacks": [handler], "metadata": {"thread_id": "t1"}}
        )
    model.invoke(
        [HumanMessage("hi")], config={"callbacks": [handler], "metadata": {"thread_id": "t2"}}
    )
    assert model.calls.value == 3


# -- rolling windows of any length ---------------------------------------------------------


def test_a_rolling_hour_on_every_store(store_factory: StoreFactory, clock: FakeClock) -> None:
    scope = BudgetScope(name="h", windows=[rolling(hours=1, max_tokens=1_000)])
    b = Budget(scope, RATES, store=store_factory(), clock=clock)
    b.record("", "m", 900, 0)
    with pytest.raises(BudgetExceededError) as err:
        b.reserve("m", 200, 0)
    assert err.value.limit_type == "rolling_1h_tokens"
    clock.advance(30 * 60)
    with pytest.raises(BudgetExceededError):
        b.reserve("m", 200, 0)
    clock.advance(31 * 60 + 60)  # the hour (and one bucket) has passed
    b.reserve("m", 200, 0).commit(Usage(200, 0))
    entry = b.remaining().get("rolling_1h_tokens")
    assert entry is not None and entry.used == 200


def test_rolling_windows_are_validated_and_named() -> None:
    assert rolling(days=7, max_tokens=1).label == "rolling_7d"
    assert rolling(minutes=90, max_tokens=1).label == "rolling_90m"
    assert rolling(seconds=45, max_cost_usd=1).label == "rolling_45s"
    with pytest.raises(ValueError, match="max_tokens, max_cost_usd"):
        rolling(hours=1)
    with pytest.raises(ValueError, match="at least 1 second"):
        rolling(max_tokens=5)
    with pytest.raises(ValueError, match="same kind"):
        BudgetScope(
            name="x", windows=[rolling(hours=1, max_tokens=1), rolling(minutes=60, max_tokens=2)]
        )
    with pytest.raises(TypeError, match="windows"):
        BudgetScope(name="x", windows=["1h"])  # type: ignore[list-item]


# -- calendar windows ----------------------------------------------------------------------


def test_calendar_periods_start_at_local_midnight_across_dst() -> None:
    # Paris leaves summer time on 2026-10-25: the October period is 31 days and 1 hour long.
    start, end = period_bounds("month", "Europe/Paris", at("2026-10-31T23:59:59"))
    assert start == at("2026-10-01T00:00:00") and end == at("2026-11-01T00:00:00")
    assert end - start == 31 * 86_400 + 3600
    # A day containing the spring change is 23 hours.
    start, end = period_bounds("day", "Europe/Paris", at("2026-03-29T12:00:00"))
    assert end - start == 23 * 3600
    # Weeks start on Monday.
    start, _ = period_bounds(
        "week", "America/New_York", at("2026-11-04T10:00", ZoneInfo("America/New_York"))
    )
    assert (
        datetime.fromtimestamp(start, ZoneInfo("America/New_York")).isoformat()
        == "2026-11-02T00:00:00-05:00"
    )


def test_a_calendar_month_restarts_exactly_at_the_boundary_on_every_store(
    store_factory: StoreFactory,
) -> None:
    clock = FakeClock(at("2026-10-31T23:59:00"))
    month = calendar("month", timezone="Europe/Paris", max_tokens=1_000, max_cost_usd="0.01")
    scope = BudgetScope(name="cal", windows=[month])
    b = Budget(scope, RATES, store=store_factory(), clock=clock)
    b.record("", "m", 990, 0)
    with pytest.raises(BudgetExceededError) as err:
        b.reserve("m", 20, 0)
    assert err.value.limit_type == "calendar_month_Europe/Paris_tokens"
    held = b.reserve("m", 10, 0)  # fits exactly; its hold survives the boundary
    clock.advance(59)  # 23:59:59 local, still October
    with pytest.raises(BudgetExceededError):
        b.reserve("m", 1, 0)
    clock.advance(1)  # 00:00:00 on 1 November, Paris time (UTC+1 since the DST change)
    assert b.remaining().get(month.label + "_tokens").used == 0  # type: ignore[union-attr]
    b.reserve("m", 900, 0).commit(Usage(900, 0))
    held.commit(Usage(10, 0))  # a call reserved in October and billed in November
    entry = b.remaining().get(month.label + "_tokens")
    assert entry is not None and (entry.used, entry.reserved) == (910, 0)
    cost = b.remaining().get(month.label + "_cost_usd")
    assert cost is not None and cost.unit == "usd" and cost.used > 0


def test_calendar_windows_are_validated() -> None:
    with pytest.raises(ValueError, match="unknown timezone"):
        calendar("month", timezone="Mars/Olympus", max_tokens=1)
    with pytest.raises(ValueError, match="calendar unit"):
        calendar("year", max_tokens=1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="not both"):
        Window(seconds=60, unit="day", max_tokens=1)


def test_windows_survive_the_scope_registry(store_factory: StoreFactory) -> None:
    store = store_factory()
    mgr = BudgetManager(store)
    windows = [
        rolling(days=30, max_cost_usd="100"),
        calendar("week", timezone="Asia/Kolkata", max_tokens=5),
    ]
    mgr.register(BudgetScope(name="w", windows=windows, per_session_id=False))
    other = BudgetManager(store_factory())
    saved: Any = other.store.load_scopes()["w"]
    scope = BudgetScope.from_dict(saved)
    assert list(scope.windows) == windows and scope.per_session_id is False
