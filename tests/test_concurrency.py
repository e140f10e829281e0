"""Many threads against one cap: admitted work never exceeds it."""

from __future__ import annotations

import threading
import time

from agent_budget import Budget, BudgetExceededError, BudgetManager, BudgetScope, ModelRates, Usage

RATES = {"m": ModelRates(input_per_1k=1, output_per_1k=1)}


def test_64_threads_never_exceed_cap():
    cap = 10_000
    b = Budget(BudgetScope(name="c", max_tokens_per_session=cap, max_cost_per_day_usd=9.0), RATES)
    admitted: list[int] = []
    lock = threading.Lock()
    barrier = threading.Barrier(64)

    def worker(i: int) -> None:
        barrier.wait()
        for j in range(40):
            size = 37 + (i * 7 + j) % 50
            try:
                r = b.reserve("m", size, 10)
            except BudgetExceededError:
                continue
            time.sleep(0.0005)  # keep calls in flight together, as real ones are
            actual = Usage(size - (j % 5), 10 - (i % 3))  # within the estimate
            r.commit(actual)
            with lock:
                admitted.append(actual.total_tokens)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(64)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    summary = b.summary(exact=True)
    assert sum(admitted) == summary["session"]["tokens"] <= cap
    assert summary["session"]["cost_usd"] <= 9
    assert summary["session"]["reserved_tokens"] == 0
    assert len(admitted) > 0 and sum(admitted) > cap * 0.8


def test_threads_across_a_parent_chain():
    mgr = BudgetManager(rates=RATES)
    mgr.register(BudgetScope(name="global", max_tokens_per_day=3_000))
    mgr.add_template("user:", BudgetScope(name="u", max_tokens_per_day=1_000), parent="global")
    totals: dict[str, int] = {}
    lock = threading.Lock()

    def worker(user: str) -> None:
        for _ in range(30):
            try:
                r = mgr.reserve(user, "m", 90, 10)
            except BudgetExceededError:
                continue
            r.commit(Usage(90, 10))
            with lock:
                totals[user] = totals.get(user, 0) + 100

    threads = [threading.Thread(target=worker, args=(f"user:{i % 6}",)) for i in range(24)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(totals.values()) <= 3_000
    assert all(v <= 1_000 for v in totals.values())
    assert mgr.summary("global")["day"]["tokens"] == sum(totals.values())
