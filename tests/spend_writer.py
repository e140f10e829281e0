"""Writes a known day of spend into a store from its own process, for report and dashboard
tests: ``python -m tests.spend_writer URL END [extra-calls]``. Prints, as JSON, what its
calls recorded (the ground truth the readers must show)."""

from __future__ import annotations

import json
import sys

from agent_budget import BudgetExceededError, BudgetManager, BudgetScope, ModelRates, Usage

RATES = {
    "small": ModelRates.per_million(input="0.15", output="0.60"),
    "large": ModelRates.per_million(input="2.50", output="10"),
}
USERS = ("user:ada", "user:bob", "user:cyd", "user:dan")


def write(url: str, end: float, extra: int = 0) -> dict[str, object]:
    clock_now = [end - 20 * 3600 if not extra else end - 60]
    mgr = BudgetManager(store=url, rates=RATES, clock=lambda: clock_now[0])
    mgr.register(BudgetScope("global", max_cost_per_day_usd=1))
    mgr.add_template(
        "user:", BudgetScope("user", max_cost_per_day_usd="0.05", alert_at_pct=0.5), parent="global"
    )
    mgr.add_template("conv:", BudgetScope("conv", max_tokens_per_session=50_000))
    per_scope: dict[str, int] = {}
    per_session: dict[str, int] = {}
    refused = 0
    calls = 0
    plan = range(80) if not extra else range(extra)
    for i in plan:
        user = USERS[i % len(USERS)] if i % 7 else "user:ada"
        scope = f"conv:{user[5:]}-{i % 3}" if i % 5 == 0 else user
        parent = user if scope.startswith("conv:") else None
        budget = mgr.get(scope, parent=parent)
        assert budget is not None
        model = "large" if i % 3 == 0 else "small"
        session = f"s-{user[5:]}-{i % 2}"
        try:
            hold = budget.reserve(model, 1_000 + 37 * i, 400, session_id=session)
        except BudgetExceededError:
            refused += 1
        else:
            record = hold.commit(Usage(1_000 + 37 * i, 50 + 9 * i, cache_read_tokens=(i % 4) * 100))
            per_scope[scope] = per_scope.get(scope, 0) + record.cost_nanos
            per_session[session] = per_session.get(session, 0) + record.cost_nanos
            calls += 1
        clock_now[0] += 900 if not extra else 1
    mgr.close()
    return {
        "per_scope_nanos": per_scope,
        "per_session_nanos": per_session,
        "total_nanos": sum(per_scope.values()),
        "calls": calls,
        "refused": refused,
    }


if __name__ == "__main__":
    extra = int(sys.argv[3]) if len(sys.argv) > 3 else 0
    print(json.dumps(write(sys.argv[1], float(sys.argv[2]), extra)))
