"""Cell sources of the tutorial notebooks (built by scripts/build_notebooks.py).

Kept as Python so the notebooks can be rebuilt and reviewed as text.
"""

from __future__ import annotations

MULTI_TENANT: list[tuple[str, str]] = [
    ("md", """
# Multi-tenant budgets on a SQLite file

One `BudgetManager` serves many users. Every user gets a daily cap, and all of them share a
global daily cap. A call must fit **both**, and the check is one atomic reservation, so
concurrent users cannot overshoot either cap. State lives in a SQLite file, so every worker
process on the host shares it.

Everything here is offline: calls are simulated with realistic token counts, and a
simulated clock lets us watch 36 hours pass in a second.
"""),
    ("code", """
import random
import tempfile
from pathlib import Path

from agent_budget import BudgetExceededError, BudgetManager, BudgetScope, Usage

class SimClock:
    \"\"\"A wall clock we move by hand.\"\"\"
    def __init__(self):
        self.now = 1_800_000_000.0
    def __call__(self):
        return self.now

clock = SimClock()
db = Path(tempfile.mkdtemp()) / "budget.db"
mgr = BudgetManager(store=f"sqlite:///{db}", clock=clock)
mgr.register(BudgetScope(name="global", max_cost_per_day_usd=0.75))
mgr.add_template("user:", BudgetScope(name="user", max_cost_per_day_usd=0.30), parent="global")
print("store:", db.name)
"""),
    ("md", """
Five users with different habits. Each simulated step (every 15 minutes) some of them make
a call: reserve the worst case first, then commit what the "provider" reported.
"""),
    ("code", """
rng = random.Random(42)
users = {"user:ada": 0.9, "user:bob": 0.5, "user:cy": 0.35, "user:dee": 0.25, "user:eve": 0.15}
models = ["gpt-4o", "gpt-4o-mini", "claude-3-5-haiku"]
timeline = []          # (hour, scope, spend in the rolling day)
refusals = []          # (hour, user, limit that refused)

for step in range(36 * 4):
    hour = step / 4
    for user, activity in users.items():
        if rng.random() > activity:
            continue
        model = rng.choice(models)
        prompt, max_out = rng.randint(1_500, 6_000), 800
        try:
            hold = mgr.reserve(user, model, prompt, max_out, session_id=f"{user}-{int(hour)}")
        except BudgetExceededError as exc:
            refusals.append((hour, user, f"{exc.scope}:{exc.limit_type}"))
            continue
        hold.commit(Usage(prompt, rng.randint(100, max_out)))
    for name in ["global", *users]:
        timeline.append((hour, name, mgr.summary(name)["day"]["cost_usd"]))
    clock.now += 900

print(f"{len(refusals)} calls refused; first five:")
for row in refusals[:5]:
    print("  hour %5.2f  %-9s refused by %s" % row)
"""),
    ("md", """
What happened at the caps? Heavy users hit their own $0.30 daily cap; once the users
together reach the $0.75 global cap, even light users are refused, until the rolling
24-hour window moves past the morning's spend.
"""),
    ("code", """
import collections
by_limit = collections.Counter(limit for _, _, limit in refusals)
for limit, count in by_limit.most_common():
    print(f"{count:4d} refusals by {limit}")
"""),
    ("code", """
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
%matplotlib inline

fig, ax = plt.subplots(figsize=(9, 4.5))
for name in ["global", *users]:
    points = [(h, spend) for h, n, spend in timeline if n == name]
    ax.plot([p[0] for p in points], [p[1] for p in points], label=name,
            linewidth=2.5 if name == "global" else 1.2)
ax.axhline(0.75, color="black", linestyle="--", linewidth=1, label="global cap $0.75")
ax.axhline(0.30, color="grey", linestyle=":", linewidth=1, label="user cap $0.30")
ax.set_xlabel("simulated hours")
ax.set_ylabel("spend in rolling 24 h (USD)")
ax.set_title("Spend against each limit")
ax.legend(fontsize=8, ncol=2)
plt.show()
"""),
    ("md", """
The totals are exact: every process reading the same SQLite file sees the same numbers, to
the nano-dollar, and the ledger of usage records lives in the same file.
"""),
    ("code", """
summaries = mgr.all_summaries(exact=True)
for name, s in summaries.items():
    day = s["day"]
    print(f"{name:10s} day: {day['tokens']:7d} tokens  ${day['cost_usd']}")
assert summaries["global"]["day"]["cost_usd"] <= 0.75
"""),
]

NOTEBOOK_SOURCES: dict[str, list[tuple[str, str]]] = {
    "03_multi_tenant_sqlite": MULTI_TENANT,
}
