"""RunTracker: the adapters' run-id -> reservation map stays bounded when runs never end."""

from __future__ import annotations

from agent_budget import Budget, BudgetScope
from agent_budget.tracking import RunTracker

from .clock import FakeClock


def test_runs_that_never_end_are_dropped_after_their_grace() -> None:
    clock = FakeClock()
    budget = Budget(BudgetScope("t", max_tokens_per_session=10**9), clock=clock, hold_ttl=10)
    tracker = RunTracker(grace_seconds=100)
    for run in range(3):  # abandoned: never popped
        tracker.add(("stale", run), budget.reserve("gpt-4o-mini", 1))
    clock.advance(10 + 100 + 1)
    for run in range(61):
        tracker.add(("live", run), budget.reserve("gpt-4o-mini", 1))
    assert len(tracker) == 64  # looked for only once more than 64 are open
    tracker.add(("live", 61), budget.reserve("gpt-4o-mini", 1))
    assert len(tracker) == 62
    assert ("stale", 0) not in tracker and ("live", 0) in tracker


def test_a_slow_run_within_its_grace_is_kept() -> None:
    clock = FakeClock()
    budget = Budget(BudgetScope("t", max_tokens_per_session=10**9), clock=clock, hold_ttl=10)
    tracker = RunTracker(grace_seconds=100)
    slow = budget.reserve("gpt-4o-mini", 1)
    tracker.add("slow", slow)
    clock.advance(50)  # the hold expired, the call has not ended yet
    for run in range(70):
        tracker.add(run, budget.reserve("gpt-4o-mini", 1))
    assert tracker.pop("slow") is slow
