"""The command-line demo: simulated agent calls hitting a session cap, then a daily cap.

Runs in memory with a simulated clock, so it needs no API key, no network and no waiting.
"""

from __future__ import annotations

import random
import sys
from typing import TextIO

from .alerts import BudgetAlert
from .budget import Budget
from .errors import BudgetExceededError
from .scope import BudgetScope
from .usage import Usage

__all__ = ["run"]


class _SimClock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def run(out: TextIO = sys.stdout, seed: int = 7) -> int:
    """Print the demo to ``out``; returns the number of refused calls (always > 0)."""
    rng = random.Random(seed)
    clock = _SimClock()
    scope = BudgetScope(
        name="demo-agent",
        max_cost_per_session_usd=0.05,
        max_cost_per_day_usd=0.12,
        max_tokens_per_model={"gpt-4o": 60_000},
        alert_at_pct=0.8,
    )
    budget = Budget(scope, clock=clock)

    fired: list[BudgetAlert] = []
    budget.on_alert(fired.append)

    def show_alerts() -> None:
        for alert in fired:
            out.write(f"            ALERT [{alert.level.value}] {alert.message}\n")
        fired.clear()

    out.write(
        "agent-budget demo: an agent loop on gpt-4o with a $0.05 session cap, a $0.12 rolling\n"
        "24 h cap, a 60k-token cap on gpt-4o, and alerts at 80%. Calls are simulated.\n\n"
    )
    refused = 0
    for session in (1, 2, 3):
        out.write(f"-- session {session}\n")
        for step in range(1, 40):
            prompt = rng.randint(800, 2_400)
            max_out = 512
            try:
                with budget.reserve("gpt-4o", prompt, max_out, session_id=f"s{session}") as hold:
                    used_out = rng.randint(80, max_out)
                    cached = rng.choice((0, 0, prompt // 2))
                    record = hold.commit(Usage(prompt, used_out, cache_read_tokens=cached))
            except BudgetExceededError as exc:
                refused += 1
                out.write(f"   call {step:2d}: REFUSED before the model ran: {exc}\n")
                fired.clear()
                break
            totals = budget.summary()
            cached_note = (
                f" (cached {record.cache_read_tokens})" if record.cache_read_tokens else ""
            )
            out.write(
                f"   call {step:2d}: {record.input_tokens:5d} in / {record.output_tokens:3d} out"
                f"{cached_note:16s}"
                f" ${record.cost_usd:.6f}   session ${totals['session']['cost_usd']:.4f}"
                f"   day ${totals['day']['cost_usd']:.4f}\n"
            )
            show_alerts()
            clock.now += 30
        budget.reset_session()
        clock.now += 3_600
    out.write("\n-- 24 hours later the rolling day window has moved on\n")
    clock.now += 86_400 + 900
    hold = budget.reserve("gpt-4o", 1_000, 256)
    record = hold.commit(Usage(1_000, 200))
    out.write(f"   call  1: admitted again, ${record.cost_usd:.6f}\n\n")
    summary = budget.summary()
    out.write("-- summary\n")
    out.write(
        f"   session: {summary['session']['tokens']} tokens, "
        f"${summary['session']['cost_usd']:.6f}\n"
    )
    out.write(f"   day:     {summary['day']['tokens']} tokens, ${summary['day']['cost_usd']:.6f}\n")
    for model, row in summary["per_model"].items():
        out.write(f"   {model}: {row['tokens']} tokens, ${row['cost_usd']:.6f} since start\n")
    out.write(f"   refused calls: {refused}; alerts fired: {summary['alert_count']}\n")
    return refused
