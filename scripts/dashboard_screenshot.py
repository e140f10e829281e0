"""Rebuild docs/img/dashboard.png: a simulated day of a small team's spend, shown by the dashboard.

Run with `.venv/bin/python scripts/dashboard_screenshot.py [output.png]`. Needs the system
Chromium (`scripts/ensure-chromium`) and playwright (the dev extra). Everything is local:
a temporary SQLite store, the dashboard on a free loopback port, Chromium headless.
"""

from __future__ import annotations

import os
import random
import sys
import tempfile
import time
from pathlib import Path

from agent_budget import BudgetExceededError, BudgetManager, BudgetScope, Usage
from agent_budget.dashboard import DashboardServer

ROOT = Path(__file__).resolve().parent.parent
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
USERS = {
    "user:ada": 5.0,
    "user:bob": 3.0,
    "user:cyd": 2.2,
    "user:dan": 1.6,
    "user:eve": 1.2,
    "user:fay": 0.9,
    "user:gus": 0.6,
}
MODELS = {"gpt-4o": 3, "gpt-4o-mini": 6, "claude-sonnet-4-5": 2, "gemini-2.5-flash": 2}


def simulate(url: str, end: float, seed: int = 11) -> None:
    """A day of calls, busier in the afternoon; per-user daily caps under a team cap."""
    now = [end - 24 * 3600]
    mgr = BudgetManager(store=url, clock=lambda: now[0])
    mgr.register(BudgetScope("team", max_cost_per_day_usd=12))
    mgr.add_template("user:", BudgetScope("user", max_cost_per_day_usd=1.5), parent="team")
    rng = random.Random(seed)
    while now[0] < end:
        hour = (now[0] % 86_400) / 3600
        busy = 1 + 5 * max(0.0, 1 - abs(hour - 15) / 7)
        for user, weight in USERS.items():
            for _ in range(int(rng.expovariate(1 / (busy * weight * 0.6)))):
                model = rng.choices(list(MODELS), list(MODELS.values()))[0]
                prompt = rng.randint(900, 7_000)
                session = f"{user[5:]}-{int(now[0] // 10_800)}"
                try:
                    hold = mgr.reserve(user, model, prompt, 1_024, session_id=session)
                except BudgetExceededError:
                    continue
                cached = rng.choice([0, prompt // 2])
                hold.commit(Usage(prompt, rng.randint(60, 900), cache_read_tokens=cached))
        now[0] += 900
    mgr.close()


def main(argv: list[str]) -> int:
    from playwright.sync_api import sync_playwright

    out = Path(argv[0]) if argv else ROOT / "docs" / "img" / "dashboard.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    out = out.resolve()
    with tempfile.TemporaryDirectory() as tmp:
        os.chdir(tmp)  # so the page shows the plain URL sqlite:///budget.db
        url = "sqlite:///budget.db"
        simulate(url, time.time())
        with DashboardServer(url, port=0, refresh=30) as dashboard:
            page_url = dashboard.start()
            with sync_playwright() as driver:
                browser = driver.chromium.launch(executable_path="/usr/bin/chromium", args=FLAGS)
                page = browser.new_page(viewport={"width": 1280, "height": 1180})
                page.goto(page_url + "?since=24h&bucket=hour")
                page.wait_for_function("() => document.body.dataset.state === 'ready'")
                page.screenshot(path=str(out))
                browser.close()
    print("wrote", out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
