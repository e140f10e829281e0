"""The agent-budget command line, driven as a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from agent_budget import BudgetManager, BudgetScope

ROOT = Path(__file__).resolve().parents[1]


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.run(
        [sys.executable, "-m", "agent_budget", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


def test_demo_shows_refusals_alerts_and_summary():
    out = cli("demo")
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert "REFUSED before the model ran" in text
    assert "ALERT [warning]" in text
    assert "session_cost_usd" in text and "day_cost_usd" in text
    assert "-- summary" in text


def test_rates_lists_dated_sourced_rows():
    out = cli("rates", "gpt-4o*")
    assert out.returncode == 0
    assert "gpt-4o-mini" in out.stdout and "2026-11-01" in out.stdout
    assert "sources:" in out.stdout
    rows = json.loads(cli("rates", "--json").stdout)
    assert {r["model"] for r in rows} >= {"gpt-4o", "claude-3-5-sonnet", "gemini-2.5-pro"}
    assert all(r["effective"] and r["source"] for r in rows)
    assert cli("rates", "nothing-matches").returncode == 1


def test_estimate_exact_and_errors():
    out = cli("estimate", "gpt-4o-2024-08-06", "--input", "1000", "--output", "500", "--json")
    assert out.returncode == 0
    data = json.loads(out.stdout)
    assert data["cost_usd"] == "0.0075" and data["model"] == "gpt-4o"
    unknown = cli("estimate", "no-such-model", "--input", "1")
    assert unknown.returncode == 2 and "no-such-model" in unknown.stderr
    negative = cli("estimate", "gpt-4o", "--input", "-3")
    assert negative.returncode == 2 and "negative" in negative.stderr


@pytest.mark.parametrize(
    ("url", "needle"),
    [("nonsense", "malformed"), ("ftp://x", "unknown store scheme"), ("", "store URL")],
)
def test_report_bad_urls(url, needle):
    out = cli("report", "--store", url)
    assert out.returncode == 2 and needle in out.stderr


@pytest.fixture(params=["sqlite", "redis"])
def store_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'budget.db'}"
    return request.getfixturevalue("redis_url")


def test_report_on_a_memory_store_is_empty_in_a_new_process():
    out = cli("report", "--store", "memory://")
    assert out.returncode == 0 and "no scopes" in out.stdout


def test_report_on_a_shared_store(store_url):
    url = store_url
    mgr = BudgetManager(store=url)
    mgr.register(BudgetScope(name="global", max_cost_per_day_usd=10))
    mgr.register(BudgetScope(name="team-a", max_tokens_per_day=10_000), parent="global")
    mgr.record("team-a", "s1", "gpt-4o", 1000, 500)
    mgr.reserve("team-a", "gpt-4o-mini", 100, 100)
    mgr.close()
    out = cli("report", "--store", url, "--json")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    limits = {(row["scope"], row["limit"]): row for row in data["limits"]}
    assert limits["team-a", "day_tokens"]["used"] == 1500
    assert limits["team-a", "day_tokens"]["reserved"] == 200
    assert limits["team-a", "day_tokens"]["unit"] == "tokens"
    assert limits["global", "day_cost_usd"]["used"] == "0.0075"
    assert limits["global", "day_cost_usd"]["unit"] == "USD"
    table = cli("report", "--store", url)
    assert table.returncode == 0 and "team-a" in table.stdout and "15.0%" in table.stdout
    missing = cli("report", "--store", url, "--scope", "nobody")
    assert missing.returncode == 1 and "nobody" in missing.stderr
